"""A procedural text-to-image dataset: one filled shape on a plain background, with its caption.

Every image shows one `circle`, `square` or `triangle` in one of six colours on a background of another
colour, and is captioned exactly `"a {color} {shape} on a {background} background"`. The 6 x 3 x 5 = 90
(color, shape, background) combinations are the class `labels` (index into `combinations()`). The shape's
bounding box is a square of side `size` (a circle's diameter, a square's side, an upward triangle's base and
height), by default a third to two thirds of the canvas, placed wholly inside the canvas.

Rendering is exact integer arithmetic on pixel centres (in half-pixel units), so the numpy renderer
`render_shape` and the TensorFlow one inside `shapes_dataset` give identical pixels.

`describe_image` reads a (generated) image back into `(color, shape, background)`, which scores a
text-to-image model: compare it with `parse_prompt(prompt)`.
"""

import itertools

import numpy as np

from keras_ldm.backend.lazy_tensorflow import tf

COLORS = ("red", "green", "blue", "yellow", "white", "black")
SHAPES = ("circle", "square", "triangle")
COLOR_VALUES = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
}
_PALETTE = np.array([COLOR_VALUES[c] for c in COLORS], dtype="float32")
_PROMPT_PREFIX, _PROMPT_MIDDLE, _PROMPT_SUFFIX = "a ", " on a ", " background"


def combinations():
    """The 90 `(color, shape, background)` triples with `color != background`; a triple's index is its label."""
    return [
        (color, shape, background)
        for color, shape, background in itertools.product(COLORS, SHAPES, COLORS)
        if color != background
    ]


_COMBINATIONS = combinations()
_LABELS = {combo: label for label, combo in enumerate(_COMBINATIONS)}


def make_prompt(color, shape, background):
    """The caption of an image: `"a {color} {shape} on a {background} background"`.

    Example:
    >>> make_prompt("red", "circle", "blue")
    'a red circle on a blue background'
    """
    _check_combination(color, shape, background)
    return f"{_PROMPT_PREFIX}{color} {shape}{_PROMPT_MIDDLE}{background}{_PROMPT_SUFFIX}"


def parse_prompt(prompt):
    """The inverse of `make_prompt`: a caption -> `(color, shape, background)`.

    Example:
    >>> parse_prompt("a yellow triangle on a black background")
    ('yellow', 'triangle', 'black')
    """
    if isinstance(prompt, bytes):
        prompt = prompt.decode("utf-8")
    words = prompt.split(" ") if isinstance(prompt, str) else []
    if len(words) != 7 or words[0] != "a" or words[3:5] != ["on", "a"] or words[6] != "background":
        raise ValueError(
            f"`prompt` must read 'a {{color}} {{shape}} on a {{background}} background'; got {prompt!r}."
        )
    color, shape, background = words[1], words[2], words[5]
    _check_combination(color, shape, background)
    return color, shape, background


def all_prompts():
    """The 90 captions, in label order (`all_prompts()[label]` is the caption of class `label`).

    Example:
    >>> prompts = all_prompts()
    >>> len(prompts), prompts[0]
    (90, 'a red circle on a green background')
    """
    return [make_prompt(*combo) for combo in _COMBINATIONS]


def label_of(color, shape, background):
    """The class label (0..89) of a combination.

    Example:
    >>> label_of("red", "circle", "green"), label_of("black", "triangle", "white")
    (0, 89)
    """
    _check_combination(color, shape, background)
    return _LABELS[(color, shape, background)]


def _check_combination(color, shape, background):
    for name, value, allowed in (("color", color, COLORS), ("shape", shape, SHAPES)):
        if value not in allowed:
            raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}.")
    if background not in COLORS:
        raise ValueError(f"`background` must be one of {COLORS}; got {background!r}.")
    if color == background:
        raise ValueError(f"`color` and `background` must differ; both are {color!r}.")


def _check_image_size(image_size):
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"`image_size` must be an int >= 8; got {image_size!r}.")
    return int(image_size)


