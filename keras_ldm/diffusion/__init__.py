"""Diffusion process and samplers of latent diffusion models.

- `schedule`: the forward process (`NoiseSchedule`: betas, `q_sample`, parameterizations, loss weights).
- `samplers`: DDPM, DDIM, PLMS, DPM-Solver++(2M) and Euler as pure functions over `denoise(x, t)`.
- `guidance`: classifier-free guidance in one model call of batch 2B.
- `loop`: the whole sampling loop as one compiled program (`make_sampling_fn`).

What differs per backend — compiling (`compile_function`) and the noise draws (`make_noise_sampler`) — is
in `keras_ldm.backend`; both are re-exported here.
"""

from keras_ldm.backend.compile import compile_function
from keras_ldm.backend.noise import make_noise_sampler
from keras_ldm.diffusion.guidance import classifier_free_guidance
from keras_ldm.diffusion.loop import make_sampling_fn
from keras_ldm.diffusion.samplers import (
    SAMPLERS,
    get_sampler,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler,
    sample_plms,
)
from keras_ldm.diffusion.schedule import (
    NoiseSchedule,
    convert_prediction,
    make_beta_schedule,
    posterior_coefficients,
    prediction_to_eps_and_x0,
    sampling_timesteps,
)

__all__ = [
    "SAMPLERS",
    "NoiseSchedule",
    "classifier_free_guidance",
    "compile_function",
    "convert_prediction",
    "get_sampler",
    "make_beta_schedule",
    "make_noise_sampler",
    "make_sampling_fn",
    "posterior_coefficients",
    "prediction_to_eps_and_x0",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_euler",
    "sample_plms",
    "sampling_timesteps",
]
