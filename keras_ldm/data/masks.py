"""Inpainting masks: random boxes and free-form brush strokes, and `inpainting_pairs` to add them to data.

Masks are float32 arrays of 0/1 with shape `(H, W, 1)` (or `(N, H, W, 1)`); 1 marks the region to fill,
as `LatentDiffusion` expects in `masks`. Both generators draw until the masked fraction of the image lies
in `[min_coverage, max_coverage]` (a target coverage is drawn uniformly in that range first), so the
coverage bounds always hold.

- Boxes (LaMa's `RandomRectangleMaskGenerator`): 1 to `max_boxes` axis-aligned rectangles of random aspect.
- Strokes (LaMa's `RandomIrregularMaskGenerator`, the "medium" and "thick" masks CompVis' inpainting model
  was trained with): random walks of thick line segments with round joints, each walk one connected stroke.

Drawn with numpy (`numpy.random.Generator`, reproducible from a seed); `inpainting_pairs` runs them inside
`tf.data` through `tf.numpy_function` with per-example seeds.
"""

import math

import numpy as np

from keras_ldm.backend.lazy_tensorflow import tf
from keras_ldm.data.images import element_seeds, normalize_image_size

MASK_KINDS = ("boxes", "strokes", "mixed")

# Like LaMa's "medium" / "thick" strokes at 256 px (segments up to ~100 / 200 px, brushes up to ~25 / 100 px),
# as fractions of the shorter image side.
STROKE_STYLES = {
    "medium": {"max_length": 0.4, "min_width": 0.02, "max_width": 0.1, "max_angle": 4, "max_segments": 5},
    "thick": {"max_length": 0.8, "min_width": 0.02, "max_width": 0.4, "max_angle": 4, "max_segments": 5},
}
_MAX_ATTEMPTS = 100


def _check_coverage(min_coverage, max_coverage):
    for name, value in (("min_coverage", min_coverage), ("max_coverage", max_coverage)):
        if not isinstance(value, (int, float, np.number)) or isinstance(value, bool) or not 0 < value <= 1:
            raise ValueError(f"`{name}` must be a fraction in (0, 1]; got {value!r}.")
    if min_coverage >= max_coverage:
        raise ValueError(
            f"`min_coverage` must be smaller than `max_coverage`; got {min_coverage} and {max_coverage}."
        )


def _check_count(value, name, allow_none=False):
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int{' or None' if allow_none else ''}; got {value!r}.")
    return int(value)


def _box_mask(rng, height, width, min_coverage, max_coverage, max_boxes):
    """One `(H, W)` bool mask of 1..max_boxes rectangles covering [min_coverage, max_coverage] of the image."""
    total = height * width
    for _ in range(_MAX_ATTEMPTS):
        target = rng.uniform(min_coverage, max_coverage)
        count = int(rng.integers(1, max_boxes + 1))
        shares = rng.dirichlet(np.ones(count)) * target * total
        mask = np.zeros((height, width), dtype=bool)
        for area in shares:
            aspect = math.exp(rng.uniform(math.log(1 / 3), math.log(3)))  # box height / width
            box_h = int(np.clip(round(math.sqrt(area * aspect)), 1, height))
            box_w = int(np.clip(round(area / box_h), 1, width))
            top = int(rng.integers(0, height - box_h + 1))
            left = int(rng.integers(0, width - box_w + 1))
            mask[top : top + box_h, left : left + box_w] = True
        if min_coverage <= mask.mean() <= max_coverage:
            return mask
    # Boxes this large rarely fit (e.g. a very elongated canvas): fall back to one centred box.
    box_h = min(height, max(1, round(math.sqrt(target * total))))
    box_w = min(width, max(1, math.ceil(min_coverage * total / box_h)))
    mask = np.zeros((height, width), dtype=bool)
    top, left = (height - box_h) // 2, (width - box_w) // 2
    mask[top : top + box_h, left : left + box_w] = True
    return mask


