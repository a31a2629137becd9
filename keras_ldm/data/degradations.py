"""Low-resolution inputs for super-resolution: bicubic downsampling and the BSRGAN degradation chain.

- `bicubic_downsample`: antialiased bicubic (as PIL `BICUBIC` / Matlab `imresize`), the clean SR setting.
- `bsr_degrade`: CompVis' `degradation_bsrgan_variant` (Zhang et al. 2021, "Designing a practical degradation
  model for deep blind image super-resolution") in TensorFlow ops with stateless randomness, usable inside
  `tf.data.map`. Per image: with probability 1/4 (factor 4) a first 2x downsample, then blur(s), a random
  downsample, the final downsample to exactly 1/factor, Gaussian noise and JPEG compression in random order
  (the first downsample always before the final one), and a last JPEG compression.
  Simplifications against CompVis: blur kernels have odd sizes; cv2's INTER_LINEAR/CUBIC/AREA are
  TensorFlow's bilinear/bicubic/area resizes; no camera-ISP step (CompVis disables it as well).
- `super_resolution_pairs`: `{"images"}` -> `{"images", "low_res"}` on a `tf.data.Dataset`.

Degradations keep the dtype: uint8 in, uint8 out; floats are taken to be in [-1, 1] and stay so.
"""

import math

import numpy as np

from keras_ldm.backend.lazy_tensorflow import tf
from keras_ldm.data.images import element_seeds

DEGRADATIONS = ("bicubic", "bsr", "bsr_light")

# CompVis bsrgan.py ("bsr") and bsrgan_light.py ("bsr_light") parameters.
_BSR_SETTINGS = {
    "bsr": {
        "blurs": 2,
        "blur_scale": 1.0,  # anisotropic variances up to (4 + sf) * scale, isotropic sigma up to (2 + 0.2 sf) * scale
        "aniso_radius": (2, 11),
        "iso_radius": (2, 11),
        "noise_levels": (2, 25),
        "jpeg_quality": (30, 95),
        "downsample2_prob": 0.75,
    },
    "bsr_light": {
        "blurs": 1,
        "blur_scale": 0.25,
        "aniso_radius": (2, 6),
        "iso_radius": (2, 3),
        "noise_levels": (1, 2),
        "jpeg_quality": (80, 95),
        "downsample2_prob": 0.8,
    },
}
_SCALE2_PROB, _JPEG_PROB = 0.25, 0.9
_RESIZE_METHODS = ("bilinear", "bicubic", "area")  # cv2 interpolation flags 1, 2, 3


def _check_factor(factor):
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"`factor` must be a positive int; got {factor!r}.")
    return int(factor)


def _check_image_spec(shape, dtype, factor):
    """Static checks of images' shape and dtype (unknown dimensions pass)."""
    shape = tf.TensorShape(shape)
    if shape.rank not in (3, 4) or shape[-1] != 3:
        raise ValueError(f"`images` must have shape (H, W, 3) or (B, H, W, 3); got {shape}.")
    if dtype != tf.uint8 and not dtype.is_floating:
        raise ValueError(f"`images` must be uint8 or floats in [-1, 1]; got dtype {dtype.name}.")
    for name, value in (("height", shape[-3]), ("width", shape[-2])):
        if value is not None and (value % factor or value < factor):
            raise ValueError(
                f"`images` {name} must be a positive multiple of factor={factor}; got shape {shape}."
            )


def _check_images(images, factor):
    images = tf.convert_to_tensor(images)
    _check_image_spec(images.shape, images.dtype, factor)
    return images


def _to_unit_interval(images):
    """uint8 or [-1, 1] floats -> float32 in [0, 1]."""
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return (tf.cast(images, tf.float32) + 1.0) / 2.0


def _from_unit_interval(images, dtype):
    """float32 in [0, 1] -> `dtype` (uint8: rounded to [0, 255]; floats: [-1, 1])."""
    images = tf.clip_by_value(images, 0.0, 1.0)
    if dtype == tf.uint8:
        return tf.cast(tf.round(images * 255.0), tf.uint8)
    return tf.cast(images * 2.0 - 1.0, dtype)


