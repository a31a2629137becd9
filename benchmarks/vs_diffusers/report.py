"""The table a run prints: one row per figure, keras_ldm's cell, diffusers' cell and how they compare."""

import os

import numpy as np

from .timing import NotMeasured, pick
from .training import TRAIN_WARMUP_STEPS


def report(args, backend, device_kind, sides, results):
    """Prints the markdown table of the run, then the notes under it (FLOPs, time split, correctness).

    `results`: what `cli.main` measured, by name: generation, splits, correctness, flops, forward, training,
    loading and setup."""
    import diffusers
    import keras
    import torch

    ours, theirs = sides
    config = args.config
    generation, splits, correctness = results["generation"], results["splits"], results["correctness"]
    flops, forward, training = results["flops"], results["forward"], results["training"]
    loading, setup = results["loading"], results["setup"]
    device_name = "CPU"
    if device_kind == "gpu":
        device_name = torch.cuda.get_device_name(0)
    trained = "UNet" if args.freeze_text_encoder else "UNet + LDMBert"
    print(
        f"keras_ldm ({backend}, keras {keras.__version__}) vs diffusers {diffusers.__version__} "
        f"(torch {torch.__version__}) on {device_name}; config {config['name']}: UNet "
        f"{ours.unet_params() / 1e6:.1f}M params (diffusers {theirs.unet_params() / 1e6:.1f}M), KL-f8 VAE, "
        f"{config['bert']['encoder_layers']}-layer LDMBert, {config['image_size']}x{config['image_size']} images; "
        f"DDIM {args.steps} steps, guidance {args.guidance_scale:g} (UNet batch = 2 x images); "
        f"precision {args.precision}; diffusers UNet {'torch.compile' if args.diffusers_compile else 'eager'}; "
        f"median of {args.repeats} calls after a warm-up call; threads: "
        f"{args.threads or 'library defaults'} (torch {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}); setup {setup:.0f} s"
    )
    print()
    print(f"| metric | keras_ldm ({backend}) | diffusers (torch) | keras_ldm vs diffusers |")
    print("|---|---|---|---|")

    def cells(label, values, kind, fmt):
        shown = [str(v) if isinstance(v, NotMeasured) else fmt(v) for v in values]
        print(f"| {label} | {shown[0]} | {shown[1]} | {compare(values, kind)} |")

    names = (ours.name, theirs.name)
    first, *rest = args.batches
    latency = [pick(generation[n][0][first], lambda r: r[1] / first) for n in names]
    cells(f"generation latency, batch {first} (s/image)", latency, "time", lambda v: f"{v:.3g}")
    for batch in rest:
        rate = [pick(generation[n][0][batch], lambda r, batch=batch: batch / r[1]) for n in names]
        cells(f"throughput, batch {batch} (images/s)", rate, "rate", lambda v: f"{v:.3g}")
    cells(
        "load the pipeline folder (s; from_preset vs from_pretrained)",
        [loading[n] for n in names],
        "time",
        lambda v: f"{v:.3g}",
    )
    compile_time = [pick(generation[n][0][first], lambda r: r[0]) for n in names]
    steady = [pick(generation[n][0][first], lambda r: r[1]) for n in names]
    cells(
        f"first call, batch {first} (s, compile + run)",
        compile_time,
        "time",
        lambda v: f"{v:.3g}",
    )
    over = [
        NotMeasured("") if isinstance(c, NotMeasured) or isinstance(s, NotMeasured) else max(c - s, 0.0)
        for c, s in zip(compile_time, steady)
    ]
    cells(f"first call minus a warm call, batch {first} (s)", over, "time", lambda v: f"{v:.3g}")
    memory = [generation[n][1] for n in names]
    if device_kind == "cpu":
        memory = [NotMeasured(None)] * 2
        print(
            f"| peak accelerator memory, generation up to batch {max(args.batches)} (GiB) | n/a (CPU) | n/a (CPU) | n/a |"
        )
    else:
        cells(
            f"peak accelerator memory, generation up to batch {max(args.batches)} (GiB)",
            memory,
            "memory",
            lambda v: f"{v / 2**30:.2f}",
        )
    unet_batch = 2 * max(args.batches)
    cells(
        f"UNet forward, batch {unet_batch} (ms)",
        [forward[n] for n in names],
        "time",
        lambda v: f"{1e3 * v:.3g}",
    )
    tflops = [
        flops if isinstance(flops, NotMeasured) else pick(forward[n], lambda s: flops / s / 1e12)
        for n in names
    ]
    cells(f"UNet forward, batch {unet_batch} (TFLOP/s)", tflops, "rate", lambda v: f"{v:.3g}")
    cells(
        f"training, batch {args.train_batch} (samples/s; {trained}, {args.precision})",
        [training[n] for n in names],
        "rate",
        lambda v: f"{v:.3g}",
    )
    print()
    if isinstance(flops, NotMeasured):
        print(f"UNet FLOPs: {flops}")
    else:
        print(
            f"UNet FLOPs per forward of batch {unet_batch}: {flops / 1e9:.3g} GFLOP, counted by "
            f"torch.utils.flop_counter.FlopCounterMode on the diffusers UNet (conv, matmul, attention; "
            f"2 FLOPs per multiply-add; norms and elementwise ops not counted)."
        )
    batch = max(args.batches)
    for name in names:
        split = splits[name]
        if isinstance(split, NotMeasured):
            print(f"time split of {name} at batch {batch}: {split}")
        else:
            text, loop, decode = split
            print(
                f"time split of {name} at batch {batch}: text encoder (tokenize + encode, prompts and "
                f"negatives) {text:.3g} s, decode + uint8 {decode:.3g} s, sampling loop (the rest) {loop:.3g} s"
            )
    if isinstance(correctness, NotMeasured):
        print(f"correctness: {correctness}")
    else:
        mine, reference = correctness
        difference = np.abs(mine.astype("float32") / 255.0 - reference)
        print(
            f"correctness: same starting latents, 2 prompts, DDIM {args.steps} steps, guidance "
            f"{args.guidance_scale:g}, {args.precision}: max |keras_ldm - diffusers| = {difference.max():.2e} "
            f"in [0, 1] image units ({255 * difference.max():.2f} grey levels; mean {255 * difference.mean():.3f}; "
            f"keras_ldm's uint8 vs diffusers' floats, so rounding alone gives up to 0.5; image std "
            f"{reference.std():.3f})."
        )
    if args.train_batch and ours.model.compiled:
        print(
            f"training: keras_ldm train_on_batch after LatentDiffusion.compile() (AdamW, lr 1e-4, weight decay "
            f"0.01; Keras resolved jit_compile={ours.model.jit_compile}) vs torch.optim.AdamW on the same modules; "
            f"{args.precision}; timed over {args.train_steps} steps after {TRAIN_WARMUP_STEPS} warm-up steps."
        )
    if device_kind == "cpu":
        print(f"peak accelerator memory: n/a (CPU run); precision on CPU: {args.precision}.")


def compare(values, kind):
    ours, theirs = values
    if isinstance(ours, NotMeasured) or isinstance(theirs, NotMeasured) or kind is None:
        return "n/a"
    if ours <= 0 or theirs <= 0:
        return "n/a"
    if kind == "memory":
        return f"{ours / theirs:.2f}x the memory"
    speed = theirs / ours if kind == "time" else ours / theirs
    return f"{speed:.2f}x faster" if speed >= 1 else f"{1 / speed:.2f}x slower"
