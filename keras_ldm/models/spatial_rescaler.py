"""`SpatialRescaler`: CompVis' encoder of spatial conditions (segmentation maps) for concatenation.

CompVis (`ldm/modules/encoders/modules.py`) resizes the condition `n_stages` times by `multiplier` with
`torch.nn.functional.interpolate(x, scale_factor=multiplier, mode=method)` (PyTorch defaults:
`align_corners=False`, the source index computed from the given scale), then maps its channels with a
1x1 convolution. Here each resize is two small interpolation matrices (rows, columns) built with
PyTorch's index rules, so the result equals PyTorch's for every size, odd ones included; bilinear x0.5
on even sizes is a 2x2 mean.
"""

import math

import keras
import numpy as np
from keras import ops

METHODS = ("nearest", "bilinear", "area")


def interpolation_matrix(in_size, scale, method):
    """`(out, in)` float32 weights of PyTorch's 1-D `interpolate(scale_factor=scale, mode=method)`
    (`align_corners=False`); `out = floor(in * scale)`.

    Example:
    >>> interpolation_matrix(4, 0.5, "bilinear").tolist()
    [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    """
    out_size = int(math.floor(in_size * scale))
    if out_size < 1:
        raise ValueError(f"a size of {in_size} scaled by {scale} is empty; the condition is too small.")
    weights = np.zeros((out_size, in_size), "float64")
    rows = np.arange(out_size)
    if method == "nearest":  # PyTorch's legacy nearest: floor(dst / scale)
        weights[rows, np.minimum(np.floor(rows / scale).astype(int), in_size - 1)] = 1.0
    elif method == "bilinear":
        source = np.maximum((rows + 0.5) / scale - 0.5, 0.0)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        fraction = source - low
        np.add.at(weights, (rows, low), 1.0 - fraction)
        np.add.at(weights, (rows, high), fraction)
    else:  # area: adaptive average pooling to the output size
        for row in rows:
            start, end = (row * in_size) // out_size, -((-(row + 1) * in_size) // out_size)
            weights[row, start:end] = 1.0 / (end - start)
    return weights.astype("float32")


def resize_like_torch(images, scale, method):
    """`(B, H, W, C)` resized as `torch.nn.functional.interpolate(scale_factor=scale, mode=method)`;
    `H` and `W` must be static.

    Example:
    >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    >>> keras.ops.convert_to_numpy(resize_like_torch(x, 0.5, "bilinear"))[0, :, :, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    height, width = images.shape[1], images.shape[2]
    rows = ops.convert_to_tensor(interpolation_matrix(height, scale, method), images.dtype)
    columns = ops.convert_to_tensor(interpolation_matrix(width, scale, method), images.dtype)
    return ops.einsum("oh,bhwc,pw->bopc", rows, images, columns)


@keras.saving.register_keras_serializable(package="keras_ldm")
class SpatialRescaler(keras.layers.Layer):
    """A spatial condition `(B, H, W, in_channels)` -> `(B, H * m^n, W * m^n, out_channels)`, CompVis'
    `SpatialRescaler` (channels-last): `n_stages` resizes by `multiplier`, then a 1x1 convolution to
    `out_channels` (none when `out_channels` is None).

    The released semantic-synthesis models use `SpatialRescaler(n_stages=2, in_channels=182,
    out_channels=3)`: a one-hot map of 182 COCO-Stuff classes, brought to the f=4 latent size, mapped to
    3 channels and concatenated to the latents. Integer label maps `(B, H, W)` are one-hot encoded
    (`in_channels` classes) first.

    Example:
    >>> rescaler = SpatialRescaler(n_stages=2, in_channels=5, out_channels=3)
    >>> tuple(rescaler(np.zeros((1, 16, 16), "int32")).shape)
    (1, 4, 4, 3)
    """

    def __init__(
        self, n_stages=1, method="bilinear", multiplier=0.5, in_channels=3, out_channels=None, bias=False,
        **kwargs,
    ):  # fmt: skip
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"method={method!r}; expected one of {METHODS} (PyTorch's interpolate modes).")
        if not (isinstance(n_stages, int) and n_stages >= 0):
            raise ValueError(f"n_stages={n_stages!r}; expected an int >= 0.")
        if not multiplier > 0:
            raise ValueError(f"multiplier={multiplier!r}; expected a number > 0.")
        self.n_stages, self.method, self.multiplier = n_stages, method, float(multiplier)
        self.in_channels, self.out_channels, self.bias = in_channels, out_channels, bias
        self.channel_mapper = None
        if out_channels is not None:
            self.channel_mapper = keras.layers.Conv2D(out_channels, 1, use_bias=bias, name="channel_mapper")

    @property
    def channels(self):
        """Channels of the output: `out_channels`, or `in_channels` without a channel mapper."""
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def num_classes(self):
        """Classes of an integer label map (its one-hot encoding has `in_channels` channels)."""
        return self.in_channels

    def build(self, input_shape=None):
        if self.channel_mapper is not None:
            self.channel_mapper.build((None, None, None, self.in_channels))

    def call(self, condition):
        condition = one_hot_maps(condition, self.in_channels)
        for _ in range(self.n_stages):
            condition = resize_like_torch(condition, self.multiplier, self.method)
        return condition if self.channel_mapper is None else self.channel_mapper(condition)

    def compute_output_shape(self, input_shape):
        scale = self.multiplier**self.n_stages
        size = [None if s is None else int(s * scale) for s in input_shape[1:3]]
        return (input_shape[0], *size, self.channels)

    def get_config(self):
        return {
            **super().get_config(),
            "n_stages": self.n_stages,
            "method": self.method,
            "multiplier": self.multiplier,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "bias": self.bias,
        }


def one_hot_maps(maps, num_classes):
    """Integer label maps `(B, H, W)` -> one-hot float32 `(B, H, W, num_classes)`; float maps with
    `num_classes` channels pass through (cast to float32).

    Example:
    >>> keras.ops.convert_to_numpy(one_hot_maps(np.array([[[0, 2]]]), 3)).tolist()
    [[[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]]
    """
    if "int" in str(maps.dtype):
        return ops.one_hot(ops.cast(maps, "int32"), num_classes, dtype="float32")
    return ops.cast(maps, "float32")
