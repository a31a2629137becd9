"""Backend-agnostic building blocks (keras.ops only, channels-last, serializable)."""

from keras_ldm.layers.attention import (
    AttnBlock,
    BasicTransformerBlock,
    CrossAttention,
    GEGLUFeedForward,
    SpatialTransformer,
)
from keras_ldm.layers.distributions import DiagonalGaussian
from keras_ldm.layers.embeddings import TimestepEmbedding, timestep_embedding
from keras_ldm.layers.quantizer import VectorQuantizer
from keras_ldm.layers.resnet import Downsample, ResBlock, Upsample

__all__ = [
    "AttnBlock",
    "BasicTransformerBlock",
    "CrossAttention",
    "DiagonalGaussian",
    "Downsample",
    "GEGLUFeedForward",
    "ResBlock",
    "SpatialTransformer",
    "TimestepEmbedding",
    "Upsample",
    "VectorQuantizer",
    "timestep_embedding",
]
