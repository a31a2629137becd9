"""Peak memory and time of LDM training steps with and without gradient checkpointing (`keras.remat`).

Each measurement runs in a fresh Python process (peak resident memory, `ru_maxrss`, only grows): a
text-free LDM with a UNet of `--channels` model channels (1-2-4, two ResBlocks per level, attention at
the two lower levels) on a KL-f4 first stage, `--steps` training steps of `--batch-size` images of
`--image-size` pixels; reported is the process's peak resident memory (the model, the compiled step and
its activations: the two runs differ by what checkpointing saves) and the seconds per step after one
warm-up step.

    KERAS_BACKEND=jax python benchmarks/checkpointing_memory.py --batch-size 8 --image-size 128
"""

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import keras, numpy as np
from keras_ldm.models import AutoencoderKL, LatentDiffusion, UNet

checkpointing, channels, batch, size, steps = sys.argv[1] == "1", *map(int, sys.argv[2:6])
unet = UNet(in_channels=4, out_channels=4, model_channels=channels, channel_mult=(1, 2, 4), num_res_blocks=2,
            attention_resolutions=(2, 4), num_head_channels=32, gradient_checkpointing=checkpointing)
vae = AutoencoderKL(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, embed_dim=4)
model = LatentDiffusion(unet, vae, seed=0)
model.compile(learning_rate=1e-4)
images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype("uint8")
model.fit({"images": images}, batch_size=batch, epochs=1, verbose=0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.time()
model.fit({"images": np.concatenate([images] * steps)}, batch_size=batch, epochs=1, verbose=0)
seconds = (time.time() - start) / steps
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"params": unet.count_params(), "before_mb": before / 1024, "peak_mb": after / 1024,
                  "seconds": seconds}))
"""


def measure(checkpointing, args):
    command = [sys.executable, "-c", CHILD, str(int(checkpointing)), str(args.channels), str(args.batch_size),
               str(args.image_size), str(args.steps)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(args):
    runs = {name: measure(name == "checkpointing", args) for name in ("plain", "checkpointing")}
    params = runs["plain"]["params"]
    print(f"backend {os.environ.get('KERAS_BACKEND', 'jax')}, UNet {params / 1e6:.1f}M parameters, batch "
          f"{args.batch_size} of {args.image_size}x{args.image_size} ({args.image_size // 4}x{args.image_size // 4} latents)")  # fmt: skip
    print("| gradient checkpointing | peak memory of the steps, MB | s / step |")
    print("|---|---|---|")
    for name, run in runs.items():
        print(f"| {'on' if name == 'checkpointing' else 'off'} | {run['peak_mb']:.0f} | {run['seconds']:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    main(parser.parse_args())
