"""A folder of image files read as uint8 numpy batches of one size and channel count, without TensorFlow.

The metrics and `keras-ldm evaluate` read reference and generated images this way: every image under the
folder (recursively, sorted; see `list_images`), decoded with Pillow to `(H, W, C)` uint8 with C = 1 (grey),
3 (RGB) or 4 (RGBA). All images must share H, W and C: a metric over mixed sizes would silently depend on
how they were resized, so a file that differs is an error that names it.

Example:
>>> import tempfile, os
>>> from PIL import Image
>>> folder = tempfile.mkdtemp()
>>> for i in range(5):
...     Image.fromarray(np.full((8, 6, 3), 40 * i, "uint8")).save(os.path.join(folder, f"{i}.png"))
>>> [batch.shape for batch in image_batches(folder, batch_size=2)]
[(2, 8, 6, 3), (2, 8, 6, 3), (1, 8, 6, 3)]
"""

import numpy as np

from keras_ldm.data.images import list_images

_CHANNELS = {"1": 1, "L": 1, "I;16": 1, "LA": 4, "P": 3, "RGB": 3, "RGBA": 4, "CMYK": 3, "YCbCr": 3}


def read_image_file(path, channels=None):
    """One image file as uint8 `(H, W, C)` with C in {1, 3, 4}; a ValueError naming the file if unreadable.

    `channels`: convert to 1 (grey), 3 (RGB) or 4 (RGBA) channels; None keeps the file's own
    (see `image_file_shape`).
    """
    from PIL import Image

    if channels not in (None, 1, 3, 4):
        raise ValueError(f"`channels` must be 1, 3, 4 or None; got {channels!r}.")
    try:
        with Image.open(path) as image:
            channels = channels or _channels_of(image)
            array = np.asarray(image.convert({1: "L", 3: "RGB", 4: "RGBA"}[channels]))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path!r} is not a readable image: {error}") from error
    return array[..., None] if array.ndim == 2 else array


def image_file_shape(path):
    """`(H, W, C)` of an image file from its header (nothing decoded), C as `read_image_file` gives it.

    Example:
    >>> import tempfile, os
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "grey.png")
    >>> Image.fromarray(np.zeros((8, 6), "uint8")).save(path)
    >>> image_file_shape(path)
    (8, 6, 1)
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.height, image.width, _channels_of(image)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path!r} is not a readable image: {error}") from error


def _channels_of(image):
    """The channel count a PIL image is read with: transparency makes 4 (RGBA), grey 1, the rest 3."""
    mode = "RGBA" if image.mode in ("LA", "PA") or "transparency" in image.info else image.mode
    return _CHANNELS.get(mode, 3)


def image_batches(directory, batch_size=50, limit=None):
    """Yields uint8 batches `(b, H, W, C)` of the images under `directory`, at most `limit` images in all.

    Raises ValueError for an empty folder, an unreadable file, or a file whose size or channel count
    differs from the first image's (naming both files).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1; got {batch_size!r}.")
    paths = list_images(directory)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ValueError(f"`limit` must be an int >= 1 or None; got {limit!r}.")
        paths = paths[:limit]
    first_shape = first_path = None
    for start in range(0, len(paths), batch_size):
        batch = []
        for path in paths[start : start + batch_size]:
            image = read_image_file(path)
            if first_shape is None:
                first_shape, first_path = image.shape, path
            elif image.shape != first_shape:
                raise ValueError(
                    f"Images in {directory!r} must share one size and channel count: {path!r} is "
                    f"{_describe(image.shape)} but {first_path!r} is {_describe(first_shape)}. "
                    "Resize or convert them first."
                )
            batch.append(image)
        yield np.stack(batch)


def count_images(directory, limit=None):
    """How many images `image_batches(directory, limit=limit)` yields."""
    count = len(list_images(directory))
    return count if limit is None else min(count, limit)


def _describe(shape):
    height, width, channels = shape
    return f"{height}x{width} with {channels} channel{'s' if channels > 1 else ''}"
