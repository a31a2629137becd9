"""The bundled photographs: split, loading, crops that come from the right split, the dataset."""

import numpy as np
import pytest

from keras_ldm.data.photos import (
    SPLITS,
    load_photo,
    load_photos,
    photo_crops_dataset,
    photo_names,
    random_photo_crops,
)


def test_the_split_is_fixed_and_disjoint():
    train, held_out = photo_names("train"), photo_names("held_out")
    assert len(held_out) >= 3 and len(train) >= 5
    assert not set(train) & set(held_out)
    assert photo_names("all") == train + held_out and SPLITS["held_out"] == held_out
    with pytest.raises(ValueError, match="split"):
        photo_names("test")


def test_photos_load_offline_as_rgb_uint8():
    for name, photo in load_photos("all").items():
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[-1] == 3, name
        assert min(photo.shape[:2]) >= 256, name
        # Colour photographs: the channels are not all equal.
        assert np.abs(photo[..., 0].astype(int) - photo[..., 2]).mean() > 2, name
        assert not photo.flags.writeable
    assert load_photo("motorcycle").shape == (500, 741, 3)
    with pytest.raises(ValueError, match="name"):
        load_photo("camera")  # grayscale: not included


def occurs_in(crop, photos):
    """Whether `crop` is a window of one of the photos (candidates by the top-left pixel, then checked)."""
    height, width = crop.shape[:2]
    for photo in photos.values():
        rows, cols = np.nonzero(
            np.all(photo[: 1 - height or None, : 1 - width or None] == crop[0, 0], axis=-1)
        )
        for row, col in zip(rows, cols):
            if np.array_equal(photo[row : row + height, col : col + width], crop):
                return True
    return False


def test_crops_come_from_their_split():
    crops = random_photo_crops("held_out", size=16, count=6, seed=0)
    assert crops.shape == (6, 16, 16, 3) and crops.dtype == np.uint8
    held_out, train = load_photos("held_out"), load_photos("train")
    assert all(occurs_in(crop, held_out) for crop in crops)
    assert not any(occurs_in(crop, train) for crop in crops[:2])


def test_crops_are_deterministic_and_upscaled_when_needed():
    first = random_photo_crops("train", size=(8, 12), count=50, seed=1)
    assert first.shape == (50, 8, 12, 3)
    np.testing.assert_array_equal(first, random_photo_crops("train", size=(8, 12), count=50, seed=1))
    assert not np.array_equal(first, random_photo_crops("train", size=(8, 12), count=50, seed=2))
    large = random_photo_crops("held_out", size=320, count=3, seed=0)  # chelsea is 300 tall: upscaled
    assert large.shape == (3, 320, 320, 3)
    with pytest.raises(ValueError, match="count"):
        random_photo_crops("train", size=8, count=0)
    with pytest.raises(ValueError, match="size"):
        random_photo_crops("train", size=-8, count=1)


def test_photo_crops_dataset():
    ds = photo_crops_dataset("train", size=24, batch_size=4, seed=0)
    assert ds.element_spec["images"].shape.as_list() == [4, 24, 24, 3]
    batches = list(ds.take(3).as_numpy_iterator())  # endless: take what is needed
    assert all(b["images"].dtype == np.uint8 and b["images"].shape == (4, 24, 24, 3) for b in batches)
    again = list(photo_crops_dataset("train", size=24, batch_size=4, seed=0).take(3).as_numpy_iterator())
    np.testing.assert_array_equal(batches[2]["images"], again[2]["images"])
    finite = photo_crops_dataset("held_out", size=16, seed=3, num_examples=5)
    crops = [e["images"] for e in finite.as_numpy_iterator()]
    assert len(crops) == 5 and all(occurs_in(crop, load_photos("held_out")) for crop in crops[:2])
    second_epoch = [e["images"] for e in finite.as_numpy_iterator()]
    assert not np.array_equal(np.stack(crops), np.stack(second_epoch))
    with pytest.raises(ValueError, match="num_examples"):
        photo_crops_dataset("train", size=16, num_examples=2, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        photo_crops_dataset("train", size=16, batch_size=0)
