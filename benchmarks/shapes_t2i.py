"""How often the `shapes_t2i` preset draws what it is asked: colour, shape and background, for all 90 prompts.

Every prompt `"a {color} {shape} on a {background} background"` is generated `--images-per-prompt` times;
`keras_ldm.data.shapes.describe_image` reads each image back and the table gives the share of images whose
colour, shape, background, and all three, match the prompt.

    KERAS_BACKEND=jax python benchmarks/shapes_t2i.py --images-per-prompt 2
"""

import argparse
import time

import numpy as np

from keras_ldm import LatentDiffusion
from keras_ldm.data.shapes import all_prompts, describe_image, parse_prompt, prompt_accuracy


def generate_all(model, prompts, images_per_prompt, batch_size, seed, **options):
    images = []
    for repeat in range(images_per_prompt):
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            images.append(model.generate(batch, seed=seed + 1000 * repeat + start, **options))
    return np.concatenate(images), prompts * images_per_prompt


def main(args):
    model = LatentDiffusion.from_preset(args.preset)
    options = {"num_steps": args.num_steps, "guidance_scale": args.guidance_scale, "sampler": args.sampler}
    options = {key: value for key, value in options.items() if value is not None}
    prompts = all_prompts()
    start = time.time()
    images, asked = generate_all(
        model, prompts, args.images_per_prompt, args.batch_size, args.seed, **options
    )
    seconds = time.time() - start
    rates = prompt_accuracy(images, asked)
    per_prompt = np.array([describe_image(i) == parse_prompt(p) for i, p in zip(images, asked)])
    per_prompt = per_prompt.reshape(args.images_per_prompt, len(prompts)).mean(axis=0)
    used = model.sampling_options(**options)
    print(
        f"preset {args.preset}: {len(images)} images ({args.images_per_prompt} per prompt), "
        f"{used['sampler']} {used['num_steps']} steps, guidance {used['guidance_scale']}, {seconds:.0f} s"
    )
    print("| attribute | images right |")
    print("|---|---|")
    for name in ("color", "shape", "background", "all three"):
        print(f"| {name} | {100 * rates[name]:.1f}% |")
    print(f"| prompts right in every image | {np.sum(per_prompt == 1.0)}/{len(prompts)} |")
    if args.grid:
        from PIL import Image

        from keras_ldm.cli import image_grid

        Image.fromarray(image_grid(images[: len(prompts)], columns=15)).save(args.grid)
        print(f"wrote {args.grid} (the first image of each prompt, in label order)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shapes_t2i")
    parser.add_argument("--images-per-prompt", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=30)
    parser.add_argument("--num-steps", type=int)
    parser.add_argument("--guidance-scale", type=float)
    parser.add_argument("--sampler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", help="write a PNG of the first image of every prompt")
    main(parser.parse_args())
