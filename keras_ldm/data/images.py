"""Image folders as `tf.data` pipelines of training batches, and the uint8 <-> [-1, 1] conversions.

`image_folder_dataset` reads every image under a folder (recursively, in sorted order), random-crops it to
`image_size` (upscaling first where an image is smaller), flips it at random and, with `captions=True`,
attaches the caption from a sidecar text file (`cat.jpg` + `cat.txt` -> `prompts`).
"""

import os

import numpy as np

from keras_ldm.backend.lazy_tensorflow import tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def to_unit_range(images):
    """uint8 images in [0, 255] -> float32 in [-1, 1] (a `tf.Tensor`; usable inside `tf.data.map`).

    Example:
    >>> to_unit_range(np.array([0, 255], dtype="uint8")).numpy().tolist()
    [-1.0, 1.0]
    """
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def to_uint8(images):
    """Float images in [-1, 1] -> uint8 in [0, 255], rounded and clipped (a `tf.Tensor`).

    Example:
    >>> to_uint8(np.array([-1.5, -1.0, 0.0, 1.0])).numpy().tolist()
    [0, 0, 128, 255]
    """
    images = tf.cast(images, tf.float32)
    return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0, 255.0), tf.uint8)


def normalize_image_size(image_size, name="image_size"):
    """An int or an `(height, width)` pair of positive ints -> `(height, width)`; a ValueError otherwise."""
    size = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    try:
        size = tuple(size)
    except TypeError:
        size = ()
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size):
        raise ValueError(f"`{name}` must be an int or a (height, width) pair of ints; got {image_size!r}.")
    if min(size) < 1:
        raise ValueError(f"`{name}` must be positive; got {image_size!r}.")
    return int(size[0]), int(size[1])


def list_images(directory):
    """Sorted paths of the images (`IMAGE_EXTENSIONS`, any case) under `directory`, searched recursively."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"`directory` must be a path (str or os.PathLike); got {directory!r}.")
    directory = os.fspath(directory)
    if not os.path.exists(directory):
        raise ValueError(f"`directory` does not exist: {directory!r}.")
    if not os.path.isdir(directory):
        raise ValueError(f"`directory` is not a folder: {directory!r}.")
    paths, others = [], []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            is_image = os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
            (paths if is_image else others).append(os.path.join(root, name))
    if not paths:
        found = (
            f"{len(others)} other files, e.g. {[os.path.basename(p) for p in others[:3]]}"
            if others
            else "nothing"
        )
        raise ValueError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {directory!r}; found {found}."
        )
    return paths


def read_captions(paths):
    """The caption of each image from its sidecar file (`photo.jpg` -> `photo.txt`), stripped; `None` if none."""
    captions = []
    for path in paths:
        sidecar = os.path.splitext(path)[0] + ".txt"
        if os.path.isfile(sidecar):
            with open(sidecar, encoding="utf-8") as f:
                captions.append(f.read().strip())
        else:
            captions.append(None)
    return captions


def random_crop_and_flip(image, size, seed, random_crop=True, random_flip=True, allow_upscale=True, path=""):
    """Crops one `(H, W, 3)` uint8 image to `size = (height, width)`, upscaling it first if it is smaller.

    An image smaller than `size` on either side is resized (bicubic, antialiased, aspect ratio kept) until it
    covers `size`; with `allow_upscale=False` that is an error instead. The crop is at a random (stateless,
    from `seed`, a shape-`(2,)` int tensor) or the central position, then optionally flipped left-right.
    Runs inside `tf.data.map`.
    """
    height, width = size
    shape = tf.shape(image)
    scale = tf.maximum(height / shape[0], width / shape[1])
    if not allow_upscale:
        message = f"An image is smaller than image_size={size} and allow_upscale=False; its path and shape:"
        tf.debugging.Assert(scale <= 1.0, [message, path, shape])

    def upscale():
        new_size = tf.cast(tf.math.ceil(tf.cast(shape[:2], tf.float64) * scale), tf.int32)
        new_size = tf.maximum(new_size, [height, width])
        resized = tf.image.resize(image, new_size, method="bicubic", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    image = tf.cond(scale > 1.0, upscale, lambda: image)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    if random_crop:
        image = tf.image.stateless_random_crop(image, (height, width, 3), seed=crop_seed)
    else:
        shape = tf.shape(image)
        top, left = (shape[0] - height) // 2, (shape[1] - width) // 2
        image = image[top : top + height, left : left + width]
    if random_flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return tf.ensure_shape(image, (height, width, 3))


def element_seeds(seed):
    """A dataset of per-element stateless seeds (shape `(2,)` int64): the same sequence for the same
    `seed` (a new random one for `None`), different on each iteration of the dataset (each epoch)."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)


