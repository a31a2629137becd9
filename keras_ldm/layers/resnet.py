"""Residual blocks and the 2x resampling layers of the UNet and the autoencoder."""

import keras
from keras import ops

from keras_ldm.layers.conv import conv2d
from keras_ldm.layers.normalization import group_norm

DOWNSAMPLE_PADDINGS = ("symmetric", "asymmetric")


def upsample_nearest(x):
    """2x nearest-neighbour upsampling of a `(B, H, W, C)` tensor."""
    return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


def downsample_average(x):
    """2x2 average pooling with stride 2 of a `(B, H, W, C)` tensor."""
    return ops.average_pool(x, pool_size=2, strides=2, padding="valid")


def _resized_shape(shape, factor, channels):
    """`(B, H, W, C)` with H and W scaled by `factor` (unknown sizes stay None)."""
    scale = [None if n is None else int(n * factor) for n in shape[1:3]]
    return (shape[0], *scale, channels)


@keras.saving.register_keras_serializable(package="keras_ldm")
class Downsample(keras.layers.Layer):
    """Halves H and W: a stride-2 3x3 conv, or 2x2 average pooling without `with_conv`.

    `padding="symmetric"` pads one pixel on every side (the UNet's Downsample);
    `padding="asymmetric"` pads only bottom and right (the autoencoder's, CompVis `(0, 1, 0, 1)`).

    Example:
    >>> tuple(Downsample(8, padding="asymmetric")(keras.ops.ones((1, 16, 16, 8))).shape)
    (1, 8, 8, 8)
    """

    def __init__(self, channels, with_conv=True, padding="symmetric", **kwargs):
        super().__init__(**kwargs)
        if padding not in DOWNSAMPLE_PADDINGS:
            raise ValueError(f"padding={padding!r}; expected one of {DOWNSAMPLE_PADDINGS}.")
        self.channels = channels
        self.with_conv = with_conv
        self.padding = padding
        self.conv = conv2d(channels, 3, strides=2, name="conv") if with_conv else None

    def build(self, input_shape):
        if self.conv is not None:
            self.conv.build((None, None, None, input_shape[-1]))

    def call(self, x):
        if self.conv is None:
            return downsample_average(x)
        before = 1 if self.padding == "symmetric" else 0
        return self.conv(ops.pad(x, ((0, 0), (before, 1), (before, 1), (0, 0))))

    def compute_output_shape(self, input_shape):
        channels = self.channels if self.with_conv else input_shape[-1]
        return _resized_shape(input_shape, 0.5, channels)

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "with_conv": self.with_conv,
            "padding": self.padding,
        }


