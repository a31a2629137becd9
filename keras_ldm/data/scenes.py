"""Procedural scenes of several shapes, with their exact segmentation maps, boxes and class labels.

Each scene is a plain background of one of the six `COLORS` with 1 to `max_objects` filled shapes
(`SHAPES`, each in a colour other than the background) drawn in order, later ones over earlier ones.
It comes with:

- `segmentation`: `(H, W)` int32, the colour class (index into `COLORS`, `NUM_SEGMENTATION_CLASSES` = 6) of
  every pixel: the conditioning of semantic synthesis;
- `boxes`: each object's bounding box `(x0, y0, x1, y1)` in [0, 1] (x right, y down) and `box_labels`, its
  class `OBJECT_CLASSES.index((color, shape))` (18 classes): the conditioning of layout-to-image.

Shapes are drawn with the exact integer rasteriser of `keras_ldm.data.shapes` and the same palette, so a
first stage trained on that set (the `shapes_t2i` preset's) encodes these scenes too. `scenes_arrays(n,
split="train")` and `split="held_out"` draw from disjoint seeds. Two scores read generated images back:
`segmentation_accuracy` (the share of pixels whose nearest palette colour is the map's class) and
`layout_accuracy` (the share of requested objects whose colour covers enough of their box).
"""

import numpy as np

from keras_ldm.data.shapes import COLOR_VALUES, COLORS, SHAPES, _masks_numpy

PALETTE = np.array([COLOR_VALUES[c] for c in COLORS], dtype="uint8")  # (6, 3): colour class -> RGB
NUM_SEGMENTATION_CLASSES = len(COLORS)
OBJECT_CLASSES = tuple((color, shape) for color in COLORS for shape in SHAPES)  # box_labels -> names
SPLIT_SEEDS = {"train": 0, "held_out": 1_000_003}  # disjoint streams: scene i of a split is its own draw
# The least share of a box that an object of that shape covers when drawn alone (a triangle half of its
# square box, a circle pi/4), used by `layout_accuracy`: an object counts as found when its colour covers
# `min_cover` of this share.
_FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5}