def _size_bounds(image_size, size_range, margin):
    low, high = size_range
    if not 0 < low <= high <= 1:
        raise ValueError(f"`size_range` must be fractions 0 < low <= high <= 1; got {size_range!r}.")
    min_size, max_size = int(np.ceil(low * image_size)), int(np.floor(high * image_size))
    max_size = min(max_size, image_size - 2 * margin)
    if min_size < 3 or min_size > max_size:
        raise ValueError(
            f"`size_range={size_range}` on a {image_size}-pixel canvas with a {margin}-pixel margin allows no "
            f"shape size (sizes {min_size}..{max_size} pixels); widen the range or enlarge the canvas."
        )
    return min_size, max_size


def _masks_numpy(size2, cx2, cy2, image_size):
    """Boolean masks of the three shapes, in exact integer arithmetic (mirrored by `_masks_tf`).

    Pixel `(y, x)` has its centre at `(2x + 1, 2y + 1)` in half-pixel units; `size2 = 2 * size` and
    `(cx2, cy2) = 2 * center` are integers in the same units.
    """
    coords = 2 * np.arange(image_size, dtype=np.int64) + 1
    dx = coords[None, :] - cx2
    dy = coords[:, None] - cy2
    circle = 4 * (dx * dx + dy * dy) <= size2 * size2
    square = (2 * np.abs(dx) <= size2) & (2 * np.abs(dy) <= size2)
    depth2 = 2 * dy + size2  # twice the depth below the apex
    triangle = (depth2 >= 0) & (depth2 <= 2 * size2) & (4 * np.abs(dx) <= depth2)
    return {"circle": circle, "square": square, "triangle": triangle}


def _masks_tf(size2, cx2, cy2, image_size):
    coords = 2 * tf.range(image_size, dtype=tf.int32) + 1
    dx = coords[None, :] - cx2
    dy = coords[:, None] - cy2
    circle = 4 * (dx * dx + dy * dy) <= size2 * size2
    square = (2 * tf.abs(dx) <= size2) & (2 * tf.abs(dy) <= size2)
    depth2 = 2 * dy + size2
    triangle = (depth2 >= 0) & (depth2 <= 2 * size2) & (4 * tf.abs(dx) <= depth2)
    return tf.stack([circle, square, triangle])


def render_shape(color, shape, background, size, center, image_size=64):
    """Renders one filled shape on a plain background as a uint8 `(image_size, image_size, 3)` array.

    Args:
        color, shape, background: names from `COLORS`, `SHAPES`, `COLORS` (`color != background`).
        size: side of the shape's bounding box in pixels (circle diameter; square side; the base and height
            of the upward triangle); rounded to half pixels.
        center: `(x, y)` of the bounding box's centre in pixels (pixel `(row, col)` covers
            `[col, col + 1) x [row, row + 1)`); rounded to half pixels.
        image_size: canvas side in pixels.

    Example:
    >>> image = render_shape("red", "square", "blue", size=4, center=(4, 4), image_size=8)
    >>> image.shape, image.dtype.name, (image[..., 0] > 128).sum()
    ((8, 8, 3), 'uint8', np.int64(16))
    """
    _check_combination(color, shape, background)
    image_size = _check_image_size(image_size)
    if not np.isfinite(size) or size <= 0:
        raise ValueError(f"`size` must be a positive number of pixels; got {size!r}.")
    if np.shape(center) != (2,):
        raise ValueError(f"`center` must be an (x, y) pair; got {center!r}.")
    cx2, cy2 = (round(2 * float(c)) for c in center)
    mask = _masks_numpy(round(2 * float(size)), cx2, cy2, image_size)[shape]
    image = np.empty((image_size, image_size, 3), dtype=np.uint8)
    image[...] = COLOR_VALUES[background]
    image[mask] = COLOR_VALUES[color]
    return image


