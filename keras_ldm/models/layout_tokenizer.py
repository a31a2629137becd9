"""Layouts (class-labelled bounding boxes) -> the token sequence of CompVis' layout-to-image LDM.

The scheme is CompVis' `CoordinatesBoundingBoxConditionalBuilder` (retrieval-augmented-diffusion-models,
`rdm/data/openimages_bbox_helpers/openimages_builder.py`, built by `OpenImagesBBoxBase` with
`no_tokens=8192`, `tok_no_max_relations=30`, `encode_crop=True`); taming-transformers'
`ObjectsBoundingBoxConditionalBuilder` (`taming/data/conditional_builder/objects_bbox.py`, on top of
`objects_center_points.py` and `utils.py`) writes the same tokens:

- `grid = int(sqrt(num_tokens))` (90 for 8192); a point (x, y) in [0, 1]² (x right, y down) is the token
  `round(y · (grid − 1)) · grid + round(x · (grid − 1))` (`tokenize_coordinates`; Python's `round`,
  half to even, on float64);
- an object is the triple (object token, top-left token, bottom-right token). The object token is
  `label + num_classes · modifier` (`object_representation`); the modifier packs OpenImages' flags
  (1 group-of, 2 occluded, 4 depiction, 8 inside) and is 0 unless `box_modifiers` are given. CompVis
  keeps boxes as (x0, y0, w, h) and tokenizes the bottom-right corner as (x0 + w, y0 + h) with
  `w = min(w, 1 − x0)` (`_rescale_annotations` against the full crop); so do we, with `w = x1 − x0`;
- `max_objects` triples (`pad_list`), the missing ones `(pad, pad, pad)`, `pad = num_tokens − 1` (8191,
  the builder's `none`);
- then (`encode_crop`) the top-left and bottom-right tokens of the crop window: the whole image,
  (0, 0)-(1, 1), gives 0 and `grid² − 1` (8099).
3 · 30 + 2 = 92 tokens, the `max_seq_len` of the layout2img-openimages256 `BERTEmbedder`.

Where we differ: CompVis shuffles each training image's objects (`random_object_order=True`) — we keep
the given order (deterministic; shuffle in the data pipeline to train like CompVis); more than
`max_objects` boxes: a warning and the first `max_objects` are kept (taming-transformers warns and
truncates as well, RDM truncates silently); an empty layout is allowed (RDM raises) — it is the null
layout for classifier-free guidance; boxes are checked, not clamped.
"""

import math
import warnings

import keras
import numpy as np
from keras import ops

NUM_TOKENS = 8192
MAX_OBJECTS = 30
NUM_MODIFIERS = 16  # 4 OpenImages flags: group-of, occluded, depiction, inside


def _positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; got {value!r}.")
    return int(value)


def _as_array(values, dtype):
    """`values` as one numpy array, or None when they are ragged (lists of different lengths)."""
    try:
        return np.asarray(values, dtype=dtype)
    except (ValueError, TypeError):
        return None


def _image_boxes(boxes, index):
    array = _as_array(boxes, "float64")
    if array is not None and array.size == 0:
        return np.zeros((0, 4))
    if array is None or array.ndim != 2 or array.shape[1] != 4:
        shape = "ragged" if array is None else tuple(array.shape)
        raise ValueError(
            f"`boxes` of image {index} has shape {shape}; each image needs an (n, 4) list or array of "
            f"(x0, y0, x1, y1) boxes."
        )
    return array


def split_boxes(boxes):
    """`boxes` as a list of per-image `(n_i, 4)` float64 arrays, and whether it was one image.

    A batch is a `(B, N, 4)` array or a list of B per-image `(n_i, 4)` lists/arrays; one image is an
    `(n, 4)` array or list.

    Example:
    >>> images, single = split_boxes([[[0, 0, 1, 1]], []])
    >>> [image.shape for image in images], single
    ([(1, 4), (0, 4)], False)
    """
    array = _as_array(boxes, "float64")
    if array is None:  # ragged: one entry per image
        if not isinstance(boxes, (list, tuple)):
            raise TypeError(f"`boxes` must be a list or an array of boxes; got {type(boxes).__name__}.")
        return [_image_boxes(image, i) for i, image in enumerate(boxes)], False
    if array.ndim == 3 and array.shape[-1] == 4 and len(array):
        return list(array), False
    if array.ndim == 2 and array.shape[-1] == 4 or array.ndim == 1 and array.size == 0:
        return [array.reshape(-1, 4)], True
    if array.ndim == 2 and array.shape[-1] == 0:  # a batch of empty layouts
        return [np.zeros((0, 4)) for _ in range(array.shape[0])], False
    raise ValueError(
        f"`boxes` has shape {tuple(array.shape)}; expected (B, N, 4) boxes (x0, y0, x1, y1), a list of B "
        f"per-image (n_i, 4) lists, or one image's (n, 4)."
    )


