"""Layout conditioning: `LayoutTokenizer` against hand-computed CompVis tokens, decode round trip and bad
input; `LayoutEncoder` parity with a PyTorch copy of CompVis' `BERTEmbedder`, weight loading, serialization."""

import keras
import numpy as np
import pytest
import torch

from keras_ldm.backend.fast_build import random_init_skipped
from keras_ldm.convert.layout_encoder import (
    compvis_weight_map,
    layout_encoder_from_compvis,
    layout_encoder_kwargs,
    layout_encoder_weights_from_compvis,
)
from keras_ldm.models.layout_encoder import LayoutEncoder
from keras_ldm.models.layout_tokenizer import LayoutTokenizer
from tests.conftest import to_numpy
from tests.models.compvis_layout_reference import BERTEmbedder

TOLERANCE = 1e-4
PAD = 8191
FULL_CROP = [0, 8099]  # (0, 0) and (1, 1): 89 * 90 + 89
TINY = {"vocab_size": 100, "max_length": 11, "n_embed": 32, "n_layer": 2, "heads": 2, "dim_head": 16}


def tokens(tokenizer, *args, **kwargs):
    return to_numpy(tokenizer(*args, **kwargs)).tolist()


# -- tokenizer: golden sequences (grid 90: token = round(89 y) * 90 + round(89 x)) -------------------


def test_one_box_in_the_released_92_token_layout():
    tokenizer = LayoutTokenizer(num_classes=10)
    assert (tokenizer.grid, tokenizer.pad_token, tokenizer.sequence_length) == (90, 8191, 92)
    # (0.1, 0.2): round(8.9) = 9, round(17.8) = 18 -> 18 * 90 + 9 = 1629;
    # (0.3, 0.4): round(26.7) = 27, round(35.6) = 36 -> 36 * 90 + 27 = 3267.
    expected = [1, 1629, 3267] + [PAD] * 87 + FULL_CROP
    assert tokens(tokenizer, [[[0.1, 0.2, 0.3, 0.4]]], [[1]]) == [expected]


def test_objects_in_order_padding_modifiers_and_half_to_even_rounding():
    tokenizer = LayoutTokenizer(num_classes=10, max_objects=3)
    boxes = [[[0.0, 0.0, 1.0, 1.0], [0.25, 0.5, 0.75, 0.5]], [[0.5, 0.5, 0.5, 0.5]]]
    # (0.25, 0.5): round(22.25) = 22, round(44.5) = 44 (half to even) -> 3982; (0.75, 0.5): 67 -> 4027.
    # (0.5, 0.5) -> 44 * 90 + 44 = 4004. Object tokens: label + 10 * modifier.
    expected = [
        [7, 0, 8099, 3 + 10 * 1, 3982, 4027, PAD, PAD, PAD, *FULL_CROP],
        [9 + 10 * 15, 4004, 4004, PAD, PAD, PAD, PAD, PAD, PAD, *FULL_CROP],
    ]
    assert tokens(tokenizer, boxes, [[7, 3], [9]], box_modifiers=[[0, 1], [15]]) == expected


def test_crop_tokens_and_no_crop():
    tokenizer = LayoutTokenizer(num_classes=5, max_objects=1)
    # crop (0.25, 0.5)-(0.75, 1.0): 44 * 90 + 22 = 3982 and 89 * 90 + 67 = 8077.
    assert tokens(tokenizer, [[]], [[]], crops=[[0.25, 0.5, 0.75, 1.0]]) == [[PAD, PAD, PAD, 3982, 8077]]
    no_crop = LayoutTokenizer(num_classes=5, max_objects=1, encode_crop=False)
    assert no_crop.sequence_length == 3
    assert tokens(no_crop, [[[0.0, 0.0, 1.0, 1.0]]], [[4]]) == [[4, 0, 8099]]


def test_a_small_vocabulary_changes_the_grid_and_the_pad_token():
    tokenizer = LayoutTokenizer(num_classes=3, max_objects=1, num_tokens=100)  # grid 10, pad 99
    # (0.5, 0.25): round(4.5) = 4, round(2.25) = 2 -> 24; (1, 1) -> 99.
    assert tokens(tokenizer, [[[0.5, 0.25, 1.0, 1.0]]], [[2]]) == [[2, 24, 99, 0, 99]]


