"""Deprecated alias of keras_ldm.backend.traced_call: `keras_ldm.traced_call` warns on import and will be removed."""

import warnings

from keras_ldm.backend.traced_call import kept_traced_call, traced_call

__all__ = ["kept_traced_call", "traced_call"]

warnings.warn(
    "keras_ldm.traced_call is deprecated: import from keras_ldm.backend.traced_call.",
    DeprecationWarning,
    stacklevel=2,
)
