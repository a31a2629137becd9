"""End-to-end quick start: a tiny KL autoencoder and a tiny latent diffusion model on bundled photos.

1. Trains `keras_ldm.AutoencoderKL` (f=2, 4 latent channels) on random 32x32 crops of scikit-image's
   photographs with `model.fit()` (L1 + KL; the perceptual and adversarial terms are off in this
   small run) and reports reconstruction PSNR on a held-out photo.
2. Trains an unconditional `keras_ldm.LatentDiffusion` (frozen autoencoder + UNet) on the same crops
   with `model.fit()`, then samples 8 images with `generate()` (50 DDIM steps, one compiled loop).
3. Writes a PNG: held-out crops | reconstructions | samples. Works on every backend:

    KERAS_BACKEND=jax python examples/autoencoder_quickstart.py --steps 300
"""

import argparse
import os
import time

import keras
import numpy as np
import skimage.data
from PIL import Image

import keras_ldm

TRAIN_PHOTOS = ("astronaut", "coffee", "chelsea", "colorwheel", "immunohistochemistry", "retina")
HELD_OUT_PHOTO = "rocket"


def random_crops(photo_names, count, size, rng):
    """`count` random `size`x`size` RGB crops scaled to [-1, 1]."""
    photos = [getattr(skimage.data, name)()[..., :3] for name in photo_names]
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        top = rng.integers(0, photo.shape[0] - size)
        left = rng.integers(0, photo.shape[1] - size)
        crops.append(photo[top : top + size, left : left + size])
    return np.stack(crops).astype("float32") / 127.5 - 1.0


def psnr(images, reconstructions):
    mse = np.mean((np.clip(reconstructions, -1, 1) - images) ** 2) / 4.0  # on a [0, 1] scale
    return 10.0 * np.log10(1.0 / mse)


def to_uint8(images):
    return np.round((np.clip(images, -1, 1) + 1.0) * 127.5).astype("uint8")


def main(args):
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train = random_crops(TRAIN_PHOTOS, args.steps * args.batch_size, 32, rng)
    held_out = random_crops([HELD_OUT_PHOTO], 16, 32, rng)

    vae = keras_ldm.models.AutoencoderKL(ch=32, ch_mult=(1, 2), num_res_blocks=1, embed_dim=4)
    before = psnr(held_out, keras.ops.convert_to_numpy(vae(held_out)))
    # L1 + KL only: the perceptual loss needs ImageNet VGG16 weights and the GAN needs a long run.
    vae.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate, beta_1=0.5, beta_2=0.9),
        perceptual_weight=0.0,
        disc_start=10**9,
    )
    start = time.time()
    vae.fit(train, batch_size=args.batch_size, epochs=1, verbose=2)
    seconds = time.time() - start
    reconstructions = keras.ops.convert_to_numpy(vae(held_out))
    after = psnr(held_out, reconstructions)

    unet = keras_ldm.UNet(
        in_channels=4,
        out_channels=4,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(2,),
        num_heads=4,
    )
    ldm = keras_ldm.LatentDiffusion(unet, vae, scale_by_std=True, ema_decay=0.999, seed=args.seed)
    ldm.compile(learning_rate=args.learning_rate, warmup_steps=20)
    start = time.time()
    history = ldm.fit({"images": train}, batch_size=args.batch_size, epochs=1, verbose=2)
    ldm_seconds = time.time() - start
    samples = ldm.generate(batch_size=8, num_steps=50, height=32, width=32, seed=args.seed)

    print(f"\nbackend              {keras.backend.backend()}")
    print(f"autoencoder params   {vae.count_params():,}")
    print(f"unet params          {unet.count_params():,}")
    print(f"autoencoder training {args.steps} steps x {args.batch_size} crops in {seconds:.0f} s")
    print(f"held-out PSNR        {before:.2f} dB before -> {after:.2f} dB after ({HELD_OUT_PHOTO})")
    print(
        f"LDM training         {args.steps} steps in {ldm_seconds:.0f} s, loss {history.history['loss'][-1]:.3f}"
    )
    print(
        f"scale_factor         {float(keras.ops.convert_to_numpy(ldm.scale_factor)):.3f} (1/std of the latents)"
    )
    print(f"samples              {samples.shape} {samples.dtype}")

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    grid = np.concatenate(
        [np.concatenate(list(to_uint8(x[:8])), axis=1) for x in (held_out, reconstructions)]
    )
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(args.out)
    print(f"wrote                {args.out} (rows: held-out crops, reconstructions, samples)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/autoencoder_quickstart.png")
    main(parser.parse_args())
