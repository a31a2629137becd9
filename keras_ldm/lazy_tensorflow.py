"""Deprecated alias of keras_ldm.backend.lazy_tensorflow: `keras_ldm.lazy_tensorflow` warns on import and will be removed."""

import warnings

from keras_ldm.backend.lazy_tensorflow import LazyModule, tensorflow_installed, tf

__all__ = ["LazyModule", "tensorflow_installed", "tf"]

warnings.warn(
    "keras_ldm.lazy_tensorflow is deprecated: import from keras_ldm.backend.lazy_tensorflow.",
    DeprecationWarning,
    stacklevel=2,
)
