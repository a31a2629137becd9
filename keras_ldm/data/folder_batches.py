"""A folder of images as training batches indexed by step, for runs that resume exactly.

The batch of step `s` is a pure function of `(seed, s)`: which images (a fresh permutation of the folder
each epoch, drawn from `(seed, epoch)`), where they are cropped, and the random masks (inpainting) or
degradations (super-resolution) added to them. A run resumed at step `k` therefore sees exactly the
batches an uninterrupted run would have seen from step `k` on. `keras-ldm train` and
`keras-ldm train-autoencoder` train on these batches; any `fit` can.

- `scan_image_folder`: lists the images under a folder (recursively, sorted) and checks them all once,
  from their headers: readable, one channel count, one size (or at least the crop size).
- `folder_captions`: the caption of each image from its sidecar text file (`cat.png` + `cat.txt`).
- `folder_classes`: class labels from sub-folder names (`cats/1.png` is class `cats`; ids by sorted name).
- `StepBatches`: a `keras.utils.PyDataset` of dict batches `{"images", ...}` for the steps `[start, stop)`.

Example:
>>> import tempfile
>>> from PIL import Image
>>> folder = tempfile.mkdtemp()
>>> for i in range(5):
...     Image.fromarray(np.full((8, 12), 50 * i, "uint8")).save(os.path.join(folder, f"{i}.png"))
>>> images = scan_image_folder(folder)
>>> len(images), images.height, images.width, images.channels
(5, 8, 12, 1)
>>> batches = StepBatches(images, batch_size=2, seed=0, stop=3)
>>> batches[0]["images"].shape, len(batches)
((2, 8, 12, 1), 3)
>>> bool((batches.batch(2)["images"] == StepBatches(images, 2, seed=0, start=2).batch(2)["images"]).all())
True
"""

import dataclasses
import hashlib
import os

import keras
import numpy as np

from keras_ldm.data.degradations import DEGRADATIONS, bicubic_downsample, bsr_degrade
from keras_ldm.data.image_files import image_file_shape, read_image_file
from keras_ldm.data.images import list_images, read_captions
from keras_ldm.data.masks import random_masks

CHANNEL_NAMES = {1: "greyscale (1 channel)", 3: "RGB (3 channels)", 4: "RGBA (4 channels)"}


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """The checked images of a folder (see `scan_image_folder`).

    Attributes:
        directory: the folder.
        paths: the image files, sorted.
        height, width: the size of every batch image.
        channels: 1, 3 or 4; every image is read with this many channels.
        crop: whether images are cropped (at random) to `height` x `width`; else they all have that size.
    """

    directory: str
    paths: tuple
    height: int
    width: int
    channels: int
    crop: bool

    def __len__(self):
        return len(self.paths)

    def relative_paths(self):
        """The paths relative to `directory`, with `/` separators."""
        return [os.path.relpath(path, self.directory).replace(os.sep, "/") for path in self.paths]

    def fingerprint(self):
        """A short hash of the relative paths: it changes when images are added, removed or renamed."""
        return hashlib.sha1("\n".join(self.relative_paths()).encode("utf-8")).hexdigest()[:16]

    def read(self, index, rng=None):
        """Image `index` as uint8 `(height, width, channels)`: cropped at random by `rng` (a numpy
        Generator), or centrally without one."""
        image = read_image_file(self.paths[index], self.channels)
        if not self.crop:
            return image
        spare_rows, spare_columns = image.shape[0] - self.height, image.shape[1] - self.width
        if rng is None:
            top, left = spare_rows // 2, spare_columns // 2
        else:
            top, left = int(rng.integers(spare_rows + 1)), int(rng.integers(spare_columns + 1))
        return image[top : top + self.height, left : left + self.width]


