"""Sinusoidal timestep embeddings and the UNet's timestep MLP."""

import math

import keras
from keras import ops


def timestep_embedding(timesteps, dim, flip_sin_to_cos=True, freq_shift=0.0, max_period=10000.0):
    """Sinusoidal embedding of (possibly fractional) timesteps, shape `(B,) -> (B, dim)`.

    `freq_k = exp(-log(max_period) * k / (half - freq_shift))`; the output is
    `[sin, cos]`, or `[cos, sin]` when `flip_sin_to_cos` (CompVis' layout).

    Example:
    >>> tuple(timestep_embedding(keras.ops.array([0, 10, 999]), 8).shape)
    (3, 8)
    """
    half = dim // 2
    exponent = -math.log(max_period) * ops.arange(half, dtype="float32") / (half - freq_shift)
    angles = ops.cast(ops.reshape(timesteps, (-1, 1)), "float32") * ops.exp(exponent)[None]
    sin, cos = ops.sin(angles), ops.cos(angles)
    embedding = ops.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        embedding = ops.pad(embedding, ((0, 0), (0, 1)))
    return embedding


@keras.saving.register_keras_serializable(package="keras_ldm")
class TimestepEmbedding(keras.layers.Layer):
    """Sinusoidal features of `t` followed by Linear-SiLU-Linear (the UNet's `time_embed`).

    Args:
        input_dim: width of the sinusoidal features (CompVis: `model_channels`).
        embed_dim: output width (CompVis: `4 * model_channels`).
        flip_sin_to_cos, freq_shift: sinusoid layout, see `timestep_embedding`.

    Example:
    >>> layer = TimestepEmbedding(32, 128)
    >>> tuple(layer(keras.ops.array([1, 500])).shape)
    (2, 128)
    """

    def __init__(self, input_dim, embed_dim, flip_sin_to_cos=True, freq_shift=0.0, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.embed_dim = embed_dim
        self.flip_sin_to_cos = flip_sin_to_cos
        self.freq_shift = freq_shift
        self.linear_1 = keras.layers.Dense(embed_dim, name="linear_1")
        self.linear_2 = keras.layers.Dense(embed_dim, name="linear_2")

    def build(self, input_shape=None):
        self.linear_1.build((None, self.input_dim))
        self.linear_2.build((None, self.embed_dim))

    def call(self, timesteps):
        features = timestep_embedding(timesteps, self.input_dim, self.flip_sin_to_cos, self.freq_shift)
        features = ops.cast(features, self.compute_dtype)
        return self.linear_2(ops.silu(self.linear_1(features)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embed_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "embed_dim": self.embed_dim,
            "flip_sin_to_cos": self.flip_sin_to_cos,
            "freq_shift": self.freq_shift,
        }