def shape_parameters(num_examples, image_size=64, seed=0, size_range=(1 / 3, 2 / 3), margin=1):
    """Draws the random content of `shapes_dataset`'s examples (labels uniform over the 90 combinations).

    Returns a dict of numpy arrays: `labels` `(N,)` int32, `sizes` `(N,)` int32 pixels and `centers`
    `(N, 2)` float32 `(x, y)` pixels, with every bounding box on pixel boundaries inside
    `[margin, image_size - margin]` (a square covers exactly `size x size` pixels).
    `render_shape(*combinations()[label], size, center, image_size)` reproduces an example.

    Example:
    >>> params = shape_parameters(3, image_size=64, seed=0)
    >>> sorted(params), params["centers"].shape
    (['centers', 'labels', 'sizes'], (3, 2))
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, (int, np.integer)) or num_examples < 1:
        raise ValueError(f"`num_examples` must be a positive int; got {num_examples!r}.")
    image_size = _check_image_size(image_size)
    if not isinstance(margin, (int, np.integer)) or margin < 0:
        raise ValueError(f"`margin` must be a non-negative int; got {margin!r}.")
    min_size, max_size = _size_bounds(image_size, size_range, margin)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(_COMBINATIONS), num_examples)
    sizes = rng.integers(min_size, max_size + 1, num_examples)
    # The box's top-left corner on the pixel grid, so that its edges fall between pixels.
    corners = margin + np.floor(
        rng.random((num_examples, 2)) * (image_size - 2 * margin - sizes + 1)[:, None]
    )
    centers = corners + sizes[:, None] / 2
    return {
        "labels": labels.astype("int32"),
        "sizes": sizes.astype("int32"),
        "centers": centers.astype("float32"),
    }


def shapes_dataset(num_examples, image_size=64, seed=0, size_range=(1 / 3, 2 / 3), margin=1):
    """The procedural text-to-image dataset as a `tf.data.Dataset` of unbatched examples.

    Each element is `{"images": uint8 (image_size, image_size, 3), "prompts": tf.string, "labels": int32}`;
    the content is drawn by `shape_parameters(num_examples, image_size, seed, size_range, margin)`, so the
    dataset is the same on every iteration and for the same arguments. Batch, shuffle and repeat it as usual.

    Example:
    >>> ds = shapes_dataset(4, image_size=32, seed=1).batch(2)
    >>> batch = next(iter(ds))
    >>> batch["images"].shape.as_list(), batch["images"].dtype.name, batch["prompts"].shape.as_list()
    ([2, 32, 32, 3], 'uint8', [2])
    >>> parse_prompt(batch["prompts"][0].numpy()) == combinations()[int(batch["labels"][0])]
    True
    """
    params = shape_parameters(num_examples, image_size, seed, size_range, margin)
    image_size = int(image_size)
    combos = np.array([(COLORS.index(c), SHAPES.index(s), COLORS.index(b)) for c, s, b in _COMBINATIONS])
    combo_table = tf.constant(combos, dtype=tf.int32)
    palette = tf.constant(np.array([COLOR_VALUES[c] for c in COLORS]), dtype=tf.uint8)
    prompt_table = tf.constant(all_prompts())

    def render(label, size, center2):
        color, shape, background = tf.unstack(combo_table[label])
        mask = _masks_tf(2 * size, center2[0], center2[1], image_size)[shape]
        image = tf.where(mask[..., None], palette[color], palette[background])
        image = tf.ensure_shape(image, (image_size, image_size, 3))
        return {"images": image, "prompts": prompt_table[label], "labels": label}

    centers2 = np.round(params["centers"] * 2).astype("int32")
    ds = tf.data.Dataset.from_tensor_slices((params["labels"], params["sizes"], centers2))
    return ds.map(render, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def shapes_arrays(num_examples, image_size=64, seed=0, size_range=(1 / 3, 2 / 3), margin=1, chunk=4096):
    """`shapes_dataset(...)`'s examples as numpy arrays, without TensorFlow (for in-memory `fit`).

    Returns `{"images": uint8 (N, image_size, image_size, 3), "prompts": str (N,), "labels": int32 (N,)}`,
    pixel for pixel what `shapes_dataset` with the same arguments yields; `chunk` examples are drawn at a time.

    Example:
    >>> arrays = shapes_arrays(3, image_size=32, seed=1)
    >>> arrays["images"].shape, parse_prompt(arrays["prompts"][0]) == combinations()[arrays["labels"][0]]
    ((3, 32, 32, 3), True)
    """
    params = shape_parameters(num_examples, image_size, seed, size_range, margin)
    image_size = int(image_size)
    combos = np.array([(COLORS.index(c), SHAPES.index(s), COLORS.index(b)) for c, s, b in _COMBINATIONS])
    palette = _PALETTE.astype(np.uint8)
    images = np.empty((num_examples, image_size, image_size, 3), dtype=np.uint8)
    for start in range(0, num_examples, chunk):
        part = slice(start, start + chunk)
        color, shape, background = combos[params["labels"][part]].T
        size2 = 2 * params["sizes"][part].astype(np.int64)[:, None, None]
        cx2, cy2 = np.round(params["centers"][part] * 2).astype(np.int64).T[:, :, None, None]
        masks = _masks_numpy(size2, cx2, cy2, image_size)
        mask = np.stack([masks[name] for name in SHAPES])[shape, np.arange(len(shape))]
        images[part] = np.where(
            mask[..., None], palette[color][:, None, None], palette[background][:, None, None]
        )
    prompts = np.array(all_prompts())[params["labels"]]
    return {"images": images, "prompts": prompts, "labels": params["labels"]}


def _as_uint8_image(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 3:
        raise ValueError(f"`image` must have shape (H, W, 3) with H, W >= 3; got {image.shape}.")
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.floating):  # floats are in [-1, 1], as the models produce them
        return np.clip(np.round((image.astype("float32") + 1.0) * 127.5), 0, 255).astype(np.uint8)
    raise ValueError(f"`image` must be uint8 or floats in [-1, 1]; got dtype {image.dtype}.")


def _classify_mask(mask):
    """Circle / square / triangle from the fill ratio of a blob's bounding box (pi/4, 1, 1/2)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    fill = box.mean()
    if fill < (0.5 + np.pi / 4) / 2:
        return "triangle"
    if fill < (np.pi / 4 + 1.0) / 2:
        return "circle"
    return "square"


