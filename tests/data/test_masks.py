"""Inpainting masks: binary values, coverage bounds, rectangles, connected strokes, the dataset mapping."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from keras_ldm.data import masks as masks_module
from keras_ldm.data.masks import box_masks, inpainting_pairs, random_masks, stroke_masks


def box_fill_ratio(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].mean()


def check_binary_and_coverage(masks, low, high):
    assert masks.dtype == np.float32 and masks.shape[-1] == 1
    assert set(np.unique(masks).tolist()) <= {0.0, 1.0}
    coverage = masks.mean(axis=(1, 2, 3))
    assert coverage.min() >= low and coverage.max() <= high
    return coverage


def test_box_masks_are_rectangles_within_the_coverage():
    masks = box_masks(32, num_masks=40, max_boxes=1, seed=0)
    assert masks.shape == (40, 32, 32, 1)
    coverage = check_binary_and_coverage(masks, 0.1, 0.5)
    assert coverage.max() - coverage.min() > 0.2  # the range is used, not one size
    assert all(box_fill_ratio(m[..., 0]) == 1.0 for m in masks)
    shapes = {tuple(np.ptp(np.argwhere(m[..., 0]), axis=0)) for m in masks}
    assert len(shapes) > 10  # random aspect ratios and sizes


def test_several_boxes_and_non_square_canvases():
    masks = box_masks((24, 40), num_masks=40, max_boxes=3, min_coverage=0.2, max_coverage=0.3, seed=1)
    assert masks.shape == (40, 24, 40, 1)
    check_binary_and_coverage(masks, 0.2, 0.3)
    counts = [ndimage.label(m[..., 0])[1] for m in masks]
    assert max(counts) >= 2 and min(counts) >= 1


def test_masks_are_deterministic_given_the_seed():
    for make in (box_masks, stroke_masks, random_masks):
        first = make(32, num_masks=4, seed=7)
        np.testing.assert_array_equal(first, make(32, num_masks=4, seed=7))
        assert not np.array_equal(first, make(32, num_masks=4, seed=8))
        assert make(32, seed=7).shape == (32, 32, 1)


@pytest.mark.parametrize("style", ["medium", "thick"])
def test_stroke_masks_cover_the_range_and_are_not_boxes(style):
    masks = stroke_masks(64, num_masks=20, style=style, seed=2)
    check_binary_and_coverage(masks, 0.1, 0.5)
    assert np.mean([box_fill_ratio(m[..., 0]) for m in masks]) < 0.9
    narrow = stroke_masks(48, num_masks=10, style=style, min_coverage=0.3, max_coverage=0.35, seed=3)
    check_binary_and_coverage(narrow, 0.3, 0.35)


@pytest.mark.parametrize("style", ["medium", "thick"])
def test_each_stroke_is_one_connected_walk(style):
    rng = np.random.default_rng(4)
    for _ in range(20):
        mask, strokes = masks_module._stroke_mask(rng, 64, 64, 0.1, 0.5, style)
        assert 1 <= ndimage.label(mask)[1] <= strokes
    thick = [masks_module._stroke_mask(rng, 64, 64, 0.1, 0.5, "thick")[0] for _ in range(20)]
    # Thick brushes: strokes are solid, not speckle; most masked pixels have all 4 neighbours masked.
    interior = [ndimage.binary_erosion(m).sum() / m.sum() for m in thick]
    assert np.mean(interior) > 0.7


def test_mixed_masks_mix_boxes_and_strokes():
    masks = random_masks(48, num_masks=30, kind="mixed", seed=5)
    check_binary_and_coverage(masks, 0.1, 0.5)
    is_box = [ndimage.label(m[..., 0])[1] == 1 and box_fill_ratio(m[..., 0]) == 1.0 for m in masks]
    assert 0 < sum(is_box) < 30
    assert all(
        box_fill_ratio(m[..., 0]) < 1.0 for m in random_masks(48, num_masks=10, kind="strokes", seed=5)
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_coverage": 0.5, "max_coverage": 0.5}, "smaller than `max_coverage`"),
        ({"min_coverage": 0.0}, "min_coverage"),
        ({"max_coverage": 1.5}, "max_coverage"),
        ({"num_masks": 0}, "num_masks"),
        ({"image_size": (0, 8)}, "image_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    kwargs = {"image_size": 16, **kwargs}
    for make in (box_masks, stroke_masks, random_masks):
        with pytest.raises(ValueError, match=match):
            make(**kwargs)
    with pytest.raises(ValueError, match="style"):
        stroke_masks(16, style="thin")
    with pytest.raises(ValueError, match="kind"):
        random_masks(16, kind="circles")
    with pytest.raises(ValueError, match="max_boxes"):
        box_masks(16, max_boxes=0)


def images_dataset(batch=None):
    ds = tf.data.Dataset.from_tensor_slices({"images": np.zeros((6, 24, 32, 3), "uint8")})
    return ds.batch(batch) if batch else ds


@pytest.mark.parametrize("kind", ["boxes", "strokes", "mixed"])
def test_inpainting_pairs(kind):
    batched = inpainting_pairs(images_dataset(3), kind=kind, min_coverage=0.2, max_coverage=0.4, seed=0)
    assert batched.element_spec["masks"].shape.as_list() == [None, 24, 32, 1]
    first, again = (list(batched.as_numpy_iterator()) for _ in range(2))
    masks = np.concatenate([b["masks"] for b in first])
    assert masks.shape == (6, 24, 32, 1)
    check_binary_and_coverage(masks, 0.2, 0.4)
    assert not np.array_equal(masks[0], masks[1])  # one mask per image
    assert not np.array_equal(first[0]["masks"], again[0]["masks"])  # new masks each epoch
    rebuilt = inpainting_pairs(images_dataset(3), kind=kind, min_coverage=0.2, max_coverage=0.4, seed=0)
    np.testing.assert_array_equal(first[0]["masks"], next(rebuilt.as_numpy_iterator())["masks"])
    single = next(inpainting_pairs(images_dataset(), kind=kind, seed=1).as_numpy_iterator())
    assert single["masks"].shape == (24, 32, 1) and single["images"].shape == (24, 32, 3)


def test_inpainting_pairs_errors():
    with pytest.raises(ValueError, match="kind"):
        inpainting_pairs(images_dataset(), kind="blobs")
    with pytest.raises(ValueError, match="'images'"):
        inpainting_pairs(tf.data.Dataset.from_tensor_slices({"x": np.zeros((2, 8, 8, 3))}))
    unknown = tf.data.Dataset.from_generator(
        lambda: iter([]), output_signature={"images": tf.TensorSpec((None, None, 3), tf.uint8)}
    )
    with pytest.raises(ValueError, match="static shape"):
        inpainting_pairs(unknown)
