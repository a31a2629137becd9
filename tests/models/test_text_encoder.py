"""LDMBert text encoder and tokenizer: parity with diffusers' `LDMBertModel` and transformers'
`BertTokenizer`, loading from saved folders, serialization, parameter count, bad input."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
from safetensors.numpy import load_file, save_file
from transformers import BertTokenizer

from keras_ldm.convert.ldm_bert import ldm_bert_from_diffusers, tokenizer_from_diffusers
from keras_ldm.models.text_encoder import LDMBertEncoder
from keras_ldm.models.tokenizer import LDMBertTokenizer
from tests.conftest import to_numpy

TOLERANCE = 1e-4
TINY = {
    "vocab_size": 100,
    "max_position_embeddings": 77,
    "encoder_layers": 2,
    "encoder_ffn_dim": 64,
    "encoder_attention_heads": 4,
    "head_dim": 8,
    "d_model": 32,
}
VOCABULARY = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "a", "an", "the", "red", "blue", "green", "circle", "square", "on", "of", "in", "background",
    "paint", "##ing", "##s", "##ed", "squirrel", "eat", "burger", "cafe", "photo", "big",
    ",", ".", "!", "?", "-", "'", "(", ")",
]  # fmt: skip
PROMPTS = [
    "a red circle on a blue background",
    "A Painting of a SQUIRREL eating a burger!",
    "an unknown zebra in the background",
    "circles,squares.(big)",
    "Café photo - it's green?",
    "a [MASK] square",
    "tabs\tand\nnewlines\x07 in a photo",
    "红 square",
    "",
    "a big red circle on the blue background, " * 12,  # > 77 word pieces: truncated
]


def randomize(module):
    """diffusers starts with tiny weights (std 0.02) and norms at (1, 0): give every tensor unit-scale
    values, so that a mis-mapped weight or a slightly different function (e.g. tanh-GELU) shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name:
                param.copy_(torch.randn_like(param) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
            elif name.endswith("weight") and ("proj" in name or ".fc" in name):
                param.copy_(torch.randn_like(param) / param.shape[1] ** 0.5)
            else:  # embeddings and biases
                param.copy_(torch.randn_like(param) * (1.0 if "embed" in name else 0.1))
    return module.eval()


@pytest.fixture
def reference():
    torch.manual_seed(0)
    return randomize(LDMBertModel(LDMBertConfig(**TINY)))


@pytest.fixture
def saved(reference, tmp_path):
    folder = tmp_path / "bert"
    reference.save_pretrained(folder, safe_serialization=True)
    return str(folder)


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCABULARY) + "\n", encoding="utf-8")
    return str(path)


def last_hidden_state(reference, token_ids, attention_mask=None):
    mask = None if attention_mask is None else torch.tensor(attention_mask)
    with torch.no_grad():
        return reference(torch.tensor(token_ids), attention_mask=mask).last_hidden_state.numpy()


def assert_close(ours, theirs):
    ours, theirs = to_numpy(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    assert np.max(np.abs(ours - theirs)) <= TOLERANCE


def tiny_encoder(**overrides):
    return LDMBertEncoder(**{**TINY, **overrides})


# -- encoder ------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [77, 9])
def test_encoder_matches_diffusers(reference, saved, length):
    model = ldm_bert_from_diffusers(saved)
    assert model.count_params() == sum(p.numel() for p in reference.model.parameters())
    token_ids = np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(2, length))
    assert_close(model(token_ids), last_hidden_state(reference, token_ids))


def test_padding_mask_matches_diffusers_attention_mask(reference, saved):
    model = ldm_bert_from_diffusers(saved)
    token_ids = np.random.default_rng(1).integers(1, TINY["vocab_size"], size=(2, 20))
    mask = np.ones((2, 20), "int64")
    mask[0, 7:] = 0
    expected = last_hidden_state(reference, token_ids, mask)
    assert_close(model(token_ids, padding_mask=mask), expected)
    assert_close(model(token_ids, padding_mask=mask.astype(bool)), expected)
    unmasked = to_numpy(model(token_ids))
    assert np.max(np.abs(unmasked[0] - expected[0])) > 1e-3  # the mask does change the first row