def scan_image_folder(directory, channels=None, image_size=None):
    """Lists and checks every image under `directory` (recursively) from the file headers.

    Args:
        directory: the folder of `.jpg/.jpeg/.png/.bmp/.gif` files.
        channels: read every image as 1 (grey), 3 (RGB) or 4 (RGBA) channels; None: the images must
            all have the same channel count, which is used.
        image_size: `(height, width)` of random crops; every image must be at least that large. None:
            all images must have one size, which is used.

    Returns:
        An `ImageFolder`. A `ValueError` names the folder and the files for an empty folder, an
        unreadable file, mixed channel counts, mixed sizes or images smaller than the crop.
    """
    if channels not in (None, 1, 3, 4):
        raise ValueError(f"`channels` must be 1, 3, 4 or None; got {channels!r}.")
    paths = list_images(directory)
    shapes = [image_file_shape(path) for path in paths]
    if channels is None:
        channels = _one_value(paths, [shape[2] for shape in shapes], directory, "channel counts", _channels)
    if image_size is None:
        sizes = [shape[:2] for shape in shapes]
        height, width = _one_value(paths, sizes, directory, "sizes", _size)
        return ImageFolder(os.fspath(directory), tuple(paths), height, width, channels, crop=False)
    height, width = image_size
    small = [(p, s) for p, s in zip(paths, shapes) if s[0] < height or s[1] < width]
    if small:
        named = ", ".join(f"{p!r} ({_size(s[:2])})" for p, s in small[:3])
        raise ValueError(
            f"{len(small)} of the {len(paths)} images under {os.fspath(directory)!r} are smaller than the "
            f"crop size {height}x{width}: {named}{', ...' if len(small) > 3 else ''}. Use a smaller "
            f"image_size (keras-ldm: --image-size) or enlarge those images."
        )
    return ImageFolder(os.fspath(directory), tuple(paths), height, width, channels, crop=True)


def _one_value(paths, values, directory, what, describe):
    """The value all images share; a ValueError naming the first image of the first two values."""
    first = {}
    for path, value in zip(paths, values):
        first.setdefault(value, path)
    if len(first) > 1:
        (a, path_a), (b, path_b) = list(first.items())[:2]
        hint = (
            "pass channels=1, 3 or 4 (keras-ldm: --channels) to convert them all"
            if what == "channel counts"
            else "pass image_size=(height, width) (keras-ldm: --image-size HxW) to crop them all to one "
            "size, or resize them first"
        )
        raise ValueError(
            f"The images under {os.fspath(directory)!r} mix {what}: {path_a!r} is {describe(a)} but "
            f"{path_b!r} is {describe(b)}; {hint}."
        )
    return values[0]


def _channels(count):
    return CHANNEL_NAMES[count]


def _size(size):
    return f"{size[0]}x{size[1]}"


def folder_captions(folder):
    """The caption of every image of `folder` (an `ImageFolder`) from its sidecar `.txt` file, stripped.

    A `ValueError` lists the images that have no caption file.
    """
    captions = read_captions(folder.paths)
    missing = [path for path, caption in zip(folder.paths, captions) if caption is None]
    if missing:
        named = ", ".join(f"{path!r} (no {os.path.splitext(path)[0] + '.txt'!r})" for path in missing[:5])
        raise ValueError(
            f"{len(missing)} of the {len(folder)} images under {folder.directory!r} have no caption file (a "
            f"text file beside the image, with the same name): {named}{', ...' if len(missing) > 5 else ''}."
        )
    return captions


def folder_classes(folder):
    """`(labels, class_names)`: the sub-folder of `folder.directory` each image is in is its class.

    Class ids follow the sorted sub-folder names; `labels` is int32 `(N,)`. A `ValueError` names images
    that are not inside a sub-folder, and a layout with fewer than two classes.
    """
    parts = [path.split("/") for path in folder.relative_paths()]
    loose = [path for path, part in zip(folder.paths, parts) if len(part) == 1]
    if loose:
        raise ValueError(
            f"Class labels come from sub-folders (one per class, e.g. {folder.directory}/cats/1.png), but "
            f"{len(loose)} images lie directly in {folder.directory!r}: {loose[:3]}."
        )
    names = sorted({part[0] for part in parts})
    if len(names) < 2:
        raise ValueError(
            f"Class-conditional training needs at least two classes (one sub-folder each) under "
            f"{folder.directory!r}; found {len(names)}: {names}."
        )
    index = {name: label for label, name in enumerate(names)}
    return np.array([index[part[0]] for part in parts], "int32"), names


