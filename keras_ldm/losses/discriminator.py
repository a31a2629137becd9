"""The PatchGAN discriminator of the first stage (taming/CompVis `NLayerDiscriminator`) and its losses."""

import keras
from keras import ops

NORMS = ("batch", "act")
DISC_LOSSES = ("hinge", "vanilla")
KERNEL_SIZE, PADDING = 4, 1


def hinge_d_loss(logits_real, logits_fake):
    """`0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(x_rec))))`.

    Example:
    >>> float(hinge_d_loss(keras.ops.ones((1, 2, 2, 1)), -keras.ops.ones((1, 2, 2, 1))))
    0.0
    """
    real = ops.mean(ops.relu(1.0 - ops.cast(logits_real, "float32")))
    fake = ops.mean(ops.relu(1.0 + ops.cast(logits_fake, "float32")))
    return 0.5 * (real + fake)


def vanilla_d_loss(logits_real, logits_fake):
    """`0.5 * (mean(softplus(-D(x))) + mean(softplus(D(x_rec))))`, the non-saturating GAN loss.

    Example:
    >>> round(float(vanilla_d_loss(keras.ops.zeros((1, 2, 2, 1)), keras.ops.zeros((1, 2, 2, 1)))), 4)
    0.6931
    """
    real = ops.mean(ops.softplus(-ops.cast(logits_real, "float32")))
    fake = ops.mean(ops.softplus(ops.cast(logits_fake, "float32")))
    return 0.5 * (real + fake)


def discriminator_loss(name):
    """The d-loss function called `name` (`"hinge"` or `"vanilla"`)."""
    if name not in DISC_LOSSES:
        raise ValueError(f"disc_loss={name!r}; expected one of {DISC_LOSSES}.")
    return hinge_d_loss if name == "hinge" else vanilla_d_loss