def test_tokenizer_and_encoder_match_the_ldm_pipeline(reference, saved, vocab_file):
    """What `LDMTextToImagePipeline` computes: BertTokenizer to 77 ids, then the encoder."""
    reference_ids = BertTokenizer(vocab_file)(
        PROMPTS[:3], padding="max_length", max_length=77, truncation=True
    )
    expected = last_hidden_state(reference, np.array(reference_ids["input_ids"]))
    encoder, tokenizer = ldm_bert_from_diffusers(saved), LDMBertTokenizer(vocab_file)
    assert_close(encoder(tokenizer(PROMPTS[:3])), expected)


def test_dropout_acts_only_in_training():
    model = tiny_encoder(dropout=0.5)
    token_ids = np.arange(10).reshape(1, 10)
    np.testing.assert_array_equal(to_numpy(model(token_ids)), to_numpy(model(token_ids)))
    assert np.max(np.abs(to_numpy(model(token_ids, training=True)) - to_numpy(model(token_ids)))) > 1e-3


def test_mixed_precision_runs_with_float32_output():
    model = tiny_encoder(dtype="mixed_bfloat16")
    out = model(np.arange(12).reshape(2, 6))
    assert tuple(out.shape) == (2, 6, 32) and keras.backend.standardize_dtype(out.dtype) == "float32"
    assert np.isfinite(to_numpy(out)).all()


def test_full_size_parameter_count_matches_diffusers():
    """The 32-layer encoder of txt2img-1p4B; diffusers' on the meta device, ours never allocated."""
    with torch.device("meta"):
        reference = LDMBertModel(LDMBertConfig())
    with keras.StatelessScope(initialize_variables=False):
        ours = LDMBertEncoder().count_params()
    to_logits = sum(p.numel() for p in reference.to_logits.parameters())  # LM head, unused by forward
    assert ours == sum(p.numel() for p in reference.model.parameters()) == 542_895_360
    assert ours == sum(p.numel() for p in reference.parameters()) - to_logits


@pytest.mark.parametrize(
    "token_ids, match",
    [
        (np.zeros((77,), "int32"), r"`token_ids` must have rank 2 .*got shape \(77,\)"),
        (np.zeros((1, 7, 2), "int32"), r"`token_ids` must have rank 2 .*got shape \(1, 7, 2\)"),
        (np.zeros((1, 78), "int32"), r"`token_ids` has length 78 .*max_position_embeddings=77"),
    ],
)
def test_encoder_rejects_bad_token_ids_by_name(token_ids, match):
    with pytest.raises(ValueError, match=match):
        tiny_encoder()(token_ids)


def test_encoder_rejects_float_ids_bad_masks_and_activations():
    model = tiny_encoder()
    with pytest.raises(TypeError, match=r"`token_ids` must hold integer token ids; got dtype float32"):
        model(np.zeros((1, 5), "float32"))
    with pytest.raises(ValueError, match=r"`padding_mask` has shape \(1, 4\); expected .* \(1, 5\)"):
        model(np.zeros((1, 5), "int32"), padding_mask=np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"activation_function='tanh' is not supported; expected one of"):
        tiny_encoder(activation_function="tanh")


def test_encoder_survives_serialization(tmp_path):
    model = tiny_encoder(activation_function="gelu_new", dropout=0.0)
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(scale=0.1, size=w.shape).astype("float32") for w in model.get_weights()])
    token_ids = rng.integers(0, TINY["vocab_size"], size=(2, 11))
    config = json.loads(json.dumps(model.get_config()))
    clone = LDMBertEncoder.from_config(config)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(to_numpy(clone(token_ids)), to_numpy(model(token_ids)), atol=1e-6)
    model.save(tmp_path / "bert.keras")
    restored = keras.models.load_model(tmp_path / "bert.keras")
    np.testing.assert_allclose(to_numpy(restored(token_ids)), to_numpy(model(token_ids)), atol=1e-6)


def test_symbolic_output_shape():
    token_ids = keras.KerasTensor((None, None), dtype="int32")
    assert tiny_encoder().compute_output_spec(token_ids).shape == (None, None, 32)


# -- converter ----------------------------------------------------------------------------------


def rewrite_tensors(folder, change):
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


def test_loader_rejects_folders_that_are_not_ldm_bert(saved, tmp_path):
    with pytest.raises(ValueError, match=r"is not an LDMBert folder: expected a directory with config.json"):
        ldm_bert_from_diffusers(str(tmp_path / "nowhere"))
    config_path = pathlib.Path(saved) / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ValueError, match=r"model_type='bert'; expected 'ldmbert'"):
        ldm_bert_from_diffusers(saved)
    config_path.write_text(json.dumps(config))
    os.remove(os.path.join(saved, "model.safetensors"))
    with pytest.raises(ValueError, match=r"No model.safetensors .*safe_serialization=True"):
        ldm_bert_from_diffusers(saved)