def test_input_forms_give_the_same_tokens():
    tokenizer = LayoutTokenizer(num_classes=10, max_objects=2)
    ragged = tokens(tokenizer, [[[0.1, 0.1, 0.2, 0.2]], []], [[1], []])
    padded = np.array([[[0.1, 0.1, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]], [[0.5, 0.5, 0.9, 0.9]] * 2])
    assert tokens(tokenizer, padded, np.array([[1, 0], [5, 5]]), num_boxes=[1, 0]) == ragged
    assert tokens(tokenizer, [[0.1, 0.1, 0.2, 0.2]], [1]) == ragged[:1]  # one image, unbatched
    assert tokens(tokenizer, [[], []], [[], []])[1] == ragged[1] == [PAD] * 6 + FULL_CROP  # null layout


def test_decode_round_trips_within_half_a_grid_cell(rng):
    tokenizer = LayoutTokenizer(num_classes=20, max_objects=5)
    corners = np.sort(rng.uniform(size=(3, 5, 2, 2)), axis=2)  # (B, N, [min, max], [x, y])
    boxes = np.stack([corners[:, :, 0, 0], corners[:, :, 0, 1], corners[:, :, 1, 0], corners[:, :, 1, 1]], -1)
    labels, modifiers = rng.integers(0, 20, size=(3, 5)), rng.integers(0, 16, size=(3, 5))
    counts = [5, 2, 0]
    decoded = tokenizer.decode(tokenizer(boxes, labels, num_boxes=counts, box_modifiers=modifiers))
    for i, count in enumerate(counts):
        assert np.max(np.abs(decoded["boxes"][i] - boxes[i, :count]), initial=0) <= 0.5 / 89 + 1e-12
        np.testing.assert_array_equal(decoded["box_labels"][i], labels[i, :count])
        np.testing.assert_array_equal(decoded["box_modifiers"][i], modifiers[i, :count])
    np.testing.assert_array_equal(decoded["crops"], [[0.0, 0.0, 1.0, 1.0]] * 3)
    again = tokenizer(decoded["boxes"], decoded["box_labels"], box_modifiers=decoded["box_modifiers"])
    expected = tokenizer(boxes, labels, num_boxes=counts, box_modifiers=modifiers)
    np.testing.assert_array_equal(to_numpy(again), to_numpy(expected))  # grid points tokenize to themselves


def test_more_than_max_objects_warns_and_keeps_the_first():
    tokenizer = LayoutTokenizer(num_classes=10, max_objects=2)
    with pytest.warns(UserWarning, match="3 boxes.*max_objects=2"):
        result = tokens(tokenizer, [[[0, 0, 1, 1]] * 3], [[1, 2, 3]])
    assert result == [[1, 0, 8099, 2, 0, 8099, *FULL_CROP]]


def test_tokenizer_serialization_round_trip():
    tokenizer = LayoutTokenizer(num_classes=7, max_objects=4, num_tokens=1024, encode_crop=False)
    config = tokenizer.get_config()
    assert LayoutTokenizer.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(tokenizer))
    assert isinstance(restored, LayoutTokenizer) and restored.get_config() == config


# -- tokenizer: bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "box, match",
    [
        ([0.5, 0.1, 0.2, 0.9], r"`boxes` of image 0 holds box 0 = \(0.5, 0.1, 0.2, 0.9\)"),  # x1 < x0
        ([0.1, 0.5, 0.2, 0.4], r"box 0 = \(0.1, 0.5, 0.2, 0.4\)"),  # y1 < y0
        ([-0.1, 0.0, 0.2, 0.4], r"`boxes`.*0 <= x0 <= x1 <= 1"),
        ([0.1, 0.0, 1.2, 0.4], r"`boxes`.*\(0.1, 0, 1.2, 0.4\)"),
        ([0.1, 0.0, float("nan"), 0.4], r"`boxes`.*nan"),
    ],
)
def test_bad_boxes_are_named(box, match):
    with pytest.raises(ValueError, match=match):
        LayoutTokenizer(num_classes=10)([[box]], [[1]])


