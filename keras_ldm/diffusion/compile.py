"""One compiled sampling loop per backend — the only backend-specific module of keras_ldm.diffusion.

- JAX: `jax.jit`. A Keras model's variables are arguments of the jitted function (read through a
  `keras.StatelessScope`), never constants baked into the program.
- TensorFlow: `tf.function(jit_compile=True)`; variables are captured by reference.
- PyTorch: an eager loop under `torch.no_grad()`; the model it calls every step is recorded once with
  `torch.jit.trace` (`traced_inference`), which removes Keras' per-layer Python cost.

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


def traced_inference(layer, call=None, eager_calls=0):
    """`layer`'s inference call, made cheap to repeat: for the models `generate()` runs again and again.

    On PyTorch the Keras layers' Python (layer calls, `keras.ops` dispatch) costs more than their kernels
    at small and medium sizes; the returned callable records the forward pass once per input signature
    (tensor shapes, dtypes and devices; other arguments by value) with `torch.jit.trace` and replays the
    recorded kernels (measured: 47 -> 15 ms per forward of the `--small` benchmark UNet, 1 CPU thread).
    The layer's variables are arguments of the recording, so new weights are used. With gradients
    enabled, for inputs other than torch tensors and Python constants, or where recording fails (with a
    warning), it calls as usual. On JAX and TensorFlow it returns the call itself: the whole loop is
    compiled there.

    Args:
        layer: a built Keras layer whose variables `call` reads.
        call: what to record, a function of tensors (default: `layer` itself), e.g. a method of
            `layer`. It must depend only on its inputs' values and shapes: no random ops, no state
            updates (a UNet or decoder at inference).
        eager_calls: calls of a signature that run eagerly before it is recorded. Recording costs
            about 20 eager calls; 0 suits the UNet of a sampling loop, 1 a decoder run once per
            `generate()` (recorded when `generate()` repeats).

    Returns:
        A callable with the signature of `call`.

    Example:
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> forward = traced_inference(layer)
    >>> tuple(compile_function(lambda x: forward(x))(ops.ones((4, 3))).shape)
    (4, 2)
    """
    call = layer if call is None else call
    if keras.backend.backend() != "torch":
        return call
    return _TorchTracedInference(layer, call, eager_calls)


_CONSTANT_TYPES = (type(None), bool, int, float, str)  # arguments a recording keeps as they were


def _describe(leaf, is_tensor):
    return (tuple(leaf.shape), leaf.dtype, leaf.device) if is_tensor else repr(leaf)


class _TorchTracedInference:
    """`traced_inference` on PyTorch: one `torch.jit.trace` recording per input signature."""

    def __init__(self, layer, call, eager_calls):
        self.layer, self.call, self.eager_calls = layer, call, eager_calls
        self.recordings = {}  # signature -> recording, or None where recording failed
        self.calls = {}  # signature -> eager calls so far
        self.variables = None  # the layer's, listed at the first recording (when it is built)

    def __call__(self, *args, **kwargs):
        import torch

        leaves = tree.flatten((args, kwargs))
        is_tensor = [isinstance(leaf, torch.Tensor) for leaf in leaves]
        recordable = not torch.is_grad_enabled() and all(  # numpy inputs or training: not recorded
            tensor or isinstance(leaf, _CONSTANT_TYPES) for leaf, tensor in zip(leaves, is_tensor)
        )
        structure = tree.map_structure(lambda _: None, (args, kwargs))
        key = (repr(structure), tuple(_describe(leaf, tensor) for leaf, tensor in zip(leaves, is_tensor)))
        if not (recordable and self._ready(key)):
            return self.call(*args, **kwargs)
        self.variables = self.variables or list(self.layer.variables)
        values = [variable.value for variable in self.variables]
        tensors = [leaf for leaf, tensor in zip(leaves, is_tensor) if tensor]
        if key not in self.recordings:
            constants = [None if tensor else leaf for leaf, tensor in zip(leaves, is_tensor)]
            self.recordings[key] = self._record(structure, constants, is_tensor, values, tensors)
        recording = self.recordings[key]
        if recording is None:
            return self.call(*args, **kwargs)
        with torch.jit.optimized_execution(False):  # no profiling runs: fast from the first call
            return recording(values, tensors)

    def _ready(self, key):
        """Whether `key` is recorded or has had its `eager_calls`: counts the eager calls."""
        if key in self.recordings:
            return True
        self.calls[key] = self.calls.get(key, 0) + 1
        return self.calls[key] > self.eager_calls

    def _record(self, structure, constants, is_tensor, values, tensors):
        """`torch.jit.trace` of `call` for one signature: `recording(values, tensors)`, or None."""
        import warnings

        import torch

        variables = self.variables

        def forward(values, tensors):
            filled, remaining = list(constants), iter(tensors)
            for i, tensor in enumerate(is_tensor):
                if tensor:
                    filled[i] = next(remaining)
            call_args, call_kwargs = tree.pack_sequence_as(structure, filled)
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return self.call(*call_args, **call_kwargs)

        try:
            with warnings.catch_warnings():
                # Deprecation notice, and shape checks in Python: fixed for one input signature.
                warnings.simplefilter("ignore")
                return torch.jit.trace(forward, (values, tensors), check_trace=False, strict=False)
        except Exception as error:  # noqa: BLE001 - any failure to record falls back to plain calls
            warnings.warn(
                f"Could not record {self.layer.name!r} with torch.jit.trace ({type(error).__name__}: "
                f"{error}); calling it eagerly instead.",
                stacklevel=3,
            )
            return None


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
            `denoise_builder` as is.
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
    run = sampling_loop(sampler, model, denoise_builder, schedule, num_steps, **sampler_options)
    compiled = compile_function(run, model)

    def sample(initial_noise, inputs=None, seed=0, mask=None, x0=None):
        inputs = tree.map_structure(ops.convert_to_tensor, inputs or {})
        optional = [None if v is None else ops.convert_to_tensor(v) for v in (mask, x0)]
        return compiled(
            ops.convert_to_tensor(initial_noise), inputs, ops.convert_to_tensor(seed, "int32"), *optional
        )

    return sample