@keras.saving.register_keras_serializable(package="keras_ldm")
class Upsample(keras.layers.Layer):
    """Doubles H and W with nearest-neighbour upsampling, followed by a 3x3 conv (`with_conv`).

    Example:
    >>> tuple(Upsample(8)(keras.ops.ones((1, 4, 4, 8))).shape)
    (1, 8, 8, 8)
    """

    def __init__(self, channels, with_conv=True, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels
        self.with_conv = with_conv
        self.conv = conv2d(channels, 3, name="conv") if with_conv else None

    def build(self, input_shape):
        if self.conv is not None:
            self.conv.build((None, None, None, input_shape[-1]))

    def call(self, x):
        x = upsample_nearest(x)
        return self.conv(x) if self.conv is not None else x

    def compute_output_shape(self, input_shape):
        channels = self.channels if self.with_conv else input_shape[-1]
        return _resized_shape(input_shape, 2.0, channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "with_conv": self.with_conv}


@keras.saving.register_keras_serializable(package="keras_ldm")
class ResBlock(keras.layers.Layer):
    """GroupNorm-SiLU-Conv twice with a residual skip, optionally conditioned on a timestep embedding.

    Args:
        out_channels: output channels.
        embed_dim: width of the timestep embedding `emb`; `None` for the autoencoder's blocks.
        dropout: dropout rate before the second conv.
        use_scale_shift_norm: inject `emb` as `norm2(h) * (1 + scale) + shift` (else added to `h`).
        skip_kernel_size: 1 or 3, the conv on the skip path when the channel count changes.
        resample: `None`, `"up"` or `"down"` (CompVis `resblock_updown`).
        epsilon: GroupNorm epsilon (UNet 1e-5, autoencoder 1e-6).
        groups: GroupNorm groups (CompVis: 32; diffusers' `norm_num_groups`).
        zero_init: zero-initialise the second conv (CompVis does for the UNet).

    Example:
    >>> block = ResBlock(64, embed_dim=64)
    >>> tuple(block(keras.ops.ones((2, 8, 8, 32)), keras.ops.ones((2, 64))).shape)
    (2, 8, 8, 64)
    """

    def __init__(
        self,
        out_channels,
        embed_dim=None,
        dropout=0.0,
        use_scale_shift_norm=False,
        skip_kernel_size=1,
        resample=None,
        epsilon=1e-5,
        zero_init=False,
        groups=32,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if skip_kernel_size not in (1, 3):
            raise ValueError(f"skip_kernel_size={skip_kernel_size!r}; expected 1 or 3.")
        if resample not in (None, "up", "down"):
            raise ValueError(f"resample={resample!r}; expected None, 'up' or 'down'.")
        if use_scale_shift_norm and embed_dim is None:
            raise ValueError("use_scale_shift_norm=True needs `embed_dim` (a timestep embedding).")
        self.out_channels = out_channels
        self.embed_dim = embed_dim
        self.dropout_rate = dropout
        self.use_scale_shift_norm = use_scale_shift_norm
        self.skip_kernel_size = skip_kernel_size
        self.resample = resample
        self.epsilon = epsilon
        self.zero_init = zero_init
        self.groups = groups
        self.norm1 = group_norm(epsilon, groups, name="norm1")
        self.conv1 = conv2d(out_channels, name="conv1")
        self.time_emb_proj = None
        if embed_dim is not None:
            width = 2 * out_channels if use_scale_shift_norm else out_channels
            self.time_emb_proj = keras.layers.Dense(width, name="time_emb_proj")
        self.norm2 = group_norm(epsilon, groups, name="norm2")
        self.dropout = keras.layers.Dropout(dropout, name="dropout")
        self.conv2 = conv2d(out_channels, zero_init=zero_init, name="conv2")
        self.conv_shortcut = None

    def build(self, input_shape):
        in_channels = input_shape[-1]
        self.norm1.build((None, None, None, in_channels))
        self.conv1.build((None, None, None, in_channels))
        if self.time_emb_proj is not None:
            self.time_emb_proj.build((None, self.embed_dim))
        self.norm2.build((None, None, None, self.out_channels))
        self.conv2.build((None, None, None, self.out_channels))
        if in_channels != self.out_channels:
            self.conv_shortcut = conv2d(self.out_channels, self.skip_kernel_size, name="conv_shortcut")
            self.conv_shortcut.build((None, None, None, in_channels))

    def _resample(self, x):
        if self.resample == "up":
            return upsample_nearest(x)
        if self.resample == "down":
            return downsample_average(x)
        return x

    def call(self, x, emb=None, training=None):
        h = ops.silu(self.norm1(x))
        h, x = self._resample(h), self._resample(x)
        h = self.conv1(h)
        if self.time_emb_proj is not None:
            if emb is None:
                raise ValueError("ResBlock built with `embed_dim` needs a timestep embedding `emb`.")
            emb = self.time_emb_proj(ops.silu(emb))[:, None, None, :]
        if self.use_scale_shift_norm:
            scale, shift = ops.split(emb, 2, axis=-1)
            h = self.norm2(h) * (1.0 + scale) + shift
        else:
            if emb is not None:
                h = h + ops.cast(emb, h.dtype)
            h = self.norm2(h)
        h = self.conv2(self.dropout(ops.silu(h), training=training))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + ops.cast(h, x.dtype)

    def compute_output_shape(self, input_shape, emb_shape=None):
        factor = {"up": 2.0, "down": 0.5, None: 1.0}[self.resample]
        return _resized_shape(input_shape, factor, self.out_channels)

    def get_config(self):
        return {
            **super().get_config(),
            "out_channels": self.out_channels,
            "embed_dim": self.embed_dim,
            "dropout": self.dropout_rate,
            "use_scale_shift_norm": self.use_scale_shift_norm,
            "skip_kernel_size": self.skip_kernel_size,
            "resample": self.resample,
            "epsilon": self.epsilon,
            "groups": self.groups,
            "zero_init": self.zero_init,
        }
