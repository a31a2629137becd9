"""The checks `generate()` runs before its compiled program: every option and input, with a clear error.

The contract, by input:
- `num_steps`: an int in [1, T - 1]; `guidance_scale`: a number in [0, 1000]; `eta`: a number in [0, 1]
  (beyond 1 DDIM's noise exceeds the variance left and every latent is NaN); `temperature`: a number in
  [0, 10]; `sampler`: a name of `SAMPLERS`, in any case (`"DDIM"` is `"ddim"`).
- `seed`: any int (numpy ints too); seeds outside [0, 2**31) are folded into it (`seed % 2**31`), so
  `seed=2**40` works on every backend. None draws a fresh seed.
- `height`, `width`: None (the default size) or a positive int, at most 2**16, that the model's
  down-sampling divides; `batch_size` and `upscale`: ints in [1, 2**16].
- `latents`: floats `(B, h, w, c)` whose batch is the request's, finite and within +-1e4 in float32 (the
  starting noise is standard normal; larger values overflow the decoder).
- images (super-resolution, inpainting): uint8 `(B, H, W, C)` or one image `(H, W, C)` (the output then
  has no batch axis either); C = 3 (RGB), 4 (RGBA: alpha dropped) or 1, or `(H, W)` greyscale (repeated
  to RGB); floats are read as [-1, 1] (the scale `fit()` takes) and must be finite and within it.
- masks: 0/1 (any dtype, bool too) or 0/255 as read from an image file, `(B, H, W)`, `(H, W)` or with a
  trailing axis of 1, the images' size.
- prompts: a str (the output then has no batch axis), a non-empty list/tuple/numpy array of str, or a
  dict with `prompts` and optional `negative_prompts`: a str, a list of one str (for all), or one per prompt.
- segmentation maps: integer label maps `(B, H, W)` (or one `(H, W)`) with ids in [0, classes), or one-hot
  floats `(B, H, W, classes)` (or one `(H, W, classes)`) in [0, 1]; the output has the maps' size.
- layouts: a dict with `boxes` (`(x0, y0, x1, y1)` in [0, 1]: B per-image lists of boxes, a padded
  `(B, N, 4)` array with optional `num_boxes` `(B,)`, or one image's `(n, 4)`) and `box_labels` shaped
  alike; checked by the model's `LayoutTokenizer` (boxes outside [0, 1] or with x1 < x0, unknown ids).
- dict inputs: only the keys the model's conditioning reads (`prompts`/`negative_prompts`, `labels`,
  `images` (+ `masks`)); any other key is an error rather than being ignored.
"""

import numbers

import numpy as np

from keras_ldm.diffusion.samplers import SAMPLERS

SEED_RANGE = 2**31
MAX_SIZE = 2**16  # largest height/width/batch_size/upscale: beyond it shapes overflow the backends' int types
MAX_LATENT = 1e4  # largest |latents| value: standard-normal noise lies within +-10
MAX_GUIDANCE = 1000.0  # beyond ~1e20 the guided prediction overflows float32 (a flat, NaN image)
INPUT_KEYS = {
    "text": ("prompts", "negative_prompts"),
    "class": ("labels",),
    "low_res": ("images",),
    "masks": ("images", "masks"),
    "segmentation": ("segmentation",),
    "layout": ("boxes", "box_labels", "num_boxes"),
}


def check_sampling_options(num_steps, guidance_scale, sampler, eta, temperature, num_timesteps):
    """The options with `sampler` lower-cased; a `ValueError`/`TypeError` naming any bad one.

    Example:
    >>> check_sampling_options(20, 4, "DDIM", 0.0, 1.0, num_timesteps=1000)["sampler"]
    'ddim'
    """
    if not isinstance(sampler, str) or sampler.strip().lower() not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}; expected one of {sorted(SAMPLERS)} (any case).")
    if _not_int(num_steps) or not 1 <= num_steps < num_timesteps:
        raise ValueError(f"num_steps={num_steps!r}; expected an int in [1, {num_timesteps - 1}].")
    finite_number(eta, "eta", minimum=0, maximum=1, hint=" (0 = deterministic DDIM, 1 = DDPM's variance)")
    hint = " (1 = no guidance)"
    finite_number(guidance_scale, "guidance_scale", minimum=0, maximum=MAX_GUIDANCE, hint=hint)
    finite_number(temperature, "temperature", minimum=0, maximum=10, hint=" (1 = plain sampling)")
    return {
        "num_steps": int(num_steps),
        "guidance_scale": float(guidance_scale),
        "sampler": sampler.strip().lower(),
        "eta": float(eta),
        "temperature": float(temperature),
    }


