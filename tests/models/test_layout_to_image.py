"""Layout-to-image: an LDM whose cross-attention context is a `LayoutEncoder` over `LayoutTokenizer`
tokens; it fits on ragged and padded layouts (numpy and tf.data), samples with guidance against the empty
layout, saves, and names bad layouts."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ldm.models import LatentDiffusion
from keras_ldm.models.layout_encoder import LayoutEncoder
from keras_ldm.models.layout_tokenizer import LayoutTokenizer
from tests.tiny_models import unet, vae

CLASSES = 3
IMAGES = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype("uint8")
BOXES = [[[0.0, 0.0, 0.5, 0.5]], [[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 1.0, 0.25]], [], [[0.2, 0.1, 0.9, 0.7]]]
LABELS = [[0], [1, 2], [], [2]]
SIZE = {"height": 8, "width": 8}  # the training size (a fresh model defaults to 64)


def padded(boxes, labels):
    """The layouts as `(B, N, 4)` boxes, `(B, N)` labels and the `(B,)` counts."""
    count = max(len(b) for b in boxes)
    array = np.zeros((len(boxes), count, 4), "float32")
    ids = np.zeros((len(boxes), count), "int32")
    for i, (b, l) in enumerate(zip(boxes, labels)):
        if b:
            array[i, : len(b)], ids[i, : len(l)] = b, l
    return array, ids, np.array([len(b) for b in boxes], "int32")


def layout_model(p_uncond=0.2):
    tokenizer = LayoutTokenizer(num_classes=CLASSES, max_objects=3)
    encoder = LayoutEncoder(
        vocab_size=tokenizer.num_tokens, max_length=tokenizer.sequence_length, n_embed=16, n_layer=1,
        heads=2, dim_head=8,
    )
    return LatentDiffusion(
        unet(context_dim=16), vae(), cross_attention="layout", text_encoder=encoder, tokenizer=tokenizer,
        p_uncond=p_uncond, seed=0,
    )


def test_fit_on_ragged_and_padded_layouts_trains_the_unet_and_the_encoder():
    model = layout_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [np.array(w) for w in model.text_encoder.get_weights()]
    history = model.fit({"images": IMAGES, "boxes": BOXES, "box_labels": LABELS}, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, model.text_encoder.get_weights()))
    boxes, labels, counts = padded(BOXES, LABELS)
    data = tf.data.Dataset.from_tensor_slices(
        {"images": IMAGES, "boxes": boxes, "box_labels": labels, "num_boxes": counts}
    ).batch(2)
    assert np.all(np.isfinite(model.fit(data, verbose=0).history["loss"]))


def test_the_empty_layout_is_the_unconditional_input():
    model = layout_model()
    empty = model._null_token_ids
    assert empty.shape == (1, model.tokenizer.sequence_length)
    assert (empty[0, :9] == model.tokenizer.pad_token).all() and empty[0, 9:].tolist() == [0, 8099]


def test_generate_from_layouts_padded_equals_ragged_and_survives_a_preset(tmp_path):
    model = layout_model()
    keras.utils.set_random_seed(1)
    model.text_encoder.set_weights(
        [np.random.default_rng(1).normal(scale=0.3, size=w.shape) for w in model.text_encoder.get_weights()]
    )
    ragged = model.generate({"boxes": BOXES[:2], "box_labels": LABELS[:2]}, num_steps=2, guidance_scale=3.0, seed=2, **SIZE)
    assert ragged.shape == (2, 8, 8, 3) and ragged.dtype == np.uint8
    boxes, labels, counts = padded(BOXES[:2], LABELS[:2])
    same = model.generate(
        {"boxes": boxes, "box_labels": labels, "num_boxes": counts}, num_steps=2, guidance_scale=3.0, seed=2,
        **SIZE,
    )
    np.testing.assert_array_equal(same, ragged)
    other = model.generate({"boxes": BOXES[2:4], "box_labels": LABELS[2:4]}, num_steps=2, guidance_scale=3.0, seed=2, **SIZE)
    assert np.abs(other.astype(int) - ragged).max() > 0  # the layout reaches the image
    one = model.generate({"boxes": BOXES[0], "box_labels": LABELS[0]}, num_steps=2, guidance_scale=3.0, seed=2, **SIZE)
    assert one.shape == (8, 8, 3)
    model.save_to_preset(str(tmp_path / "layout"))
    loaded = LatentDiffusion.from_preset(str(tmp_path / "layout"))
    again = loaded.generate({"boxes": BOXES[:2], "box_labels": LABELS[:2]}, num_steps=2, guidance_scale=3.0, seed=2, **SIZE)
    np.testing.assert_array_equal(again, ragged)


def test_bad_layouts_and_set_ups_are_named(tmp_path):
    model = layout_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match=r"box_labels.*\[3\].*\[0, 3\)"):
        model.generate({"boxes": [[[0, 0, 1, 1]]], "box_labels": [[3]]}, num_steps=1, **SIZE)
    with pytest.raises(ValueError, match="boxes"):
        model.generate({"boxes": [[[0, 0, 1.5, 1]]], "box_labels": [[0]]}, num_steps=1, **SIZE)
    with pytest.raises(ValueError, match="boxes"):
        model.fit({"images": IMAGES[:1], "boxes": [[[0.8, 0, 0.2, 1]]], "box_labels": [[0]]}, verbose=0)
    with pytest.raises(ValueError, match=r"layout-to-image reads the keys.*prompts"):
        model.generate({"prompts": ["a red circle"], "boxes": BOXES[:1], "box_labels": LABELS[:1]})
    with pytest.raises(ValueError, match="layout-to-image takes a dict with 'boxes'"):
        model.generate(["a red circle"], num_steps=1, **SIZE)
    with pytest.raises(ValueError, match=r"missing \['box_labels'\]"):
        model.fit({"images": IMAGES, "boxes": BOXES}, verbose=0)
    with pytest.raises(ValueError, match="needs a LayoutTokenizer"):
        LatentDiffusion(
            unet(context_dim=16), vae(), cross_attention="layout", text_encoder=model.text_encoder
        )
    with pytest.raises(ValueError, match="cross_attention='layout'"):
        model.export(str(tmp_path / "served"))
