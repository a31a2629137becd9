"""Time per denoising step: the compiled sampling loop vs a Python loop over the same step vs diffusers.

All three run the same small text-conditional UNet (a random diffusers `UNet2DConditionModel`,
converted with `keras_ldm.convert.from_diffusers`) with classifier-free guidance (one 2B call per
step) on CPU:

- `compiled loop`: `keras_ldm.diffusion.make_sampling_fn` — every step inside one compiled function
  (`jax.jit` / `tf.function(jit_compile=True)`; an eager no-grad loop on PyTorch).
- `python loop`: the same DDIM step compiled on its own and called once per step from Python
  (per-step dispatch, as a hand-written loop would do).
- `diffusers`: the diffusers scheduler loop on the original PyTorch UNet.

Run one backend at a time:

    KERAS_BACKEND=jax python benchmarks/sampling.py --steps 20 --size 16 --batch 1
"""

import argparse
import os
import tempfile
import time

import keras
import numpy as np
import torch
from keras import ops

from keras_ldm.convert import from_diffusers
from keras_ldm.diffusion import (
    NoiseSchedule,
    classifier_free_guidance,
    compile_function,
    make_sampling_fn,
    prediction_to_eps_and_x0,
)

CONTEXT_LENGTH, CONTEXT_DIM = 8, 32
SCHEDULE = NoiseSchedule("linear", linear_start=0.00085, linear_end=0.012)
DIFFUSERS_SCHEDULE = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


def small_unet(folder):
    """The diffusers UNet of the spec's tiny config (model_channels 32, mult (1, 2), attention at 2)."""
    import diffusers

    torch.manual_seed(0)
    reference = diffusers.UNet2DConditionModel(
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CONTEXT_DIM,
        attention_head_dim=2,
    ).eval()
    reference.save_pretrained(folder, safe_serialization=True)
    return reference, from_diffusers(folder)


def guided(model, inputs):
    return classifier_free_guidance(
        model, inputs["context"], inputs["unconditional_context"], inputs["guidance_scale"]
    )


def timed(fn, repeats):
    """(first call seconds, best of `repeats` later calls); results are pulled to host to block."""
    start = time.perf_counter()
    result = ops.convert_to_numpy(fn())
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ops.convert_to_numpy(fn())
        best = min(best, time.perf_counter() - start)
    return first, best, result


def compiled_loop(unet, x_T, inputs, num_steps, repeats):
    sample = make_sampling_fn("ddim", unet, guided, SCHEDULE, num_steps)
    return timed(lambda: sample(x_T, inputs), repeats)


def python_loop(unet, x_T, inputs, num_steps, repeats):
    """The DDIM step (η = 0) of `sample_ddim`, compiled alone and driven by a Python for-loop."""
    timesteps = SCHEDULE.sampling_timesteps(num_steps)
    alphas = SCHEDULE.table64("alphas_cumprod")
    alpha = alphas[timesteps].astype("float32")
    alpha_prev = np.append(alphas[timesteps[1:]], alphas[0]).astype("float32")

    def step(x, t, a, a_prev, inputs):
        eps, pred_x0 = prediction_to_eps_and_x0(
            guided(unet, inputs)(x, ops.broadcast_to(t, (x.shape[0],))), x, a, "eps"
        )
        return ops.sqrt(a_prev) * pred_x0 + ops.sqrt(1.0 - a_prev) * eps

    compiled_step = compile_function(step, unet)
    inputs = {k: ops.convert_to_tensor(v) for k, v in inputs.items()}
    per_step = [
        tuple(ops.convert_to_tensor(v) for v in row)
        for row in zip(timesteps.astype("float32"), alpha, alpha_prev)
    ]

    def run():
        x = ops.convert_to_tensor(x_T)
        for t, a, a_prev in per_step:
            x = compiled_step(x, t, a, a_prev, inputs)
        return x

    return timed(run, repeats)


def diffusers_loop(reference, x_T, inputs, num_steps, repeats):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(steps_offset=1, set_alpha_to_one=False, clip_sample=False, **DIFFUSERS_SCHEDULE)
    context = torch.from_numpy(inputs["context"])
    both = torch.cat([torch.from_numpy(inputs["unconditional_context"]).repeat(len(context), 1, 1), context])
    scale = inputs["guidance_scale"]

    def run():
        scheduler.set_timesteps(num_steps)
        x = torch.from_numpy(x_T).permute(0, 3, 1, 2)
        with torch.no_grad():
            for t in scheduler.timesteps:
                uncond, cond = reference(torch.cat([x, x]), t, encoder_hidden_states=both).sample.chunk(2)
                x = scheduler.step(uncond + scale * (cond - uncond), t, x).prev_sample
        return x.permute(0, 2, 3, 1).numpy()

    return timed(run, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--size", type=int, default=16, help="latent height and width")
    parser.add_argument("--batch", type=int, default=1, help="images per call (the UNet sees twice as many)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed calls after the first; the best is kept"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x_T = rng.normal(size=(args.batch, args.size, args.size, 4)).astype("float32")
    inputs = {
        "context": rng.normal(size=(args.batch, CONTEXT_LENGTH, CONTEXT_DIM)).astype("float32"),
        "unconditional_context": rng.normal(size=(1, CONTEXT_LENGTH, CONTEXT_DIM)).astype("float32"),
        "guidance_scale": 7.5,
    }
    with tempfile.TemporaryDirectory() as folder:
        reference, unet = small_unet(folder)
    rows = {
        f"compiled loop ({keras.backend.backend()})": compiled_loop(
            unet, x_T, inputs, args.steps, args.repeats
        ),
        f"python loop ({keras.backend.backend()})": python_loop(unet, x_T, inputs, args.steps, args.repeats),
        "diffusers (torch)": diffusers_loop(reference, x_T, inputs, args.steps, args.repeats),
    }
    reference_sample = rows["diffusers (torch)"][2]
    print(
        f"DDIM, {args.steps} steps, latents {args.batch}x{args.size}x{args.size}x4, UNet "
        f"{unet.count_params():,} params, CFG batch {2 * args.batch}, "
        f"torch threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(f"{'loop':<26}{'ms / step':>11}{'total ms':>11}{'first call ms':>15}{'rel. diff vs diffusers':>25}")
    for name, (first, best, sample) in rows.items():
        difference = np.max(np.abs(sample - reference_sample)) / np.max(np.abs(reference_sample))
        per_step, total, first = 1e3 * best / args.steps, 1e3 * best, 1e3 * first
        print(f"{name:<26}{per_step:>11.2f}{total:>11.1f}{first:>15.1f}{difference:>25.1e}")


if __name__ == "__main__":
    main()
