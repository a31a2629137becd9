"""The layout encoder τ of CompVis' layout-to-image LDM: layout tokens `(B, 92)` -> context `(B, 92, 512)`.

CompVis conditions layout2img-openimages256 on `BERTEmbedder(n_embed=512, n_layer=16, vocab_size=8192,
max_seq_len=92, use_tokenizer=False)` (`ldm/modules/encoders/modules.py`), i.e. its vendored
x-transformers (`ldm/modules/x_transformer.py`) `TransformerWrapper(num_tokens, max_seq_len,
attn_layers=Encoder(dim, depth), emb_dropout)` called with `return_embeddings=True`:

- `token_emb(x) + pos_emb(x)`: a learned absolute position table (`AbsolutePositionalEmbedding`, no
  scaling of either embedding), `project_emb` the identity (`emb_dim == dim`);
- `depth` pre-norm blocks (`pre_norm=True`, layer types `('a', 'f') * depth`): `x + to_out(attn(LN(x)))`
  with `heads = 8` × `dim_head = 64`, `to_q/to_k/to_v` without bias, logits scaled by `dim_head ** -0.5`,
  softmax, `to_out` a Linear with bias; then `x + Linear(GELU(Linear(LN(x))))`, hidden `4 · dim`,
  `nn.GELU()` (exact, erf);
- a final `nn.LayerNorm(dim)` (`norm`); every LayerNorm has PyTorch's eps 1e-5. No logits head.

That is LDMBert's maths exactly (the CompVis text encoder is the same `BERTEmbedder`), so `LayoutEncoder`
is an `LDMBertEncoder` with CompVis' arguments; `keras_ldm.convert.layout_encoder` loads its weights
from a CompVis state dict.
"""

import keras

from keras_ldm.models.text_encoder import LDMBertEncoder


def _check_sizes(**sizes):
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int; got {value!r}.")


@keras.saving.register_keras_serializable(package="keras_ldm")
class LayoutEncoder(LDMBertEncoder):
    """CompVis' `BERTEmbedder(use_tokenizer=False)` over layout tokens: `(B, L)` ints -> `(B, L, n_embed)`.

    The defaults are layout2img-openimages256's (8192 tokens, 92 positions, 512 wide, 16 layers). No
    dropout: CompVis' encoder has none but `embedding_dropout`, 0 by default.

    Args:
        vocab_size: token vocabulary (`LayoutTokenizer.num_tokens`, CompVis `vocab_size`).
        max_length: learned positions (`LayoutTokenizer.sequence_length`, CompVis `max_seq_len`).
        n_embed: width of the embeddings and of the output (CompVis `n_embed`).
        n_layer: transformer blocks (CompVis `n_layer`).
        heads: attention heads (x-transformers default 8).
        dim_head: width of each head (x-transformers default 64).
        ff_mult: feed-forward hidden width over `n_embed` (x-transformers default 4).

    Call args:
        token_ids: int tensor `(B, L)`, `L <= max_length`, ids below `vocab_size`.

    Example:
    >>> encoder = LayoutEncoder(vocab_size=100, max_length=11, n_embed=32, n_layer=2, heads=2, dim_head=16)
    >>> tuple(encoder(keras.ops.zeros((2, 11), dtype="int32")).shape)
    (2, 11, 32)
    """

    def __init__(
        self,
        vocab_size=8192,
        max_length=92,
        n_embed=512,
        n_layer=16,
        heads=8,
        dim_head=64,
        ff_mult=4,
        **kwargs,
    ):
        _check_sizes(
            vocab_size=vocab_size,
            max_length=max_length,
            n_embed=n_embed,
            n_layer=n_layer,
            heads=heads,
            dim_head=dim_head,
            ff_mult=ff_mult,
        )
        super().__init__(
            vocab_size=vocab_size,
            max_position_embeddings=max_length,
            encoder_layers=n_layer,
            encoder_ffn_dim=ff_mult * n_embed,
            encoder_attention_heads=heads,
            head_dim=dim_head,
            d_model=n_embed,
            activation_function="gelu",
            dropout=0.0,
            activation_dropout=0.0,
            **kwargs,
        )
        self.layout_architecture = {
            "vocab_size": vocab_size,
            "max_length": max_length,
            "n_embed": n_embed,
            "n_layer": n_layer,
            "heads": heads,
            "dim_head": dim_head,
            "ff_mult": ff_mult,
        }

    def get_config(self):
        config = super().get_config()
        base = {key: config[key] for key in ("name", "trainable", "dtype") if key in config}
        return {**base, **self.layout_architecture}
