"""Deprecated alias of keras_ldm.backend.export_program: `keras_ldm.export_backend` warns on import."""

import warnings

from keras_ldm.backend.export_program import DEFAULT_PLATFORMS, SUPPORTED_BACKENDS, ProgramBuilder, check_backend

__all__ = ["DEFAULT_PLATFORMS", "SUPPORTED_BACKENDS", "ProgramBuilder", "check_backend"]

warnings.warn(
    "keras_ldm.export_backend is deprecated: import from keras_ldm.backend.export_program.",
    DeprecationWarning,
    stacklevel=2,
)
