"""LDMBert: the text encoder τ of the LDM text-to-image model (diffusers `LDMBertModel`).

Token ids `(B, L)` -> learned token + position embeddings -> `encoder_layers` pre-LayerNorm transformer
layers (self-attention, feed-forward) -> final LayerNorm -> `(B, L, d_model)`, the cross-attention context
of the UNet.
"""

import keras
from keras import ops

from keras_ldm.layers.attention import multi_head_attention
from keras_ldm.layers.normalization import layer_norm

# Hugging Face activation names (`ACT2FN`) and the functions they stand for.
ACTIVATIONS = {
    "gelu": lambda x: ops.gelu(x, approximate=False),
    "gelu_new": lambda x: ops.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: ops.gelu(x, approximate=True),
    "relu": ops.relu,
    "silu": ops.silu,
    "swish": ops.silu,
}


def check_activation(name):
    """Require `name` to be one of the supported Hugging Face activation names."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"activation_function={name!r} is not supported; expected one of {sorted(ACTIVATIONS)}."
        )


def padded_self_attention(query, key, value, num_heads, padding_mask=None):
    """Multi-head self-attention in which no query attends to a padding position.

    Args:
        query, key, value: `(B, L, num_heads * head_dim)` projections.
        num_heads: number of attention heads.
        padding_mask: optional `(B, L)`, true (or 1) for real tokens, false (or 0) for padding.

    Example:
    >>> x = keras.ops.ones((2, 5, 16))
    >>> mask = keras.ops.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    >>> tuple(padded_self_attention(x, x, x, num_heads=2, padding_mask=mask).shape)
    (2, 5, 16)
    """
    mask = None if padding_mask is None else ops.cast(padding_mask, "bool")[:, None, None, :]
    return multi_head_attention(query, key, value, num_heads, mask=mask)  # mask: (B, heads, queries, keys)


def _normal(stddev):
    return keras.initializers.RandomNormal(stddev=stddev)


@keras.saving.register_keras_serializable(package="keras_ldm")
class LDMBertEncoderLayer(keras.layers.Layer):
    """`x + Attention(LN(x))`, then `x + fc2(act(fc1(LN(x))))`, as in diffusers' `LDMBertEncoderLayer`.

    The q/k/v projections have no bias, the output projection has one; attention logits are scaled by
    `head_dim ** -0.5`. `num_heads * head_dim` need not equal the model width.

    Args:
        num_heads: attention heads.
        head_dim: width of each head.
        ffn_dim: hidden width of the feed-forward.
        activation_function: Hugging Face activation name (`"gelu"` is the exact, erf-based GELU).
        dropout: dropout on the attention and feed-forward outputs (training only).
        activation_dropout: dropout after the feed-forward activation (training only).
        init_std: standard deviation of the normal initializer of the projections.

    Example:
    >>> layer = LDMBertEncoderLayer(num_heads=2, head_dim=8, ffn_dim=64)
    >>> tuple(layer(keras.ops.ones((1, 5, 32))).shape)
    (1, 5, 32)
    """

    def __init__(
        self,
        num_heads,
        head_dim,
        ffn_dim,
        activation_function="gelu",
        dropout=0.0,
        activation_dropout=0.0,
        init_std=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_activation(activation_function)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.ffn_dim = ffn_dim
        self.activation_function = activation_function
        self.dropout_rate = dropout
        self.activation_dropout_rate = activation_dropout
        self.init_std = init_std
        self.self_attn_layer_norm = layer_norm(name="self_attn_layer_norm")
        self.final_layer_norm = layer_norm(name="final_layer_norm")
        self.dropout = keras.layers.Dropout(dropout)
        self.activation_dropout = keras.layers.Dropout(activation_dropout)

    def _dense(self, units, name, use_bias=True):
        return keras.layers.Dense(
            units, use_bias=use_bias, kernel_initializer=_normal(self.init_std), name=name
        )

    def build(self, input_shape):
        width, inner = input_shape[-1], self.num_heads * self.head_dim
        tokens = (None, None, width)
        self.q_proj = self._dense(inner, "q_proj", use_bias=False)
        self.k_proj = self._dense(inner, "k_proj", use_bias=False)
        self.v_proj = self._dense(inner, "v_proj", use_bias=False)
        self.out_proj = self._dense(width, "out_proj")
        self.fc1 = self._dense(self.ffn_dim, "fc1")
        self.fc2 = self._dense(width, "fc2")
        for layer in (
            self.self_attn_layer_norm,
            self.final_layer_norm,
            self.q_proj,
            self.k_proj,
            self.v_proj,
        ):
            layer.build(tokens)
        self.out_proj.build((None, None, inner))
        self.fc1.build(tokens)
        self.fc2.build((None, None, self.ffn_dim))

    def _attention(self, x, padding_mask):
        h = self.self_attn_layer_norm(x)
        h = padded_self_attention(
            self.q_proj(h), self.k_proj(h), self.v_proj(h), self.num_heads, padding_mask
        )
        return self.out_proj(h)

    def _feed_forward(self, x, training):
        h = ACTIVATIONS[self.activation_function](self.fc1(self.final_layer_norm(x)))
        return self.fc2(self.activation_dropout(h, training=training))

    def call(self, x, padding_mask=None, training=None):
        x = x + ops.cast(self.dropout(self._attention(x, padding_mask), training=training), x.dtype)
        return x + ops.cast(self.dropout(self._feed_forward(x, training), training=training), x.dtype)

    def compute_output_shape(self, input_shape, padding_mask_shape=None):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "head_dim": self.head_dim,
            "ffn_dim": self.ffn_dim,
            "activation_function": self.activation_function,
            "dropout": self.dropout_rate,
            "activation_dropout": self.activation_dropout_rate,
            "init_std": self.init_std,
        }


@keras.saving.register_keras_serializable(package="keras_ldm")
class LDMBertEncoder(keras.Model):
    """The LDM text encoder: BERT word-piece ids `(B, L)` -> context `(B, L, d_model)`.

    Same layers and maths as diffusers' `LDMBertModel` (its `last_hidden_state`); the constructor
    arguments mirror `LDMBertConfig`, and the defaults are the 32-layer encoder of CompVis'
    txt2img-1p4B model. Dropout acts only when `training=True`.

    Args:
        vocab_size: size of the token-embedding table.
        max_position_embeddings: longest sequence (the learned position table); LDM pads prompts to 77.
        encoder_layers: number of transformer layers.
        encoder_ffn_dim: hidden width of each feed-forward.
        encoder_attention_heads: attention heads per layer.
        head_dim: width of each head (`heads * head_dim` need not equal `d_model`).
        d_model: width of the embeddings and of the output.
        activation_function: feed-forward activation (Hugging Face name; `"gelu"` is the exact GELU).
        dropout: dropout on the embeddings and on each residual branch (training only).
        activation_dropout: dropout after the feed-forward activation (training only).
        init_std: standard deviation of the normal initializer of embeddings and projections.

    Call args:
        token_ids: int tensor `(B, L)`, `L <= max_position_embeddings`.
        padding_mask: optional `(B, L)`, 1 for real tokens and 0 for padding (diffusers' `attention_mask`);
            padding positions are then not attended to. The LDM pipeline passes none.

    Example:
    >>> encoder = LDMBertEncoder(vocab_size=100, encoder_layers=2, encoder_ffn_dim=64,
    ...                          encoder_attention_heads=4, head_dim=8, d_model=32)
    >>> tuple(encoder(keras.ops.zeros((2, 77), dtype="int32")).shape)
    (2, 77, 32)
    """

    def __init__(
        self,
        vocab_size=30522,
        max_position_embeddings=77,
        encoder_layers=32,
        encoder_ffn_dim=5120,
        encoder_attention_heads=8,
        head_dim=64,
        d_model=1280,
        activation_function="gelu",
        dropout=0.1,
        activation_dropout=0.0,
        init_std=0.02,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_activation(activation_function)
        self.architecture = {
            "vocab_size": vocab_size,
            "max_position_embeddings": max_position_embeddings,
            "encoder_layers": encoder_layers,
            "encoder_ffn_dim": encoder_ffn_dim,
            "encoder_attention_heads": encoder_attention_heads,
            "head_dim": head_dim,
            "d_model": d_model,
            "activation_function": activation_function,
            "dropout": dropout,
            "activation_dropout": activation_dropout,
            "init_std": init_std,
        }
        self.max_position_embeddings = max_position_embeddings
        self.d_model = d_model
        self.embed_tokens = keras.layers.Embedding(
            vocab_size, d_model, embeddings_initializer=_normal(init_std), name="embed_tokens"
        )
        self.embed_positions = keras.layers.Embedding(
            max_position_embeddings, d_model, embeddings_initializer=_normal(init_std), name="embed_positions"
        )
        self.embedding_dropout = keras.layers.Dropout(dropout)
        self.transformer_layers = [
            LDMBertEncoderLayer(
                encoder_attention_heads,
                head_dim,
                encoder_ffn_dim,
                activation_function,
                dropout,
                activation_dropout,
                init_std,
                name=f"layers_{i}",
            )
            for i in range(encoder_layers)
        ]
        self.layer_norm = layer_norm(name="layer_norm")
        self.build()

    def build(self, input_shape=None):
        self.embed_tokens.build((None, None))
        self.embed_positions.build((None,))
        for layer in self.transformer_layers:
            layer.build((None, None, self.d_model))
        self.layer_norm.build((None, None, self.d_model))
        self.built = True

    def _check_inputs(self, token_ids, padding_mask):
        shape = tuple(token_ids.shape)
        if len(shape) != 2:
            raise ValueError(f"`token_ids` must have rank 2 (batch, length); got shape {shape}.")
        dtype = keras.backend.standardize_dtype(token_ids.dtype)
        if not dtype.startswith(("int", "uint")):
            raise TypeError(f"`token_ids` must hold integer token ids; got dtype {dtype}.")
        length = shape[1]
        if isinstance(length, int) and length > self.max_position_embeddings:
            raise ValueError(
                f"`token_ids` has length {length} (shape {shape}); at most "
                f"max_position_embeddings={self.max_position_embeddings} tokens are allowed."
            )
        if padding_mask is not None and tuple(padding_mask.shape) != shape:
            raise ValueError(
                f"`padding_mask` has shape {tuple(padding_mask.shape)}; expected the shape of "
                f"`token_ids`, {shape}."
            )

    def _embed(self, token_ids, training):
        positions = ops.arange(ops.shape(token_ids)[1])
        h = self.embed_tokens(token_ids) + self.embed_positions(positions)[None]
        return self.embedding_dropout(h, training=training)

    def call(self, token_ids, padding_mask=None, training=None):
        """`token_ids` `(B, L)` (and an optional `padding_mask` `(B, L)`) -> `(B, L, d_model)`."""
        token_ids = ops.convert_to_tensor(token_ids)
        padding_mask = None if padding_mask is None else ops.convert_to_tensor(padding_mask)
        self._check_inputs(token_ids, padding_mask)
        h = self._embed(token_ids, training)
        for layer in self.transformer_layers:
            h = layer(h, padding_mask=padding_mask, training=training)
        return self.layer_norm(h)

    def compute_output_shape(self, token_ids_shape, padding_mask_shape=None):
        return (*tuple(token_ids_shape), self.d_model)

    def get_config(self):
        return {**super().get_config(), **self.architecture}