@pytest.mark.parametrize("label", [10, -1])
def test_unknown_labels_are_named(label):
    with pytest.raises(ValueError, match=rf"`box_labels` of image 1 holds \[{label}\].*\[0, 10\)"):
        LayoutTokenizer(num_classes=10)([[[0, 0, 1, 1]], [[0, 0, 1, 1]]], [[1], [label]])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda t: t([[[0, 0, 1, 1]]], [[0.5]]), TypeError, "`box_labels` of image 0 must be .* ints"),
        (lambda t: t([[[0, 0, 1, 1]]], 1), TypeError, "`box_labels` must hold one list of ints per image"),
        (lambda t: t([[[0, 0, 1, 1]]], [[1, 2]]), ValueError, "1 `boxes`, 2 `box_labels`"),
        (lambda t: t(np.zeros((0, 3, 4)), np.zeros((0, 3))), ValueError, r"`boxes` has shape \(0, 3, 4\)"),
        (lambda t: t([[[0, 0, 1, 1]]], [[1], [2]]), ValueError, "`box_labels` holds 2 images"),
        (lambda t: t([[[0, 0, 1]]], [[1]]), ValueError, r"`boxes` has shape \(1, 1, 3\)"),
        (lambda t: t([[[0, 0, 1, 1]], [[0, 0, 1]]], [[1], [2]]), ValueError, "`boxes` of image 1 has shape"),
        (lambda t: t([[[0, 0, 1, 1]]], [[1]], box_modifiers=[[16]]), ValueError, "`box_modifiers`.*16"),
        (
            lambda t: t(np.zeros((2, 3, 4)), np.zeros((2, 3), int), num_boxes=[1, 4]),
            ValueError,
            "`num_boxes`",
        ),
        (lambda t: t([[]], [[]], crops=[[0.5, 0, 0.2, 1]]), ValueError, "`crops` of image 0 holds"),
        (lambda t: t.decode([[1, 2, 3]]), ValueError, r"`tokens` has shape \(1, 3\)"),
        (lambda t: t.decode([1, 0, 8100] + [PAD] * 87 + FULL_CROP), ValueError, r"corner tokens \[8100\]"),
        (
            lambda t: t.decode([8192] + [PAD] * 89 + FULL_CROP),
            ValueError,
            r"`tokens` must lie in \[0, 8192\)",
        ),
    ],
)
def test_bad_calls_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(LayoutTokenizer(num_classes=10))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_classes": 0}, "num_classes"), ({"num_classes": 10, "max_objects": 0}, "max_objects"),
     ({"num_classes": 99, "num_tokens": 100}, "num_tokens=100")],
)  # fmt: skip
def test_bad_tokenizer_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LayoutTokenizer(**kwargs)


# -- encoder ------------------------------------------------------------------------------------


def randomize(module):
    """Unit-scale weights, norms near (1, 0): a mis-mapped tensor or a tanh-GELU shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if ".0.weight" in name and param.ndim == 1 or name.endswith("norm.weight"):
                param.copy_(torch.randn_like(param) * 0.1 + 1.0)
            elif param.ndim == 2 and "emb" not in name:
                param.copy_(torch.randn_like(param) / param.shape[1] ** 0.5)
            else:  # embeddings, biases
                param.copy_(torch.randn_like(param) * (1.0 if "emb" in name else 0.1))
    return module.eval()


@pytest.fixture
def reference():
    torch.manual_seed(0)
    return randomize(
        BERTEmbedder(n_embed=32, n_layer=2, vocab_size=100, max_seq_len=11, heads=2, dim_head=16)
    )


def compvis_state(reference):
    """The reference's weights as a CompVis LatentDiffusion checkpoint would hold them (numpy)."""
    state = {f"cond_stage_model.{key}": value.numpy() for key, value in reference.state_dict().items()}
    return {**state, "model.diffusion_model.out.2.bias": np.zeros(4, "float32")}  # not the encoder's


def embed(reference, token_ids):
    with torch.no_grad():
        return reference(torch.tensor(np.asarray(token_ids), dtype=torch.long)).numpy()