def _draw_segment(mask, start, end, width):
    """Sets the pixels whose centres lie within `width / 2` of the segment `start`-`end` (round caps)."""
    height, wide = mask.shape
    radius = width / 2.0
    (y0, x0), (y1, x1) = start, end
    top = max(0, math.floor(min(y0, y1) - radius))
    bottom = min(height, math.ceil(max(y0, y1) + radius) + 1)
    left = max(0, math.floor(min(x0, x1) - radius))
    right = min(wide, math.ceil(max(x0, x1) + radius) + 1)
    if top >= bottom or left >= right:
        return
    ys = np.arange(top, bottom)[:, None] + 0.5
    xs = np.arange(left, right)[None, :] + 0.5
    dy, dx = y1 - y0, x1 - x0
    length2 = dy * dy + dx * dx
    t = 0.0 if length2 == 0 else np.clip(((ys - y0) * dy + (xs - x0) * dx) / length2, 0.0, 1.0)
    distance2 = (ys - (y0 + t * dy)) ** 2 + (xs - (x0 + t * dx)) ** 2
    mask[top:bottom, left:right] |= distance2 <= radius * radius


def _stroke_mask(rng, height, width, min_coverage, max_coverage, style):
    """One `(H, W)` bool mask of random-walk strokes covering [min_coverage, max_coverage] of the image.

    Returns `(mask, num_strokes)`: each stroke is a connected walk of thick segments, so the mask has at
    most `num_strokes` connected components. Walks are added until the target coverage is reached; a
    segment that would pass `max_coverage` is redrawn thinner and shorter.
    """
    settings = STROKE_STYLES[style]
    scale = min(height, width)
    total = height * width
    target = rng.uniform(min_coverage, max_coverage)
    mask = np.zeros((height, width), dtype=bool)
    strokes, idle_walks = 0, 0
    while mask.mean() < target and idle_walks < _MAX_ATTEMPTS:  # idle: the canvas is (nearly) full
        strokes += 1
        covered = mask.sum()
        position = np.array([rng.uniform(0, height), rng.uniform(0, width)])
        brush = rng.uniform(settings["min_width"], settings["max_width"]) * scale + 1.0
        for _ in range(int(rng.integers(1, settings["max_segments"] + 1))):
            angle = 0.01 + rng.uniform(0, settings["max_angle"])
            if strokes % 2 == 0:
                angle = 2 * math.pi - angle
            length = rng.uniform(0.05, settings["max_length"]) * scale
            for _ in range(20):  # shrink a segment until it keeps the coverage <= max_coverage
                step = length * np.array([math.cos(angle), math.sin(angle)])
                end = position + step
                if not (0 <= end[0] <= height and 0 <= end[1] <= width):
                    end = position - step  # turn back rather than run along the border
                end = np.clip(end, [0, 0], [height, width])
                candidate = mask.copy()
                _draw_segment(candidate, position, end, brush)
                if candidate.sum() <= max_coverage * total:
                    break
                length, brush = length / 2, max(1.0, brush / 2)
            else:
                break
            mask, position = candidate, end
            if mask.mean() >= target:
                break
        idle_walks = 0 if mask.sum() > covered else idle_walks + 1
    return mask, strokes


def box_masks(image_size, num_masks=None, min_coverage=0.1, max_coverage=0.5, max_boxes=3, seed=None):
    """Random rectangle masks: float32 0/1 `(H, W, 1)`, or `(num_masks, H, W, 1)`.

    Each mask is the union of 1..`max_boxes` axis-aligned boxes (aspect ratio 1/3..3) whose total area is
    a random target in `[min_coverage, max_coverage]` of the image; the coverage always lies in that range.

    Example:
    >>> mask = box_masks(32, max_boxes=1, seed=0)
    >>> mask.shape, mask.dtype.name, 0.1 <= float(mask.mean()) <= 0.5
    ((32, 32, 1), 'float32', True)
    """
    height, width = normalize_image_size(image_size)
    _check_coverage(min_coverage, max_coverage)
    max_boxes = _check_count(max_boxes, "max_boxes")
    count = _check_count(num_masks, "num_masks", allow_none=True)
    rng = np.random.default_rng(seed)
    masks = [_box_mask(rng, height, width, min_coverage, max_coverage, max_boxes) for _ in range(count or 1)]
    masks = np.stack(masks)[..., None].astype("float32")
    return masks[0] if count is None else masks


