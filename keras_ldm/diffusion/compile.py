"""One compiled sampling loop per backend — the only backend-specific module of keras_ldm.diffusion.

- JAX: `jax.jit`. A Keras model's variables are arguments of the jitted function (read through a
  `keras.StatelessScope`), never constants baked into the program.
- TensorFlow: `tf.function(jit_compile=True)`; variables are captured by reference.
- PyTorch: an eager loop under `torch.no_grad()`; the Keras model is called through
  `keras_ldm.traced_call`, which records it once per shape with `torch.jit.trace` (no per-layer Python
  cost).

Everything that varies between calls — the starting noise, the conditioning, the guidance scale,
the seed, an inpainting mask — is a tensor argument, so changing its value does not recompile.

Memory: nothing is donated here. The arguments are the weights (kept) and small per-call tensors, and
`generate()`'s program returns uint8 images, which no input buffer could hold; inside the program XLA
updates the latents of the loop in place. Training donates its state through Keras' JAX trainer.
jax, tensorflow and torch are imported lazily, so keras_ldm imports without them.
"""

import math

import keras
from keras import ops, tree

from keras_ldm.traced_call import traced_call


def make_noise_sampler(seed, shape, dtype="float32"):
    """A stateless Gaussian noise source: `noise(i)` depends only on `(seed, i)`.

    Works with traced `seed` and `i` (inside `jax.jit`, `tf.function` and `fori_loop`). Draws are
    reproducible per backend, not equal across backends.

    Args:
        seed: an integer (Python int or int32 tensor).
        shape: shape of each draw.
        dtype: float dtype of each draw.

    Returns:
        `noise(i) -> tensor` of `shape`.

    Example:
    >>> noise = make_noise_sampler(seed=1, shape=(2, 3))
    >>> bool(ops.all(noise(0) == noise(0))) and not bool(ops.all(noise(0) == noise(1)))
    True
    """
    shape = tuple(shape)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        key = jax.random.PRNGKey(seed)
        return lambda i: jax.random.normal(jax.random.fold_in(key, i), shape, dtype)
    if backend == "tensorflow":
        return _tensorflow_noise_sampler(seed, shape, dtype)
    if backend == "torch":
        import torch

        def noise(i):
            generator = torch.Generator().manual_seed((int(seed) % 2**32) * 2**31 + int(i))
            draw = torch.randn(shape, generator=generator, dtype=getattr(torch, dtype))
            return ops.convert_to_tensor(draw)

        return noise
    raise ValueError(
        f"Unsupported Keras backend {backend!r} for sampling; use 'jax', 'tensorflow' or 'torch'."
    )


def _tensorflow_noise_sampler(seed, shape, dtype):
    """Philox bits + Box–Muller: `tf.random.stateless_normal` gives other numbers under XLA than
    eagerly, while the raw Philox bits agree, so the compiled loop and an eager run share noise."""
    import tensorflow as tf

    key = tf.reshape(tf.cast(seed, tf.uint64), [1])
    size = math.prod(shape)

    def noise(i):
        counter = tf.stack([tf.cast(i, tf.uint64), tf.constant(0, tf.uint64)])
        bits = tf.raw_ops.StatelessRandomUniformFullIntV2(
            shape=[2, size], key=key, counter=counter, alg=1, dtype=tf.uint32
        )
        uniform = (tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) + 0.5) * 2.0**-24  # in (0, 1)
        normal = tf.sqrt(-2.0 * tf.math.log(uniform[0])) * tf.cos(2.0 * math.pi * uniform[1])
        return tf.cast(tf.reshape(normal, shape), dtype)

    return noise


def compile_function(fn, model=None):
    """Compile `fn(*args)` into one program for the current backend (see the module docstring).

    Args:
        fn: a function of tensors (nested structures allowed) that may call `model`.
        model: what `fn` calls: a built Keras layer/model (on JAX its variables become arguments
            of the jitted function), any other callable, or None.

    Returns:
        The compiled function, with the same signature.

    Example:
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> double = compile_function(lambda x: 2 * layer(x), layer)
    >>> tuple(double(ops.ones((4, 3))).shape)
    (4, 2)
    """
    backend = keras.backend.backend()
    is_layer = isinstance(model, keras.layers.Layer)
    if is_layer and not model.built:
        raise ValueError(
            f"`model` must be built before compiling a loop around it; received {model.name!r} (not built)."
        )
    variables = list(model.variables) if is_layer else []
    if backend == "jax":
        import jax

        def stateless_fn(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*args)

        jitted = jax.jit(stateless_fn)
        return lambda *args: jitted([v.value for v in variables], *args)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if backend == "torch":
        import torch

        def no_grad_fn(*args):
            with torch.no_grad():
                return fn(*args)

        return no_grad_fn
    raise ValueError(
        f"Unsupported Keras backend {backend!r} for sampling; use 'jax', 'tensorflow' or 'torch'."
    )


