"""Deprecated alias of keras_ldm.backend.fast_build: `keras_ldm.fast_build` warns on import and will be removed."""

import warnings

from keras_ldm.backend.fast_build import CONSTANT_INITIALIZERS, RANDOM_INITIALIZERS, random_init_skipped

__all__ = ["CONSTANT_INITIALIZERS", "RANDOM_INITIALIZERS", "random_init_skipped"]

warnings.warn(
    "keras_ldm.fast_build is deprecated: import from keras_ldm.backend.fast_build.",
    DeprecationWarning,
    stacklevel=2,
)