def stroke_masks(image_size, num_masks=None, min_coverage=0.1, max_coverage=0.5, style="medium", seed=None):
    """Free-form brush-stroke masks (LaMa-style random walks): float32 0/1 `(H, W, 1)` or `(N, H, W, 1)`.

    Args:
        image_size: an int or `(height, width)`.
        num_masks: `None` for one mask, or how many to stack.
        min_coverage, max_coverage: the range of the masked fraction of the image.
        style: `"medium"` (brushes up to 1/10 of the image side) or `"thick"` (up to 4/10), as LaMa's.
        seed: an int (or `numpy.random.Generator` seed) for reproducible masks.

    Example:
    >>> mask = stroke_masks(64, style="thick", seed=0)
    >>> mask.shape, sorted(np.unique(mask).tolist()), 0.1 <= float(mask.mean()) <= 0.5
    ((64, 64, 1), [0.0, 1.0], True)
    """
    height, width = normalize_image_size(image_size)
    _check_coverage(min_coverage, max_coverage)
    if style not in STROKE_STYLES:
        raise ValueError(f"`style` must be one of {tuple(STROKE_STYLES)}; got {style!r}.")
    count = _check_count(num_masks, "num_masks", allow_none=True)
    rng = np.random.default_rng(seed)
    masks = [
        _stroke_mask(rng, height, width, min_coverage, max_coverage, style)[0] for _ in range(count or 1)
    ]
    masks = np.stack(masks)[..., None].astype("float32")
    return masks[0] if count is None else masks


def random_masks(image_size, num_masks=None, kind="mixed", min_coverage=0.1, max_coverage=0.5, seed=None):
    """Masks of one `kind`: `"boxes"`, `"strokes"` or `"mixed"` (per mask: boxes, medium or thick strokes,
    each with probability 1/3). Float32 0/1 `(H, W, 1)` or `(num_masks, H, W, 1)`.

    Example:
    >>> random_masks((16, 24), num_masks=3, seed=0).shape
    (3, 16, 24, 1)
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"`kind` must be one of {MASK_KINDS}; got {kind!r}.")
    height, width = normalize_image_size(image_size)
    _check_coverage(min_coverage, max_coverage)
    count = _check_count(num_masks, "num_masks", allow_none=True)
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(count or 1):
        choice = {"boxes": 0, "strokes": 1 + int(rng.integers(2)), "mixed": int(rng.integers(3))}[kind]
        if choice == 0:
            masks.append(_box_mask(rng, height, width, min_coverage, max_coverage, max_boxes=3))
        else:
            style = "medium" if choice == 1 else "thick"
            masks.append(_stroke_mask(rng, height, width, min_coverage, max_coverage, style)[0])
    masks = np.stack(masks)[..., None].astype("float32")
    return masks[0] if count is None else masks


def inpainting_pairs(dataset, kind="mixed", min_coverage=0.1, max_coverage=0.5, seed=None):
    """Adds `masks` (float32 0/1, `(H, W, 1)` per image) to a dataset of `{"images", ...}` dicts.

    Works on single examples (`images` `(H, W, 3)`) and on batches (`(B, H, W, 3)`, one mask per image).
    With an int `seed` the masks are reproducible (and differ between epochs).

    Example:
    >>> images = np.zeros((4, 32, 32, 3), dtype="uint8")
    >>> ds = inpainting_pairs(tf.data.Dataset.from_tensor_slices({"images": images}).batch(2), seed=0)
    >>> batch = next(iter(ds))
    >>> batch["masks"].shape.as_list(), batch["masks"].dtype.name
    ([2, 32, 32, 1], 'float32')
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"`kind` must be one of {MASK_KINDS}; got {kind!r}.")
    _check_coverage(min_coverage, max_coverage)
    spec = dataset.element_spec
    if not isinstance(spec, dict) or "images" not in spec:
        raise ValueError(f"`dataset` must yield dicts with an 'images' entry; its elements are {spec}.")
    shape = spec["images"].shape
    if shape.rank not in (3, 4) or shape[-3] is None or shape[-2] is None:
        raise ValueError(f"`images` must have a static shape (H, W, 3) or (B, H, W, 3); got {shape}.")
    height, width = shape[-3], shape[-2]
    batched = shape.rank == 4

    def make_masks(element_seed, count):
        mask_seed = [int(s) % 2**63 for s in element_seed]
        return random_masks((height, width), int(count), kind, min_coverage, max_coverage, seed=mask_seed)

    def add_masks(example, element_seed):
        count = tf.shape(example["images"])[0] if batched else tf.constant(1)
        masks = tf.numpy_function(make_masks, [element_seed, count], tf.float32, stateful=False)
        masks = tf.ensure_shape(masks, [None, height, width, 1])
        if batched:
            masks = tf.ensure_shape(masks, [shape[0], height, width, 1])
        else:
            masks = masks[0]
        return {**example, "masks": masks}

    paired = tf.data.Dataset.zip(dataset, element_seeds(seed))
    return paired.map(add_masks, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
