"""`photo_sr4x` against bicubic upsampling and `photo_inpaint` against OpenCV's Telea, on held-out photos.

Crops come from the held-out photos only (chelsea, coffee, motorcycle; `keras_ldm.data.photo_names`):
- super-resolution: 64x64 crops -> antialiased bicubic 16x16 -> 4x back up by the preset and by bicubic
  interpolation; PSNR against the original crop (and the autoencoder's own reconstruction PSNR, its ceiling);
- inpainting: 64x64 crops with random box/stroke masks (10-50% of the image) filled by the preset and by
  `cv2.inpaint(..., cv2.INPAINT_TELEA)`; PSNR and mean absolute error inside the hole only.

    KERAS_BACKEND=jax python benchmarks/photo_presets.py --count 64
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from keras_ldm import LatentDiffusion
from keras_ldm.data.degradations import bicubic_downsample
from keras_ldm.data.masks import random_masks
from keras_ldm.data.photos import random_photo_crops


def psnr(a, b, mask=None):
    """PSNR in dB of uint8 images (over the pixels where `mask` is 1, if given)."""
    error = (np.asarray(a, "float64") - np.asarray(b, "float64")) ** 2
    if mask is not None:
        weights = np.broadcast_to(mask, error.shape)
        mse = (error * weights).sum() / weights.sum()
    else:
        mse = error.mean()
    return 10.0 * np.log10(255.0**2 / mse)


def bicubic_upsample(images, factor=4):
    height, width = images.shape[1] * factor, images.shape[2] * factor
    big = tf.image.resize(tf.cast(images, tf.float32), (height, width), method="bicubic")
    return np.clip(np.round(big.numpy()), 0, 255).astype("uint8")


def reconstruct(model, images):
    latents = model.encode_images(
        keras.ops.convert_to_tensor(images.astype("float32") / 127.5 - 1.0), sample=False
    )
    decoded = keras.ops.convert_to_numpy(model.decode_latents(latents * model.scale_factor))
    return np.round((np.clip(decoded, -1, 1) + 1) * 127.5).astype("uint8")


def super_resolution(args, crops):
    model = LatentDiffusion.from_preset(args.sr_preset)
    low_res = bicubic_downsample(crops, 4).numpy()
    rows = [("bicubic upsampling", psnr(bicubic_upsample(low_res), crops), None)]
    rows.append(("autoencoder reconstruction (ceiling)", psnr(reconstruct(model, crops), crops), None))
    for num_steps, temperature in settings(model, args):
        start = time.time()
        restored = model.generate(
            {"images": low_res}, num_steps=num_steps, temperature=temperature, seed=args.seed
        )
        name = f"photo_sr4x, DDIM {num_steps} steps, temperature {temperature}"
        rows.append((name, psnr(restored, crops), time.time() - start))
    return rows


def settings(model, args):
    """(num_steps, temperature) pairs to measure: the preset's defaults first, then plain sampling."""
    defaults = model.sampling_options()
    steps = args.steps or [defaults["num_steps"]]
    temperatures = args.temperatures or sorted({defaults["temperature"], 1.0})
    return [(n, t) for t in temperatures for n in steps]


def inpainting(args, crops):
    import cv2

    model = LatentDiffusion.from_preset(args.inpaint_preset)
    masks = random_masks(crops.shape[1:3], num_masks=len(crops), kind="mixed", seed=args.seed)
    telea = np.stack(
        [
            cv2.inpaint(crop, (mask[..., 0] * 255).astype("uint8"), 3, cv2.INPAINT_TELEA)
            for crop, mask in zip(crops, masks)
        ]
    )
    rows = [("OpenCV Telea", psnr(telea, crops, masks), _hole_mae(telea, crops, masks), None)]
    for num_steps, temperature in settings(model, args):
        start = time.time()
        filled = model.generate(
            {"images": crops, "masks": masks}, num_steps=num_steps, temperature=temperature, seed=args.seed
        )
        seconds = time.time() - start
        rows.append(
            (
                f"photo_inpaint, DDIM {num_steps} steps, temperature {temperature}",
                psnr(filled, crops, masks),
                _hole_mae(filled, crops, masks),
                seconds,
            )
        )
    return rows, float(masks.mean())


def _hole_mae(a, b, mask):
    weights = np.broadcast_to(mask, a.shape)
    return float((np.abs(a.astype("float64") - b) * weights).sum() / weights.sum())


def main(args):
    crops = random_photo_crops("held_out", size=64, count=args.count, seed=args.seed)
    print(
        f"{args.count} held-out 64x64 crops (chelsea, coffee, motorcycle), backend {keras.backend.backend()}\n"
    )
    print("| super-resolution 16 -> 64 | PSNR (dB) | seconds |")
    print("|---|---|---|")
    for name, value, seconds in super_resolution(args, crops):
        print(f"| {name} | {value:.2f} | {'' if seconds is None else f'{seconds:.1f}'} |")
    rows, coverage = inpainting(args, crops)
    print(
        f"\n| inpainting (holes cover {100 * coverage:.0f}% on average) | PSNR in hole (dB) | MAE in hole (grey levels) | seconds |"
    )
    print("|---|---|---|---|")
    for name, value, mae, seconds in rows:
        print(f"| {name} | {value:.2f} | {mae:.1f} | {'' if seconds is None else f'{seconds:.1f}'} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--steps", type=int, nargs="+", help="DDIM steps (default: each preset's)")
    parser.add_argument(
        "--temperatures", type=float, nargs="+", help="starting-noise scales (default: the preset's and 1)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sr-preset", default="photo_sr4x")
    parser.add_argument("--inpaint-preset", default="photo_inpaint")
    main(parser.parse_args())