def test_encoder_matches_compvis_on_layout_tokens(reference):
    tokenizer = LayoutTokenizer(num_classes=5, max_objects=3, num_tokens=100)  # 11 tokens below 100
    token_ids = to_numpy(tokenizer([[[0.1, 0.2, 0.6, 0.9], [0.0, 0.5, 1.0, 1.0]], []], [[4, 0], []]))
    encoder = layout_encoder_weights_from_compvis(compvis_state(reference), LayoutEncoder(**TINY))
    assert (
        encoder.count_params() == sum(p.numel() for p in reference.parameters()) - 32 * 100 - 100
    )  # to_logits
    random_ids = np.random.default_rng(0).integers(0, 100, size=(2, 11))
    for ids in (token_ids, random_ids, random_ids[:, :7]):
        difference = np.max(np.abs(to_numpy(encoder(ids)) - embed(reference, ids)))
        print(f"{keras.backend.backend()}: max |keras - CompVis| = {difference:.2e}")
        assert difference <= TOLERANCE


def test_weight_map_covers_exactly_the_compvis_keys(reference):
    keys = {key for _, key, _ in compvis_weight_map(LayoutEncoder(**TINY), prefix="")}
    assert keys == set(reference.state_dict()) - {
        "transformer.to_logits.weight",
        "transformer.to_logits.bias",
    }


def test_loading_rejects_missing_extra_and_misshapen_tensors(reference):
    state = compvis_state(reference)
    missing = {k: v for k, v in state.items() if "layers.3.1.net.2.bias" not in k}
    with pytest.raises(ValueError, match="missing.*layers.3.1.net.2.bias"):
        layout_encoder_weights_from_compvis(missing, LayoutEncoder(**TINY))
    with pytest.raises(ValueError, match="do not fit.*extra"):
        layout_encoder_weights_from_compvis(
            {**state, "cond_stage_model.extra": np.zeros(1)}, LayoutEncoder(**TINY)
        )
    with pytest.raises(ValueError, match="token_emb.weight.*shape"):
        layout_encoder_weights_from_compvis(state, LayoutEncoder(**{**TINY, "vocab_size": 101}))


def test_encoder_built_from_the_compvis_config(reference):
    params = {"n_embed": 32, "n_layer": 2, "vocab_size": 100, "max_seq_len": 11}
    assert layout_encoder_kwargs(params) == {"vocab_size": 100, "max_length": 11, "n_embed": 32, "n_layer": 2}
    state = {k[len("cond_stage_model.") :]: v for k, v in compvis_state(reference).items()}
    state = {k: v for k, v in state.items() if k.startswith("transformer.")}
    # x-transformers' 8 heads of 64 differ from the reference's 2 x 16: shapes must not fit.
    with pytest.raises(ValueError, match="to_q.weight.*shape"):
        layout_encoder_from_compvis(state, params, prefix="")


def test_released_size_matches_compvis_parameter_count():
    with random_init_skipped():
        ours = LayoutEncoder().count_params()
    with torch.device("meta"):
        theirs = BERTEmbedder(n_embed=512, n_layer=16, vocab_size=8192, max_seq_len=92)
    logits = sum(p.numel() for p in theirs.transformer.to_logits.parameters())
    assert ours == sum(p.numel() for p in theirs.parameters()) - logits


def test_encoder_serialization_round_trip():
    encoder = LayoutEncoder(**TINY, ff_mult=2)
    config = encoder.get_config()
    assert {k: config[k] for k in TINY} == TINY and config["ff_mult"] == 2
    rebuilt = LayoutEncoder.from_config(config)
    assert rebuilt.get_config() == config and rebuilt.count_params() == encoder.count_params()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(encoder))
    assert isinstance(restored, LayoutEncoder) and restored.get_config() == config


@pytest.mark.parametrize("name, value", [("n_layer", 0), ("heads", 2.0), ("vocab_size", None)])
def test_bad_encoder_arguments_are_named(name, value):
    with pytest.raises(ValueError, match=f"`{name}` must be a positive int; got {value}"):
        LayoutEncoder(**{**TINY, name: value})
