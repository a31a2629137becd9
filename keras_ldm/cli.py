"""The `keras-ldm` command: `generate`, `presets`, `convert` and `export`.

keras-ldm presets
keras-ldm generate --preset shapes_t2i --prompt "a red circle on a blue background" --out grid.png
keras-ldm generate --preset photo_sr4x --image small.png --out big.png
keras-ldm generate --preset photo_inpaint --image photo.png --mask mask.png --out filled.png
keras-ldm convert --source ./ldm-text2im-large-256 --out ./text2im_preset
keras-ldm export --preset shapes_t2i --out ./serving/shapes_t2i/1 --num-steps 50
"""

import argparse
import os
import sys

import numpy as np


def image_grid(images, columns=None):
    """uint8 images `(B, H, W, 3)` tiled row by row into one `(rows*H, columns*W, 3)` image.

    Example:
    >>> image_grid(np.zeros((3, 4, 5, 3), "uint8"), columns=2).shape
    (8, 10, 3)
    """
    images = np.asarray(images)
    images = images[None] if images.ndim == 3 else images
    count, height, width, channels = images.shape
    columns = columns or min(count, 8)
    rows = -(-count // columns)
    grid = np.zeros((rows * height, columns * width, channels), images.dtype)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    return grid


def read_image(path, name):
    """An image file as uint8 RGB `(H, W, 3)`."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise ValueError(f"--{name} {path!r} is not a readable image: {error}") from error


def read_mask(path):
    """A mask image as 0/1 floats `(H, W)`: pixels brighter than mid-grey are 1 (to fill)."""
    return (read_image(path, "mask").mean(axis=-1) > 127.5).astype("float32")


INPUT_FLAGS = {"image": "--image", "mask": "--mask", "prompt": "--prompt", "label": "--label"}


def generation_inputs(args, model):
    """The `generate()` inputs of the command line, by the kind of model; a flag it would ignore is an error."""
    used = {"low_res": {"image"}, "masks": {"image", "mask"}}.get(model.concat)
    used = used or {"text": {"prompt"}, "class": {"label"}}.get(model.cross_attention, set())
    ignored = [flag for name, flag in INPUT_FLAGS.items() if getattr(args, name) and name not in used]
    if ignored:
        expected = ", ".join(INPUT_FLAGS[name] for name in sorted(used)) or "none (unconditional)"
        raise ValueError(f"this preset does not use {', '.join(ignored)}; its inputs: {expected}.")
    if model.concat == "low_res":
        return {"images": read_image(_required(args.image, "--image", "super-resolution"), "image")}
    if model.concat == "masks":
        image = read_image(_required(args.image, "--image", "inpainting"), "image")
        return {"images": image, "masks": read_mask(_required(args.mask, "--mask", "inpainting"))}
    if model.cross_attention == "text":
        prompts = _required(args.prompt, "--prompt", "text-to-image") * args.num_images
        return {"prompts": prompts, "negative_prompts": [args.negative_prompt] * len(prompts)}
    if model.cross_attention == "class":
        return {
            "labels": list(_required(args.label, "--label", "class-conditional generation")) * args.num_images
        }
    return None


def _required(value, flag, purpose):
    if not value:
        raise ValueError(f"{purpose} needs {flag}.")
    return value


def checked_image_path(path):
    """`path` for a new image file: its extension must name a format PIL writes; its folder is created."""
    from PIL import Image

    if os.path.isdir(path):
        raise ValueError(f"--out {path!r} is a folder; give a file name such as {os.path.join(path, 'grid.png')!r}.")
    if os.path.splitext(path)[1].lower() not in Image.registered_extensions():
        raise ValueError(f"--out {path!r} needs an image file extension such as .png or .jpg.")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return path


def run_generate(args):
    from PIL import Image

    from keras_ldm import LatentDiffusion

    out = checked_image_path(args.out)
    model = LatentDiffusion.from_preset(args.preset)
    options = {
        key: getattr(args, key)
        for key in ("num_steps", "guidance_scale", "sampler", "eta", "temperature", "height", "width")
        if getattr(args, key) is not None
    }
    inputs = generation_inputs(args, model)
    if inputs is None:
        options["batch_size"] = args.num_images
    images = model.generate(inputs, seed=args.seed, **options)
    Image.fromarray(image_grid(images, args.columns)).save(out)
    print(f"wrote {out} ({len(images) if images.ndim == 4 else 1} images)")


def run_presets(args):
    from keras_ldm.presets import all_presets

    presets = all_presets()
    width = max(len(name) for name in presets)
    for name, description in presets.items():
        print(f"{name:<{width}}  {description}")


def run_convert(args):
    from keras_ldm.presets import from_preset

    model = from_preset(args.source, config=args.config)
    model.save_to_preset(args.out, description=args.description or f"converted from {args.source}")
    print(f"wrote {args.out} ({type(model).__name__}, {model.count_params():,} parameters)")


def run_export(args):
    from keras_ldm import LatentDiffusion

    model = LatentDiffusion.from_preset(args.preset)
    options = {
        key: getattr(args, key)
        for key in ("num_steps", "guidance_scale", "sampler", "eta", "height", "width")
        if getattr(args, key) is not None
    }
    model.export(args.out, overwrite=args.overwrite, **options)
    print(f"wrote {args.out} (SavedModel, signature 'serving_default')")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (`keras-ldm generate: --num-images: ...`), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text):
    """An argparse type: an int >= 1."""
    value = int(text) if text.lstrip("+").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an int >= 1")
    return value


def build_parser():
    parser = _Parser(prog="keras-ldm", description="Latent diffusion models in Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    generate = commands.add_parser("generate", help="generate images from a preset into a PNG grid")
    generate.add_argument("--preset", default="shapes_t2i", help="preset name, folder, or hf://org/name")
    generate.add_argument("--prompt", action="append", help="text prompt (repeat for several)")
    generate.add_argument("--negative-prompt", default="")
    generate.add_argument("--image", help="input image: low-res for super-resolution, photo for inpainting")
    generate.add_argument("--mask", help="inpainting mask image (white = fill)")
    generate.add_argument("--label", type=int, action="append", help="class label (repeat for several)")
    generate.add_argument("--num-images", type=positive_int, default=1, help="images per prompt / label")
    generate.add_argument("--num-steps", type=positive_int)
    generate.add_argument("--guidance-scale", type=float)
    generate.add_argument("--sampler")
    generate.add_argument("--eta", type=float)
    generate.add_argument(
        "--temperature", type=float, help="starting-noise scale (below 1: closer, less varied)"
    )
    generate.add_argument("--height", type=positive_int)
    generate.add_argument("--width", type=positive_int)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--columns", type=positive_int)
    generate.add_argument("--out", default="generated.png")
    generate.set_defaults(run=run_generate)

    presets = commands.add_parser("presets", help="list the named presets")
    presets.set_defaults(run=run_presets)

    convert = commands.add_parser("convert", help="diffusers folder / hf:// / CompVis .ckpt -> preset folder")
    convert.add_argument("--source", required=True)
    convert.add_argument("--config", help="the CompVis YAML config of a .ckpt")
    convert.add_argument("--out", required=True)
    convert.add_argument("--description")
    convert.set_defaults(run=run_convert)

    export = commands.add_parser("export", help="preset -> TF Serving SavedModel")
    export.add_argument("--preset", required=True, help="preset name, folder, or hf://org/name")
    export.add_argument("--out", required=True, help="SavedModel folder, e.g. ./serving/<model>/1")
    export.add_argument("--num-steps", type=positive_int)
    export.add_argument("--guidance-scale", type=float, help="default of the signature's guidance_scale")
    export.add_argument("--sampler")
    export.add_argument("--eta", type=float)
    export.add_argument("--height", type=positive_int)
    export.add_argument("--width", type=positive_int)
    export.add_argument("--overwrite", action="store_true", help="replace a SavedModel already in --out")
    export.set_defaults(run=run_export)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, TypeError, OSError, ImportError) as error:  # a user's mistake: one line, no traceback
        print(f"keras-ldm {args.command}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
