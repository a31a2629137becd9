"""Full-reference image quality: PSNR and SSIM (Wang et al. 2004), per image of an NHWC batch, on keras.ops.

Both equal scikit-image's `peak_signal_noise_ratio` and `structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, channel_axis=-1)` (the settings of Wang et al. that papers report),
computed in float32 on any backend.
"""

import numpy as np
from keras import ops


def psnr(a, b, data_range=255):
    """The peak signal-to-noise ratio `10 log10(data_range² / MSE)` in dB of each image pair, `(batch,)`
    (`inf` for identical images).

    Args:
        a, b: NHWC image batches of the same shape (uint8, or float in [0, `data_range`]).
        data_range: the value range of the images: 255 for [0, 255], 1.0 for [0, 1].

    Example:
    >>> a = np.zeros((1, 4, 4, 3), "uint8")
    >>> [round(float(value), 4) for value in ops.convert_to_numpy(psnr(a, a + 1))]
    [48.1308]
    """
    a, b = _image_pair(a, b, data_range)
    mse = ops.mean(ops.square(a - b), axis=(1, 2, 3))
    return 10.0 * ops.log10(data_range**2 / mse)


def ssim(a, b, data_range=255, sigma=1.5, k1=0.01, k2=0.03):
    """The mean structural similarity of each image pair, `(batch,)`, in [-1, 1] (1 for identical images).

    Local means, variances and the covariance are Gaussian-weighted (`sigma`, an 11-tap window for 1.5) and
    averaged over the positions whose window lies inside the image, then over the channels, as scikit-image
    does. Images must be at least as large as the window.

    Args:
        a, b: NHWC image batches of the same shape (uint8, or float in [0, `data_range`]).
        data_range: the value range of the images: 255 for [0, 255], 1.0 for [0, 1].
        sigma: the standard deviation of the Gaussian window in pixels.
        k1, k2: the stabilising constants `C1 = (k1 data_range)²`, `C2 = (k2 data_range)²`.

    Example:
    >>> a = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
    >>> [round(float(value), 4) for value in ops.convert_to_numpy(ssim(a, a))]
    [1.0, 1.0]
    """
    a, b = _image_pair(a, b, data_range)
    window = gaussian_window(sigma)
    height, width = a.shape[1:3]
    if height < len(window) or width < len(window):
        raise ValueError(
            f"`a` and `b` must be at least {len(window)}×{len(window)} pixels (the SSIM window for "
            f"sigma={sigma}); got {height}×{width}."
        )
    # Centring (the same shift for a and b) keeps the float32 variances accurate; the means are shifted back.
    shift = ops.mean(a + b, axis=(1, 2), keepdims=True) / 2
    a, b = a - shift, b - shift
    mean_a, mean_b, mean_aa, mean_bb, mean_ab = ops.split(
        _gaussian_filter(ops.concatenate([a, b, a * a, b * b, a * b], axis=-1), window), 5, axis=-1
    )
    var_a, var_b, cov_ab = mean_aa - mean_a**2, mean_bb - mean_b**2, mean_ab - mean_a * mean_b
    mean_a, mean_b = mean_a + shift, mean_b + shift
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    similarity = ((2 * mean_a * mean_b + c1) * (2 * cov_ab + c2)) / (
        (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)
    )
    return ops.mean(similarity, axis=(1, 2, 3))


def gaussian_window(sigma=1.5, truncate=3.5):
    """The normalized 1-D Gaussian of `scipy.ndimage.gaussian_filter` (radius `int(truncate sigma + 0.5)`).

    Example:
    >>> window = gaussian_window()
    >>> len(window), round(float(window.sum()), 6)
    (11, 1.0)
    """
    radius = int(truncate * sigma + 0.5)
    taps = np.exp(-0.5 * np.arange(-radius, radius + 1) ** 2 / sigma**2)
    return taps / taps.sum()


def _gaussian_filter(images, window):
    """Separable 'valid' filtering of each channel of NHWC `images` with the 1-D `window`."""
    channels = images.shape[-1]
    taps = np.tile(window.astype("float32")[:, None, None, None], (1, 1, channels, 1))
    images = ops.depthwise_conv(images, taps, padding="valid")  # along the height
    return ops.depthwise_conv(images, np.transpose(taps, (1, 0, 2, 3)), padding="valid")  # along the width


def _image_pair(a, b, data_range):
    a, b = (ops.convert_to_tensor(image) for image in (a, b))
    if tuple(a.shape) != tuple(b.shape) or len(a.shape) != 4:
        raise ValueError(
            f"`a` and `b` must be NHWC image batches (rank 4) of the same shape; got shapes {tuple(a.shape)} and "
            f"{tuple(b.shape)}."
        )
    if not data_range > 0:
        raise ValueError(f"`data_range` must be positive; got {data_range}.")
    return ops.cast(a, "float32"), ops.cast(b, "float32")
