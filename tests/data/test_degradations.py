"""Super-resolution inputs: antialiased bicubic, the BSRGAN chain (shapes, range, seeds) and the pairs."""

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from keras_ldm.data.degradations import bicubic_downsample, bsr_degrade, super_resolution_pairs
from keras_ldm.data.photos import random_photo_crops

PHOTOS = random_photo_crops("train", size=32, count=4, seed=0)
RAMP = np.tile(np.linspace(20, 235, 64)[None, :, None], (64, 1, 3)).astype("uint8")


def test_bicubic_shapes_and_dtypes():
    assert bicubic_downsample(np.zeros((32, 48, 3), "uint8")).shape.as_list() == [8, 12, 3]
    small = bicubic_downsample(PHOTOS, factor=2)
    assert small.shape.as_list() == [4, 16, 16, 3] and small.dtype == tf.uint8
    floats = bicubic_downsample(PHOTOS.astype("float32") / 127.5 - 1.0, factor=4)
    assert floats.dtype == tf.float32 and floats.shape.as_list() == [4, 8, 8, 3]


@pytest.mark.parametrize("value", [0, 97, 255])
def test_bicubic_of_a_constant_image_is_constant(value):
    np.testing.assert_array_equal(bicubic_downsample(np.full((1, 16, 24, 3), value, "uint8")).numpy(), value)
    floats = bicubic_downsample(np.full((16, 16, 3), value / 127.5 - 1.0, "float32")).numpy()
    np.testing.assert_allclose(floats, value / 127.5 - 1.0, atol=1e-5)


def test_bicubic_matches_pil():
    """Antialiased bicubic, like PIL's BICUBIC (and Matlab's imresize) that CompVis' data uses."""
    image = random_photo_crops("held_out", size=64, count=1, seed=1)[0]
    ours = bicubic_downsample(image, 4).numpy().astype(int)
    pil = np.asarray(PIL.Image.fromarray(image).resize((16, 16), PIL.Image.BICUBIC)).astype(int)
    assert np.abs(ours - pil).max() <= 3 and np.abs(ours - pil).mean() < 0.5
    strided = image[1::4, 1::4].astype(int)  # plain subsampling aliases: far from both
    assert np.abs(strided - pil).mean() > 3 * np.abs(ours - pil).mean()


@pytest.mark.parametrize(
    "images, factor, match",
    [
        (np.zeros((30, 32, 3), "uint8"), 4, "height must be a positive multiple"),
        (np.zeros((32, 30, 3), "uint8"), 4, "width must be a positive multiple"),
        (np.zeros((32, 32), "uint8"), 4, r"shape \(H, W, 3\)"),
        (np.zeros((32, 32, 3), "int32"), 4, "dtype"),
        (np.zeros((32, 32, 3), "uint8"), 0, "factor"),
    ],
)
def test_bad_inputs_are_rejected(images, factor, match):
    with pytest.raises(ValueError, match=match):
        bicubic_downsample(images, factor)
    with pytest.raises(ValueError, match=match):
        bsr_degrade(images, factor, seed=0)


def test_bsr_shapes_range_and_difference_from_bicubic():
    bicubic = bicubic_downsample(PHOTOS).numpy().astype(int)
    low_res = bsr_degrade(PHOTOS, factor=4, seed=1)
    assert low_res.dtype == tf.uint8 and low_res.shape.as_list() == [4, 8, 8, 3]
    differences = np.abs(low_res.numpy().astype(int) - bicubic).mean(axis=(1, 2, 3))
    assert np.all(differences > 1)  # every image is degraded beyond the clean downsample
    single = bsr_degrade(PHOTOS[0], factor=2, seed=1, strength="bsr_light")
    assert single.shape.as_list() == [16, 16, 3]
    floats = bsr_degrade(PHOTOS.astype("float32") / 127.5 - 1.0, seed=2).numpy()
    assert floats.dtype == np.float32 and floats.min() >= -1.0 and floats.max() <= 1.0 and floats.std() > 0.1


