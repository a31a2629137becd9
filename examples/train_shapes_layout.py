"""Trains the `shapes_layout` preset: layout-to-image (class-labelled boxes -> image) on the procedural
scenes of `keras_ldm.data.scenes`.

The first stage is the shipped `shapes_t2i` preset's KL-f4 autoencoder (frozen). A `LayoutTokenizer` turns
each scene's boxes and object classes (18: six colours x three shapes) into CompVis' layout tokens, on a
32 x 32 coordinate grid (`num_tokens=1024`: one grid point per pixel of the 32x32 training scenes), three
objects and the two crop tokens; a small `LayoutEncoder` (CompVis' BERTEmbedder shape) reads them into the
cross-attention context of a UNet with attention at 8x8 and 4x4. 10% of the layouts are dropped to the
empty layout in training, so classifier-free guidance works.

The data are numpy arrays in memory, so the script needs no TensorFlow. The LDM checkpoints into
`--work-dir` (an interrupted run resumes), `--time-budget` ends it early. At the end it scores the model on
held-out layouts (`layout_accuracy`: the share of requested objects whose colour covers at least half of
what their shape fills of their box; the scenes themselves score about 0.93, objects hidden under later
ones being the misses) and writes the preset into `--out`.

    KERAS_BACKEND=jax python examples/train_shapes_layout.py --steps 4000 --time-budget 2400
"""

import os
import time

import keras
import numpy as np

from keras_ldm.data.scenes import OBJECT_CLASSES, layout_accuracy, scenes_arrays
from keras_ldm.models import LatentDiffusion, UNet
from keras_ldm.models.layout_encoder import LayoutEncoder
from keras_ldm.models.layout_tokenizer import LayoutTokenizer

from _training import fit_or_load, scene_preset_parser

IMAGE_SIZE = 32
MAX_OBJECTS = 3
SAMPLING = {"num_steps": 50, "sampler": "ddim", "guidance_scale": 3.0}


def build_ldm(first_stage, seed):
    tokenizer = LayoutTokenizer(num_classes=len(OBJECT_CLASSES), max_objects=MAX_OBJECTS, num_tokens=1024)
    encoder = LayoutEncoder(
        vocab_size=tokenizer.num_tokens, max_length=tokenizer.sequence_length, n_embed=64, n_layer=2,
        heads=4, dim_head=16,
    )  # fmt: skip
    unet = UNet(
        in_channels=first_stage.embed_dim,
        out_channels=first_stage.embed_dim,
        model_channels=64,
        channel_mult=(1, 2, 2),
        num_res_blocks=1,
        attention_resolutions=(1, 2),
        num_head_channels=32,
        context_dim=64,
        norm_num_groups=16,
    )
    return LatentDiffusion(
        unet,
        first_stage,
        cross_attention="layout",
        text_encoder=encoder,
        tokenizer=tokenizer,
        p_uncond=0.1,
        scale_by_std=True,
        ema_decay=0.999,
        seed=seed,
    )


def score(ldm, count, image_size, seed):
    """`layout_accuracy` of `count` images generated from held-out layouts, at `image_size`."""
    scenes = scenes_arrays(count, image_size=IMAGE_SIZE, split="held_out", max_objects=MAX_OBJECTS)
    layout = {key: scenes[key] for key in ("boxes", "box_labels", "num_boxes")}
    start = time.time()
    images = np.concatenate(
        [
            ldm.generate(
                {key: value[i : i + 16] for key, value in layout.items()},
                seed=seed + i, height=image_size, width=image_size, **SAMPLING,
            )  # fmt: skip
            for i in range(0, count, 16)
        ]
    )
    return layout_accuracy(images, **layout), time.time() - start


def main(args):
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.work_dir, exist_ok=True)
    first_stage = LatentDiffusion.from_preset("shapes_t2i").first_stage
    ldm = build_ldm(first_stage, args.seed)

    def make_data():
        scenes = scenes_arrays(args.examples, image_size=IMAGE_SIZE, split="train", max_objects=MAX_OBJECTS)
        layout = {key: scenes[key] for key in ("boxes", "box_labels", "num_boxes")}
        return {"images": scenes["images"], "token_ids": ldm.layout_token_ids(layout)}

    start = time.time()
    fit_or_load(
        ldm, "ldm", args, make_data, args.steps, args.batch_size, args.time_budget,
        learning_rate=args.learning_rate, warmup_steps=200,
    )  # fmt: skip
    print(f"training: {time.time() - start:.0f} s")
    ldm.save_to_preset(
        args.out,
        description="Layout-to-image on procedural scenes: up to 3 boxes of 18 classes (colour x shape) -> 32x32.",
        generation_defaults={**SAMPLING, "image_size": IMAGE_SIZE},
        inference_only=True,
        weights_dtype="float16",
    )
    for size in (IMAGE_SIZE, 2 * IMAGE_SIZE):
        accuracy, seconds = score(ldm, args.score_count, size, args.seed)
        print(f"held-out {size}x{size}: layout accuracy {accuracy:.4f} ({args.score_count} layouts, {seconds:.0f} s)")


if __name__ == "__main__":
    main(scene_preset_parser(__doc__.splitlines()[0], "shapes_layout", steps=4000).parse_args())
