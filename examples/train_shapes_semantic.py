"""Trains the shipped `shapes_semantic` preset: semantic synthesis (segmentation map -> image) on the
procedural scenes of `keras_ldm.data.scenes`.

The first stage is the shipped `shapes_t2i` preset's KL-f4 autoencoder (trained on the same palette and
shapes; frozen, as in the paper). The LDM concatenates the map — one-hot over the 6 colour classes,
brought to the latent size by a `SpatialRescaler(n_stages=2, in_channels=6, out_channels=3)` trained
jointly, CompVis' semantic-synthesis conditioning — to the latents of a small UNet with attention only in
its middle block (as CompVis' released semantic model). Training scenes are 32x32 (8x8 latents); the
UNet is convolutional, so it also samples 64x64 maps.

The data are numpy arrays in memory, so the script needs no TensorFlow. The LDM checkpoints into
`--work-dir` (an interrupted run resumes), and `--time-budget` ends it early. At the end it scores the
model on held-out maps (`segmentation_accuracy`: the share of pixels whose nearest palette colour is the
map's class) at 32x32 and 64x64, and writes the preset into `--out`. The command that made the shipped
weights is in `keras_ldm/presets/shapes_semantic/README.md`.

    KERAS_BACKEND=jax python examples/train_shapes_semantic.py --steps 3000 --time-budget 2400
"""

import os
import time

import keras
import numpy as np

from keras_ldm.data.scenes import NUM_SEGMENTATION_CLASSES, scenes_arrays, segmentation_accuracy
from keras_ldm.models import LatentDiffusion, SpatialRescaler, UNet

from _training import fit_or_load, scene_preset_parser

IMAGE_SIZE = 32
SAMPLING = {"num_steps": 50, "sampler": "ddim"}  # no guidance: the map is never dropped in training


def build_ldm(first_stage, seed):
    rescaler = SpatialRescaler(n_stages=2, in_channels=NUM_SEGMENTATION_CLASSES, out_channels=3)
    unet = UNet(
        in_channels=first_stage.embed_dim + 3,
        out_channels=first_stage.embed_dim,
        model_channels=64,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(),  # attention only in the middle block, as CompVis' semantic model
        num_head_channels=32,
        norm_num_groups=16,
    )
    return LatentDiffusion(
        unet,
        first_stage,
        concat="segmentation",
        spatial_encoder=rescaler,
        scale_by_std=True,
        ema_decay=0.999,
        seed=seed,
    )


def score(ldm, count, image_size, seed):
    """`segmentation_accuracy` of `count` images generated from held-out maps of `image_size`."""
    scenes = scenes_arrays(count, image_size=image_size, split="held_out")
    start = time.time()
    images = np.concatenate(
        [
            ldm.generate({"segmentation": scenes["segmentation"][i : i + 16]}, seed=seed + i, **SAMPLING)
            for i in range(0, count, 16)
        ]
    )
    return segmentation_accuracy(images, scenes["segmentation"]), time.time() - start


def main(args):
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.work_dir, exist_ok=True)
    first_stage = LatentDiffusion.from_preset("shapes_t2i").first_stage
    ldm = build_ldm(first_stage, args.seed)

    def make_data():
        scenes = scenes_arrays(args.examples, image_size=IMAGE_SIZE, split="train")
        return {"images": scenes["images"], "segmentation": scenes["segmentation"]}

    start = time.time()
    fit_or_load(
        ldm, "ldm", args, make_data, args.steps, args.batch_size, args.time_budget,
        learning_rate=args.learning_rate, warmup_steps=200,
    )
    print(f"training: {time.time() - start:.0f} s")
    ldm.save_to_preset(
        args.out,
        description="Semantic synthesis on procedural scenes: a colour-class map (6 classes) -> a 32x32 image.",
        generation_defaults={**SAMPLING, "image_size": IMAGE_SIZE},
        inference_only=True,
        weights_dtype="float16",
    )
    for size in (IMAGE_SIZE, 2 * IMAGE_SIZE):
        accuracy, seconds = score(ldm, args.score_count, size, args.seed)
        print(f"held-out {size}x{size}: segmentation accuracy {accuracy:.4f} ({args.score_count} maps, {seconds:.0f} s)")


if __name__ == "__main__":
    main(scene_preset_parser(__doc__.splitlines()[0], "shapes_semantic", steps=3000).parse_args())