def test_bsr_is_deterministic_given_the_seed():
    first = bsr_degrade(PHOTOS, seed=3).numpy()
    np.testing.assert_array_equal(first, bsr_degrade(PHOTOS, seed=3).numpy())
    np.testing.assert_array_equal(first, bsr_degrade(PHOTOS, seed=tf.constant([3, 0])).numpy())
    assert not np.array_equal(first, bsr_degrade(PHOTOS, seed=4).numpy())
    # A batch gives each image its own seed: two copies of one image are degraded differently.
    twins = bsr_degrade(np.stack([PHOTOS[0], PHOTOS[0]]), seed=3).numpy()
    assert not np.array_equal(twins[0], twins[1])


def test_bsr_keeps_the_image_aligned():
    """On a ramp a shift of one low-res pixel changes values by ~14: every random chain must stay close
    to the clean bicubic downsample (the light variant adds little noise)."""
    bicubic = bicubic_downsample(RAMP).numpy().astype(int)[2:-2, 2:-2]
    for seed in range(10):
        low_res = bsr_degrade(RAMP, seed=seed, strength="bsr_light").numpy().astype(int)[2:-2, 2:-2]
        assert np.abs(low_res - bicubic).mean() < 4, seed


def test_light_is_milder_than_full():
    def mean_error(strength):
        bicubic = bicubic_downsample(PHOTOS).numpy().astype(int)
        return np.mean(
            [
                np.abs(bsr_degrade(PHOTOS, seed=s, strength=strength).numpy() - bicubic).mean()
                for s in range(3)
            ]
        )

    assert mean_error("bsr_light") < mean_error("bsr")
    with pytest.raises(ValueError, match="strength"):
        bsr_degrade(PHOTOS, seed=0, strength="heavy")


def dataset(batch=None):
    ds = tf.data.Dataset.from_tensor_slices({"images": PHOTOS, "labels": np.arange(4)})
    return ds.batch(batch) if batch else ds


def test_super_resolution_pairs_bicubic():
    pairs = list(super_resolution_pairs(dataset(2), factor=4).as_numpy_iterator())
    assert [sorted(p) for p in pairs] == [["images", "labels", "low_res"]] * 2
    np.testing.assert_array_equal(pairs[1]["images"], PHOTOS[2:])
    np.testing.assert_array_equal(pairs[1]["low_res"], bicubic_downsample(PHOTOS[2:]).numpy())
    assert pairs[0]["low_res"].dtype == np.uint8


@pytest.mark.parametrize("degradation", ["bsr", "bsr_light"])
def test_super_resolution_pairs_bsr_unbatched_and_batched(degradation):
    single = super_resolution_pairs(dataset(), factor=4, degradation=degradation, seed=0)
    assert single.element_spec["low_res"].shape.as_list() == [8, 8, 3]
    batched = super_resolution_pairs(dataset(2), factor=2, degradation=degradation, seed=0)
    assert batched.element_spec["low_res"].shape.as_list() == [None, 16, 16, 3]
    first, again = (list(batched.as_numpy_iterator()) for _ in range(2))  # two epochs
    assert first[0]["low_res"].shape == (2, 16, 16, 3) and first[0]["low_res"].dtype == np.uint8
    assert not np.array_equal(first[0]["low_res"], again[0]["low_res"])  # fresh degradations each epoch
    rebuilt = super_resolution_pairs(dataset(2), factor=2, degradation=degradation, seed=0)
    np.testing.assert_array_equal(first[0]["low_res"], next(rebuilt.as_numpy_iterator())["low_res"])


def test_super_resolution_pairs_errors():
    with pytest.raises(ValueError, match="degradation"):
        super_resolution_pairs(dataset(), degradation="nearest")
    with pytest.raises(ValueError, match="'images'"):
        super_resolution_pairs(tf.data.Dataset.from_tensor_slices({"x": PHOTOS}))
    with pytest.raises(ValueError, match="multiple of factor=3"):
        super_resolution_pairs(dataset(), factor=3)
