"""The `keras-ldm` command: `generate`, `presets`, `convert`, `export`, `evaluate`, `evaluate-autoencoder`,
`train-autoencoder` and `train`.

keras-ldm presets
keras-ldm generate --preset shapes_t2i --prompt "a red circle on a blue background" --out grid.png
keras-ldm generate --preset photo_sr4x --image small.png --out big.png
keras-ldm generate --preset photo_inpaint --image photo.png --mask mask.png --out filled.png
keras-ldm convert --source ./ldm-text2im-large-256 --out ./text2im_preset
keras-ldm export --preset shapes_t2i --out ./serving/shapes_t2i/1 --num-steps 50
keras-ldm evaluate --preset ./my_class_model --reference ./real_images --num-images 10000 --metrics fid,kid,is,pr
keras-ldm evaluate-autoencoder --preset ./my_autoencoder --images ./held_out --report rec.json
keras-ldm train-autoencoder --images ./photos --out ./my_autoencoder --architecture small
keras-ldm train --images ./photos --out ./my_ldm --conditioning text --autoencoder ./my_autoencoder
"""

import argparse
import math
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
        raise ValueError(
            f"--out {path!r} is a folder; give a file name such as {os.path.join(path, 'grid.png')!r}."
        )
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


def feature_extractor(args):
    """The feature extractor of `--feature-extractor` (a saved Keras model) or the FID Inception network."""
    if args.feature_extractor:
        import keras

        if not os.path.isfile(args.feature_extractor):
            raise ValueError(
                f"--feature-extractor {args.feature_extractor!r} is not a file (a saved .keras model)."
            )
        return keras.saving.load_model(args.feature_extractor, compile=False)
    from keras_ldm.metrics.inception import fid_inception_v3

    return fid_inception_v3(weights=args.inception_weights, resize=args.resize)


def write_report(report, args):
    """Prints the report as a table and writes it as JSON to `--report`, if given."""
    import json

    width = max(len(name) for name in report)
    for name, value in report.items():
        print(f"{name:<{width}}  {value:.6g}" if isinstance(value, float) else f"{name:<{width}}  {value}")
    if args.report:
        os.makedirs(os.path.dirname(args.report) or ".", exist_ok=True)
        with open(args.report, "w") as file:
            json.dump(report, file, indent=2)
        print(f"wrote {args.report}")