class StepBatches(keras.utils.PyDataset):
    """The training batches of the steps `[start, stop)`: item `i` is `batch(start + i)`.

    Args:
        folder: an `ImageFolder`.
        batch_size: images per batch (at most `len(folder)`); each epoch drops the last partial batch.
        seed: the int that, with the step, decides the order, crops, masks and degradations.
        columns: `{key: array}` of per-image values added to the batches (e.g. `labels`, `token_ids`).
        masks: add inpainting `masks` (float32 0/1 `(B, H, W, 1)`, boxes and strokes; 1 = fill).
        low_res: add super-resolution inputs `low_res`: `(factor, degradation)`, `degradation` one of
            `"bicubic"`, `"bsr"`, `"bsr_light"` (see `keras_ldm.data.degradations`; needs TensorFlow).
        start, stop: the steps; `stop=None` is one epoch after `start`.
        **kwargs: `keras.utils.PyDataset` options (`workers`, `max_queue_size`).
    """

    def __init__(
        self,
        folder,
        batch_size,
        seed=0,
        columns=None,
        masks=False,
        low_res=None,
        start=0,
        stop=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1; got {batch_size!r}.")
        if batch_size > len(folder):
            raise ValueError(
                f"`batch_size` {batch_size} is larger than the {len(folder)} images under "
                f"{folder.directory!r}; use at most {len(folder)}."
            )
        if low_res is not None and low_res[1] not in DEGRADATIONS:
            raise ValueError(f"The degradation must be one of {DEGRADATIONS}; got {low_res[1]!r}.")
        self.folder, self.batch_size, self.seed = folder, int(batch_size), int(seed)
        self.columns = {key: np.asarray(value) for key, value in (columns or {}).items()}
        self.masks, self.low_res = masks, low_res
        self.steps_per_epoch = len(folder) // self.batch_size
        self.start = int(start)
        self.stop = self.start + self.steps_per_epoch if stop is None else int(stop)

    def __len__(self):
        return max(self.stop - self.start, 0)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} is outside [0, {len(self)}).")
        return self.batch(self.start + index)

    def indices(self, step):
        """The images of step `step`: a slice of the permutation of its epoch."""
        epoch, position = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.folder))
        return order[position * self.batch_size : (position + 1) * self.batch_size]

    def batch(self, step):
        """The batch dict of step `step` (any step, also outside `[start, stop)`)."""
        indices = self.indices(step)
        crops = np.random.default_rng([self.seed, step, 0])
        images = np.stack([self.folder.read(index, crops) for index in indices])
        batch = {"images": images}
        for key, column in self.columns.items():
            batch[key] = column[indices]
        if self.masks:
            size = (self.folder.height, self.folder.width)
            batch["masks"] = random_masks(size, len(indices), seed=[self.seed, step, 1])
        if self.low_res is not None:
            batch["low_res"] = low_res_images(images, *self.low_res, seed=(self.seed, step))
        return batch


def low_res_images(images, factor, degradation="bsr", seed=0):
    """uint8 images `(B, H, W, C)` made `factor` times smaller by `degradation`, for C = 1, 3 or 4.

    The degradations work on RGB: a grey image is degraded as RGB and averaged back to one channel; the
    alpha channel of RGBA images is downsampled bicubically. `seed`: an int or a pair of ints.

    Example:
    >>> low_res_images(np.zeros((2, 16, 16, 1), "uint8"), 4, "bicubic").shape
    (2, 4, 4, 1)
    """
    channels = images.shape[-1]
    rgb = np.repeat(images, 3, axis=-1) if channels == 1 else images[..., :3]
    if degradation == "bicubic":
        small = np.asarray(bicubic_downsample(rgb, factor))
    else:
        pair = np.array(seed if np.ndim(seed) else [seed, 0], "int64")
        small = np.asarray(bsr_degrade(rgb, factor, seed=pair, strength=degradation))
    if channels == 1:
        return np.round(small.mean(axis=-1, keepdims=True)).astype("uint8")
    if channels == 4:
        alpha = np.asarray(bicubic_downsample(np.repeat(images[..., 3:], 3, axis=-1), factor))
        return np.concatenate([small, alpha[..., :1]], axis=-1)
    return small