def describe_image(image, min_area=0.01):
    """Reads an image of the shapes dataset back: `(color, shape, background)`.

    Each pixel takes the nearest palette colour (`COLOR_VALUES`); the background is the most common colour
    of the border pixels, the shape's colour the most common other colour; the largest connected blob of
    that colour (holes filled) is a triangle, circle or square by how much of its bounding box it fills
    (1/2, pi/4, 1). Where no other colour covers `min_area` of the image, `color` and `shape` are `None`.

    Args:
        image: `(H, W, 3)` uint8, or floats in [-1, 1].
        min_area: smallest fraction of the image the shape must cover to be recognised.

    Example:
    >>> describe_image(render_shape("green", "triangle", "white", size=30, center=(30, 34), image_size=64))
    ('green', 'triangle', 'white')
    """
    from scipy import ndimage

    image = _as_uint8_image(image).astype("float32")
    distances = ((image[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(axis=-1)
    names = distances.argmin(axis=-1)
    border = np.concatenate([names[0], names[-1], names[1:-1, 0], names[1:-1, -1]])
    background = int(np.bincount(border, minlength=len(COLORS)).argmax())
    counts = np.bincount(names[names != background], minlength=len(COLORS))
    color = int(counts.argmax())
    if counts[color] < min_area * names.size:
        return None, None, COLORS[background]
    components, count = ndimage.label(names == color)
    sizes = np.bincount(components.reshape(-1), minlength=count + 1)[1:]
    blob = ndimage.binary_fill_holes(components == 1 + int(sizes.argmax()))
    return COLORS[color], _classify_mask(blob), COLORS[background]


def prompt_accuracy(images, prompts):
    """Share of images whose colour, shape, background (and all three) `describe_image` reads as the prompt.

    Example:
    >>> image = render_shape("red", "circle", "blue", size=30, center=(32, 32), image_size=64)
    >>> prompt_accuracy([image], ["a red circle on a blue background"])["all three"]
    1.0
    """
    truth = np.array([parse_prompt(p) for p in prompts], dtype=object)
    seen = np.array([describe_image(image) for image in images], dtype=object)
    matches = seen == truth
    return {
        "color": float(matches[:, 0].mean()),
        "shape": float(matches[:, 1].mean()),
        "background": float(matches[:, 2].mean()),
        "all three": float(matches.all(axis=1).mean()),
    }