def bicubic_downsample(images, factor=4):
    """Downsamples `(H, W, 3)` or `(B, H, W, 3)` images by `factor` with antialiased bicubic interpolation.

    The size becomes exactly `H / factor x W / factor` (H and W must be multiples of `factor`); uint8 stays
    uint8 (rounded), floats (in [-1, 1]) stay floats, clipped to [-1, 1] against bicubic overshoot.

    Example:
    >>> small = bicubic_downsample(np.full((2, 16, 16, 3), 200, dtype="uint8"), factor=4)
    >>> small.shape.as_list(), small.dtype.name, int(small.numpy().min()), int(small.numpy().max())
    ([2, 4, 4, 3], 'uint8', 200, 200)
    """
    factor = _check_factor(factor)
    images = _check_images(images, factor)
    shape = tf.shape(images)
    size = tf.stack([shape[-3] // factor, shape[-2] // factor])
    small = tf.image.resize(tf.cast(images, tf.float32), size, method="bicubic", antialias=True)
    if images.dtype == tf.uint8:
        return tf.cast(tf.clip_by_value(tf.round(small), 0.0, 255.0), tf.uint8)
    return tf.cast(tf.clip_by_value(small, -1.0, 1.0), images.dtype)


def _as_seed(seed):
    """An int, a pair or a shape-(2,) tensor -> a shape-(2,) int64 stateless seed; `None` draws one."""
    if seed is None:
        return tf.random.uniform((2,), maxval=tf.int64.max, dtype=tf.int64)
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return tf.constant([int(seed), 0], tf.int64)
    seed = tf.cast(seed, tf.int64)
    if seed.shape.rank != 1 or seed.shape[0] != 2:
        raise ValueError(f"`seed` must be an int or a shape-(2,) integer tensor; got shape {seed.shape}.")
    return seed


def _uniform(seed, low=0.0, high=1.0):
    return tf.random.stateless_uniform((), seed, minval=low, maxval=high)


def _randint(seed, low, high):
    """A stateless random int32 in `[low, high]` (both inclusive, like Python's `random.randint`)."""
    return tf.random.stateless_uniform((), seed, minval=low, maxval=high + 1, dtype=tf.int32)


def _mirror_indices(n, pad):
    """Indices of `range(-pad, n + pad)` reflected into `[0, n)` without repeating the edge (scipy 'mirror')."""
    period = tf.maximum(2 * n - 2, 1)
    index = tf.math.floormod(tf.range(-pad, n + pad), period)
    return tf.where(index < n, index, period - index)


def _convolve(image, kernel):
    """Filters an `(H, W, C)` image with a `(k, k)` kernel (k odd), mirror-padded to keep the size."""
    pad = kernel.shape[0] // 2
    shape = tf.shape(image)
    image = tf.gather(image, _mirror_indices(shape[0], pad), axis=0)
    image = tf.gather(image, _mirror_indices(shape[1], pad), axis=1)
    channels = image.shape[-1]
    filters = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    return tf.nn.depthwise_conv2d(image[None], filters, strides=[1, 1, 1, 1], padding="VALID")[0]


def _gaussian_kernel(inverse_cov, radius, max_radius, center=(0.0, 0.0)):
    """A normalized `(2 max_radius + 1)^2` Gaussian with the given inverse covariance, zero beyond `radius`."""
    coords = tf.range(-max_radius, max_radius + 1, dtype=tf.float32)
    y, x = tf.meshgrid(coords - center[1], coords - center[0], indexing="ij")
    points = tf.stack([x, y], axis=-1)
    quad = tf.einsum("hwi,ij,hwj->hw", points, inverse_cov, points)
    kernel = tf.exp(-0.5 * quad)
    inside = tf.cast(tf.abs(tf.range(-max_radius, max_radius + 1)) <= radius, tf.float32)
    kernel = kernel * inside[:, None] * inside[None, :]
    return kernel / tf.reduce_sum(kernel)


def _add_blur(image, seed, sf, settings):
    """CompVis `add_blur`: an anisotropic (p=1/2) or isotropic Gaussian blur of random size."""
    seeds = tf.random.experimental.stateless_split(seed, num=6)
    scale = settings["blur_scale"]
    max_radius = max(settings["aniso_radius"][1], settings["iso_radius"][1])

    def anisotropic():
        wd2 = (4.0 + sf) * scale
        l1 = tf.maximum(wd2 * _uniform(seeds[1]), 1e-2)  # eigenvalues of the covariance (variances)
        l2 = tf.maximum(wd2 * _uniform(seeds[2]), 1e-2)
        theta = _uniform(seeds[3], 0.0, math.pi)
        rotation = tf.reshape(tf.stack([tf.cos(theta), -tf.sin(theta), tf.sin(theta), tf.cos(theta)]), (2, 2))
        inverse_cov = rotation @ tf.linalg.diag(tf.stack([1.0 / l1, 1.0 / l2])) @ tf.transpose(rotation)
        radius = _randint(seeds[4], *settings["aniso_radius"])
        return _gaussian_kernel(inverse_cov, radius, max_radius)

    def isotropic():
        wd = (2.0 + 0.2 * sf) * scale
        sigma = tf.maximum(wd * _uniform(seeds[1]), 0.1)
        radius = _randint(seeds[4], *settings["iso_radius"])
        return _gaussian_kernel(tf.eye(2) / sigma**2, radius, max_radius)

    kernel = tf.cond(_uniform(seeds[0]) < 0.5, anisotropic, isotropic)
    return _convolve(image, kernel)


def _resize(image, size, method_index):
    """Resizes with one of bilinear / bicubic / area (cv2 flags 1, 2, 3), chosen by a scalar tensor."""
    size = tf.maximum(tf.cast(size, tf.int32), 1)
    branches = [
        (lambda m=m: tf.image.resize(image, size, method=m, antialias=False)) for m in _RESIZE_METHODS
    ]
    return tf.clip_by_value(tf.switch_case(method_index, branches), 0.0, 1.0)


def _downsample2(image, seed, sf, settings):
    """A random downsample: by a factor in [1, 2 sf] with a random interpolation (p=0.75 / 0.8), or a
    Gaussian blur centred on each sf x sf block followed by nearest (strided) subsampling."""
    seeds = tf.random.experimental.stateless_split(seed, num=3)

    def resize():
        sf1 = _uniform(seeds[1], 1.0, 2.0 * sf)
        size = tf.math.floor(tf.cast(tf.shape(image)[:2], tf.float32) / sf1)
        return _resize(image, size, _randint(seeds[2], 0, 2))

    def blur_and_subsample():
        sigma = _uniform(seeds[1], 0.1, 0.6 * sf)
        shift = (sf - 1.0) / 2.0  # centre the kernel on the block, as CompVis' `shift_pixel`
        kernel = _gaussian_kernel(tf.eye(2) / sigma**2, 12, 12, center=(shift, shift))
        blurred = _convolve(image, kernel)
        stride = tf.cast(sf, tf.int32)
        return tf.clip_by_value(blurred[::stride, ::stride], 0.0, 1.0)

    return tf.cond(_uniform(seeds[0]) < settings["downsample2_prob"], resize, blur_and_subsample)


def _add_gaussian_noise(image, seed, settings):
    """CompVis `add_Gaussian_noise`: colour (p=0.4), grey (p=0.4) or channel-correlated (p=0.2) noise."""
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    low, high = settings["noise_levels"]
    level = tf.cast(_randint(seeds[0], low, high), tf.float32) / 255.0
    choice = _uniform(seeds[1])
    shape = tf.shape(image)

    def colour():
        return level * tf.random.stateless_normal(shape, seeds[2])

    def grey():
        return level * tf.random.stateless_normal(tf.concat([shape[:2], [1]], 0), seeds[2])

    def correlated():  # covariance (high / 255)^2 U^T D U with a random rotation U and D ~ U[0, 1)^3
        rotation = tf.linalg.qr(tf.random.stateless_uniform((3, 3), seeds[3])).q
        mix = tf.sqrt(tf.random.stateless_uniform((3,), seeds[4]))[:, None] * rotation
        return (high / 255.0) * tf.random.stateless_normal(shape, seeds[2]) @ mix

    noise = tf.case(
        [(choice > 0.6, colour), (choice < 0.4, lambda: tf.broadcast_to(grey(), shape))], default=correlated
    )
    return tf.clip_by_value(image + noise, 0.0, 1.0)


def _add_jpeg_noise(image, seed, settings):
    """JPEG compression at a random quality (CompVis `add_JPEG_noise`), through uint8 like cv2."""
    low, high = settings["jpeg_quality"]
    image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)
    image = tf.ensure_shape(image, (None, None, 3))
    compressed = tf.image.stateless_random_jpeg_quality(image, low, high + 1, seed)
    return tf.cast(compressed, tf.float32) / 255.0


def _degrade_one(image, seed, factor, settings):
    """`_degrade_one_traced` as plain TensorFlow ops (autograph off: its branches are `tf.cond`s already)."""
    return tf.autograph.experimental.do_not_convert(_degrade_one_traced)(image, seed, factor, settings)


def _degrade_one_traced(image, seed, factor, settings):
    """BSRGAN degradation of one `(H, W, 3)` float32 image in [0, 1] -> `(H / factor, W / factor, 3)`."""
    seeds = tf.random.experimental.stateless_split(seed, num=12)
    target = tf.shape(image)[:2] // factor
    sf = tf.constant(float(factor))
    if factor == 4:  # "downsample1": halve the image first and degrade the rest by 2

        def halve():
            half = tf.shape(image)[:2] // 2
            choice = _randint(seeds[1], 0, 3)
            antialiased = lambda: tf.image.resize(image, half, method="bicubic", antialias=True)
            resized = tf.cond(choice < 3, lambda: _resize(image, half, choice), antialiased)
            return tf.clip_by_value(resized, 0.0, 1.0), tf.constant(2.0)

        image, sf = tf.cond(_uniform(seeds[0]) < _SCALE2_PROB, halve, lambda: (image, sf))

    # Random order of the 7 steps with "downsample2" (2) kept before "downsample3" (3).
    order = tf.argsort(tf.random.stateless_uniform((7,), seeds[2]))
    position = tf.argsort(order)
    order = tf.where(
        position[2] > position[3], tf.where(order == 2, 3, tf.where(order == 3, 2, order)), order
    )
    step_seeds = seeds[3:10]
    second_blur = settings["blurs"] == 2

    def run_step(step, image):
        seed = step_seeds[step]
        branches = [
            lambda: _add_blur(image, seed, sf, settings),
            (lambda: _add_blur(image, seed, sf, settings)) if second_blur else (lambda: image),
            lambda: _downsample2(image, seed, sf, settings),
            lambda: _resize(image, target, _randint(seed, 0, 2)),
            lambda: _add_gaussian_noise(image, seed, settings),
            lambda: tf.cond(
                _uniform(tf.random.experimental.stateless_fold_in(seed, 1)) < _JPEG_PROB,
                lambda: _add_jpeg_noise(image, seed, settings),
                lambda: image,
            ),
            lambda: image,  # the camera-ISP step, disabled as in CompVis
        ]
        return step + 1, tf.ensure_shape(tf.switch_case(order[step], branches), (None, None, 3))

    _, image = tf.while_loop(
        lambda step, _: step < 7,
        run_step,
        (tf.constant(0), image),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None, 3])),
    )
    image = _add_jpeg_noise(image, seeds[10], settings)
    return image