@keras.saving.register_keras_serializable(package="keras_ldm")
class ActNorm(keras.layers.Layer):
    """Per-channel affine normalisation initialised from the first training batch (Glow's ActNorm).

    On the first call with `training=True`, `loc = -mean` and `scale = 1 / (std + 1e-6)` of that batch
    (per channel, unbiased std as in taming); afterwards `loc` and `scale` are ordinary weights.
    Output: `scale * (x + loc)`.

    Example:
    >>> norm = ActNorm()
    >>> x = keras.random.normal((4, 3, 3, 2), mean=5.0, seed=0)
    >>> y = keras.ops.convert_to_numpy(norm(x, training=True))
    >>> bool(abs(y.mean()) < 1e-4), int(keras.ops.convert_to_numpy(norm.initialized))
    (True, 1)
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        self.loc = self.add_weight(shape=(channels,), initializer="zeros", name="loc")
        self.scale = self.add_weight(shape=(channels,), initializer="ones", name="scale")
        self.initialized = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False, name="initialized"
        )

    def call(self, x, training=None):
        if training:
            axes = tuple(range(len(x.shape) - 1))
            count = ops.cast(ops.size(x), x.dtype) / x.shape[-1]
            mean = ops.mean(x, axis=axes)
            std = ops.sqrt(ops.var(x, axis=axes) * count / (count - 1.0))
            ready = ops.convert_to_tensor(self.initialized) > 0
            loc_var, scale_var = ops.convert_to_tensor(self.loc), ops.convert_to_tensor(self.scale)
            # The values are the batch statistics on the first call; the gradient always reaches the
            # variables and never the statistics (taming initialises under no_grad).
            loc = loc_var + ops.stop_gradient(ops.where(ready, loc_var, -mean) - loc_var)
            scale = scale_var + ops.stop_gradient(ops.where(ready, scale_var, 1.0 / (std + 1e-6)) - scale_var)
            self.loc.assign(loc)
            self.scale.assign(scale)
            self.initialized.assign(1)
        else:
            loc, scale = self.loc, self.scale
        return ops.cast(scale, x.dtype) * (x + ops.cast(loc, x.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_ldm")
class NLayerDiscriminator(keras.layers.Layer):
    """PatchGAN: images `(B, H, W, in_channels)` -> one logit per overlapping patch `(B, h, w, 1)`.

    `n_layers` stride-2 4x4 convs (the first without normalisation), one stride-1 4x4 conv, each
    followed by LeakyReLU(0.2), then a stride-1 4x4 conv to one channel; every conv pads by one pixel.
    Convs before a BatchNorm have no bias; weights start at N(0, 0.02), norm scales at N(1, 0.02)
    (taming's `weights_init`). 256x256 images give 30x30 logits with the default 3 layers.

    Args:
        in_channels: image channels.
        ndf: channels of the first conv; level n has `ndf * min(2^n, 8)`.
        n_layers: number of stride-2 convs.
        norm: `"batch"` (BatchNorm, torch momentum 0.1) or `"act"` (`ActNorm`).

    Example:
    >>> disc = NLayerDiscriminator(ndf=8, n_layers=2)
    >>> tuple(disc(keras.ops.zeros((2, 32, 32, 3))).shape)
    (2, 6, 6, 1)
    """

    def __init__(self, in_channels=3, ndf=64, n_layers=3, norm="batch", **kwargs):
        super().__init__(**kwargs)
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r}; expected one of {NORMS}.")
        if int(n_layers) < 1:
            raise ValueError(f"n_layers={n_layers!r}; expected an int >= 1.")
        self.in_channels, self.ndf, self.n_layers, self.norm = in_channels, ndf, int(n_layers), norm
        conv_init = keras.initializers.RandomNormal(0.0, 0.02)
        self.blocks = []  # (conv, norm or None, activation?)
        widths = [ndf * min(2**n, 8) for n in range(self.n_layers + 1)]
        for n, width in enumerate(widths):
            stride = 2 if n < self.n_layers else 1
            normalized = n > 0
            conv = keras.layers.Conv2D(
                width,
                KERNEL_SIZE,
                strides=stride,
                use_bias=not (normalized and norm == "batch"),
                kernel_initializer=conv_init,
                name=f"conv{n}",
            )
            self.blocks.append((conv, self._make_norm(f"norm{n}") if normalized else None))
        self.conv_out = keras.layers.Conv2D(1, KERNEL_SIZE, kernel_initializer=conv_init, name="conv_out")
        self.build()

    def _make_norm(self, name):
        if self.norm == "act":
            return ActNorm(name=name)
        return keras.layers.BatchNormalization(
            momentum=0.9,
            epsilon=1e-5,
            gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02),
            name=name,
        )

    def build(self, input_shape=None):
        channels = self.in_channels
        for conv, norm in self.blocks:
            conv.build((None, None, None, channels))
            channels = conv.filters
            if norm is not None:
                norm.build((None, None, None, channels))
        self.conv_out.build((None, None, None, channels))

    def output_size(self, size):
        """Logit-map size for an input side of `size` pixels (< 1 means the input is too small)."""
        for n in range(self.n_layers + 1):
            stride = 2 if n < self.n_layers else 1
            size = (size + 2 * PADDING - KERNEL_SIZE) // stride + 1
        return size + 2 * PADDING - KERNEL_SIZE + 1

    def _check(self, images):
        self._check_shape(tuple(images.shape))

    def _check_shape(self, shape):
        if len(shape) != 4:
            raise ValueError(
                f"`images` must have rank 4 (batch, height, width, channels); got shape {shape}."
            )
        if shape[-1] is not None and shape[-1] != self.in_channels:
            raise ValueError(
                f"`images` has {shape[-1]} channels (shape {shape}); expected {self.in_channels}."
            )
        for side in shape[1:3]:
            if isinstance(side, int) and self.output_size(side) < 1:
                raise ValueError(
                    f"`images` of shape {shape} are too small for a discriminator with n_layers={self.n_layers}; "
                    f"use fewer layers or larger images."
                )

    def call(self, images, training=None):
        self._check(images)
        h = images
        pad = ((0, 0), (PADDING, PADDING), (PADDING, PADDING), (0, 0))
        for conv, norm in self.blocks:
            h = conv(ops.pad(h, pad))
            if norm is not None:
                h = norm(h, training=training)
            h = ops.leaky_relu(h, negative_slope=0.2)
        return self.conv_out(ops.pad(h, pad))

    def compute_output_shape(self, input_shape):
        self._check_shape(tuple(input_shape))
        sides = [None if s is None else self.output_size(s) for s in input_shape[1:3]]
        return (input_shape[0], *sides, 1)

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "ndf": self.ndf,
            "n_layers": self.n_layers,
            "norm": self.norm,
        }
