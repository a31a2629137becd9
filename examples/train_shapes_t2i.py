"""Trains the shipped `shapes_t2i` preset: text-to-image on the procedural shapes dataset.

Two stages, as in the paper, both with `model.fit()`:
1. a KL-f4 autoencoder (64x64x3 <-> 16x16x4) on the shapes images (L1 + KL; flat colours need no
   perceptual or adversarial loss);
2. a text-conditional LDM: a 2-layer LDMBert over a 23-piece word vocabulary, cross-attention into a small
   UNet, trained on `"a {color} {shape} on a {background} background"` captions with 10% of the prompts
   dropped so that classifier-free guidance works.

The training data are numpy arrays in memory (`shapes_arrays`), so the script needs no TensorFlow and runs
on a JAX + CUDA host as well as on a CPU. Each stage checkpoints into `--work-dir` (`BackupAndRestore`), so
an interrupted run resumes where it stopped, and `--*-time-budget` ends a stage early (a lent GPU slot).
The result is written with `save_to_preset` into `--out` (the package's shipped preset folder by default).
The command that made the shipped weights is in `keras_ldm/presets/shapes_t2i/README.md`.

    KERAS_BACKEND=jax python examples/train_shapes_t2i.py --ae-steps 1000 --ldm-steps 1500
"""

import argparse
import os

import keras
import numpy as np

from keras_ldm.data.shapes import COLORS, SHAPES, all_prompts, describe_image, parse_prompt, shapes_arrays
from keras_ldm.models import AutoencoderKL, LatentDiffusion, UNet
from keras_ldm.models.text_encoder import LDMBertEncoder
from keras_ldm.models.tokenizer import LDMBertTokenizer

from _training import fit_or_load, fit_or_load_autoencoder

VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "on", "background", *COLORS, *SHAPES]
PROMPT_LENGTH = 16  # [CLS] + 7 words + [SEP], padded


def build_autoencoder():
    return AutoencoderKL(
        ch=16,
        ch_mult=(1, 2, 2),
        num_res_blocks=1,
        resolution=64,
        z_channels=4,
        embed_dim=4,
        norm_num_groups=8,
    )


def build_ldm(autoencoder, seed):
    text_encoder = LDMBertEncoder(
        vocab_size=len(VOCABULARY),
        max_position_embeddings=PROMPT_LENGTH,
        encoder_layers=2,
        encoder_ffn_dim=256,
        encoder_attention_heads=4,
        head_dim=16,
        d_model=64,
        dropout=0.0,
    )
    unet = UNet(
        in_channels=4,
        out_channels=4,
        model_channels=64,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(2,),
        num_head_channels=32,
        context_dim=64,
        norm_num_groups=16,
    )
    return LatentDiffusion(
        unet,
        autoencoder,
        cross_attention="text",
        text_encoder=text_encoder,
        tokenizer=LDMBertTokenizer(VOCABULARY, sequence_length=PROMPT_LENGTH),
        p_uncond=0.1,
        scale_by_std=True,
        ema_decay=0.999,
        seed=seed,
    )


def train_autoencoder(args):
    autoencoder = build_autoencoder()
    trained = fit_or_load_autoencoder(
        autoencoder, args, lambda: shapes_arrays(args.examples, seed=args.seed)["images"]
    )
    if trained:
        report_reconstructions(autoencoder)
    return autoencoder


def report_reconstructions(autoencoder, count=90):
    """How many reconstructions `describe_image` still reads as their caption (the LDM's ceiling)."""
    batch = shapes_arrays(count, seed=12345)
    images = batch["images"].astype("float32") / 127.5 - 1
    reconstructions = keras.ops.convert_to_numpy(autoencoder(images))
    truth = [parse_prompt(p) for p in batch["prompts"]]
    correct = sum(describe_image(r) == t for r, t in zip(reconstructions, truth))
    error = np.mean(np.abs(np.clip(reconstructions, -1, 1) - images)) * 127.5
    print(
        f"autoencoder: {correct}/{count} reconstructions read correctly; mean abs error {error:.1f} grey levels"
    )


def train_ldm(args, autoencoder):
    ldm = build_ldm(autoencoder, args.seed)

    def make_data():
        arrays = shapes_arrays(args.examples, seed=args.seed + 1)
        token_ids = keras.ops.convert_to_numpy(ldm.tokenizer(all_prompts()))[arrays["labels"]]
        return {"images": arrays["images"], "token_ids": token_ids}

    steps = args.ldm_steps, args.batch_size, args.ldm_time_budget
    fit_or_load(ldm, "ldm", args, make_data, *steps, learning_rate=args.learning_rate, warmup_steps=200)
    return ldm


def main(args):
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.work_dir, exist_ok=True)
    autoencoder = train_autoencoder(args)
    ldm = train_ldm(args, autoencoder)
    ldm.save_to_preset(
        args.out,
        description="Text-to-image on 64x64 procedural shapes: 'a {color} {shape} on a {background} background'.",
        generation_defaults={"num_steps": 50, "guidance_scale": 4.0, "sampler": "ddim", "image_size": 64},
        inference_only=True,
        weights_dtype="float16",
    )
    images = ldm.generate(["a red circle on a blue background"] * 2, guidance_scale=4.0, seed=args.seed)
    print(f"wrote {args.out}; sample {images.shape} mean {np.mean(images):.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ae-steps", type=int, default=1000)
    parser.add_argument("--ldm-steps", type=int, default=1500)
    parser.add_argument("--ae-batch-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--ae-learning-rate", type=float, default=1e-3)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--examples", type=int, default=50_000, help="images drawn for each stage")
    parser.add_argument("--ae-time-budget", type=float, help="seconds after which the autoencoder stops")
    parser.add_argument("--ldm-time-budget", type=float, help="seconds after which the LDM stops")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default="outputs/train_shapes_t2i")
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "..", "keras_ldm", "presets", "shapes_t2i")
    )
    main(parser.parse_args())