def _split_like(values, name, count, single):
    """Per-image integer arrays of `box_labels` / `box_modifiers`, one per image of `boxes`."""
    if single:
        values = [values]
    array = _as_array(values, None)
    if array is not None and array.ndim == 0:
        raise TypeError(f"`{name}` must hold one list of ints per image; got {values!r:.80}.")
    rows = list(values) if array is None else list(array)
    if len(rows) != count:
        raise ValueError(f"`{name}` holds {len(rows)} images; `boxes` holds {count}.")
    return [_integers(row, name, i) for i, row in enumerate(rows)]


def _integers(row, name, index):
    array = _as_array(row, None)
    if array is not None and array.size == 0:
        return np.zeros((0,), dtype="int64")
    if array is None or array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        shown = "ragged" if array is None else f"shape {tuple(array.shape)}, dtype {array.dtype}"
        raise TypeError(f"`{name}` of image {index} must be a 1-D list or array of ints; got {shown}.")
    return array.astype("int64")


def _check_boxes(boxes, name, index):
    for j, (x0, y0, x1, y1) in enumerate(boxes):
        if not (0.0 <= x0 <= x1 <= 1.0 and 0.0 <= y0 <= y1 <= 1.0):
            raise ValueError(
                f"`{name}` of image {index} holds box {j} = ({x0:g}, {y0:g}, {x1:g}, {y1:g}); boxes are "
                f"(x0, y0, x1, y1) in normalised image coordinates with 0 <= x0 <= x1 <= 1 and "
                f"0 <= y0 <= y1 <= 1."
            )