def finite_number(value, name, minimum=None, maximum=None, hint=""):
    """`value` as a float when it is a finite real number within the bounds; else a clear error.

    Example:
    >>> finite_number(np.float32(2.5), "guidance_scale", minimum=0)
    2.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r}; expected a number{hint}.")
    low = -np.inf if minimum is None else minimum
    high = np.inf if maximum is None else maximum
    if not (np.isfinite(value) and low <= value <= high):
        bounds = f"in [{low}, {high}]" if maximum is not None else f">= {low}"
        raise ValueError(f"{name}={value!r}; expected a finite number {bounds}{hint}.")
    return float(value)


def check_seed(seed):
    """An int seed in [0, 2**31): other ints are folded in, None draws one.

    Example:
    >>> check_seed(3), check_seed(2**31 + 3), check_seed(-1)
    (3, 3, 2147483647)
    """
    if seed is None:
        return int(np.random.default_rng().integers(SEED_RANGE))
    if _not_int(seed):
        raise TypeError(f"seed={seed!r}; expected an int (or None for a fresh one).")
    return int(seed) % SEED_RANGE


def check_size(value, name, default, multiple, factor):
    """A pixel size: `default` for None, else a positive int divisible by `multiple`."""
    if value is None:
        value = default
    if _not_int(value) or value <= 0 or value % multiple or value > MAX_SIZE:
        raise ValueError(
            f"{name}={value!r}; it must be a positive multiple of {multiple} (first-stage factor "
            f"{factor} times the UNet's down-sampling), at most {MAX_SIZE}, or None for the default."
        )
    return int(value)


def check_positive_int(value, name):
    """`value` as an int when it is one and >= 1.

    Example:
    >>> check_positive_int(2, "batch_size")
    2
    """
    if _not_int(value) or not 1 <= value <= MAX_SIZE:
        raise ValueError(f"{name}={value!r}; expected an int in [1, {MAX_SIZE}].")
    return int(value)


def check_latents(latents, batch, latent_shape):
    """Finite float latents `(batch, *latent_shape)` within +-`MAX_LATENT`, as float32 numpy."""
    array = as_array(latents, "latents")
    expected = (batch, *latent_shape)
    if array.dtype.kind not in "fiu" or tuple(array.shape) != expected:
        raise ValueError(
            f"`latents` has shape {tuple(array.shape)} and dtype {array.dtype}; expected floats of shape "
            f"{expected} (one per image of the request)."
        )
    with np.errstate(over="ignore"):
        array = array.astype("float32")  # float64 beyond float32's range becomes inf: caught here
    if not np.isfinite(array).all():
        raise ValueError(f"`latents` holds {np.size(array) - np.isfinite(array).sum()} NaN or inf values.")
    if np.abs(array).max() > MAX_LATENT:
        raise ValueError(
            f"`latents` holds values up to {np.abs(array).max():.3g}; expected starting noise within "
            f"+-{MAX_LATENT:g} (standard normal; `temperature` scales it)."
        )
    return array


def as_array(value, name):
    """`np.asarray(value)`, with an error naming `name` for ragged nested lists."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as error:
        message = f"`{name}` must be an array, not ragged nested lists; got {value!r:.80}: {error}"
        raise ValueError(message) from None


def check_input_keys(inputs, kind, purpose):
    """A dict input must hold only the keys `kind` reads (a model ignoring a condition is an error)."""
    if not isinstance(inputs, dict):
        return
    unknown = sorted(set(inputs) - set(INPUT_KEYS[kind]))
    if unknown:
        raise ValueError(
            f"{purpose} reads the keys {list(INPUT_KEYS[kind])}; the inputs also hold {unknown}, which "
            f"this model cannot use (is it the model you meant?)."
        )


def dict_input(inputs, key, purpose):
    """`inputs[key]` from a dict input; a clear error for anything else."""
    if not isinstance(inputs, dict) or key not in inputs:
        raise ValueError(f"{purpose} takes a dict with {key!r}; got {type(inputs).__name__}: {inputs!r:.80}.")
    return inputs[key]


