"""The command line of `benchmarks/ldm_vs_diffusers.py` and the order of a run: environment, models,
generation, correctness, UNet forward, training, then the table."""

import argparse
import tempfile
import time

from .environment import (
    BACKENDS,
    Device,
    fail,
    prepare_device,
    require,
    resolve_device,
    select_backend,
    set_threads,
)
from .generation import (
    DiffusersSide,
    KerasSide,
    generate_from_same_latents,
    measure_generation,
    measure_unet_forward,
    time_split,
)
from .models import FULL, SMALL, build_pipeline, diffusers_load_seconds, load_keras_model
from .report import report
from .timing import attempt, phase
from .training import measure_training

PRECISIONS = ("float32", "mixed_bfloat16")


def positive_ints(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, e.g. 1,8,32; got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, e.g. 1,8,32; got {text!r}")
    return values


def parse_args(argv, description=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend; must agree with KERAS_BACKEND when that is set (default: KERAS_BACKEND)",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "gpu"), default="auto", help="auto: gpu when one is visible"
    )
    parser.add_argument("--small", action="store_true", help="tiny UNet/VAE/LDMBert, 64x64 images (CPU)")
    parser.add_argument("--batches", type=positive_ints, help="first: latency; others: throughput")
    parser.add_argument("--steps", type=int, help="DDIM steps (default 50; --small: 10)")
    parser.add_argument("--repeats", type=int, help="timed calls after the warm-up; the median is reported")
    parser.add_argument("--guidance-scale", type=float, default=4.0, help="!= 1: guidance on a doubled batch")
    parser.add_argument(
        "--precision", choices=PRECISIONS, help="default: mixed_bfloat16 on GPU, float32 on CPU"
    )
    parser.add_argument("--train-batch", type=int, help="training batch size (0: skip training)")
    parser.add_argument("--train-steps", type=int, help="timed training steps after the warm-up steps")
    parser.add_argument(
        "--freeze-text-encoder",
        action="store_true",
        help="train only the UNet (default: UNet and LDMBert, as CompVis trains txt2img-1p4B)",
    )
    parser.add_argument("--diffusers-compile", action="store_true", help="torch.compile the diffusers UNet")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch, TensorFlow and XLA (1 also makes JAX's XLA CPU single-threaded); "
        "default: each library's own. On a shared machine, 1 avoids OpenMP oversubscription",
    )
    args = parser.parse_args(argv)
    config = SMALL if args.small else FULL
    for name in ("batches", "steps", "repeats", "train_batch", "train_steps"):
        if getattr(args, name) is None:
            setattr(args, name, config[name])
    if not 1 <= args.steps < 1000:
        parser.error(f"--steps={args.steps}; expected an int in [1, 999]")
    if args.repeats < 1 or args.train_steps < 1 or args.train_batch < 0:
        parser.error("--repeats and --train-steps must be >= 1 and --train-batch >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads={args.threads}; expected an int >= 1")
    if args.guidance_scale == 1.0:
        parser.error(
            "--guidance-scale=1 turns guidance off; this benchmark times guidance on a doubled batch"
        )
    args.config = config
    return args


def main(argv=None, description=None):
    args = parse_args(argv, description)
    prepare_device(args.device, args.threads)  # before jax/tensorflow/torch are imported: they read it then
    backend = select_backend(args.backend)
    set_threads(args.threads)
    device_kind = resolve_device(args.device, backend)
    require("diffusers", "transformers")
    if args.precision is None:
        args.precision = "mixed_bfloat16" if device_kind == "gpu" else "float32"

    import keras

    if keras.backend.backend() != backend:
        fail(
            f"Keras runs on {keras.backend.backend()!r}, not {backend!r}; set KERAS_BACKEND before starting."
        )
    config = args.config
    keras_device, torch_device = Device(device_kind, backend), Device(device_kind, "torch")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        with phase("build and save the diffusers pipeline"):
            pipeline, path = build_pipeline(config, folder)
        import keras_ldm  # noqa: F401  (imported before the load is timed)

        with phase("keras_ldm from_preset"):
            load_start = time.perf_counter()
            ours = KerasSide(load_keras_model(path, args.precision), args)
            results["loading"] = {ours.name: time.perf_counter() - load_start}
        with phase("diffusers from_pretrained"):
            results["loading"][DiffusersSide.name] = attempt(lambda: diffusers_load_seconds(path))
        results["setup"] = time.perf_counter() - start
    theirs = DiffusersSide(pipeline, args, device_kind)
    sides = (ours, theirs)

    generation = results["generation"] = {}
    with phase("keras_ldm generation"):
        generation[ours.name] = measure_generation(ours, keras_device, args)
    with phase("diffusers generation"):
        generation[theirs.name] = measure_generation(theirs, torch_device, args)
    split_batch = max(args.batches)
    with phase("time splits"):
        results["splits"] = {
            s.name: attempt(lambda s=s: time_split(s, split_batch, generation[s.name][0][split_batch]))
            for s in sides
        }
    # correctness: both from the same starting latents (before training changes keras_ldm's weights)
    with phase("correctness"):
        results["correctness"] = attempt(
            lambda: generate_from_same_latents(ours, theirs, config["image_size"])
        )
    with phase("UNet forward"):  # on the guidance batch
        results["flops"], results["forward"] = measure_unet_forward(sides, args)
    results["training"] = measure_training(ours, theirs, args)
    report(args, backend, device_kind, sides, results)
