"""Load CompVis' layout encoder (`cond_stage_model`, a `BERTEmbedder`) weights into a `LayoutEncoder`.

The state dict of layout2img-openimages256 (as `keras_ldm.convert.compvis.load_state_dict` reads it:
numpy arrays) names the x-transformers modules directly: `transformer.token_emb`, `transformer.pos_emb.emb`,
`transformer.attn_layers.layers.{j}` (even `j`: attention, odd `j`: feed-forward, each
`[LayerNorm, block, Residual]`), `transformer.norm`, and the unused `transformer.to_logits` head. The
weight map below pairs them with the Keras variables; torch Linear `(out, in)` weights are transposed.
"""

from keras_ldm.backend.fast_build import random_init_skipped
from keras_ldm.convert.tensors import assign_weights, dense, norm
from keras_ldm.models.layout_encoder import LayoutEncoder

COND_STAGE_PREFIX = "cond_stage_model."
ATTENTION_NAMES = (("q_proj", "to_q"), ("k_proj", "to_k"), ("v_proj", "to_v"), ("out_proj", "to_out"))


def layout_encoder_kwargs(params):
    """`LayoutEncoder` arguments of a CompVis `BERTEmbedder` config's `params`.

    Example:
    >>> layout_encoder_kwargs({"n_embed": 512, "n_layer": 16, "vocab_size": 8192, "max_seq_len": 92})
    {'vocab_size': 8192, 'max_length': 92, 'n_embed': 512, 'n_layer': 16}
    """
    return {
        "vocab_size": params.get("vocab_size", 30522),
        "max_length": params.get("max_seq_len", 77),
        "n_embed": params["n_embed"],
        "n_layer": params["n_layer"],
    }


def _block_entries(layer, attention, feed_forward):
    """Entries of one `LDMBertEncoderLayer`: CompVis `layers.{2i}` (attention) and `layers.{2i+1}`."""
    yield from norm(layer.self_attn_layer_norm, f"{attention}.0")
    for ours, theirs in ATTENTION_NAMES:
        yield from dense(getattr(layer, ours), f"{attention}.1.{theirs}")
    yield from norm(layer.final_layer_norm, f"{feed_forward}.0")
    yield from dense(layer.fc1, f"{feed_forward}.1.net.0.0")
    yield from dense(layer.fc2, f"{feed_forward}.1.net.2")


def compvis_weight_map(encoder, prefix=COND_STAGE_PREFIX):
    """(keras variable, CompVis key, layout) for every weight of a `LayoutEncoder` (or `LDMBertEncoder`).

    Example:
    >>> encoder = LayoutEncoder(vocab_size=10, max_length=5, n_embed=8, n_layer=1, heads=2, dim_head=4)
    >>> [key for _, key, _ in compvis_weight_map(encoder)][4]
    'cond_stage_model.transformer.attn_layers.layers.0.1.to_q.weight'
    """
    root = f"{prefix}transformer."
    entries = [
        (encoder.embed_tokens.embeddings, f"{root}token_emb.weight", "matrix"),
        (encoder.embed_positions.embeddings, f"{root}pos_emb.emb.weight", "matrix"),
    ]
    for i, layer in enumerate(encoder.transformer_layers):
        layers = f"{root}attn_layers.layers"
        entries.extend(_block_entries(layer, f"{layers}.{2 * i}", f"{layers}.{2 * i + 1}"))
    entries.extend(norm(encoder.layer_norm, f"{root}norm"))
    return entries


def layout_encoder_weights_from_compvis(state_dict, encoder, prefix=COND_STAGE_PREFIX):
    """Assigns the `prefix`ed `BERTEmbedder` tensors of a CompVis state dict to `encoder`; returns it.

    Args:
        state_dict: `{key: numpy array}`, the whole checkpoint or only its conditioning encoder; keys
            outside `prefix` are ignored.
        encoder: a `LayoutEncoder` whose sizes match the checkpoint's.
        prefix: the encoder's key prefix (`""` for a bare `BERTEmbedder` state dict).

    Every weight must be present and of the right shape, and no tensor under `prefix` may be left over
    (but the unused `to_logits` head): a `ValueError` says which.

    Example:
    >>> state = load_state_dict("layout2img-openimages256/model.ckpt")  # doctest: +SKIP
    >>> encoder = layout_encoder_weights_from_compvis(state, LayoutEncoder())  # doctest: +SKIP
    """
    tensors = {key: value for key, value in state_dict.items() if key.startswith(prefix)}
    unused = (f"{prefix}transformer.to_logits.weight", f"{prefix}transformer.to_logits.bias")
    assign_weights(compvis_weight_map(encoder, prefix), tensors, "CompVis layout encoder", unused=unused)
    return encoder


def layout_encoder_from_compvis(state_dict, params, prefix=COND_STAGE_PREFIX, dtype=None):
    """A `LayoutEncoder` built from the `BERTEmbedder` config `params`, with the state dict's weights.

    Example:
    >>> params = {"n_embed": 512, "n_layer": 16, "vocab_size": 8192, "max_seq_len": 92}
    >>> encoder = layout_encoder_from_compvis(state, params)  # doctest: +SKIP
    """
    kwargs = layout_encoder_kwargs(params)
    if dtype is not None:
        kwargs["dtype"] = dtype
    with random_init_skipped():
        encoder = LayoutEncoder(**kwargs)
    return layout_encoder_weights_from_compvis(state_dict, encoder, prefix)