@keras.saving.register_keras_serializable(package="keras_ldm")
class LayoutTokenizer:
    """Class-labelled boxes -> int32 layout tokens `(B, 3 · max_objects + 2)`, as CompVis builds them.

    See the module docstring for the scheme (grid tokens of the corners, (object, top-left,
    bottom-right) triples, pad triples, two crop tokens) and its CompVis sources.

    Args:
        num_classes: number of object classes (the CompVis dataset's `no_classes`); labels are
            `0 .. num_classes − 1`.
        max_objects: object triples per layout (CompVis: 30); more boxes warn and are truncated.
        num_tokens: size of the token vocabulary (CompVis `no_tokens`, 8192): the coordinate grid is
            `int(sqrt(num_tokens))` wide and `num_tokens − 1` is the pad token.
        encode_crop: append the two crop tokens (CompVis layout2img: True).

    Call args:
        boxes: `(x0, y0, x1, y1)` in [0, 1] (x right, y down): a `(B, N, 4)` array, a list of B per-image
            `(n_i, 4)` lists, or one image's `(n, 4)`.
        box_labels: class ids shaped like `boxes` without the last axis (`(B, N)`, B lists, or `(n,)`).
        num_boxes: optional `(B,)` count of the real boxes of each row of padded `(B, N, 4)` arrays.
        box_modifiers: optional OpenImages flags (0..15), shaped like `box_labels`.
        crops: optional `(B, 4)` (or one `(4,)`) crop window per image, default the whole image.

    Example:
    >>> tokenizer = LayoutTokenizer(num_classes=10, max_objects=2)
    >>> keras.ops.convert_to_numpy(tokenizer([[[0.0, 0.0, 0.5, 1.0]]], [[3]])).tolist()
    [[3, 0, 8054, 8191, 8191, 8191, 0, 8099]]

    (0.5 · 89 = 44.5 rounds half to even: 44; 89 · 90 + 44 = 8054.)
    """

    def __init__(self, num_classes, max_objects=MAX_OBJECTS, num_tokens=NUM_TOKENS, encode_crop=True):
        self.num_classes = _positive_int(num_classes, "num_classes")
        self.max_objects = _positive_int(max_objects, "max_objects")
        self.num_tokens = _positive_int(num_tokens, "num_tokens", minimum=4)
        if num_classes + 2 > num_tokens:
            raise ValueError(
                f"num_tokens={num_tokens} cannot hold num_classes={num_classes} object tokens below the pad "
                f"token {num_tokens - 1} (CompVis needs num_tokens >= num_classes + 2)."
            )
        self.encode_crop = bool(encode_crop)

    @property
    def grid(self):
        """Points per side of the coordinate grid (90 for 8192 tokens)."""
        return math.isqrt(self.num_tokens)

    @property
    def pad_token(self):
        """The token of a missing object, all three of its entries (8191)."""
        return self.num_tokens - 1

    @property
    def sequence_length(self):
        """Tokens per layout: `3 · max_objects` (+ 2 crop tokens)."""
        return 3 * self.max_objects + 2 * self.encode_crop

    @property
    def vocabulary_size(self):
        return self.num_tokens

    def coordinate_tokens(self, x, y):
        """Grid token(s) of the point(s) (x, y) in [0, 1] (CompVis `tokenize_coordinates`).

        Example:
        >>> LayoutTokenizer(num_classes=10).coordinate_tokens(1.0, 1.0).tolist()
        8099
        """
        last = self.grid - 1
        x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
        return np.round(y * last).astype("int64") * self.grid + np.round(x * last).astype("int64")

    def _corner_tokens(self, boxes):
        """(top-left, bottom-right) tokens of `(n, 4)` boxes, via CompVis' (x0, y0, w, h) arithmetic."""
        x0, y0 = boxes[:, 0], boxes[:, 1]
        width, height = np.minimum(boxes[:, 2] - x0, 1.0 - x0), np.minimum(boxes[:, 3] - y0, 1.0 - y0)
        return self.coordinate_tokens(x0, y0), self.coordinate_tokens(x0 + width, y0 + height)

    def __call__(self, boxes, box_labels, num_boxes=None, box_modifiers=None, crops=None):
        """Layouts -> int32 tokens `(B, sequence_length)` (see the class docstring for the arguments)."""
        images, single = split_boxes(boxes)
        labels = _split_like(box_labels, "box_labels", len(images), single)
        modifiers = (
            [np.zeros_like(row) for row in labels]
            if box_modifiers is None
            else _split_like(box_modifiers, "box_modifiers", len(images), single)
        )
        if num_boxes is not None:
            images, labels, modifiers = self._first(num_boxes, images, labels, modifiers)
        crops = self._crops(crops, len(images))
        rows = []
        for i, image in enumerate(zip(images, labels, modifiers, crops)):
            rows.append(self._layout(i, *image))
        return ops.convert_to_tensor(np.stack(rows).astype("int32").reshape(len(rows), -1))

    def _first(self, num_boxes, *per_image):
        """Each image's first `num_boxes[i]` entries of padded `(B, N, ...)` inputs."""
        counts = _as_array(num_boxes, None)
        batch, padded = len(per_image[0]), min((len(row) for row in per_image[0]), default=0)
        if (
            counts is None
            or counts.size != batch
            or not np.issubdtype(counts.dtype, np.integer)
            or np.any((counts < 0) | (counts > padded))
        ):
            raise ValueError(
                f"`num_boxes` must hold {batch} ints in [0, {padded}] (the real boxes of each padded row); "
                f"got {num_boxes!r:.80}."
            )
        counts = counts.reshape(-1)
        return tuple([row[:count] for row, count in zip(rows, counts)] for rows in per_image)

    def _crops(self, crops, batch):
        if crops is None:
            return np.tile([0.0, 0.0, 1.0, 1.0], (batch, 1))
        array = _as_array(crops, "float64")
        if array is None or array.shape not in ((4,), (batch, 4)):
            shape = "ragged" if array is None else tuple(array.shape)
            raise ValueError(f"`crops` has shape {shape}; expected ({batch}, 4) or (4,) (x0, y0, x1, y1).")
        array = np.broadcast_to(array, (batch, 4))
        for i, crop in enumerate(array):
            _check_boxes(crop[None], "crops", i)
        return array

    def _layout(self, index, boxes, labels, modifiers, crop):
        """The tokens of one image (checked, truncated to `max_objects`, padded)."""
        if not len(boxes) == len(labels) == len(modifiers):
            raise ValueError(
                f"Image {index} has {len(boxes)} `boxes`, {len(labels)} `box_labels` and {len(modifiers)} "
                f"`box_modifiers`; each box needs one label (and one modifier if given)."
            )
        _check_boxes(boxes, "boxes", index)
        objects = self._object_tokens(index, labels, modifiers)
        if len(boxes) > self.max_objects:
            warnings.warn(
                f"Image {index} has {len(boxes)} boxes; a layout holds max_objects={self.max_objects}: "
                f"keeping the first {self.max_objects}.",
                stacklevel=3,
            )
            boxes, objects = boxes[: self.max_objects], objects[: self.max_objects]
        triples = np.full((self.max_objects, 3), self.pad_token, dtype="int64")
        triples[: len(boxes)] = np.stack([objects, *self._corner_tokens(boxes)], axis=-1)
        extra = np.stack(self._corner_tokens(crop[None]), axis=-1).reshape(-1) if self.encode_crop else []
        return np.concatenate([triples.reshape(-1), extra]).astype("int64")

    def _object_tokens(self, index, labels, modifiers):
        bad = (labels < 0) | (labels >= self.num_classes)
        if np.any(bad):
            raise ValueError(
                f"`box_labels` of image {index} holds {labels[bad].tolist()}; class ids must be in "
                f"[0, {self.num_classes}) (num_classes={self.num_classes})."
            )
        tokens = labels + self.num_classes * modifiers
        bad = (modifiers < 0) | (modifiers >= NUM_MODIFIERS) | (tokens >= self.pad_token)
        if np.any(bad):
            raise ValueError(
                f"`box_modifiers` of image {index} holds {modifiers[bad].tolist()}; modifiers are OpenImages "
                f"flags in [0, {NUM_MODIFIERS}) with label + num_classes * modifier < {self.pad_token}."
            )
        return tokens

    def decode(self, tokens):
        """Layout tokens `(B, sequence_length)` (or one row) -> the boxes on the grid, labels, modifiers.

        Returns a dict with `boxes` (B `(n_i, 4)` float arrays, each corner within half a grid cell of
        the tokenized one), `box_labels` and `box_modifiers` (B `(n_i,)` int arrays) and `crops`
        (`(B, 4)`, or None without crop tokens). Pad triples are skipped.

        Example:
        >>> tokenizer = LayoutTokenizer(num_classes=10, max_objects=2)
        >>> layout = tokenizer.decode([3, 0, 8099, 8191, 8191, 8191, 0, 8099])
        >>> layout["boxes"][0].tolist(), layout["box_labels"][0].tolist()
        ([[0.0, 0.0, 1.0, 1.0]], [3])
        """
        rows = self._check_tokens(tokens)
        decoded = {"boxes": [], "box_labels": [], "box_modifiers": [], "crops": None}
        for row in rows:
            triples = row[: 3 * self.max_objects].reshape(-1, 3)
            triples = triples[triples[:, 0] != self.pad_token]
            decoded["boxes"].append(self._boxes(triples[:, 1], triples[:, 2]))
            decoded["box_labels"].append(triples[:, 0] % self.num_classes)
            decoded["box_modifiers"].append(triples[:, 0] // self.num_classes)
        if self.encode_crop:
            decoded["crops"] = self._boxes(rows[:, -2], rows[:, -1])
        return decoded

    def _boxes(self, top_left, bottom_right):
        """`(n, 4)` boxes of corner tokens (CompVis `coordinates_from_token`)."""
        last = self.grid - 1
        corners = [(t % self.grid / last, t // self.grid / last) for t in (top_left, bottom_right)]
        return np.stack([corners[0][0], corners[0][1], corners[1][0], corners[1][1]], axis=-1)

    def _check_tokens(self, tokens):
        rows = np.asarray(ops.convert_to_numpy(tokens))
        rows = rows[None] if rows.ndim == 1 else rows
        if (
            rows.ndim != 2
            or rows.shape[1] != self.sequence_length
            or not np.issubdtype(rows.dtype, np.integer)
        ):
            raise ValueError(
                f"`tokens` has shape {tuple(rows.shape)} and dtype {rows.dtype}; expected ints of shape "
                f"(B, {self.sequence_length}) or ({self.sequence_length},)."
            )
        if np.any((rows < 0) | (rows >= self.num_tokens)):
            raise ValueError(f"`tokens` must lie in [0, {self.num_tokens}); got {rows.min()}..{rows.max()}.")
        triples = rows[:, : 3 * self.max_objects].reshape(len(rows), -1, 3)
        corners = np.concatenate(
            [
                triples[triples[..., 0] != self.pad_token][:, 1:].reshape(-1),
                rows[:, 3 * self.max_objects :].reshape(-1),
            ]
        )
        if np.any(corners >= self.grid**2):
            raise ValueError(
                f"`tokens` holds corner tokens {sorted(set(corners[corners >= self.grid**2].tolist()))}; "
                f"coordinates are grid tokens in [0, {self.grid**2})."
            )
        return rows.astype("int64")

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "max_objects": self.max_objects,
            "num_tokens": self.num_tokens,
            "encode_crop": self.encode_crop,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
