"""Deprecated alias of keras_ldm.backend.torch_kernels: `keras_ldm.layers.torch_kernels` warns on import and will be removed."""

import warnings

from keras_ldm.backend.torch_kernels import conv2d_channels_last, group_norm_channels_last

__all__ = ["conv2d_channels_last", "group_norm_channels_last"]

warnings.warn(
    "keras_ldm.layers.torch_kernels is deprecated: import from keras_ldm.backend.torch_kernels.",
    DeprecationWarning,
    stacklevel=2,
)