def sampling_loop(sampler, model, denoise_builder, schedule, num_steps, **sampler_options):
    """The uncompiled body of `make_sampling_fn`: `run(initial_noise, inputs, seed, mask, x0) -> latents`.

    Pure `keras.ops` code for tracing inside a larger compiled program (e.g. `keras_ldm.export`).
    All arguments of `run` are tensors (`mask` and `x0` may be None); the batch axis of
    `initial_noise` may be unknown while tracing. The arguments of `sampling_loop` are those of
    `make_sampling_fn`.

    Example:
    >>> from keras_ldm.diffusion.schedule import NoiseSchedule
    >>> run = sampling_loop("ddim", None, lambda model, inputs: lambda x, t: 0.1 * x, NoiseSchedule(), 3)
    >>> tuple(run(ops.ones((2, 4, 4, 1)), {}, ops.convert_to_tensor(0), None, None).shape)
    (2, 4, 4, 1)
    """
    from keras_ldm.diffusion.samplers import get_sampler

    sampler_fn = get_sampler(sampler) if isinstance(sampler, str) else sampler
    schedule.sampling_timesteps(num_steps, sampler_options.get("spacing", "leading"))  # fail early

    def run(initial_noise, inputs, seed, mask, x0):
        denoise = denoise_builder(model, inputs)
        dtype = keras.backend.standardize_dtype(initial_noise.dtype)
        noise_sampler = make_noise_sampler(seed, _shape(initial_noise), dtype)
        return sampler_fn(
            denoise,
            initial_noise,
            schedule,
            num_steps,
            noise_sampler=noise_sampler,
            mask=mask,
            x0=x0,
            **sampler_options,
        )

    return run


def _shape(x):
    """The static shape where known; dynamic sizes (a batch traced as None) as scalar tensors."""
    static = tuple(x.shape)
    return static if all(isinstance(d, int) for d in static) else tuple(ops.shape(x))


def make_sampling_fn(sampler, model, denoise_builder, schedule, num_steps, **sampler_options):
    """Build `sample(initial_noise, inputs, seed=0, mask=None, x0=None) -> latents`, compiled once.

    The whole loop — every model call and update — runs inside one compiled function. A second call
    with other values of the same shapes reuses it.

    Args:
        sampler: a sampler name (`"ddpm"`, `"ddim"`, `"plms"`, `"dpmpp_2m"`, `"euler"`) or function.
        model: the (built) Keras model the denoiser calls, any other callable, or None; handed to
            `denoise_builder` as is, except that on PyTorch a Keras model comes wrapped by
            `keras_ldm.traced_call` (same call signature and attributes, recorded once per shape).
        denoise_builder: `denoise_builder(model, inputs) -> denoise(x, t)`; `inputs` is the dict
            handed to `sample` (as tensors), e.g. contexts and the guidance scale for
            `guidance.classifier_free_guidance`.
        schedule: the `NoiseSchedule`.
        num_steps: number of sampling steps (fixed for this function).
        **sampler_options: passed to the sampler (`prediction_type`, `spacing`, `eta`,
            `return_trajectory`).

    Returns:
        `sample(initial_noise, inputs=None, seed=0, mask=None, x0=None)`: `initial_noise` is the
        unit-variance `x_T`; `seed` drives the sampler's stochastic steps and the inpainting blend.

    Example:
    >>> from keras_ldm.diffusion.guidance import classifier_free_guidance
    >>> from keras_ldm.diffusion.schedule import NoiseSchedule
    >>> model = lambda x, t, context: 0.1 * x + ops.mean(context)
    >>> build = lambda model, inputs: classifier_free_guidance(
    ...     model, inputs["context"], inputs["unconditional_context"], inputs["guidance_scale"])
    >>> sample = make_sampling_fn("ddim", model, build, NoiseSchedule(), num_steps=5)
    >>> inputs = {"context": ops.ones((1, 2, 3)), "unconditional_context": ops.zeros((1, 2, 3)),
    ...           "guidance_scale": 4.0}
    >>> tuple(sample(ops.ones((1, 4, 4, 2)), inputs, seed=3).shape)
    (1, 4, 4, 2)
    """
    is_layer = isinstance(model, keras.layers.Layer)
    recorded = traced_call(model) if is_layer else model  # on PyTorch recorded once per shape
    run = sampling_loop(sampler, recorded, denoise_builder, schedule, num_steps, **sampler_options)
    compiled = compile_function(run, model)

    def sample(initial_noise, inputs=None, seed=0, mask=None, x0=None):
        inputs = tree.map_structure(ops.convert_to_tensor, inputs or {})
        optional = [None if v is None else ops.convert_to_tensor(v) for v in (mask, x0)]
        return compiled(
            ops.convert_to_tensor(initial_noise), inputs, ops.convert_to_tensor(seed, "int32"), *optional
        )

    return sample