def image_folder_dataset(
    directory,
    image_size,
    batch_size=None,
    captions=True,
    random_crop=True,
    random_flip=True,
    seed=None,
    shuffle=True,
    allow_upscale=True,
    drop_remainder=True,
):
    """The images under a folder as a `tf.data.Dataset` of `{"images": uint8 (H, W, 3)[, "prompts"]}`.

    Every `.jpg/.jpeg/.png/.bmp/.gif` under `directory` (recursively) is decoded to RGB, upscaled if it is
    smaller than `image_size`, cropped to `image_size` (at random, or centrally with `random_crop=False`)
    and flipped left-right at random. The pipeline only uses stateless random ops: with a `seed` it yields
    the same sequence every time it is built, while successive epochs still differ.

    Args:
        directory: the folder to read.
        image_size: an int or `(height, width)` of the crops.
        batch_size: batches of this size (`images` `(B, H, W, 3)`), or `None` for single examples.
        captions: attach `prompts` (tf.string) read from sidecar `.txt` files beside the images
            (`a/cat.png` -> `a/cat.txt`). Images without one get the empty (unconditional) prompt `""`; a
            folder without any caption file is an error (pass `captions=False` for unlabelled images).
        random_crop: random crops (otherwise central crops).
        random_flip: random horizontal flips.
        seed: an int making the order, crops and flips reproducible; `None` for fresh randomness.
        shuffle: shuffle the files (every epoch, reproducibly given `seed`).
        allow_upscale: upscale images smaller than `image_size` (otherwise such an image raises
            `InvalidArgumentError` naming it when it is read).
        drop_remainder: drop a last partial batch (static batch shapes; compiled train steps like them).

    Example:
    >>> import tempfile, PIL.Image
    >>> folder = tempfile.mkdtemp()
    >>> PIL.Image.new("RGB", (40, 30), "red").save(f"{folder}/red.png")
    >>> with open(f"{folder}/red.txt", "w") as f:
    ...     _ = f.write("a red square")
    >>> ds = image_folder_dataset(folder, 16, batch_size=1, seed=0)
    >>> batch = next(iter(ds))
    >>> batch["images"].shape.as_list(), batch["images"].dtype.name, batch["prompts"].numpy().tolist()
    ([1, 16, 16, 3], 'uint8', [b'a red square'])
    """
    size = normalize_image_size(image_size)
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise ValueError(f"`batch_size` must be a positive int or None; got {batch_size!r}.")
    paths = list_images(directory)
    if batch_size is not None and drop_remainder and len(paths) < batch_size:
        raise ValueError(
            f"`batch_size={batch_size}` is larger than the {len(paths)} images found under {directory!r}; "
            "every batch would be dropped (use a smaller batch_size or drop_remainder=False)."
        )
    columns = {"paths": paths}
    if captions:
        texts = read_captions(paths)
        if all(text is None for text in texts):
            raise ValueError(
                f"`captions=True` but none of the {len(paths)} images under {directory!r} has a caption file "
                f"(e.g. {os.path.splitext(paths[0])[0] + '.txt'!r}); pass captions=False for unlabelled images."
            )
        columns["prompts"] = ["" if text is None else text for text in texts]

    ds = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = tf.data.Dataset.zip(ds, element_seeds(seed))

    def load(example, element_seed):
        raw = tf.io.read_file(example["paths"])
        image = tf.io.decode_image(raw, channels=3, dtype=tf.uint8, expand_animations=False)
        image = random_crop_and_flip(
            image, size, element_seed, random_crop, random_flip, allow_upscale, example["paths"]
        )
        output = {"images": image}
        if "prompts" in example:
            output["prompts"] = example["prompts"]
        return output

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)
