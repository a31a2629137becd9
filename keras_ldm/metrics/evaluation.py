"""Whole evaluations: a generator (or a folder of its images) against reference images, and a first stage's
reconstructions — what `keras-ldm evaluate` and `keras-ldm evaluate-autoencoder` print.

- `evaluate_images(generated, reference, metrics)`: FID, KID, IS and precision/recall from one pass of the
  feature extractor over each image set (every metric reads the same features).
- `generated_batches(model, num_images, ...)`: uint8 batches from `model.generate` for unconditional, class
  (labels cycling over every class, as the paper's class-conditional FIDs) and text models (prompts cycling).
- `evaluate_autoencoder(autoencoder, batches)`: PSNR, SSIM, LPIPS and rFID of `decode(encode(x))` against `x`,
  the columns of the CompVis first-stage table.

Example (a stand-in feature extractor; by default the FID Inception network):
>>> rng = np.random.default_rng(0)
>>> real = [rng.integers(0, 256, (20, 8, 8, 3), dtype="uint8")]
>>> fake = [rng.integers(0, 256, (20, 8, 8, 3), dtype="uint8")]
>>> flat = lambda images: np.reshape(np.asarray(images, "float32"), (len(images), -1))[:, :6]
>>> report = evaluate_images(fake, real, ["fid", "pr"], feature_extractor=flat, progress=False)
>>> sorted(report)
['fid', 'num_generated', 'num_reference', 'precision', 'recall']
"""

import os

import keras
import numpy as np

from keras_ldm.data.image_files import image_batches
from keras_ldm.metrics.feature_metric import iterate_images, run_extractor
from keras_ldm.metrics.frechet import FrechetInceptionDistance
from keras_ldm.metrics.image_quality import psnr, ssim
from keras_ldm.metrics.inception_score import InceptionScore
from keras_ldm.metrics.kid import KernelInceptionDistance
from keras_ldm.metrics.precision_recall import PrecisionRecall
from keras_ldm.metrics.statistics import save_statistics

METRICS = {
    "fid": FrechetInceptionDistance,
    "kid": KernelInceptionDistance,
    "is": InceptionScore,
    "pr": PrecisionRecall,
}
AUTOENCODER_METRICS = ("psnr", "ssim", "lpips", "rfid")


class SharedFeatures:
    """A feature extractor that runs once per image batch however many metrics ask for its features.

    Also makes any image batch the Inception network can read: one channel (grey) is repeated to three, a
    fourth (alpha) is dropped.
    """

    def __init__(self, feature_extractor=None):
        self._extractor = feature_extractor
        self._last = (None, None)

    @property
    def extractor(self):
        if self._extractor is None:
            from keras_ldm.metrics.inception import fid_inception_v3

            self._extractor = fid_inception_v3()
        return self._extractor

    def __call__(self, images):
        if self._last[0] is not images:
            self._last = (images, run_extractor(self.extractor, as_rgb(images)))
        return self._last[1]


def as_rgb(images):
    """NHWC images with 1, 3 or 4 channels -> 3 channels (grey repeated, alpha dropped)."""
    images = np.asarray(images)
    channels = images.shape[-1]
    if channels == 1:
        return np.repeat(images, 3, axis=-1)
    if channels in (3, 4):
        return images[..., :3]
    raise ValueError(f"Images must have 1, 3 or 4 channels; got shape {images.shape}.")


def check_metric_names(names, allowed):
    """`names` (a list, or a comma-separated string) as a list of known names; a ValueError otherwise."""
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    names = [str(name).lower() for name in names]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise ValueError(f"`metrics` must be a non-empty list of {list(allowed)}; got {names or 'nothing'}.")
    return list(dict.fromkeys(names))


def evaluate_images(
    generated,
    reference,
    metrics=("fid",),
    feature_extractor=None,
    progress=True,
    save_reference_statistics=None,
    **options,
):
    """Compares generated image batches with reference ones; returns a flat dict of numbers.

    Args:
        generated: a folder of images, or an iterable of NHWC image batches (uint8 or floats in [0, 255];
            see `iterate_images`).
        reference: the same for the real images, or — for FID alone — a pytorch-fid `.npz` path or
            `(mu, sigma)`.
        metrics: names from `METRICS` ("fid", "kid", "is", "pr"); "is" reads the generated images only.
        feature_extractor: any callable mapping an image batch to features (a dict with "pool3" and
            "logits_unbiased" serves every metric); default: `fid_inception_v3()`.
        save_reference_statistics: a `.npz` path: writes the reference images' FID statistics there (pytorch-fid's
            format), so later evaluations can pass it as `reference` instead of encoding the images again.
        **options: passed to the metric classes by prefix, e.g. `kid_subset_size=100`, `is_splits=10`.
    """
    names = check_metric_names(metrics, METRICS)
    generated, reference = as_batches(generated), as_batches(reference)
    reference_is_statistics = isinstance(reference, (str, tuple, os.PathLike))
    if reference_is_statistics and set(names) - {"fid", "is"}:
        raise ValueError(
            f"`reference` {reference if not isinstance(reference, tuple) else '(mu, sigma)'} holds FID "
            f"statistics only; {sorted(set(names) - {'fid', 'is'})} need reference images (a folder or batches)."
        )
    shared = SharedFeatures(feature_extractor)
    instances = {name: _metric(name, shared, reference if reference_is_statistics else None, options)
                 for name in names}  # fmt: skip
    counts = {"num_generated": _feed(instances.values(), generated, False, progress)}
    two_sided = [metric for metric in instances.values() if len(metric.sides) == 2]
    if not reference_is_statistics and two_sided:
        counts["num_reference"] = _feed(two_sided, reference, True, progress)
    if save_reference_statistics is not None:
        if "fid" not in instances or reference_is_statistics:
            raise ValueError("`save_reference_statistics` needs metric 'fid' and reference images.")
        save_statistics(save_reference_statistics, *instances["fid"].statistics(real=True))
    report = {}
    for name, metric in instances.items():
        report.update(_flatten(name, metric.result()))
    return {**report, **counts}


