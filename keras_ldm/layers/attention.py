"""Attention layers: the autoencoder's spatial self-attention and the UNet's SpatialTransformer."""

import functools

import keras
from keras import ops

from keras_ldm.layers.normalization import group_norm, layer_norm


def multi_head_attention(query, key, value, num_heads, mask=None):
    """Scaled dot-product attention of `(B, T, C)` tensors split into `num_heads` heads.

    Runs through `keras.ops.dot_product_attention` (flash attention where the backend has it);
    `mask` is its boolean mask, broadcastable to `(B, heads, queries, keys)`.

    Example:
    >>> x = keras.ops.ones((2, 16, 32))
    >>> tuple(multi_head_attention(x, x, x, num_heads=4).shape)
    (2, 16, 32)
    """
    batch = ops.shape(query)[0]
    out_dtype = value.dtype
    if _float16_attention_unsupported(query.dtype):
        query, key, value = (ops.cast(t, "float32") for t in (query, key, value))

    def split_heads(t):
        return ops.reshape(t, (batch, -1, num_heads, t.shape[-1] // num_heads))

    out = ops.dot_product_attention(
        split_heads(query),
        split_heads(key),
        split_heads(value),
        mask=mask,
        flash_attention=flash_attention_choice(query.shape[1], key.shape[1]),
    )
    out = ops.reshape(out, (batch, -1, num_heads * (value.shape[-1] // num_heads)))
    return ops.cast(out, out_dtype)


@functools.lru_cache(maxsize=None)
def _jax_default_platform():
    """The platform (`"cpu"`, `"gpu"`, `"tpu"`) of JAX's default device."""
    return keras.distribution.list_devices()[0].split(":")[0].lower()


def _float16_attention_unsupported(dtype):
    """Whether `ops.dot_product_attention` of `dtype` tensors must run in float32 instead.

    JAX's attention multiplies float16 queries and keys with the `F16_F16_F32` dot algorithm (float32
    logits), which XLA implements on GPUs only: on CPU (and TPU) a compiled program fails with "The
    precision 'F16_F16_F32' is not supported by dot_general on CPU". There the attention runs in float32
    and its output is cast back to float16. bfloat16, float32 and the other backends keep their dtype.

    Example:
    >>> _float16_attention_unsupported("float32")
    False
    """
    if keras.backend.standardize_dtype(dtype) != "float16" or keras.backend.backend() != "jax":
        return False
    return _jax_default_platform() != "gpu"


def flash_attention_choice(query_length, key_length):
    """The `flash_attention` argument for `ops.dot_product_attention` at these sequence lengths.

    `None` lets the backend pick a fused kernel; `False` where a sequence length is odd (such as
    the 77 text tokens of cross-attention). JAX's cuDNN flash attention rejects those shapes on
    NVIDIA GPUs (seen on an H200, JAX 0.11: Q 256/1024, KV 77), and Keras then logs a traceback
    at every trace before falling back to XLA attention; `False` goes to that fallback directly.
    PyTorch treats `False` as its default kernel choice and TensorFlow ignores the argument.
    Unknown (traced) lengths leave the choice to the backend.

    Example:
    >>> flash_attention_choice(1024, 77), flash_attention_choice(1024, 1024), flash_attention_choice(None, 64)
    (False, None, None)
    """
    lengths = (query_length, key_length)
    if any(isinstance(n, int) and n % 2 for n in lengths):
        return False
    return None


def _flatten_spatial(x):
    """`(B, H, W, C) -> (B, H*W, C)` plus the shape needed to undo it."""
    shape = ops.shape(x)
    return ops.reshape(x, (shape[0], -1, x.shape[-1])), shape


@keras.saving.register_keras_serializable(package="keras_ldm")
class AttnBlock(keras.layers.Layer):
    """Spatial self-attention over all H*W positions with a GroupNorm and a residual.

    One head is the autoencoder's mid-block attention; several heads are the attention
    blocks of a UNet without cross-attention (CompVis `AttentionBlock`).

    Args:
        num_heads: number of attention heads (channels must divide evenly).
        epsilon: GroupNorm epsilon.
        groups: GroupNorm groups.
        zero_init_out: zero-initialise the output projection (CompVis does in the UNet).

    Example:
    >>> tuple(AttnBlock()(keras.ops.ones((1, 8, 8, 64))).shape)
    (1, 8, 8, 64)
    """

    def __init__(self, num_heads=1, epsilon=1e-6, zero_init_out=False, groups=32, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.epsilon = epsilon
        self.zero_init_out = zero_init_out
        self.groups = groups
        self.group_norm = group_norm(epsilon, groups, name="group_norm")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.num_heads:
            raise ValueError(f"{channels} channels do not split into num_heads={self.num_heads}.")
        self.group_norm.build((None, None, None, channels))
        self.to_q = keras.layers.Dense(channels, name="to_q")
        self.to_k = keras.layers.Dense(channels, name="to_k")
        self.to_v = keras.layers.Dense(channels, name="to_v")
        out_init = "zeros" if self.zero_init_out else "glorot_uniform"
        self.to_out = keras.layers.Dense(channels, kernel_initializer=out_init, name="to_out")
        for layer in (self.to_q, self.to_k, self.to_v, self.to_out):
            layer.build((None, None, channels))

    def call(self, x):
        h, shape = _flatten_spatial(self.group_norm(x))
        h = multi_head_attention(self.to_q(h), self.to_k(h), self.to_v(h), self.num_heads)
        return x + ops.cast(ops.reshape(self.to_out(h), shape), x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "epsilon": self.epsilon,
            "groups": self.groups,
            "zero_init_out": self.zero_init_out,
        }


@keras.saving.register_keras_serializable(package="keras_ldm")
class CrossAttention(keras.layers.Layer):
    """Multi-head attention of `(B, T, dim)` queries over a context (itself when `context` is None).

    `Q = x W_Q, K = c W_K, V = c W_V` without biases, output projection with bias.

    Example:
    >>> attn = CrossAttention(num_heads=2, head_dim=8)
    >>> tuple(attn(keras.ops.ones((1, 5, 16)), keras.ops.ones((1, 7, 32))).shape)
    (1, 5, 16)
    """

    def __init__(self, num_heads, head_dim, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout_rate = dropout
        inner = num_heads * head_dim
        self.to_q = keras.layers.Dense(inner, use_bias=False, name="to_q")
        self.to_k = keras.layers.Dense(inner, use_bias=False, name="to_k")
        self.to_v = keras.layers.Dense(inner, use_bias=False, name="to_v")
        self.dropout = keras.layers.Dropout(dropout)

    def build(self, x_shape, context_shape=None):
        query_dim = x_shape[-1]
        context_dim = query_dim if context_shape is None else context_shape[-1]
        self.to_q.build((None, None, query_dim))
        self.to_k.build((None, None, context_dim))
        self.to_v.build((None, None, context_dim))
        self.to_out = keras.layers.Dense(query_dim, name="to_out")
        self.to_out.build((None, None, self.num_heads * self.head_dim))

    def call(self, x, context=None, training=None):
        context = x if context is None else context
        h = multi_head_attention(self.to_q(x), self.to_k(context), self.to_v(context), self.num_heads)
        return self.dropout(self.to_out(h), training=training)

    def compute_output_shape(self, x_shape, context_shape=None):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "dropout": self.dropout_rate,
        }


@keras.saving.register_keras_serializable(package="keras_ldm")
class GEGLUFeedForward(keras.layers.Layer):
    """`Linear(dim, 2*mult*dim)` -> `a * gelu(gate)` -> dropout -> `Linear(mult*dim, dim)`.

    Example:
    >>> tuple(GEGLUFeedForward()(keras.ops.ones((1, 5, 16))).shape)
    (1, 5, 16)
    """

    def __init__(self, mult=4, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mult = mult
        self.dropout_rate = dropout
        self.dropout = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        dim = input_shape[-1]
        self.proj = keras.layers.Dense(2 * self.mult * dim, name="proj")
        self.proj.build((None, None, dim))
        self.out = keras.layers.Dense(dim, name="out")
        self.out.build((None, None, self.mult * dim))

    def call(self, x, training=None):
        h, gate = ops.split(self.proj(x), 2, axis=-1)
        h = h * ops.gelu(gate, approximate=False)
        return self.out(self.dropout(h, training=training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mult": self.mult, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable(package="keras_ldm")
class BasicTransformerBlock(keras.layers.Layer):
    """LN-self-attention, LN-cross-attention over the context, LN-GEGLU feed-forward; each residual.

    Example:
    >>> block = BasicTransformerBlock(num_heads=2, head_dim=8, context_dim=32)
    >>> tuple(block(keras.ops.ones((1, 5, 16)), keras.ops.ones((1, 7, 32))).shape)
    (1, 5, 16)
    """

    def __init__(self, num_heads, head_dim, context_dim=None, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.context_dim = context_dim
        self.dropout_rate = dropout
        self.norm1 = layer_norm(name="norm1")
        self.attn1 = CrossAttention(num_heads, head_dim, dropout, name="attn1")
        self.norm2 = layer_norm(name="norm2")
        self.attn2 = CrossAttention(num_heads, head_dim, dropout, name="attn2")
        self.norm3 = layer_norm(name="norm3")
        self.ff = GEGLUFeedForward(dropout=dropout, name="ff")

    def build(self, x_shape, context_shape=None):
        dim = x_shape[-1]
        tokens = (None, None, dim)
        context = None if self.context_dim is None else (None, None, self.context_dim)
        for norm in (self.norm1, self.norm2, self.norm3):
            norm.build(tokens)
        self.attn1.build(tokens)
        self.attn2.build(tokens, context)
        self.ff.build(tokens)

    def call(self, x, context=None, training=None):
        x = x + self.attn1(self.norm1(x), training=training)
        x = x + self.attn2(self.norm2(x), context, training=training)
        return x + self.ff(self.norm3(x), training=training)

    def compute_output_shape(self, x_shape, context_shape=None):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "context_dim": self.context_dim,
            "dropout": self.dropout_rate,
        }


@keras.saving.register_keras_serializable(package="keras_ldm")
class SpatialTransformer(keras.layers.Layer):
    """GroupNorm -> proj_in -> depth x BasicTransformerBlock -> zero-initialised proj_out -> residual.

    The image `(B, H, W, C)` is attended as H*W tokens; `context` `(B, L, context_dim)` enters
    through each block's cross-attention (self-attention when `context_dim` is None).

    Args:
        num_heads, head_dim: attention heads and their width (inner width = their product).
        depth: number of transformer blocks.
        context_dim: width of the conditioning sequence, or None.
        dropout: dropout rate inside the blocks.
        epsilon: GroupNorm epsilon.
        groups: GroupNorm groups.

    Example:
    >>> st = SpatialTransformer(num_heads=2, head_dim=16, context_dim=24)
    >>> tuple(st(keras.ops.ones((1, 8, 8, 32)), keras.ops.ones((1, 5, 24))).shape)
    (1, 8, 8, 32)
    """

    def __init__(
        self, num_heads, head_dim, depth=1, context_dim=None, dropout=0.0, epsilon=1e-6, groups=32, **kwargs
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.depth = depth
        self.context_dim = context_dim
        self.dropout_rate = dropout
        self.epsilon = epsilon
        inner = num_heads * head_dim
        self.groups = groups
        self.norm = group_norm(epsilon, groups, name="norm")
        self.proj_in = keras.layers.Dense(inner, name="proj_in")
        self.transformer_blocks = [
            BasicTransformerBlock(num_heads, head_dim, context_dim, dropout, name=f"transformer_blocks_{i}")
            for i in range(depth)
        ]

    def build(self, x_shape, context_shape=None):
        channels = x_shape[-1]
        inner = self.num_heads * self.head_dim
        self.norm.build((None, None, None, channels))
        self.proj_in.build((None, None, channels))
        for block in self.transformer_blocks:
            block.build((None, None, inner))
        self.proj_out = keras.layers.Dense(channels, kernel_initializer="zeros", name="proj_out")
        self.proj_out.build((None, None, inner))

    def call(self, x, context=None, training=None):
        if self.context_dim is not None:
            if context is None:
                raise ValueError(f"SpatialTransformer with context_dim={self.context_dim} needs a `context`.")
            if context.shape[-1] != self.context_dim:
                raise ValueError(
                    f"context has width {context.shape[-1]} (shape {tuple(context.shape)}); "
                    f"expected context_dim={self.context_dim}."
                )
        h, shape = _flatten_spatial(self.norm(x))
        h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, context, training=training)
        h = ops.reshape(self.proj_out(h), shape)
        return x + ops.cast(h, x.dtype)

    def compute_output_shape(self, x_shape, context_shape=None):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "depth": self.depth,
            "context_dim": self.context_dim,
            "dropout": self.dropout_rate,
            "epsilon": self.epsilon,
            "groups": self.groups,
        }
