"""The whole sampling loop — a sampler over a denoiser — as one compiled program.

`make_sampling_fn` = the model recorded on PyTorch (`keras_ldm.backend.traced_call`) -> `sampling_loop`
(pure `keras.ops`: the sampler's steps, noise from `keras_ldm.backend.noise`) -> one program of the running
backend (`keras_ldm.backend.compile`, whose docstring says what each backend compiles). Everything that
varies between calls — the starting noise, the conditioning, the guidance scale, the seed, an inpainting
mask — is a tensor argument, so changing its value does not recompile.
"""

import keras
from keras import ops, tree

from keras_ldm.backend.compile import compile_function
from keras_ldm.backend.noise import make_noise_sampler
from keras_ldm.backend.traced_call import traced_call
from keras_ldm.diffusion.samplers import get_sampler


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
            `keras_ldm.backend.traced_call` (same call signature and attributes, recorded once per shape).
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
