"""Peak memory of super-resolution with and without tiled denoising, as the input grows.

Each measurement runs in a fresh Python process (peak resident memory, `ru_maxrss`, only grows): load the
shipped `photo_sr4x` preset (KL-f2, so a 4x output of an `n x n` input is a `2n x 2n` latent canvas),
upscale one random `n x n` image with `num_steps` DDIM steps, untiled or in latent tiles of `--tile-size`
(stride half a tile), and report the peak memory minus that of the same process before `generate` (the
model loaded). The decoder still decodes the whole canvas at once, so its memory keeps growing with the
output; the table shows what the tiling bounds (the UNet's activations) and what it does not.

    KERAS_BACKEND=jax python benchmarks/tiled_memory.py --sizes 64 128 256 --tile-size 32
"""

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
import numpy as np
import keras_ldm

size, tile, steps = int(sys.argv[1]), (int(sys.argv[2]) or None), int(sys.argv[3])
model = keras_ldm.LatentDiffusion.from_preset("photo_sr4x")
small = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 3)).astype("uint8")
model.generate({"images": small}, num_steps=1)  # every library loaded and warmed up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = np.random.default_rng(1).integers(0, 256, (1, size, size, 3)).astype("uint8")
start = time.time()
out = model.generate({"images": image}, num_steps=steps, tile_size=tile)
seconds = time.time() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_mb": before / 1024, "peak_mb": after / 1024, "seconds": seconds,
                  "output": list(out.shape[1:3])}))
"""


def measure(size, tile, steps):
    """The child's numbers, or None when it ran out of memory (an allocation the machine cannot make)."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(size), str(tile or 0), str(steps)],
        capture_output=True, text=True, env=dict(os.environ),
    )  # fmt: skip
    if result.returncode and ("RESOURCE_EXHAUSTED" in result.stderr or "MemoryError" in result.stderr):
        return None
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def cells(run):
    if run is None:
        return "out of memory", "-"
    return f"{run['peak_mb'] - run['before_mb']:.0f}", f"{run['seconds']:.1f}"


def main(args):
    rows = []
    print(f"backend {os.environ.get('KERAS_BACKEND', 'jax')}, photo_sr4x, {args.steps} DDIM steps, "
          f"tiles of {args.tile_size} latent pixels (stride {args.tile_size // 2})")  # fmt: skip
    print("| input | output | latent | untiled: extra peak MB | s | tiled: extra peak MB | s |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        untiled, tiled = measure(size, None, args.steps), measure(size, args.tile_size, args.steps)
        rows.append((size, untiled, tiled))
        (untiled_mb, untiled_s), (tiled_mb, tiled_s) = cells(untiled), cells(tiled)
        print(
            f"| {size}x{size} | {4 * size}x{4 * size} | {2 * size}x{2 * size} | {untiled_mb} | {untiled_s} | "
            f"{tiled_mb} | {tiled_s} |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--tile-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    start = time.time()
    main(parser.parse_args())
    print(f"({time.time() - start:.0f} s in all)")
