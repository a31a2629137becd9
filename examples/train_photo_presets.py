"""Trains the shipped `photo_sr4x` and `photo_inpaint` presets on crops of the bundled photographs.

Both share one first stage, as in the paper:
1. a KL-f2 autoencoder with 8 latent channels (HxWx3 <-> H/2xW/2x8: little compression, so that its
   reconstructions stay well above the bicubic baseline), trained on random 32x32 crops of the training
   photos (`keras_ldm.data.photo_names("train")`; chelsea, coffee and motorcycle are held out) with L1 + KL;
2. `--task sr`: a 4x super-resolution LDM on 32x32 crops; the bicubic 8x8 low-res image is resized to the
   latent size and concatenated (CompVis' bsr_sr set-up, `concat="low_res"`);
   `--task inpaint`: an inpainting LDM on 48x48 crops with random box/stroke masks; the encoded masked
   image and the mask are concatenated (`concat="masks"`, in_channels = 2 * 8 + 1).
Both predict v (`parameterization="v"`), which keeps the first DDIM steps' x0 estimates well conditioned.
All models are convolutional: they run on 64x64 (or larger) images as well.

The training data are numpy arrays in memory (crops, bicubic low-res images, masks), so the script needs no
TensorFlow and runs on a JAX + CUDA host as well as on a CPU. Every stage checkpoints into `--work-dir` and
resumes; `--*-time-budget` ends a stage early. Run the autoencoder once, then each task:

    KERAS_BACKEND=jax python examples/train_photo_presets.py --task sr
    KERAS_BACKEND=jax python examples/train_photo_presets.py --task inpaint

`benchmarks/photo_presets.py` measures the results against bicubic upsampling and OpenCV's Telea inpainting.
"""

import argparse
import os

import keras
import numpy as np

from keras_ldm.data.masks import random_masks
from keras_ldm.data.photos import random_photo_crops
from keras_ldm.models import AutoencoderKL, LatentDiffusion, UNet

from _training import fit_or_load, fit_or_load_autoencoder

LATENT_CHANNELS = 8
TASKS = {
    "sr": dict(
        concat="low_res",
        in_channels=LATENT_CHANNELS + 3,
        description="4x super-resolution of photographs (bicubic-degraded), trained on 32x32 crops.",
        crop_size=32,
        num_steps=10,
        temperature=0.5,
    ),
    "inpaint": dict(
        concat="masks",
        in_channels=2 * LATENT_CHANNELS + 1,
        description="Inpainting of photographs (mask 1 = fill), trained on 48x48 crops with box/stroke masks.",
        crop_size=48,
        num_steps=25,
        temperature=0.25,
    ),
}


def build_autoencoder():
    return AutoencoderKL(
        ch=32,
        ch_mult=(1, 2),
        num_res_blocks=1,
        resolution=64,
        z_channels=LATENT_CHANNELS,
        embed_dim=LATENT_CHANNELS,
        norm_num_groups=8,
    )


def build_ldm(task, autoencoder, seed):
    unet = UNet(
        in_channels=TASKS[task]["in_channels"],
        out_channels=LATENT_CHANNELS,
        model_channels=64,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(2,),
        num_head_channels=32,
        norm_num_groups=16,
    )
    return LatentDiffusion(
        unet,
        autoencoder,
        concat=TASKS[task]["concat"],
        parameterization="v",
        scale_by_std=True,
        ema_decay=0.999,
        seed=seed,
    )


def train_autoencoder(args):
    autoencoder = build_autoencoder()
    if args.init_autoencoder:  # continue from earlier weights (a longer run in two parts)
        autoencoder.load_weights(args.init_autoencoder)
    fit_or_load_autoencoder(
        autoencoder, args, lambda: random_photo_crops("train", size=32, count=args.examples, seed=args.seed)
    )
    return autoencoder


def bicubic_low_res(images, factor=4, chunk=4096):
    """uint8 images -> uint8 images `factor` x smaller, antialiased bicubic (`data.bicubic_downsample`)."""
    height, width = images.shape[1] // factor, images.shape[2] // factor
    parts = []
    for start in range(0, len(images), chunk):
        part = keras.ops.cast(images[start : start + chunk], "float32")
        small = keras.ops.image.resize(part, (height, width), interpolation="bicubic", antialias=True)
        parts.append(np.clip(np.round(keras.ops.convert_to_numpy(small)), 0, 255).astype("uint8"))
    return np.concatenate(parts)


def training_data(task, count, seed):
    crops = random_photo_crops("train", size=TASKS[task]["crop_size"], count=count, seed=seed)
    if task == "sr":
        return {"images": crops, "low_res": bicubic_low_res(crops)}
    masks = random_masks(crops.shape[1:3], count, kind="mixed", min_coverage=0.1, max_coverage=0.5, seed=seed)
    return {"images": crops, "masks": masks}


def train_ldm(args, autoencoder):
    ldm = build_ldm(args.task, autoencoder, args.seed)
    fit_or_load(
        ldm,
        args.task,
        args,
        lambda: training_data(args.task, args.examples, args.seed + 1),
        args.ldm_steps,
        args.batch_size,
        args.ldm_time_budget,
        learning_rate=args.learning_rate,
        warmup_steps=100,
    )
    return ldm


def main(args):
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.work_dir, exist_ok=True)
    autoencoder = train_autoencoder(args)
    if args.task is None:
        return
    ldm = train_ldm(args, autoencoder)
    name = {"sr": "photo_sr4x", "inpaint": "photo_inpaint"}[args.task]
    out = args.out or os.path.join(os.path.dirname(__file__), "..", "keras_ldm", "presets", name)
    ldm.save_to_preset(
        out,
        description=TASKS[args.task]["description"],
        generation_defaults={
            "num_steps": args.num_steps or TASKS[args.task]["num_steps"],
            "sampler": "ddim",
            "temperature": TASKS[args.task]["temperature"] if args.temperature is None else args.temperature,
        },
        inference_only=True,
        weights_dtype="float16",
    )
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task", choices=sorted(TASKS), default=None, help="omit to train only the autoencoder"
    )
    parser.add_argument("--ae-steps", type=int, default=1200)
    parser.add_argument("--ae-batch-size", type=int, default=16)
    parser.add_argument("--ae-learning-rate", type=float, default=1e-3)
    parser.add_argument("--init-autoencoder", help="autoencoder weights to continue training from")
    parser.add_argument("--ldm-steps", type=int, default=1500)
    parser.add_argument(
        "--num-steps", type=int, help="the preset's default sampling steps (sr 10, inpaint 25)"
    )
    parser.add_argument(
        "--temperature", type=float, help="the preset's default starting-noise scale (sr 0.5, inpaint 0.25)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--examples", type=int, default=50_000, help="crops drawn for each stage")
    parser.add_argument("--ae-time-budget", type=float, help="seconds after which the autoencoder stops")
    parser.add_argument("--ldm-time-budget", type=float, help="seconds after which the LDM stops")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="outputs/train_photo_presets")
    parser.add_argument("--out", default=None, help="preset folder (default: the package's shipped one)")
    main(parser.parse_args())
