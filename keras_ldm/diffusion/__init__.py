"""Diffusion process and samplers of latent diffusion models.

- `schedule`: the forward process (`NoiseSchedule`: betas, `q_sample`, parameterizations, loss weights).
- `samplers`: DDPM, DDIM, PLMS, DPM-Solver++(2M) and Euler as pure functions over `denoise(x, t)`.
- `guidance`: classifier-free guidance in one model call of batch 2B.
- `compile`: the whole sampling loop as one compiled function per backend.
"""

from keras_ldm.diffusion.compile import compile_function
from keras_ldm.diffusion.compile import make_noise_sampler
from keras_ldm.diffusion.compile import make_sampling_fn
from keras_ldm.diffusion.guidance import classifier_free_guidance
from keras_ldm.diffusion.samplers import SAMPLERS
from keras_ldm.diffusion.samplers import get_sampler
from keras_ldm.diffusion.samplers import sample_ddim
from keras_ldm.diffusion.samplers import sample_ddpm
from keras_ldm.diffusion.samplers import sample_dpmpp_2m
from keras_ldm.diffusion.samplers import sample_euler
from keras_ldm.diffusion.samplers import sample_plms
from keras_ldm.diffusion.schedule import NoiseSchedule
from keras_ldm.diffusion.schedule import convert_prediction
from keras_ldm.diffusion.schedule import make_beta_schedule
from keras_ldm.diffusion.schedule import posterior_coefficients
from keras_ldm.diffusion.schedule import prediction_to_eps_and_x0
from keras_ldm.diffusion.schedule import sampling_timesteps
