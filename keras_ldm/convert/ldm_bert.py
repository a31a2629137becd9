"""Load the LDM text encoder and its tokenizer from Hugging Face folders, without PyTorch.

`ldm_bert_from_diffusers` reads a folder written by `LDMBertModel.save_pretrained(folder,
safe_serialization=True)` (the `bert/` folder of `CompVis/ldm-text2im-large-256`): `config.json` plus
`model.safetensors` (or a sharded index), with the safetensors numpy API. `tokenizer_from_diffusers`
reads the `tokenizer/` folder (`vocab.txt`, or the `tokenizer.json` that transformers 5 writes).
"""

import json
import os

from keras_ldm.backend.fast_build import random_init_skipped
from keras_ldm.convert.tensors import assign_weights, dense, norm, read_safetensors
from keras_ldm.models.text_encoder import LDMBertEncoder
from keras_ldm.models.tokenizer import LDMBertTokenizer

WEIGHTS_NAME = "model.safetensors"
CONFIG_KEYS = (
    "vocab_size",
    "max_position_embeddings",
    "encoder_layers",
    "encoder_ffn_dim",
    "encoder_attention_heads",
    "head_dim",
    "d_model",
    "activation_function",
    "dropout",
    "activation_dropout",
    "init_std",
)
# LDMBertModel's language-model head: saved with the encoder, never used by its forward pass.
UNUSED_TENSORS = ("to_logits.weight", "to_logits.bias")


def ldm_bert_from_diffusers(path, dtype=None):
    """Returns the `LDMBertEncoder` of a folder written by diffusers' `LDMBertModel.save_pretrained`.

    Args:
        path: folder with `config.json` and `model.safetensors` (or `model.safetensors.index.json`).
        dtype: optional Keras dtype policy for the model (e.g. `"float32"`, `"mixed_bfloat16"`).

    Example:
    >>> encoder = ldm_bert_from_diffusers("ldm-text2im-large-256/bert")  # doctest: +SKIP
    """
    config = read_ldm_bert_config(path)
    kwargs = encoder_kwargs(config)
    if dtype is not None:
        kwargs["dtype"] = dtype
    with random_init_skipped():
        model = LDMBertEncoder(**kwargs)
    tensors = read_safetensors(
        path, WEIGHTS_NAME, "LDMBertModel.save_pretrained(folder, safe_serialization=True)"
    )
    assign_weights(weight_map(model, _key_prefix(tensors)), tensors, source=path, unused=UNUSED_TENSORS)
    return model


def read_ldm_bert_config(path):
    """The parsed `config.json` of an `LDMBertModel` folder (with a clear error otherwise)."""
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(
            f"path={path!r} is not an LDMBert folder: expected a directory with config.json and "
            f"{WEIGHTS_NAME} (as written by LDMBertModel.save_pretrained(..., safe_serialization=True))."
        )
    with open(config_path) as f:
        config = json.load(f)
    if config.get("model_type") != "ldmbert":
        raise ValueError(f"{config_path} has model_type={config.get('model_type')!r}; expected 'ldmbert'.")
    return config


def encoder_kwargs(config):
    """`LDMBertEncoder` arguments from an `LDMBertConfig` dict (missing keys keep their defaults).

    `attention_dropout`, `encoder_layerdrop` and `scale_embedding` are not carried over: the first two
    act only in training, and diffusers' encoder never reads `scale_embedding`.

    Example:
    >>> encoder_kwargs({"model_type": "ldmbert", "d_model": 32, "encoder_layers": 2, "use_cache": True})
    {'encoder_layers': 2, 'd_model': 32}
    """
    return {key: config[key] for key in CONFIG_KEYS if key in config}


def _key_prefix(tensors):
    """`"model."` for an `LDMBertModel` checkpoint, `""` for a bare `LDMBertEncoder` one."""
    return "model." if any(key.startswith("model.") for key in tensors) else ""


def _encoder_layer(layer, key):
    yield from norm(layer.self_attn_layer_norm, f"{key}.self_attn_layer_norm")
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        yield from dense(getattr(layer, name), f"{key}.self_attn.{name}")
    yield from norm(layer.final_layer_norm, f"{key}.final_layer_norm")
    yield from dense(layer.fc1, f"{key}.fc1")
    yield from dense(layer.fc2, f"{key}.fc2")


def weight_map(model, prefix="model."):
    """(keras variable, Hugging Face key, layout) for every weight of an `LDMBertEncoder`.

    Example:
    >>> encoder = LDMBertEncoder(vocab_size=10, encoder_layers=1, encoder_ffn_dim=8,
    ...                          encoder_attention_heads=2, head_dim=4, d_model=8)
    >>> [key for _, key, _ in weight_map(encoder)][2:4]
    ['model.layers.0.self_attn_layer_norm.weight', 'model.layers.0.self_attn_layer_norm.bias']
    """
    entries = [
        (model.embed_tokens.embeddings, f"{prefix}embed_tokens.weight", "matrix"),
        (model.embed_positions.embeddings, f"{prefix}embed_positions.weight", "matrix"),
    ]
    for i, layer in enumerate(model.transformer_layers):
        entries.extend(_encoder_layer(layer, f"{prefix}layers.{i}"))
    entries.extend(norm(model.layer_norm, f"{prefix}layer_norm"))
    return entries


def _tokenizer_json_vocabulary(path):
    with open(path, encoding="utf-8") as f:
        model = json.load(f)["model"]
    if model.get("type") != "WordPiece":
        raise ValueError(f"{path} holds a {model.get('type')!r} tokenizer; expected a WordPiece (BERT) one.")
    pieces = sorted(model["vocab"], key=model["vocab"].get)
    if [model["vocab"][piece] for piece in pieces] != list(range(len(pieces))):
        raise ValueError(f"{path}: the WordPiece ids are not 0..{len(pieces) - 1}.")
    return pieces


def tokenizer_from_diffusers(path, sequence_length=77):
    """Returns the `LDMBertTokenizer` of a saved transformers `BertTokenizer` folder.

    Reads `vocab.txt` (or the WordPiece vocabulary of `tokenizer.json`) and the casing options of
    `tokenizer_config.json`.

    Args:
        path: the tokenizer folder (e.g. the `tokenizer/` folder of `CompVis/ldm-text2im-large-256`).
        sequence_length: length of every tokenized prompt (the LDM pipeline pads to 77).

    Example:
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "vocab.txt"), "w") as f:
    ...     _ = f.write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "red", "circle"]))
    >>> tokenizer = tokenizer_from_diffusers(folder)
    >>> tuple(tokenizer("A red circle").shape)
    (1, 77)
    """
    vocab_path, json_path = os.path.join(path, "vocab.txt"), os.path.join(path, "tokenizer.json")
    if os.path.isfile(vocab_path):
        vocabulary = vocab_path
    elif os.path.isfile(json_path):
        vocabulary = _tokenizer_json_vocabulary(json_path)
    else:
        raise ValueError(
            f"path={path!r} is not a BertTokenizer folder: expected vocab.txt or tokenizer.json in it."
        )
    options = {}
    config_path = os.path.join(path, "tokenizer_config.json")
    if os.path.isfile(config_path):
        with open(config_path) as f:
            config = json.load(f)
        options = {
            "lowercase": config.get("do_lower_case", True),
            "strip_accents": config.get("strip_accents"),
        }
    return LDMBertTokenizer(vocabulary, sequence_length=sequence_length, **options)
