"""The 2D convolution of every UNet and autoencoder block."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ldm")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` that, on PyTorch, convolves channels-last inputs without copying them.

    Same weights, configuration and outputs as the Keras layer. On the torch backend, a channels-last,
    undilated, ungrouped convolution with `"valid"` padding, or `"same"` padding at stride 1 and an odd
    kernel, runs `keras_ldm.backend.torch_kernels.conv2d_channels_last` (no layout copies, bias fused);
    everything else, and every other backend, runs Keras' own.

    Example:
    >>> conv = Conv2D(8, 3, padding="same")
    >>> tuple(conv(keras.ops.ones((2, 16, 16, 4))).shape)
    (2, 16, 16, 8)
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._torch_padding = self._direct_torch_padding()

    def _direct_torch_padding(self):
        """PyTorch's `(ph, pw)` for this layer's padding, or `None` where Keras' own conv must run."""
        direct = (
            keras.backend.backend() == "torch"
            and self.data_format == "channels_last"
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
        )
        if not direct:
            return None
        if self.padding == "valid":
            return (0, 0)
        if tuple(self.strides) == (1, 1) and all(size % 2 for size in self.kernel_size):
            return tuple(size // 2 for size in self.kernel_size)
        return None

    def call(self, inputs):
        if self._torch_padding is None:
            return super().call(inputs)
        from keras_ldm.backend.torch_kernels import conv2d_channels_last

        bias = ops.convert_to_tensor(self.bias) if self.use_bias else None
        outputs = conv2d_channels_last(
            inputs, ops.convert_to_tensor(self.kernel), bias, tuple(self.strides), self._torch_padding
        )
        return outputs if self.activation is None else self.activation(outputs)


def conv2d(channels, kernel_size=3, strides=1, zero_init=False, name=None):
    """A channels-last `Conv2D`; `kernel_size` 3 uses symmetric 1-pixel zero padding at stride 1.

    Example:
    >>> tuple(conv2d(8, strides=2)(keras.ops.ones((1, 9, 9, 4))).shape)  # stride 2: "valid"
    (1, 4, 4, 8)
    """
    return Conv2D(
        channels,
        kernel_size,
        strides=strides,
        padding="same" if strides == 1 else "valid",
        kernel_initializer="zeros" if zero_init else "glorot_uniform",
        name=name,
    )