def test_loader_rejects_missing_extra_and_misshapen_tensors(saved):
    rewrite_tensors(saved, lambda t: t.pop("model.layers.1.fc2.bias"))
    with pytest.raises(
        ValueError, match=r"1 tensors the config implies are missing, e.g. \['model.layers.1.fc2"
    ):
        ldm_bert_from_diffusers(saved)
    rewrite_tensors(saved, lambda t: t.update({"model.layers.1.fc2.bias": np.zeros(32, "float32")}))
    rewrite_tensors(saved, lambda t: t.update({"model.layers.2.fc2.bias": np.zeros(32, "float32")}))
    with pytest.raises(
        ValueError, match=r"1 tensors do not fit the config, e.g. \['model.layers.2.fc2.bias'\]"
    ):
        ldm_bert_from_diffusers(saved)
    rewrite_tensors(saved, lambda t: t.pop("model.layers.2.fc2.bias"))
    rewrite_tensors(saved, lambda t: t.update({"model.layers.0.fc1.weight": np.zeros((48, 32), "float32")}))
    with pytest.raises(
        ValueError, match=r"'model.layers.0.fc1.weight' has shape \(32, 48\) .* expects \(32, 64\)"
    ):
        ldm_bert_from_diffusers(saved)


def test_loader_takes_a_bare_encoder_checkpoint(reference, saved):
    """Keys without the `model.` prefix and without the unused `to_logits` head load too."""

    def strip_prefix_and_head(tensors):
        for key in list(tensors):
            value = tensors.pop(key)
            if not key.startswith("to_logits"):
                tensors[key.removeprefix("model.")] = value

    rewrite_tensors(saved, strip_prefix_and_head)
    token_ids = np.arange(12).reshape(2, 6)
    assert_close(ldm_bert_from_diffusers(saved)(token_ids), last_hidden_state(reference, token_ids))


NO_TORCH_NO_TENSORFLOW_SCRIPT = """
import sys
for name in ("torch", "tensorflow", "keras_hub"):
    sys.modules[name] = None  # any import of them now fails
import numpy as np
from keras_ldm.convert.ldm_bert import ldm_bert_from_diffusers
model = ldm_bert_from_diffusers(sys.argv[1])
np.save(sys.argv[2], np.asarray(model(np.arange(12).reshape(2, 6))))
"""


def test_encoder_loads_without_pytorch_or_tensorflow(reference, saved, tmp_path):
    env = dict(os.environ, KERAS_BACKEND="jax")
    out = str(tmp_path / "out.npy")
    subprocess.run([sys.executable, "-c", NO_TORCH_NO_TENSORFLOW_SCRIPT, saved, out], check=True, env=env)
    assert_close(np.load(out), last_hidden_state(reference, np.arange(12).reshape(2, 6)))


# -- tokenizer ----------------------------------------------------------------------------------


def reference_ids(tokenizer, prompts, length=77):
    return np.array(tokenizer(prompts, padding="max_length", max_length=length, truncation=True)["input_ids"])


def test_tokenizer_matches_transformers(vocab_file):
    expected = reference_ids(BertTokenizer(vocab_file), PROMPTS)
    ours = to_numpy(LDMBertTokenizer(vocab_file)(PROMPTS))
    assert ours.dtype == np.int32 and ours.shape == (len(PROMPTS), 77)
    np.testing.assert_array_equal(ours, expected)
    assert ours[-1, -1] == VOCABULARY.index("[SEP]")  # the long prompt is truncated, then closed
    assert (ours[:, 0] == VOCABULARY.index("[CLS]")).all()


HARD_PROMPTS = [
    *PROMPTS,
    "Ünïcode naïve café",
    "x" * 101,
    "circles" * 3,
    "  ",
    "a (red)-circle's",
    "tab\there",
]


@pytest.mark.parametrize("lowercase", [True, False])
def test_python_tokenizer_matches_transformers(vocab_file, lowercase):
    """Tokenizing is plain Python (no TensorFlow or keras-hub import), to transformers' ids."""
    tokenizer = LDMBertTokenizer(vocab_file, lowercase=lowercase)
    expected = reference_ids(BertTokenizer(vocab_file, do_lower_case=lowercase), HARD_PROMPTS)
    np.testing.assert_array_equal(to_numpy(tokenizer(HARD_PROMPTS)), expected)
    assert tokenizer.vocabulary_size == len(VOCABULARY) and tokenizer.token_to_id("[SEP]") == 3