def as_batches(images, batch_size=50):
    """A folder path -> `image_batches(folder)`; anything else unchanged."""
    if isinstance(images, (str, os.PathLike)) and os.path.isdir(images):
        return image_batches(images, batch_size)
    return images


def _metric(name, shared, statistics, options):
    prefix = f"{name}_"
    kwargs = {key[len(prefix) :]: value for key, value in options.items() if key.startswith(prefix)}
    if name == "fid" and statistics is not None:
        kwargs["reference_statistics"] = statistics
    return METRICS[name](feature_extractor=shared, **kwargs)


def _feed(metrics, batches, real, progress):
    """Adds every batch to each metric (the one-sided IS reads generated images only); the image count."""
    count = 0
    for images in iterate_images(batches, progress):
        for metric in metrics:
            if len(metric.sides) == 2:
                metric.update(images, real=real)
            elif not real:
                metric.update(images)
        count += len(images)
    return count


def _flatten(name, value):
    """`{name: value}`, or one entry per field of a namedtuple result (`kid_mean`, `precision`, ...)."""
    if hasattr(value, "_asdict"):
        return {(key if name == "pr" else f"{name}_{key}"): float(v) for key, v in value._asdict().items()}
    return {name: float(value)}


def generated_batches(model, num_images, batch_size=16, seed=0, prompts=None, **generate_options):
    """Yields uint8 batches from `model.generate`, `num_images` in all, each batch with its own seed.

    Unconditional models get `batch_size`; class models the labels 0, 1, ... cycling over every class; text
    models `prompts` (a list of str) cycling. Models conditioned on images (super-resolution, inpainting) need
    their inputs: generate a folder of outputs and evaluate that instead.
    """
    inputs_of = _input_maker(model, prompts)
    for index, start in enumerate(range(0, num_images, batch_size)):
        count = min(batch_size, num_images - start)
        inputs = inputs_of(start, count)
        options = dict(generate_options, seed=seed + index, verbose=False)
        if inputs is None:
            options["batch_size"] = count
        yield model.generate(inputs, **options)


def _input_maker(model, prompts):
    if getattr(model, "concat", None):
        raise ValueError(
            f"This model is conditioned on images ({model.concat}); generate its outputs for your inputs into a "
            "folder and evaluate the folder (`--images`)."
        )
    if getattr(model, "cross_attention", None) == "text":
        if not prompts:
            raise ValueError("A text-to-image model needs `prompts` (a non-empty list of str) to evaluate.")
        return lambda start, count: {"prompts": [prompts[(start + i) % len(prompts)] for i in range(count)]}
    if getattr(model, "cross_attention", None) == "class":
        classes = model.class_embedder.num_classes
        return lambda start, count: {"labels": [(start + i) % classes for i in range(count)]}
    return lambda start, count: None


def evaluate_autoencoder(
    autoencoder, batches, metrics=AUTOENCODER_METRICS, feature_extractor=None, lpips=None, progress=True
):
    """Reconstruction quality of a first stage: mean PSNR, SSIM and LPIPS, and rFID, over image batches.

    Args:
        autoencoder: an `AutoencoderKL`/`VQAutoencoder` (images in [-1, 1] -> reconstructions).
        batches: an iterable of uint8 NHWC batches (e.g. `keras_ldm.data.image_files.image_batches`).
        metrics: names from `AUTOENCODER_METRICS`.
        feature_extractor: for rFID (default: `fid_inception_v3()`).
        lpips: the LPIPS network (default: `keras_ldm.metrics.lpips.lpips_vgg()`).
    """
    names = check_metric_names(metrics, AUTOENCODER_METRICS)
    sums = {name: 0.0 for name in names if name != "rfid"}
    fid = None
    if "rfid" in names:
        fid = FrechetInceptionDistance(feature_extractor=SharedFeatures(feature_extractor))
    if "lpips" in names and lpips is None:
        from keras_ldm.metrics.lpips import lpips_vgg

        lpips = lpips_vgg()
    count = 0
    for images in iterate_images(batches, progress):
        images = np.asarray(images)
        reconstructions = reconstruct(autoencoder, images)
        for name in sums:
            sums[name] += float(np.sum(_per_image(name, images, reconstructions, lpips)))
        if fid is not None:
            fid.update(images, real=True)
            fid.update(reconstructions, real=False)
        count += len(images)
    report = {name: total / max(count, 1) for name, total in sums.items()}
    if fid is not None:
        report["rfid"] = float(fid.result())
    return {**report, "num_images": count}


def _per_image(name, images, reconstructions, lpips):
    """PSNR, SSIM or LPIPS of each (image, reconstruction) pair, as numpy."""
    if name == "lpips":
        from keras_ldm.metrics.lpips import lpips_distance

        return lpips_distance(lpips, as_rgb(images), as_rgb(reconstructions))
    function = {"psnr": psnr, "ssim": ssim}[name]
    return keras.ops.convert_to_numpy(function(images, reconstructions))


def reconstruct(autoencoder, images):
    """uint8 NHWC images -> uint8 reconstructions `decode(encode(x))` (posterior mean for KL)."""
    x = np.asarray(images, "float32") / 127.5 - 1.0
    y = np.asarray(autoencoder.predict_on_batch(x))
    return np.clip(np.round((y + 1.0) * 127.5), 0, 255).astype("uint8")
