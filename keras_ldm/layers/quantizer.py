"""Vector quantisation with a learned codebook (the VQ-regularised first stage)."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ldm")
class VectorQuantizer(keras.layers.Layer):
    """Replaces each latent vector by its nearest codebook entry (straight-through gradient).

    Returns a dict with `quantized` (same shape as the input), `loss` (the codebook and
    commitment terms), `indices` (`(B, H, W)` ints) and `perplexity`. With `legacy=True`
    (CompVis' default) the loss is `||sg[z_q] - z||^2 + beta * ||z_q - sg[z]||^2`;
    `legacy=False` puts `beta` on the first (commitment) term as in the VQ-VAE paper.

    Args:
        n_embed: codebook size.
        embed_dim: width of each code.
        beta: commitment weight.
        legacy: which term `beta` multiplies, see above.
        remap: optional list (or `.npy` path) of the codebook indices that are used;
            `indices` are then positions in that list.
        unknown_index: with `remap`, what an unused index maps to: `"extra"` (one past
            the end of `remap`) or an int.

    Example:
    >>> vq = VectorQuantizer(16, 4)
    >>> out = vq(keras.ops.ones((1, 2, 2, 4)))
    >>> tuple(out["quantized"].shape), tuple(out["indices"].shape)
    ((1, 2, 2, 4), (1, 2, 2))
    """

    def __init__(
        self, n_embed, embed_dim, beta=0.25, legacy=True, remap=None, unknown_index="extra", **kwargs
    ):
        super().__init__(**kwargs)
        if isinstance(remap, str):
            remap = np.load(remap).tolist()
        if unknown_index != "extra" and not isinstance(unknown_index, int):
            raise ValueError(f"unknown_index={unknown_index!r}; expected 'extra' or an int.")
        self.n_embed = n_embed
        self.embed_dim = embed_dim
        self.beta = beta
        self.legacy = legacy
        self.remap = None if remap is None else [int(i) for i in remap]
        self.unknown_index = unknown_index

    def build(self, input_shape=None):
        if input_shape is not None and input_shape[-1] != self.embed_dim:
            raise ValueError(
                f"VectorQuantizer input has {input_shape[-1]} channels; expected embed_dim={self.embed_dim}."
            )
        bound = 1.0 / self.n_embed
        self.embeddings = self.add_weight(
            shape=(self.n_embed, self.embed_dim),
            initializer=keras.initializers.RandomUniform(-bound, bound),
            name="embeddings",
        )

    def nearest_indices(self, z):
        """Index of the closest code for every vector of `z` `(..., embed_dim)`."""
        flat = ops.reshape(z, (-1, self.embed_dim))
        codebook = ops.cast(self.embeddings, flat.dtype)
        distances = (
            ops.sum(ops.square(flat), axis=1, keepdims=True)
            + ops.sum(ops.square(codebook), axis=1)[None, :]
            - 2.0 * ops.matmul(flat, ops.transpose(codebook))
        )
        return ops.reshape(ops.argmin(distances, axis=1), ops.shape(z)[:-1])

    def lookup(self, indices):
        """Codebook vectors for `indices` (positions in `remap` when it is set)."""
        indices = self._unmap(indices) if self.remap is not None else indices
        return ops.take(self.embeddings, ops.cast(indices, "int32"), axis=0)

    def call(self, z):
        z = ops.cast(z, "float32")
        indices = self.nearest_indices(z)
        z_q = ops.take(ops.cast(self.embeddings, "float32"), indices, axis=0)
        commitment = ops.mean(ops.square(ops.stop_gradient(z_q) - z))
        codebook = ops.mean(ops.square(z_q - ops.stop_gradient(z)))
        loss = commitment + self.beta * codebook if self.legacy else self.beta * commitment + codebook
        quantized = z + ops.stop_gradient(z_q - z)
        usage = ops.mean(ops.one_hot(ops.reshape(indices, (-1,)), self.n_embed), axis=0)
        perplexity = ops.exp(-ops.sum(usage * ops.log(usage + 1e-10)))
        if self.remap is not None:
            indices = self._map(indices)
        return {"quantized": quantized, "loss": loss, "indices": indices, "perplexity": perplexity}

    def _map(self, indices):
        used = ops.array(self.remap, dtype="int32")
        matches = ops.cast(indices, "int32")[..., None] == used
        position = ops.argmax(ops.cast(matches, "int32"), axis=-1)
        unknown = len(self.remap) if self.unknown_index == "extra" else self.unknown_index
        return ops.where(ops.any(matches, axis=-1), position, unknown)

    def _unmap(self, indices):
        indices = ops.cast(indices, "int32")
        indices = ops.where(indices >= len(self.remap), 0, indices)  # unknown slots decode as remap[0]
        return ops.take(ops.array(self.remap, dtype="int32"), indices, axis=0)

    def compute_output_shape(self, input_shape):
        return {
            "quantized": input_shape,
            "loss": (),
            "indices": input_shape[:-1],
            "perplexity": (),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "n_embed": self.n_embed,
            "embed_dim": self.embed_dim,
            "beta": self.beta,
            "legacy": self.legacy,
            "remap": self.remap,
            "unknown_index": self.unknown_index,
        }