@pytest.mark.parametrize("lowercase", [True, False])
def test_graph_tokenizer_of_the_export_gives_the_same_ids(vocab_file, lowercase):
    """The SavedModel tokenizes with core TensorFlow ops; `generate()` in Python: same ids."""
    tf = pytest.importorskip("tensorflow")
    from keras_ldm.export import tokenize_in_graph

    tokenizer = LDMBertTokenizer(vocab_file, lowercase=lowercase)
    in_graph = tf.function(lambda prompts: tokenize_in_graph(tokenizer, prompts))(tf.constant(HARD_PROMPTS))
    np.testing.assert_array_equal(in_graph.numpy(), to_numpy(tokenizer(HARD_PROMPTS)))


def test_cased_tokenizer_matches_transformers(vocab_file):
    expected = reference_ids(BertTokenizer(vocab_file, do_lower_case=False), PROMPTS[:5])
    ours = LDMBertTokenizer(vocab_file, lowercase=False)(PROMPTS[:5])
    np.testing.assert_array_equal(to_numpy(ours), expected)


def test_tokenizer_takes_one_prompt_a_list_vocabulary_and_a_length():
    tokenizer = LDMBertTokenizer(VOCABULARY, sequence_length=6)
    np.testing.assert_array_equal(to_numpy(tokenizer("A red squares!")), [[2, 5, 8, 12, 19, 3]])


def test_tokenizer_from_saved_transformers_folders(vocab_file, tmp_path):
    """transformers 5 saves tokenizer.json (no vocab.txt); the released LDM repo has vocab.txt."""
    BertTokenizer(vocab_file).save_pretrained(tmp_path / "json_folder")
    assert not os.path.exists(tmp_path / "json_folder" / "vocab.txt")
    expected = reference_ids(BertTokenizer.from_pretrained(str(tmp_path / "json_folder")), PROMPTS)
    np.testing.assert_array_equal(
        to_numpy(tokenizer_from_diffusers(str(tmp_path / "json_folder"))(PROMPTS)), expected
    )

    vocab_folder = tmp_path / "vocab_folder"
    vocab_folder.mkdir()
    (vocab_folder / "vocab.txt").write_text(pathlib.Path(vocab_file).read_text())
    (vocab_folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    cased = tokenizer_from_diffusers(str(vocab_folder))
    assert cased.lowercase is False
    np.testing.assert_array_equal(
        to_numpy(cased(PROMPTS)), reference_ids(BertTokenizer(vocab_file, do_lower_case=False), PROMPTS)
    )
    with pytest.raises(
        ValueError, match=r"is not a BertTokenizer folder: expected vocab.txt or tokenizer.json"
    ):
        tokenizer_from_diffusers(str(tmp_path / "nowhere"))


def test_tokenizer_survives_serialization(vocab_file):
    for vocabulary in (vocab_file, VOCABULARY):
        tokenizer = LDMBertTokenizer(vocabulary, sequence_length=20, lowercase=True, strip_accents=False)
        config = json.loads(json.dumps(keras.saving.serialize_keras_object(tokenizer)))
        clone = keras.saving.deserialize_keras_object(config)
        assert isinstance(clone, LDMBertTokenizer) and clone.get_config() == tokenizer.get_config()
        np.testing.assert_array_equal(to_numpy(clone(PROMPTS)), to_numpy(tokenizer(PROMPTS)))


def test_tokenizer_rejects_bad_input_by_name(vocab_file):
    tokenizer = LDMBertTokenizer(vocab_file)
    for prompts in (["a", 3], [], b"a red circle", None):
        with pytest.raises(TypeError, match=r"`prompts` must be a str or a non-empty list of str; got"):
            tokenizer(prompts)
    with pytest.raises(ValueError, match=r"`vocabulary` lacks the special tokens \['\[CLS\]', '\[SEP\]'\]"):
        LDMBertTokenizer(["[PAD]", "[UNK]", "red"])
    with pytest.raises(TypeError, match=r"`vocabulary` must be the path of a vocab.txt file or a list"):
        LDMBertTokenizer({"red": 0})
    with pytest.raises(ValueError, match=r"`sequence_length` must be an int >= 2 .*got 1"):
        LDMBertTokenizer(vocab_file, sequence_length=1)