def _check_positive(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; got {value!r}.")
    return int(value)


def render_scene(background, objects, image_size):
    """A scene as uint8 `(S, S, 3)` image and int32 `(S, S)` colour-class map.

    Args:
        background: colour class of the background.
        objects: `(color, shape, size, x0, y0)` tuples (colour class, shape index into `SHAPES`, side of
            the square bounding box and its top-left pixel corner), drawn in order.
        image_size: the canvas side `S` in pixels.

    Example:
    >>> image, classes = render_scene(0, [(2, 1, 4, 2, 2)], 8)  # a blue square on red
    >>> image.shape, np.bincount(classes.reshape(-1)).tolist()
    ((8, 8, 3), [48, 0, 16])
    """
    classes = np.full((image_size, image_size), background, dtype="int32")
    for color, shape, size, x0, y0 in objects:
        mask = _masks_numpy(2 * size, 2 * x0 + size, 2 * y0 + size, image_size)[SHAPES[shape]]
        classes[mask] = color
    return PALETTE[classes], classes


def scene_parameters(rng, image_size, max_objects, size_range):
    """One random scene: `(background, objects)` for `render_scene`."""
    background = int(rng.integers(len(COLORS)))
    low, high = max(3, int(np.ceil(size_range[0] * image_size))), int(size_range[1] * image_size)
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        color = int(rng.choice([c for c in range(len(COLORS)) if c != background]))
        size = int(rng.integers(low, high + 1))
        x0, y0 = (int(v) for v in rng.integers(0, image_size - size + 1, 2))
        objects.append((color, int(rng.integers(len(SHAPES))), size, x0, y0))
    return background, objects


def scenes_arrays(num_scenes, image_size=64, split="train", max_objects=3, size_range=(0.25, 0.5), start=0):
    """`num_scenes` scenes as numpy arrays (see the module docstring).

    Args:
        num_scenes: how many scenes.
        image_size: canvas side in pixels (>= 16).
        split: `"train"` or `"held_out"` (disjoint random streams).
        max_objects: shapes per scene, 1 to this many.
        size_range: side of the shapes' square boxes, as fractions of the canvas.
        start: index of the first scene in its split (scene `i` is the same whatever `num_scenes`).

    Returns:
        A dict: `images` uint8 `(N, S, S, 3)`, `segmentation` int32 `(N, S, S)`, `boxes` float32
        `(N, max_objects, 4)`, `box_labels` int32 `(N, max_objects)` and `num_boxes` int32 `(N,)` (the
        padded layout form `LatentDiffusion.fit` and `generate` take).

    Example:
    >>> scenes = scenes_arrays(2, image_size=32, split="held_out")
    >>> scenes["images"].shape, scenes["segmentation"].shape, scenes["boxes"].shape
    ((2, 32, 32, 3), (2, 32, 32), (2, 3, 4))
    """
    num_scenes = _check_positive(num_scenes, "num_scenes")
    image_size = _check_positive(image_size, "image_size", 16)
    max_objects = _check_positive(max_objects, "max_objects")
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split={split!r}; expected one of {sorted(SPLIT_SEEDS)}.")
    if not 0 < size_range[0] <= size_range[1] <= 1:
        raise ValueError(f"`size_range` must be fractions 0 < low <= high <= 1; got {size_range!r}.")
    result = {
        "images": np.zeros((num_scenes, image_size, image_size, 3), "uint8"),
        "segmentation": np.zeros((num_scenes, image_size, image_size), "int32"),
        "boxes": np.zeros((num_scenes, max_objects, 4), "float32"),
        "box_labels": np.zeros((num_scenes, max_objects), "int32"),
        "num_boxes": np.zeros((num_scenes,), "int32"),
    }
    for i in range(num_scenes):
        rng = np.random.default_rng([SPLIT_SEEDS[split], start + i])
        background, objects = scene_parameters(rng, image_size, max_objects, size_range)
        result["images"][i], result["segmentation"][i] = render_scene(background, objects, image_size)
        result["num_boxes"][i] = len(objects)
        for j, (color, shape, size, x0, y0) in enumerate(objects):
            result["boxes"][i, j] = np.array([x0, y0, x0 + size, y0 + size]) / image_size
            result["box_labels"][i, j] = color * len(SHAPES) + shape
    return result


def colour_classes(images):
    """The nearest palette colour (class) of every pixel of uint8 images `(..., 3)`."""
    images = np.asarray(images, dtype="float32")
    distances = ((images[..., None, :] - PALETTE.astype("float32")) ** 2).sum(axis=-1)
    return distances.argmin(axis=-1).astype("int32")


def segmentation_accuracy(images, segmentation):
    """The share of pixels of `images` `(N, H, W, 3)` whose nearest palette colour is the class of
    `segmentation` `(N, H, W)` there (1.0 for the scenes themselves).

    Example:
    >>> scenes = scenes_arrays(4, image_size=32)
    >>> float(segmentation_accuracy(scenes["images"], scenes["segmentation"]))
    1.0
    """
    images, segmentation = np.asarray(images), np.asarray(segmentation)
    if images.shape[:-1] != segmentation.shape:
        raise ValueError(f"`images` {images.shape} and `segmentation` {segmentation.shape} differ in size.")
    return float(np.mean(colour_classes(images) == segmentation))


def layout_accuracy(images, boxes, box_labels, num_boxes, min_cover=0.5):
    """The share of requested objects found: inside the object's box (rounded to pixels), its colour
    covers at least `min_cover` of the area its shape would fill alone (a circle pi/4, a triangle half).

    Objects covered by later ones can be missed in the scenes themselves; `layout_accuracy` of the
    scenes is the ceiling a model can reach.

    Example:
    >>> scenes = scenes_arrays(20, image_size=32)
    >>> 0.9 < layout_accuracy(scenes["images"], scenes["boxes"], scenes["box_labels"], scenes["num_boxes"]) <= 1
    True
    """
    classes = colour_classes(images)
    size = classes.shape[1]
    found = []
    for i, count in enumerate(np.asarray(num_boxes)):
        for box, label in zip(np.asarray(boxes)[i, :count], np.asarray(box_labels)[i, :count]):
            color, shape = divmod(int(label), len(SHAPES))
            x0, y0, x1, y1 = np.clip(np.round(box * size).astype(int), 0, size)
            region = classes[i, y0:y1, x0:x1]
            cover = np.mean(region == color) if region.size else 0.0
            found.append(cover >= min_cover * _FILL[SHAPES[shape]])
    return float(np.mean(found)) if found else 1.0