def bsr_degrade(images, factor=4, seed=None, strength="bsr"):
    """The BSRGAN degradation chain (CompVis `degradation_bsrgan_variant`): a realistic low-res input.

    Args:
        images: `(H, W, 3)` or `(B, H, W, 3)` uint8, or floats in [-1, 1]; H, W multiples of `factor`.
        factor: the downsampling factor; the output is `(H / factor, W / factor, 3)`.
        seed: an int or shape-`(2,)` integer tensor (stateless: the same seed gives the same result);
            `None` draws a random one. A batch gives each image its own seed split from it.
        strength: `"bsr"` (CompVis `bsrgan.py`: two blurs, noise sigma 2-25/255, JPEG quality 30-95) or
            `"bsr_light"` (`bsrgan_light.py`, CompVis' `degradation: bsrgan_light`: one mild blur, noise
            1-2/255, JPEG quality 80-95).

    Returns:
        The degraded images, same dtype (uint8 stays uint8; floats stay in [-1, 1]).

    Example:
    >>> images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    >>> low_res = bsr_degrade(images, factor=4, seed=0)
    >>> low_res.shape.as_list(), low_res.dtype.name
    ([2, 8, 8, 3], 'uint8')
    >>> bool(np.array_equal(low_res, bsr_degrade(images, factor=4, seed=0)))
    True
    """
    factor = _check_factor(factor)
    if strength not in _BSR_SETTINGS:
        raise ValueError(f"`strength` must be one of {tuple(_BSR_SETTINGS)}; got {strength!r}.")
    images = _check_images(images, factor)
    settings = _BSR_SETTINGS[strength]
    seed = _as_seed(seed)
    dtype = images.dtype
    floats = _to_unit_interval(images)
    out_shape = [*images.shape[:-3], *(None if d is None else d // factor for d in images.shape[-3:-1]), 3]

    if images.shape.rank == 3:
        result = _degrade_one(floats, seed, factor, settings)
    else:
        seeds = tf.random.experimental.stateless_split(seed, num=tf.shape(images)[0])
        result = tf.map_fn(
            lambda args: _degrade_one(args[0], args[1], factor, settings),
            (floats, seeds),
            fn_output_signature=tf.TensorSpec((None, None, 3), tf.float32),
        )
    return tf.ensure_shape(_from_unit_interval(result, dtype), out_shape)


def super_resolution_pairs(dataset, factor=4, degradation="bicubic", seed=None):
    """Adds `low_res` (the images `factor` x smaller) to a dataset of `{"images", ...}` dicts.

    Args:
        dataset: a `tf.data.Dataset` of dicts with `images` `(H, W, 3)` or `(B, H, W, 3)` (uint8 or [-1, 1]
            floats; H, W multiples of `factor`), e.g. from `image_folder_dataset` or `photo_crops_dataset`.
        factor: downsampling factor.
        degradation: `"bicubic"` (`bicubic_downsample`), `"bsr"` or `"bsr_light"` (`bsr_degrade`).
        seed: for the BSR degradations: an int for a reproducible sequence (fresh each epoch), or `None`.

    Example:
    >>> images = np.zeros((4, 32, 32, 3), dtype="uint8")
    >>> ds = super_resolution_pairs(tf.data.Dataset.from_tensor_slices({"images": images}).batch(2))
    >>> {k: v.shape.as_list() for k, v in next(iter(ds)).items()}
    {'images': [2, 32, 32, 3], 'low_res': [2, 8, 8, 3]}
    """
    if degradation not in DEGRADATIONS:
        raise ValueError(f"`degradation` must be one of {DEGRADATIONS}; got {degradation!r}.")
    factor = _check_factor(factor)
    spec = dataset.element_spec
    if not isinstance(spec, dict) or "images" not in spec:
        raise ValueError(f"`dataset` must yield dicts with an 'images' entry; its elements are {spec}.")
    _check_image_spec(spec["images"].shape, spec["images"].dtype, factor)

    if degradation == "bicubic":
        return dataset.map(
            lambda example: {**example, "low_res": bicubic_downsample(example["images"], factor)},
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    @tf.autograph.experimental.do_not_convert
    def degrade(example, element_seed):
        low_res = bsr_degrade(example["images"], factor, element_seed, strength=degradation)
        return {**example, "low_res": low_res}

    paired = tf.data.Dataset.zip(dataset, element_seeds(seed))
    return paired.map(degrade, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
