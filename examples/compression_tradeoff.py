"""§4.1 of the LDM paper as a study: how the first stage's downsampling factor f trades quality for speed.

The paper trains class-conditional LDMs with f in {1, 2, 4, 8, 16, 32} (f = 1: diffusion on pixels, no first
stage) for the same number of steps with comparable UNets, and finds (Figs. 6-7) that f = 1-2 train slowly,
f = 32 loses detail in the first stage, and f = 4-16 give the best quality per training step and per sample
time. This script repeats the experiment offline on the procedural shapes scenes (`keras_ldm.data.shapes`,
90 classes "a {color} {shape} on a {background} background"):

1. per f, a KL autoencoder (f = 2^k: k down-sampling levels; none for f = 1, `PixelSpace`) trained for
   `--ae-steps` (L1 + KL), and its reconstruction PSNR on held-out scenes;
2. per f, a class-conditional LDM around it with the *same* UNet (one level, no down-sampling, so that every
   latent size from 32x32 down to 1x1 fits it; cross-attention on the class token) trained for
   `--ldm-steps`, evaluated every `--eval-every` steps on `--eval-images` samples (classes cycled):
   - FID and KID on the features of the shipped scene classifier (`keras_ldm.metrics.scene_classifier`,
     trained on these scenes: Inception features mean little on flat shapes) against held-out real scenes;
   - scene accuracy: the share of samples that `describe_image` reads as their class (colour, shape and
     background all right);
   - sampling throughput (samples/s of a warm DDIM call, measured once per f);
3. writes `results.csv` (one row per evaluation), `quality_vs_steps.png` (Fig. 6: FID and accuracy over
   training, one line per f) and `quality_vs_throughput.png` (Fig. 7: final FID against samples/s).

    KERAS_BACKEND=torch python examples/compression_tradeoff.py --out outputs/compression_tradeoff
    KERAS_BACKEND=torch python examples/compression_tradeoff.py --quick --out /tmp/tradeoff   # CI, < 2 min

On real data, pass any feature extractor to the same evaluation: `keras_ldm.metrics.fid_inception_v3()`
gives the Inception FID the paper reports (docs/evaluation.md).

Not yet measured at full length: on this project's 2-core CPU, sampling these small models is far slower
than training them (30 samples x 10 DDIM steps take about 85 s on torch and tensorflow at f = 2 and f = 4,
where one training step of 16 images takes about 1.4 s), so the default run needs well over an hour there.
"""

import argparse
import csv
import os
import time

import keras
import numpy as np

from keras_ldm.data.shapes import combinations, describe_image, shapes_arrays
from keras_ldm.metrics import FrechetInceptionDistance, KernelInceptionDistance
from keras_ldm.metrics.scene_classifier import scene_classifier
from keras_ldm.models import AutoencoderKL, ClassEmbedder, LatentDiffusion, PixelSpace, UNet
from keras_ldm.training.fit_steps import fit_steps

FACTORS = (1, 2, 4, 8, 16, 32)
# Latent channels per f: more channels for stronger down-sampling, as the paper's first stages.
LATENT_CHANNELS = {1: 3, 2: 3, 4: 3, 8: 4, 16: 8, 32: 16}
FIELDS = ("f", "step", "train_seconds", "fid", "kid", "accuracy", "samples_per_second", "reconstruction_psnr")


def build_first_stage(factor):
    """`PixelSpace` for f = 1; else a small KL autoencoder with log2(f) down-sampling levels."""
    if factor == 1:
        return PixelSpace(channels=3)
    levels = int(np.log2(factor))
    return AutoencoderKL(
        ch=32,
        ch_mult=(1,) + (2,) * levels,
        num_res_blocks=1,
        z_channels=LATENT_CHANNELS[factor],
        embed_dim=LATENT_CHANNELS[factor],
        norm_num_groups=8,
    )