def image_input(inputs, key, purpose, channels=3):
    """`(uint8 images (B, H, W, channels), squeeze)`: see the module docstring for what is accepted.

    Images of another channel count are converted (`with_channels`): a model trained on grey images
    takes RGB ones, and the other way round."""
    images = as_array(dict_input(inputs, key, purpose), key)
    squeeze = images.ndim == 3 or (images.ndim == 2)
    if images.ndim == 2:  # one greyscale image
        images = images[..., None]
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or min(images.shape[:3]) == 0:
        raise ValueError(
            f"`{key}` for {purpose} must be images (B, H, W, 3) or one image (H, W, 3) (also 1 or 4 "
            f"channels, or (H, W) grey), none of size 0; got shape {images.shape}."
        )
    return np.ascontiguousarray(with_channels(_to_uint8(images, key), channels)), squeeze


def with_channels(images, channels):
    """uint8 images `(..., C)`, C in {1, 3, 4}, converted to `channels`: alpha dropped (or made opaque),
    grey repeated to RGB, RGB to grey as PIL's `"L"` (ITU-R 601-2 luma).

    Example:
    >>> with_channels(np.array([[255, 0, 0, 7]], "uint8"), 1).tolist()
    [[76]]
    """
    if images.shape[-1] == channels:
        return images
    rgb = images[..., :3] if images.shape[-1] == 4 else images
    if channels == 1 and rgb.shape[-1] == 1:
        return rgb
    if channels == 1:
        return np.round(rgb.astype("float32") @ np.array([[0.299], [0.587], [0.114]], "float32")).astype("uint8")
    rgb = np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb
    if channels == 3:
        return rgb
    return np.concatenate([rgb, np.full_like(rgb[..., :1], 255)], axis=-1)


def _to_uint8(images, key):
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind != "f":
        raise ValueError(f"`{key}` must be uint8 in [0, 255] or floats in [-1, 1]; got dtype {images.dtype}.")
    if not np.isfinite(images).all():
        raise ValueError(f"Float `{key}` must be finite and in [-1, 1]; they hold NaN or inf values.")
    if images.min() < -1.001 or images.max() > 1.001:
        raise ValueError(
            f"Float `{key}` must be finite and in [-1, 1]; got values in [{images.min():.3g}, "
            f"{images.max():.3g}] (pass uint8 images for [0, 255])."
        )
    return np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype("uint8")


def mask_input(inputs, image_shape):
    """0/1 float32 masks `(B, H, W, 1)` for images of `image_shape`; 0/255 masks are scaled."""
    masks = as_array(dict_input(inputs, "masks", "inpainting"), "masks")
    if masks.dtype.kind not in "biuf":
        raise ValueError(f"`masks` must be numbers (0/1 or 0/255); got dtype {masks.dtype}.")
    masks = masks.astype("float32")
    if masks.size and np.isin(masks, (0.0, 255.0)).all():
        masks = masks / 255.0
    if masks.ndim == 2 or (masks.ndim == 3 and image_shape[0] == 1 and masks.shape == (*image_shape[1:3], 1)):
        masks = masks[None]  # one image's (H, W) or (H, W, 1)
    if masks.ndim == 3:
        masks = masks[..., None]
    if masks.shape != (*image_shape[:3], 1) or not np.isin(masks, (0.0, 1.0)).all():
        raise ValueError(
            f"`masks` must hold 0/1 values (or 0/255) with the images' size {image_shape[:3]}; got shape "
            f"{masks.shape} and values {np.unique(masks)[:5]}."
        )
    return masks


def label_input(inputs, num_classes):
    """int32 class labels `(B,)`, each in [0, num_classes)."""
    labels = as_array(dict_input(inputs, "labels", "class-conditional generation"), "labels").reshape(-1)
    if labels.size == 0 or labels.dtype.kind not in "iu":
        raise ValueError(f"`labels` must be a non-empty list of ints; got {labels!r:.80} ({labels.dtype}).")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"`labels` must be in [0, {num_classes - 1}]; got {sorted(set(labels.tolist()))[:8]}.")
    return labels.astype("int32")


