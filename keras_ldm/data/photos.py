"""Real photographs bundled with scikit-image (no download), with a fixed train / held-out split.

For small super-resolution, inpainting and autoencoder experiments that must run offline. Only the RGB
images of `skimage.data` that ship inside the package are used (alpha dropped; grayscale, binary and
downloadable images left out). `chelsea` and `cat` are the same photo, so only `chelsea` is used, and of the
stereo motorcycle pair only the left view.

- train: astronaut, rocket, immunohistochemistry, hubble_deep_field, retina, colorwheel, logo
- held_out: chelsea, coffee, motorcycle
"""

import functools

import numpy as np

from keras_ldm.backend.lazy_tensorflow import tf
from keras_ldm.data.images import element_seeds, normalize_image_size

SPLITS = {
    "train": (
        "astronaut",
        "rocket",
        "immunohistochemistry",
        "hubble_deep_field",
        "retina",
        "colorwheel",
        "logo",
    ),
    "held_out": ("chelsea", "coffee", "motorcycle"),
}


def photo_names(split="train"):
    """The photo names of a split: `"train"`, `"held_out"` or `"all"`.

    Example:
    >>> photo_names("held_out")
    ('chelsea', 'coffee', 'motorcycle')
    """
    if split == "all":
        return SPLITS["train"] + SPLITS["held_out"]
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {(*SPLITS, 'all')}; got {split!r}.")
    return SPLITS[split]


@functools.cache
def _load(name):
    import skimage.data

    if name == "motorcycle":
        image = skimage.data.stereo_motorcycle()[0]
    else:
        image = getattr(skimage.data, name)()
    image = np.ascontiguousarray(np.asarray(image)[..., :3], dtype=np.uint8)
    image.setflags(write=False)
    return image


def load_photo(name):
    """One photo as a read-only uint8 `(H, W, 3)` array.

    Example:
    >>> load_photo("coffee").shape
    (400, 600, 3)
    """
    if name not in photo_names("all"):
        raise ValueError(f"`name` must be one of {photo_names('all')}; got {name!r}.")
    return _load(name)


def load_photos(split="train"):
    """The photos of a split as a dict `{name: uint8 (H, W, 3) array}` (read-only arrays).

    Example:
    >>> {name: photo.shape for name, photo in load_photos("held_out").items()}["chelsea"]
    (300, 451, 3)
    """
    return {name: load_photo(name) for name in photo_names(split)}


@functools.lru_cache(maxsize=64)
def _covering(name, height, width):
    """The photo, upscaled (bicubic, aspect kept) if needed so that it covers `height x width`."""
    import PIL.Image

    photo = load_photo(name)
    scale = max(height / photo.shape[0], width / photo.shape[1])
    if scale <= 1:
        return photo
    size = (
        max(width, int(np.ceil(photo.shape[1] * scale))),
        max(height, int(np.ceil(photo.shape[0] * scale))),
    )
    resized = np.asarray(PIL.Image.fromarray(photo).resize(size, PIL.Image.BICUBIC))
    resized.setflags(write=False)
    return resized


def _crops(rng, names, height, width, count):
    crops = np.empty((count, height, width, 3), dtype=np.uint8)
    for i in range(count):
        photo = _covering(names[int(rng.integers(len(names)))], height, width)
        top = int(rng.integers(0, photo.shape[0] - height + 1))
        left = int(rng.integers(0, photo.shape[1] - width + 1))
        crops[i] = photo[top : top + height, left : left + width]
    return crops


def random_photo_crops(split="train", size=64, count=16, seed=0):
    """`count` random crops of the split's photos as a uint8 `(count, height, width, 3)` array.

    Each crop picks a photo uniformly, then a uniform position (photos smaller than `size` are upscaled
    first). The same arguments give the same crops: a fixed evaluation set for the held-out photos.

    Example:
    >>> crops = random_photo_crops("held_out", size=32, count=4, seed=0)
    >>> crops.shape, crops.dtype.name
    ((4, 32, 32, 3), 'uint8')
    """
    names = photo_names(split)
    height, width = normalize_image_size(size, "size")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"`count` must be a positive int; got {count!r}.")
    return _crops(np.random.default_rng(seed), names, height, width, int(count))


def photo_crops_dataset(split="train", size=64, batch_size=None, seed=None, num_examples=None):
    """Random crops of the split's photos as a `tf.data.Dataset` of `{"images": uint8 (H, W, 3)}`.

    Args:
        split: `"train"`, `"held_out"` or `"all"`.
        size: an int or `(height, width)` of the crops.
        batch_size: batch the crops (`(B, H, W, 3)`, last partial batch dropped), or `None`.
        seed: an int for a reproducible sequence (different crops on each epoch), or `None`.
        num_examples: crops per epoch, or `None` for an endless dataset.

    Example:
    >>> ds = photo_crops_dataset("train", size=32, batch_size=2, seed=0)
    >>> next(iter(ds))["images"].shape.as_list()
    [2, 32, 32, 3]
    """
    names = photo_names(split)
    height, width = normalize_image_size(size, "size")
    if num_examples is not None and (
        isinstance(num_examples, bool) or not isinstance(num_examples, (int, np.integer)) or num_examples < 1
    ):
        raise ValueError(f"`num_examples` must be a positive int or None; got {num_examples!r}.")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise ValueError(f"`batch_size` must be a positive int or None; got {batch_size!r}.")
    if num_examples is not None and batch_size is not None and num_examples < batch_size:
        raise ValueError(
            f"`num_examples={num_examples}` is smaller than `batch_size={batch_size}`; every batch would be dropped."
        )
    for name in names:  # load (and cache) the photos once, outside the tf.data threads
        _covering(name, height, width)

    def crop(element_seed):
        rng = np.random.default_rng([int(s) % 2**63 for s in element_seed])
        return _crops(rng, names, height, width, 1)[0]

    def to_example(element_seed):
        image = tf.numpy_function(crop, [element_seed], tf.uint8, stateful=False)
        return {"images": tf.ensure_shape(image, (height, width, 3))}

    seeds = element_seeds(seed)
    if num_examples is not None:
        seeds = seeds.take(num_examples)
    ds = seeds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)
