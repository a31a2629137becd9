"""Deprecated alias: `keras_ldm.diffusion.compile` warns on import and will be removed.

`compile_function` is in `keras_ldm.backend.compile`, `make_noise_sampler` in `keras_ldm.backend.noise`,
`make_sampling_fn` and `sampling_loop` in `keras_ldm.diffusion.loop` (all but `sampling_loop` also in
`keras_ldm.diffusion`).
"""

import warnings

from keras_ldm.backend.compile import compile_function
from keras_ldm.backend.noise import make_noise_sampler
from keras_ldm.diffusion.loop import make_sampling_fn, sampling_loop

__all__ = ["compile_function", "make_noise_sampler", "make_sampling_fn", "sampling_loop"]

warnings.warn(
    "keras_ldm.diffusion.compile is deprecated: import compile_function from keras_ldm.backend.compile, "
    "make_noise_sampler from keras_ldm.backend.noise, make_sampling_fn and sampling_loop from "
    "keras_ldm.diffusion.loop.",
    DeprecationWarning,
    stacklevel=2,
)
