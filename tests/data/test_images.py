"""image_folder_dataset: crops, flips, captions, determinism and errors; the uint8 <-> [-1, 1] helpers."""

import os

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from keras_ldm.data.images import image_folder_dataset, list_images, to_uint8, to_unit_range

RNG = np.random.default_rng(0)
# name -> (height, width); "sub/small" is smaller than the 24-pixel crops and gets upscaled.
SIZES = {"a": (40, 50), "b": (64, 32), "sub/small": (20, 30)}
IMAGES = {name: RNG.integers(0, 256, (*size, 3)).astype("uint8") for name, size in SIZES.items()}
CAPTIONS = {"a": "a photo of noise\n", "sub/small": "  tiny noise  "}


@pytest.fixture
def folder(tmp_path):
    for name, image in IMAGES.items():
        path = tmp_path / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        PIL.Image.fromarray(image).save(path)
    for name, text in CAPTIONS.items():
        (tmp_path / f"{name}.txt").write_text(text)
    (tmp_path / "notes.md").write_text("not an image")
    return tmp_path


def windows(image, height, width):
    """All `height x width` windows of an image, flattened: `(count, height * width * 3)`."""
    view = np.lib.stride_tricks.sliding_window_view(image, (height, width, 3))[:, :, 0]
    return view.reshape(-1, height * width * 3)


def is_window_of(crop, image):
    return bool(np.any(np.all(windows(image, *crop.shape[:2]) == crop.reshape(1, -1), axis=1)))


def collect(ds):
    return list(ds.as_numpy_iterator())


def test_list_images_is_sorted_recursive_and_filters_extensions(folder):
    paths = list_images(folder)
    assert [os.path.relpath(p, folder) for p in paths] == ["a.png", "b.png", os.path.join("sub", "small.png")]
    assert list_images(str(folder)) == paths


def test_central_crops_sizes_and_captions_without_randomness(folder):
    ds = image_folder_dataset(folder, 24, random_crop=False, random_flip=False, shuffle=False)
    examples = collect(ds)
    assert [e["prompts"] for e in examples] == [b"a photo of noise", b"", b"tiny noise"]
    for example in examples:
        assert example["images"].dtype == np.uint8 and example["images"].shape == (24, 24, 3)
    np.testing.assert_array_equal(examples[0]["images"], IMAGES["a"][8:32, 13:37])
    np.testing.assert_array_equal(examples[1]["images"], IMAGES["b"][20:44, 4:28])


def test_small_images_are_upscaled_to_cover_the_crop(folder):
    ds = image_folder_dataset(folder, (24, 36), random_crop=False, random_flip=False, shuffle=False)
    small = collect(ds)[2]["images"]
    assert small.shape == (24, 36, 3)
    # 20 x 30 scaled by 1.2 to 24 x 36: the whole (resized) image, close to a bicubic resize of it.
    reference = np.asarray(PIL.Image.fromarray(IMAGES["sub/small"]).resize((36, 24), PIL.Image.BICUBIC))
    assert np.abs(small.astype(int) - reference).mean() < 12
    with pytest.raises(tf.errors.InvalidArgumentError, match="small.png"):
        collect(image_folder_dataset(folder, 24, allow_upscale=False, captions=False))


def test_random_crops_are_windows_and_flips_happen(folder):
    ds = image_folder_dataset(folder, (16, 20), captions=False, shuffle=False, seed=3, random_flip=True)
    flipped = unflipped = 0
    for _ in range(6):  # epochs: new crops and flips every time
        crop = collect(ds)[0]["images"]
        as_is, mirrored = is_window_of(crop, IMAGES["a"]), is_window_of(crop[:, ::-1], IMAGES["a"])
        assert as_is or mirrored
        unflipped += as_is
        flipped += mirrored
    assert flipped and unflipped
    no_flip = image_folder_dataset(folder, (16, 20), captions=False, shuffle=False, seed=3, random_flip=False)
    assert all(is_window_of(collect(no_flip)[0]["images"], IMAGES["a"]) for _ in range(3))


def test_crops_order_and_flips_are_deterministic_given_the_seed(folder):
    def epochs(seed, count=2):
        ds = image_folder_dataset(folder, 16, batch_size=3, seed=seed)
        return [collect(ds)[0] for _ in range(count)]

    first, again, other = epochs(5), epochs(5), epochs(6)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["prompts"], b["prompts"])
    assert not np.array_equal(first[0]["images"], first[1]["images"])  # epochs differ
    assert not np.array_equal(first[0]["images"], other[0]["images"])  # seeds differ


def test_batches_have_static_shapes(folder):
    ds = image_folder_dataset(folder, (8, 12), batch_size=2, seed=0)
    assert ds.element_spec["images"].shape.as_list() == [2, 8, 12, 3]
    assert ds.element_spec["prompts"].dtype == tf.string
    assert len(collect(ds)) == 1  # 3 images, the partial batch dropped
    partial = image_folder_dataset(folder, 8, batch_size=2, seed=0, captions=False, drop_remainder=False)
    assert [b["images"].shape[0] for b in collect(partial)] == [2, 1]
    assert set(partial.element_spec) == {"images"}


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        image_folder_dataset(tmp_path / "nope", 16)
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ValueError, match="not a folder"):
        image_folder_dataset(tmp_path / "file.png", 16)
    with pytest.raises(TypeError, match="directory"):
        image_folder_dataset(3, 16)


def test_empty_folders_name_what_was_found(tmp_path):
    with pytest.raises(ValueError, match="No images .* found nothing"):
        image_folder_dataset(tmp_path, 16)
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "photo.webp").write_bytes(b"")
    with pytest.raises(ValueError, match=r"found 2 other files.*photo.webp"):
        image_folder_dataset(tmp_path, 16)


@pytest.mark.parametrize("image_size", [0, -3, (16, 0), (16, 16, 3), "16", True, 16.0])
def test_bad_image_sizes(folder, image_size):
    with pytest.raises(ValueError, match="image_size"):
        image_folder_dataset(folder, image_size)


def test_caption_and_batch_errors(folder, tmp_path_factory):
    bare = tmp_path_factory.mktemp("bare")
    PIL.Image.fromarray(IMAGES["a"]).save(bare / "x.jpg")
    with pytest.raises(ValueError, match=r"none of the 1 images .* caption file .*x\.txt"):
        image_folder_dataset(bare, 16)
    assert set(image_folder_dataset(bare, 16, captions=False).element_spec) == {"images"}
    with pytest.raises(ValueError, match="larger than the 3 images"):
        image_folder_dataset(folder, 16, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        image_folder_dataset(folder, 16, batch_size=0)


def test_jpeg_and_grayscale_images_decode_to_rgb(tmp_path):
    PIL.Image.fromarray(IMAGES["a"][..., 0]).save(tmp_path / "gray.png")
    PIL.Image.fromarray(IMAGES["b"]).save(tmp_path / "photo.JPG", quality=95)
    examples = collect(image_folder_dataset(tmp_path, 16, captions=False, shuffle=False, seed=0))
    assert [e["images"].shape for e in examples] == [(16, 16, 3)] * 2
    gray = examples[0]["images"]
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])


def test_unit_range_round_trip():
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    unit = to_unit_range(images).numpy()
    assert unit.dtype == np.float32 and unit.min() == -1.0 and unit.max() == 1.0
    np.testing.assert_array_equal(to_uint8(unit).numpy(), images)
    np.testing.assert_array_equal(to_uint8(np.array([-2.0, 0.999, 3.0])).numpy(), [0, 255, 255])