def read_prompts(path):
    """The non-empty lines of a text file."""
    with open(path, encoding="utf-8") as file:
        prompts = [line.strip() for line in file if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts {path!r} holds no prompts (one per line).")
    return prompts


def run_evaluate(args):
    from keras_ldm.data.image_files import image_batches
    from keras_ldm.metrics.evaluation import METRICS, check_metric_names, evaluate_images, generated_batches

    check_metric_names(args.metrics, METRICS)
    if bool(args.preset) == bool(args.images):
        raise ValueError("give either --preset (to generate) or --images (a folder of generated images).")
    reference = args.reference
    if not os.path.exists(reference):
        raise ValueError(
            f"--reference {reference!r} does not exist (a folder of images or a pytorch-fid .npz)"
        )
    if os.path.isdir(reference):
        reference = image_batches(reference, args.batch_size, limit=args.num_reference)
    if args.images:
        generated = image_batches(args.images, args.batch_size, limit=args.num_images)
    else:
        from keras_ldm import LatentDiffusion

        model = LatentDiffusion.from_preset(args.preset)
        options = {
            key: getattr(args, key)
            for key in ("num_steps", "guidance_scale", "sampler", "height", "width")
            if getattr(args, key) is not None
        }
        prompts = read_prompts(args.prompts) if args.prompts else None
        count = args.num_images or 1000
        generated = generated_batches(model, count, args.batch_size, args.seed, prompts, **options)
    report = evaluate_images(
        generated,
        reference,
        args.metrics,
        feature_extractor(args),
        save_reference_statistics=args.save_reference_statistics,
        kid_subset_size=args.kid_subset_size,
    )
    write_report(report, args)


def run_evaluate_autoencoder(args):
    from keras_ldm.data.image_files import image_batches
    from keras_ldm.metrics.evaluation import AUTOENCODER_METRICS, check_metric_names, evaluate_autoencoder
    from keras_ldm.presets.loading import from_preset, preset_names

    names = check_metric_names(args.metrics, AUTOENCODER_METRICS)
    kind = "autoencoder" if args.preset in preset_names("autoencoder") else "latent_diffusion"
    model = from_preset(args.preset, kind=kind)
    autoencoder = getattr(model, "first_stage", model)
    lpips = None
    if "lpips" in names:
        from keras_ldm.metrics.lpips import lpips_vgg

        lpips = lpips_vgg(backbone_weights=args.vgg_weights)
    batches = image_batches(args.images, args.batch_size, limit=args.num_images)
    extractor = feature_extractor(args) if "rfid" in names else None
    write_report(evaluate_autoencoder(autoencoder, batches, names, extractor, lpips), args)


def add_evaluation_flags(command):
    """The flags `evaluate` and `evaluate-autoencoder` share."""
    command.add_argument("--batch-size", type=positive_int, default=25)
    command.add_argument("--num-images", type=positive_int, help="images to evaluate (default: all / 1000)")
    command.add_argument("--inception-weights", help="local pytorch-fid pt_inception-2015-12-05 .pth file")
    command.add_argument(
        "--resize", default="tensorflow1", choices=("tensorflow1", "pytorch", "clean"),
        help="Inception's input resize: torch-fidelity/TF (default), pytorch-fid, or clean-fid",
    )  # fmt: skip
    command.add_argument("--feature-extractor", help="a saved .keras model to use instead of Inception")
    command.add_argument("--report", help="also write the results as JSON to this file")


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

    evaluate = commands.add_parser("evaluate", help="FID/KID/IS/precision-recall of a preset or image folder")
    evaluate.add_argument("--preset", help="generate from this preset (name, folder, or hf://org/name)")
    evaluate.add_argument("--images", help="or: a folder of generated images")
    evaluate.add_argument("--reference", required=True, help="a folder of real images or a pytorch-fid .npz")
    evaluate.add_argument(
        "--num-reference", type=positive_int, help="reference images to read (default: all)"
    )
    evaluate.add_argument("--metrics", default="fid", help="comma-separated: fid,kid,is,pr")
    evaluate.add_argument(
        "--kid-subset-size", type=positive_int, help="KID samples per subset (default: 1000, or all if fewer)"
    )
    evaluate.add_argument(
        "--save-reference-statistics", help="write the reference folder's FID statistics to this .npz"
    )
    evaluate.add_argument("--prompts", help="text models: a file of prompts, one per line (cycled)")
    evaluate.add_argument("--num-steps", type=positive_int)
    evaluate.add_argument("--guidance-scale", type=float)
    evaluate.add_argument("--sampler")
    evaluate.add_argument("--height", type=positive_int)
    evaluate.add_argument("--width", type=positive_int)
    evaluate.add_argument("--seed", type=int, default=0)
    add_evaluation_flags(evaluate)
    evaluate.set_defaults(run=run_evaluate)

    autoencoder = commands.add_parser(
        "evaluate-autoencoder", help="PSNR/SSIM/LPIPS/rFID of a first stage's reconstructions of a folder"
    )
    autoencoder.add_argument("--preset", required=True, help="an autoencoder or LDM preset (its first stage)")
    autoencoder.add_argument("--images", required=True, help="a folder of images (sizes divisible by f)")
    autoencoder.add_argument("--metrics", default="psnr,ssim,lpips,rfid")
    autoencoder.add_argument("--vgg-weights", help="local torchvision vgg16-397923af.pth for LPIPS")
    add_evaluation_flags(autoencoder)
    autoencoder.set_defaults(run=run_evaluate_autoencoder)
    add_training_commands(commands)
    return parser


def image_size(text):
    """An argparse type: `HxW` (or one int for a square) -> `(height, width)`."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size HxW such as 256x256 (or one int)")
    return (int(parts[0]), int(parts[-1]))


def bounded_float(low, high, low_open=False, high_open=False):
    """An argparse type: a finite float in the interval from `low` to `high` (open ends as asked)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        if not math.isfinite(value) or below or above:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number in {interval}")
        return value

    return parse


def non_negative_int(text):
    """An argparse type: an int >= 0."""
    if not text.lstrip("+").isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not an int >= 0")
    return int(text)


def add_training_flags(command):
    """The flags `train-autoencoder` and `train` share. Their defaults are set by the commands
    (`keras_ldm.cli_train_autoencoder`, `keras_ldm.cli_train_ldm`): None here means "not given", so that a
    resumed run tells a flag that contradicts its stored settings from one left out."""
    command.add_argument("--images", required=True, help="a folder of images (searched recursively)")
    command.add_argument(
        "--out", required=True, help="the preset folder to write (also checkpoints/, samples/)"
    )
    command.add_argument("--steps", type=positive_int, help="optimizer steps in all (default 20000)")
    command.add_argument("--batch-size", type=positive_int)
    command.add_argument(
        "--learning-rate", type=bounded_float(0, 1, low_open=True), help="default: CompVis' base rate x batch size"
    )
    command.add_argument(
        "--image-size", type=image_size, help="HxW: random crops (default: the images' size, all one)"
    )
    command.add_argument("--channels", type=int, choices=(1, 3, 4), help="convert every image to 1, 3 or 4")
    command.add_argument("--seed", type=non_negative_int, help="data order, crops, noise (default 0)")
    command.add_argument("--checkpoint-every", type=positive_int, default=1000, help="steps (default 1000)")
    command.add_argument("--keep-checkpoints", type=positive_int, default=3, help="newest kept (default 3)")
    command.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    command.add_argument(
        "--overwrite", action="store_true", help="replace the preset and checkpoints in --out"
    )
    command.add_argument("--tensorboard", help="TensorBoard log folder for scalars and sample grids")
    command.add_argument("--num-samples", type=non_negative_int, default=8, help="images per sample grid")


def add_training_commands(commands):
    """`train-autoencoder` and `train` (the run: `keras_ldm.cli_train`)."""
    autoencoder = commands.add_parser("train-autoencoder", help="train a first-stage autoencoder on a folder")
    add_training_flags(autoencoder)
    autoencoder.add_argument(
        "--architecture",
        help="tiny (for tests), small (default), or a CompVis first stage: kl_f4, kl_f8, kl_f16, kl_f32, "
        "vq_f4, vq_f4_noattn, vq_f8, vq_f16",
    )
    autoencoder.add_argument("--from-preset", help="fine-tune this autoencoder preset instead")
    autoencoder.add_argument(
        "--disc-start",
        type=non_negative_int,
        help="step the GAN loss starts (default: half of --steps, at most CompVis' 50001)",
    )
    autoencoder.add_argument(
        "--perceptual-weight", type=bounded_float(0, 1e3), help="LPIPS weight (default 1; 0: no VGG)"
    )
    autoencoder.set_defaults(run=_run_train_autoencoder)

    train = commands.add_parser("train", help="train a latent diffusion model on a folder of images")
    add_training_flags(train)
    train.add_argument(
        "--conditioning",
        required=True,
        choices=("unconditional", "text", "class", "inpainting", "sr"),
        help="text: captions in sidecar .txt files; class: one sub-folder per class",
    )
    train.add_argument("--autoencoder", help="the first stage: a preset (keras-ldm train-autoencoder --out)")
    train.add_argument("--from-preset", help="fine-tune this LDM preset instead")
    train.add_argument(
        "--architecture", choices=("tiny", "small", "base"), help="UNet size (default small; tiny: for tests)"
    )
    train.add_argument("--gradient-accumulation-steps", type=positive_int, help="batches per update")
    train.add_argument("--ema", action=argparse.BooleanOptionalAction, help="keep an EMA (default: on)")
    train.add_argument("--ema-decay", type=bounded_float(0, 1, high_open=True), help="default 0.9999 (CompVis)")
    train.add_argument(
        "--condition-dropout",
        type=bounded_float(0, 1, high_open=True),
        help="drop the condition for guidance (text/class: 0.1)",
    )
    train.add_argument(
        "--sr-factor", type=positive_int, help="sr: downsampling of the low-res input (default 4)"
    )
    train.add_argument("--degradation", choices=("bsr", "bsr_light", "bicubic"), help="sr: how (default bsr)")
    train.add_argument("--sample-steps", type=positive_int, default=50, help="DDIM steps of the sample grids")
    train.set_defaults(run=_run_train)


def _run_train_autoencoder(args):
    from keras_ldm.cli_train_autoencoder import run_train_autoencoder

    run_train_autoencoder(args)


def _run_train(args):
    from keras_ldm.cli_train_ldm import run_train

    run_train(args)


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