def prompt_input(inputs):
    """(prompts, negative prompts, squeeze) from a str, a list of str or a dict."""
    squeeze = isinstance(inputs, str)
    if isinstance(inputs, dict):
        prompts = inputs.get("prompts")
        negatives = inputs.get("negative_prompts")
    else:
        prompts, negatives = inputs, None
    prompts = [prompts] if isinstance(prompts, str) else prompts
    if isinstance(prompts, np.ndarray) and prompts.dtype.kind in "US":
        prompts = [str(p) for p in prompts.reshape(-1)]
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(
            f"Text generation takes a str, a non-empty list of str or a dict with 'prompts'; got {inputs!r:.80}."
        )
    negatives = [negatives] * len(prompts) if isinstance(negatives, str) or negatives is None else negatives
    if isinstance(negatives, np.ndarray) and negatives.dtype.kind in "US":
        negatives = [str(n) for n in negatives.reshape(-1)]
    if isinstance(negatives, (list, tuple)):
        negatives = ["" if n is None else n for n in negatives]
        if len(negatives) == 1:  # one for all, as the SavedModel's `negative_prompts` of shape (1,)
            negatives = negatives * len(prompts)
    if (
        not isinstance(negatives, (list, tuple))
        or len(negatives) != len(prompts)
        or not all(isinstance(n, str) for n in negatives)
    ):
        raise ValueError(
            f"negative_prompts={negatives!r:.80}; expected a str, a list of one str, or one str per prompt "
            f"({len(prompts)})."
        )
    return list(prompts), list(negatives), squeeze


def _not_int(value):
    return isinstance(value, bool) or not isinstance(value, (int, np.integer))


def check_segmentation(maps, num_classes):
    """Segmentation maps as numpy: integer ids `(B, H, W)` in [0, num_classes) or finite one-hot floats
    `(B, H, W, num_classes)` in [0, 1]; a clear error naming `segmentation` otherwise.

    Example:
    >>> check_segmentation(np.zeros((2, 4, 4), "uint8"), 3).dtype
    dtype('int32')
    """
    maps = as_array(maps, "segmentation")
    if maps.dtype.kind in "iu":
        if maps.ndim != 3 or min(maps.shape) == 0:
            raise ValueError(f"integer `segmentation` maps must be (B, H, W) label ids; got shape {maps.shape}.")
        if maps.min() < 0 or maps.max() >= num_classes:
            bad = sorted({int(v) for v in np.unique(maps) if not 0 <= v < num_classes})[:8]
            raise ValueError(f"`segmentation` ids must be in [0, {num_classes - 1}]; got {bad}.")
        return maps.astype("int32")
    if maps.dtype.kind != "f" or maps.ndim != 4 or maps.shape[-1] != num_classes or min(maps.shape) == 0:
        raise ValueError(
            f"`segmentation` must be integer label maps (B, H, W) or one-hot floats (B, H, W, {num_classes}); "
            f"got shape {maps.shape} and dtype {maps.dtype}."
        )
    if not np.isfinite(maps).all() or maps.min() < 0 or maps.max() > 1:
        raise ValueError("one-hot `segmentation` maps must be finite and in [0, 1].")
    return maps.astype("float32")


def segmentation_input(inputs, num_classes):
    """`(maps, squeeze)` for `generate()`: checked maps with a batch axis (see `check_segmentation`);
    `squeeze` when one map without a batch axis was given."""
    maps = as_array(dict_input(inputs, "segmentation", "semantic synthesis"), "segmentation")
    squeeze = maps.ndim == (2 if maps.dtype.kind in "iu" else 3)
    return check_segmentation(maps[None] if squeeze else maps, num_classes), squeeze


def layout_input(inputs):
    """`(layout, squeeze)`: the layout dict of a `generate()` request (`boxes`, `box_labels`, optional
    `num_boxes`), its values checked later by the model's `LayoutTokenizer`; `squeeze` when `boxes` are one
    image's `(n, 4)`."""
    from keras_ldm.models.layout_tokenizer import split_boxes

    layout = {key: dict_input(inputs, key, "layout-to-image") for key in ("boxes", "box_labels")}
    if inputs.get("num_boxes") is not None:
        layout["num_boxes"] = inputs["num_boxes"]
    return layout, split_boxes(layout["boxes"])[1]