def build_ldm(first_stage, seed):
    """The same class-conditional UNet for every f (one level: any latent size fits)."""
    channels = first_stage.embed_dim
    unet = UNet(
        in_channels=channels,
        out_channels=channels,
        model_channels=64,
        channel_mult=(1,),
        num_res_blocks=2,
        attention_resolutions=(1,),
        num_head_channels=32,
        context_dim=64,
        norm_num_groups=16,
    )
    classes = ClassEmbedder(num_classes=len(combinations()), embed_dim=64)
    return LatentDiffusion(
        unet, first_stage, cross_attention="class", class_embedder=classes, scale_by_std=True, seed=seed
    )


def train_first_stage(first_stage, args):
    """Trains the autoencoder (L1 + KL); returns its reconstruction PSNR on held-out scenes."""
    held_out = shapes_arrays(64, image_size=args.image_size, seed=args.seed + 99)["images"]
    if isinstance(first_stage, AutoencoderKL):
        first_stage.compile(
            optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5, beta_2=0.9),
            perceptual_weight=0.0,
            disc_factor=0.0,
        )
        images = shapes_arrays(args.examples, image_size=args.image_size, seed=args.seed)["images"]
        fit_steps(first_stage, images, args.ae_steps, args.batch_size, f"f={first_stage.downsample_factor} ae",
                  args.log_every)  # fmt: skip
    reconstructions = first_stage.predict_on_batch(held_out.astype("float32") / 127.5 - 1.0)
    reconstructions = np.clip(np.round((np.asarray(reconstructions) + 1.0) * 127.5), 0, 255)
    mse = np.mean((reconstructions - held_out.astype("float64")) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


class Evaluator:
    """Samples `count` images of the classes in turn and scores them against held-out real scenes."""

    def __init__(self, args):
        self.labels = np.arange(args.eval_images) % len(combinations())
        self.truth = [combinations()[label] for label in self.labels]
        self.batch_size = args.sample_batch_size
        self.classifier = scene_classifier()
        self.options = {"num_steps": args.sample_steps, "guidance_scale": 1.0, "sampler": "ddim"}
        self.options.update(height=args.image_size, width=args.image_size)  # also before the first fit
        self.upscale = max(1, 64 // args.image_size)  # the classifier was trained on 64x64 scenes
        real = shapes_arrays(args.eval_images, image_size=args.image_size, seed=args.seed + 7)["images"]
        self.real_features = self.features(real)

    def features(self, images):
        images = np.repeat(np.repeat(images, self.upscale, axis=1), self.upscale, axis=2)
        return np.asarray(self.classifier.predict_on_batch(images)["pool3"], "float64")

    def sample(self, model, seed):
        """One image per label, `sample_batch_size` at a time (attention over 32x32 pixels is memory-hungry)."""
        images = []
        for start in range(0, len(self.labels), self.batch_size):
            labels = {"labels": self.labels[start : start + self.batch_size]}
            images.append(model.generate(labels, seed=seed + start, **self.options))
        return np.concatenate(images)

    def quality(self, model, seed):
        """`(fid, kid, accuracy)` of one round of samples."""
        images = self.sample(model, seed)
        fid, kid = FrechetInceptionDistance(), KernelInceptionDistance(subset_size=min(100, len(images)))
        for metric in (fid, kid):
            metric.update_features(self.real_features, real=True)
            metric.update_features(self.features(images), real=False)
        accuracy = np.mean([describe_image(image) == truth for image, truth in zip(images, self.truth)])
        return fid.result(), kid.result().mean, float(accuracy)

    def throughput(self, model, seed):
        """Samples per second of a warm `generate` call on one sampling batch."""
        labels = {"labels": self.labels[: self.batch_size]}
        model.generate(labels, seed=seed, **self.options)
        start = time.time()
        model.generate(labels, seed=seed, **self.options)
        return len(labels["labels"]) / (time.time() - start)


def run_factor(factor, args, evaluator, writer):
    """Trains and evaluates the first stage and the LDM of one f; writes one CSV row per evaluation."""
    keras.utils.set_random_seed(args.seed)
    first_stage = build_first_stage(factor)
    psnr = train_first_stage(first_stage, args)
    model = build_ldm(first_stage, args.seed)
    model.compile(learning_rate=args.learning_rate, warmup_steps=min(100, args.ldm_steps // 4))
    data = shapes_arrays(args.examples, image_size=args.image_size, seed=args.seed + 1)
    data = {"images": data["images"], "labels": data["labels"]}
    throughput = evaluator.throughput(model, args.seed)  # the architecture's, whatever the weights
    trained, seconds = 0, 0.0
    while trained < args.ldm_steps:
        start = time.time()
        trained += fit_steps(model, data, args.eval_every, args.batch_size, f"f={factor} ldm", args.log_every)
        seconds += time.time() - start
        fid, kid, accuracy = evaluator.quality(model, args.seed)
        row = dict(zip(FIELDS, (factor, trained, seconds, fid, kid, accuracy, throughput, psnr)))
        writer.writerow(row)
        print(
            ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
            flush=True,
        )


def read_rows(path):
    with open(path) as file:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]


def plot(rows, out):
    """Fig. 6 (quality over training steps, per f) and Fig. 7 (final FID against samples/s) as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factors = sorted({int(row["f"]) for row in rows})
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for factor in factors:
        mine = [row for row in rows if row["f"] == factor]
        steps = [row["step"] for row in mine]
        axes[0].plot(steps, [row["fid"] for row in mine], marker="o", label=f"LDM-{factor}")
        axes[1].plot(steps, [100 * row["accuracy"] for row in mine], marker="o", label=f"LDM-{factor}")
    axes[0].set(xlabel="training steps", ylabel="FID (scene-classifier features)", yscale="log")
    axes[1].set(xlabel="training steps", ylabel="scene accuracy (%)")
    axes[0].legend()
    figure.suptitle("Sample quality over training, per downsampling factor f")
    figure.tight_layout()
    figure.savefig(os.path.join(out, "quality_vs_steps.png"), dpi=100)

    figure, axis = plt.subplots(figsize=(5, 4))
    for factor in factors:
        last = [row for row in rows if row["f"] == factor][-1]
        axis.scatter(last["samples_per_second"], last["fid"])
        axis.annotate(f"LDM-{factor}", (last["samples_per_second"], last["fid"]))
    axis.set(xlabel="samples / s (DDIM, warm)", ylabel="final FID", xscale="log", yscale="log")
    axis.set_title("Quality against sampling speed")
    figure.tight_layout()
    figure.savefig(os.path.join(out, "quality_vs_throughput.png"), dpi=100)
    plt.close("all")


def main(args):
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.csv")
    evaluator = Evaluator(args)
    start = time.time()
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        writer.writeheader()
        for factor in args.factors:
            run_factor(factor, args, evaluator, writer)
            file.flush()
    plot(read_rows(path), args.out)
    print(f"wrote {path}, quality_vs_steps.png, quality_vs_throughput.png in {time.time() - start:.0f} s")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", default=",".join(map(str, FACTORS)), help="comma-separated f values")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--ae-steps", type=int, default=300)
    parser.add_argument("--ldm-steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-images", type=int, default=90, help="samples per evaluation (classes cycled)")
    parser.add_argument("--sample-batch-size", type=int, default=30)
    parser.add_argument("--sample-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--examples", type=int, default=8192, help="training scenes drawn per stage")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/compression_tradeoff")
    parser.add_argument("--quick", action="store_true", help="two factors, a few steps: checks the pipeline")
    args = parser.parse_args(argv)
    args.factors = [int(f) for f in args.factors.split(",")]
    bad = [f for f in args.factors if f not in FACTORS]
    if bad:
        parser.error(f"--factors {bad} not in {FACTORS}")
    if args.quick:
        args.factors, args.ae_steps, args.ldm_steps, args.eval_every = [1, 8], 2, 4, 2
        args.eval_images, args.sample_steps, args.examples, args.log_every, args.batch_size = 8, 2, 64, 2, 4
        args.sample_batch_size = 8
    if args.eval_every > args.ldm_steps or args.log_every > args.eval_every:
        parser.error("need --log-every <= --eval-every <= --ldm-steps")
    return args


if __name__ == "__main__":
    main(parse_args())
