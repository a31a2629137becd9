"""keras_ldm vs diffusers on one text-to-image LDM: latency, throughput, compile time, memory, TFLOP/s, training.

Both sides run the same network with the same weights: a diffusers `LDMTextToImagePipeline` (UNet,
KL autoencoder, LDMBert, BERT word-piece tokenizer, DDIM scheduler as CompVis samples) is built with
random weights, written with `save_pretrained` and loaded by `keras_ldm.LatentDiffusion.from_preset`
(which converts the folder without PyTorch). Default: the architecture of `CompVis/ldm-text2im-large-256`
(872.3M-parameter UNet, KL-f8, 32-layer LDMBert, 256x256 images), sized for a GPU. `--small` shrinks
every part so that a 2-core CPU finishes in a few minutes.

What is timed (median of `--repeats` calls after a warm-up call of the same shape):
- keras_ldm: `model.generate(prompts, ...)`: tokenize, text encoder (prompts and the empty negative
  prompts), the compiled DDIM loop with classifier-free guidance on a doubled batch, decode, uint8;
- diffusers: `pipeline(prompts, ..., output_type="np")` and the same rounding to uint8 (under bf16,
  `output_type="pt"` and `.float()`: numpy has no bfloat16);
- UNet forward: one call on the guidance batch (compiled on JAX/TensorFlow; on torch `no_grad` and
  recorded by `keras_ldm.backend.traced_call`, as `generate()` calls it);
  TFLOP/s = FLOPs counted by `torch.utils.flop_counter.FlopCounterMode` on the diffusers UNet
  (convolutions, matmuls, attention; 2 FLOPs per multiply-add) / time;
- training: keras_ldm `train_on_batch` (AdamW) vs a PyTorch AdamW step on the diffusers modules doing
  the same work (frozen VAE encode + posterior sample, q_sample, LDMBert and UNet forward/backward,
  MSE); bf16 mixed precision on GPU, float32 on CPU unless `--precision` says otherwise; after
  `TRAIN_WARMUP_STEPS` untimed steps on both sides (on PyTorch, keras_ldm records its UNet, first-stage
  encoder and text encoder in the first three steps, see `keras_ldm.backend.traced_call`).

Run one Keras backend per process:

    KERAS_BACKEND=jax python benchmarks/ldm_vs_diffusers.py --device gpu
    KERAS_BACKEND=torch python benchmarks/ldm_vs_diffusers.py --small --device cpu
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

BACKENDS = ("jax", "tensorflow", "torch")
PRECISIONS = ("float32", "mixed_bfloat16")
NOT_MEASURED = "not measured"
SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
COLORS = ["red", "blue", "green", "yellow", "white", "black"]
SHAPES = ["circle", "square", "triangle", "squirrel", "burger"]
WORDS = ["a", "on", "background", "painting", "of", "eating", *COLORS, *SHAPES]

# CompVis/ldm-text2im-large-256 (txt2img-1p4B): what its diffusers config folders describe.
FULL = dict(
    name="ldm-text2im-large-256",
    image_size=256,
    unet=dict(
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=1280,
        attention_head_dim=8,  # diffusers' name for the number of heads here
        sample_size=32,
    ),
    vae=dict(latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=256),
    bert=dict(
        max_position_embeddings=77,
        encoder_layers=32,
        encoder_ffn_dim=5120,
        encoder_attention_heads=8,
        head_dim=64,
        d_model=1280,
    ),
    vocab_size=30522,
    batches=(1, 8, 32),
    steps=50,
    repeats=3,
    train_batch=8,
    train_steps=5,
)
# A 2-core CPU: same block types and an f8 first stage, a few hundred thousand parameters per part.
SMALL = dict(
    name="small",
    image_size=64,
    unet=dict(
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        sample_size=8,
    ),
    vae=dict(latent_channels=4, block_out_channels=(32, 32, 32, 32), layers_per_block=1, sample_size=64),
    bert=dict(
        max_position_embeddings=77,
        encoder_layers=2,
        encoder_ffn_dim=64,
        encoder_attention_heads=2,
        head_dim=16,
        d_model=32,
    ),
    vocab_size=None,  # just the special tokens and WORDS
    batches=(1, 2, 4),
    steps=10,
    repeats=3,
    train_batch=4,
    train_steps=3,
)


TRAIN_WARMUP_STEPS = 3


class NotMeasured:
    """A table cell that holds why a figure is missing instead of a number."""

    def __init__(self, reason):
        self.reason = reason

    def __str__(self):
        return f"{NOT_MEASURED} ({self.reason})" if self.reason else NOT_MEASURED


class phase:
    """Prints how long a part of the run took to stderr (where the time of a run goes)."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        print(f"[{time.perf_counter() - self.start:6.1f} s] {self.name}", file=sys.stderr, flush=True)


def progress(message):
    """A figure as soon as it is measured, to stderr: a run cut short (a device's time limit) keeps them."""
    print(f"[measured] {message}", file=sys.stderr, flush=True)


def fail(message):
    print(f"ldm_vs_diffusers.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def positive_ints(text):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, e.g. 1,8,32; got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, e.g. 1,8,32; got {text!r}")
    return values


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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


# -- backend and device -------------------------------------------------------------------------


def select_backend(requested):
    """Sets KERAS_BACKEND (before Keras is imported) and returns it; exits when it cannot be used."""
    configured = os.environ.get("KERAS_BACKEND")
    if requested and configured and requested != configured:
        fail(f"--backend={requested} but KERAS_BACKEND={configured}; run with KERAS_BACKEND={requested}.")
    backend = requested or configured
    if backend is None:
        fail(f"set KERAS_BACKEND (or pass --backend) to one of {', '.join(BACKENDS)}.")
    if backend not in BACKENDS:
        fail(f"KERAS_BACKEND={backend!r}; this benchmark runs on {', '.join(BACKENDS)}.")
    os.environ["KERAS_BACKEND"] = backend
    require(backend, "torch")
    return backend


def require(*modules):
    for name in modules:
        try:
            __import__(name)
        except ImportError as error:
            fail(f"this benchmark needs {name!r}, which does not import here: {error}")


def prepare_device(device, threads):
    """Environment for the device and thread count, set before jax/tensorflow/torch start."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        if threads == 1:
            flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["JAX_PLATFORMS"] = "cpu"
    else:  # several runtimes share one GPU: none may take all of its memory up front
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")


def gpus_visible(backend):
    """(torch sees a GPU, the Keras backend sees a GPU, a description of what each sees)."""
    import torch

    torch_gpu = torch.cuda.is_available()
    if backend == "jax":
        import jax

        try:
            keras_gpu = len(jax.devices("gpu")) > 0
        except RuntimeError:
            keras_gpu = False
    elif backend == "tensorflow":
        import tensorflow as tf

        keras_gpu = len(tf.config.list_physical_devices("GPU")) > 0
    else:
        keras_gpu = torch_gpu
    return torch_gpu, keras_gpu


def resolve_device(requested, backend):
    if requested == "cpu":
        return "cpu"
    torch_gpu, keras_gpu = gpus_visible(backend)
    if requested == "auto":
        return "gpu" if torch_gpu and keras_gpu else "cpu"
    if not (torch_gpu and keras_gpu):
        fail(
            f"--device gpu, but no GPU is visible to both sides (torch/diffusers: "
            f"{'yes' if torch_gpu else 'no'}, {backend}/keras_ldm: {'yes' if keras_gpu else 'no'}). "
            f"Use --device cpu (with --small on a small machine)."
        )
    from keras_ldm.backend.lazy_tensorflow import tensorflow_installed

    if backend != "tensorflow" and tensorflow_installed():  # then it only tokenizes: keep it off the GPU
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
    return "gpu"


class Device:
    """Synchronisation and peak-memory counters of one side (keras_ldm's backend or torch)."""

    def __init__(self, kind, backend):
        self.kind, self.backend = kind, backend

    def sync(self):
        if self.kind == "gpu" and self.backend == "torch":
            import torch

            torch.cuda.synchronize()

    def reset_peak(self):
        """Starts a peak-memory window; returns the bytes already held that are not this side's."""
        if self.kind != "gpu":
            return 0
        if self.backend == "torch":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        if self.backend == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")
        return 0  # jax: its peak counter covers the whole process, and keras_ldm is its only user

    def peak(self, baseline=0):
        if self.kind != "gpu":
            return NotMeasured("n/a (CPU)")
        if self.backend == "torch":
            import torch

            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - baseline
        if self.backend == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak"]
        import jax

        stats = jax.local_devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" not in stats:
            return NotMeasured("jax reports no peak_bytes_in_use on this device")
        return stats["peak_bytes_in_use"]


# -- the two models ------------------------------------------------------------------------------


def vocabulary(size):
    pieces = SPECIAL_TOKENS + WORDS
    if size:
        pieces += [f"[unused{i}]" for i in range(size - len(pieces))]
    return pieces


def prompts(batch):
    return [f"a {COLORS[i % 6]} {SHAPES[i % 5]} on a {COLORS[(i + 3) % 6]} background" for i in range(batch)]


def build_pipeline(config, folder):
    """A random diffusers LDMTextToImagePipeline of `config`, saved to `folder/pipeline`."""
    import diffusers
    import torch
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
    from transformers import BertTokenizer

    vocab_path = os.path.join(folder, "vocab.txt")
    pieces = vocabulary(config["vocab_size"])
    with open(vocab_path, "w", encoding="utf-8") as f:
        f.write("\n".join(pieces) + "\n")
    torch.manual_seed(0)
    levels = len(config["vae"]["block_out_channels"])
    pipeline = diffusers.LDMTextToImagePipeline(
        vqvae=diffusers.AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            **config["vae"],
        ),
        bert=LDMBertModel(LDMBertConfig(vocab_size=len(pieces), dropout=0.0, **config["bert"])),
        tokenizer=BertTokenizer(vocab_path),
        unet=diffusers.UNet2DConditionModel(**config["unet"]),
        scheduler=diffusers.DDIMScheduler(**SCHEDULER),
    )
    for module in (pipeline.vqvae, pipeline.bert, pipeline.unet):
        module.eval()
    pipeline.set_progress_bar_config(disable=True)
    path = os.path.join(folder, "pipeline")
    pipeline.save_pretrained(path)
    return pipeline, path


def torch_autocast(device, precision):
    import torch

    return torch.autocast(
        "cuda" if device == "gpu" else "cpu", dtype=torch.bfloat16, enabled=precision == "mixed_bfloat16"
    )


def count_params(module):
    return sum(p.numel() for p in module.parameters())


# -- timing helpers ------------------------------------------------------------------------------


def timed_calls(fn, repeats):
    """(first call seconds, median of `repeats` later calls, the first result); `fn` must block."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), result


def attempt(fn):
    """`fn()`, or a `NotMeasured` naming the error (the table never shows a figure that failed)."""
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 - reported in the table, the run goes on
        message = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
        return NotMeasured(f"error: {type(error).__name__}: {message}")


def to_uint8_from_unit(images):
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype("uint8")


# -- keras_ldm -----------------------------------------------------------------------------------


class KerasSide:
    name = "keras_ldm"

    def __init__(self, path, args, device):
        import keras

        from keras_ldm import LatentDiffusion

        self.args, self.device = args, device
        if args.precision != "float32":
            keras.mixed_precision.set_global_policy(args.precision)
        self.model = LatentDiffusion.from_preset(
            path, dtype=None if args.precision == "float32" else args.precision
        )
        self.size = args.config["image_size"]

    def generate(self, batch, latents=None):
        return self.model.generate(
            prompts(batch),
            num_steps=self.args.steps,
            guidance_scale=self.args.guidance_scale,
            seed=0,
            sampler="ddim",
            eta=0.0,
            height=self.size,
            width=self.size,
            latents=latents,
        )

    def text_seconds(self, batch):
        """Tokenize, then encode the prompts and the empty negative prompts with the text encoder compiled on
        its own (generate() runs it inside its one compiled program)."""
        from keras import ops

        from keras_ldm.backend.compile import compile_function
        from keras_ldm.backend.traced_call import traced_call

        model = self.model
        call = traced_call(model.text_encoder)  # recorded on PyTorch, as by a repeated generate()
        encode = compile_function(lambda ids: call(ids), model.text_encoder)

        def run():
            context = encode(model.tokenizer(prompts(batch)))
            unconditional = encode(model.tokenizer([""] * batch))
            return ops.convert_to_numpy(context), ops.convert_to_numpy(unconditional)

        return timed_calls(run, self.args.repeats)[1]

    def decode_seconds(self, batch):
        """Decode + uint8, compiled on their own (generate() runs them inside its one compiled program)."""
        from keras import ops

        from keras_ldm.backend.compile import compile_function
        from keras_ldm.models.generation import images_to_uint8

        latent = self.size // self.model.first_stage.downsample_factor
        z = ops.convert_to_tensor(
            np.random.default_rng(0).normal(size=(batch, latent, latent, 4)).astype("float32")
        )
        decode = compile_function(lambda z: images_to_uint8(self.model.decode_latents(z)), self.model)
        return timed_calls(lambda: ops.convert_to_numpy(decode(z)), self.args.repeats)[1]

    def unet_params(self):
        return self.model.unet.count_params()

    def unet_forward_seconds(self, x, t, context):
        from keras import ops

        from keras_ldm.backend.compile import compile_function
        from keras_ldm.backend.traced_call import traced_call

        unet = self.model.unet
        call = traced_call(unet)  # as generate() calls it (recorded once on PyTorch)
        forward = compile_function(lambda x, t, c: call(x, timesteps=t, context=c), unet)
        x = ops.convert_to_tensor(np.transpose(x, (0, 2, 3, 1)))
        t, context = ops.convert_to_tensor(t), ops.convert_to_tensor(context)
        return timed_calls(lambda: ops.convert_to_numpy(forward(x, t, context)), self.args.repeats)[1]

    def train(self, images, token_ids):
        """Samples/s over `train_steps` steps after `TRAIN_WARMUP_STEPS` warm-up steps."""
        from keras import ops

        model = self.model
        if self.args.freeze_text_encoder:
            model.text_encoder.trainable = False
            for variable in model.text_encoder.variables:
                variable.trainable = False
        model.compile(learning_rate=1e-4, weight_decay=0.01)
        self.jit_compile = model.jit_compile  # Keras' "auto": no XLA for TensorFlow on CPU-only machines
        batch = {"images": ops.convert_to_tensor(images), "token_ids": ops.convert_to_tensor(token_ids)}

        def steps(n):
            for _ in range(n):
                logs = model.train_on_batch(batch, return_dict=True)
            return float(logs["loss"])

        steps(TRAIN_WARMUP_STEPS)
        start = time.perf_counter()
        loss = steps(self.args.train_steps)
        seconds = time.perf_counter() - start
        if not np.isfinite(loss):
            return NotMeasured(f"the training loss is {loss}")
        return len(images) * self.args.train_steps / seconds


# -- diffusers -----------------------------------------------------------------------------------


class DiffusersSide:
    name = "diffusers"

    def __init__(self, pipeline, args, device):
        import torch

        self.args, self.device, self.pipeline = args, device, pipeline
        self.torch_device = torch.device("cuda" if device == "gpu" else "cpu")
        self.eager_unet = pipeline.unet
        self.size = args.config["image_size"]
        self.bf16 = args.precision == "mixed_bfloat16"

    def to_device(self):
        self.pipeline.to(self.torch_device)
        if self.args.diffusers_compile:
            import torch

            self.pipeline.unet = torch.compile(self.eager_unet)

    def sync(self):
        if self.device == "gpu":
            import torch

            torch.cuda.synchronize()

    def generate(self, batch, latents=None, as_float=False):
        import torch

        generator = torch.Generator(self.torch_device).manual_seed(0)
        if latents is not None:
            latents = torch.from_numpy(np.transpose(latents, (0, 3, 1, 2))).to(self.torch_device)
        with torch_autocast(self.device, self.args.precision):
            images = self.pipeline(
                prompts(batch),
                height=self.size,
                width=self.size,
                num_inference_steps=self.args.steps,
                guidance_scale=self.args.guidance_scale,
                eta=0.0,
                generator=generator,
                latents=latents,
                output_type="pt" if self.bf16 else "np",
            ).images
        if self.bf16:
            images = images.float().permute(0, 2, 3, 1).cpu().numpy()
        return images if as_float else to_uint8_from_unit(images)

    def text_seconds(self, batch):
        import torch

        pipeline = self.pipeline

        def encode(texts):
            ids = pipeline.tokenizer(
                texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
            )
            return pipeline.bert(ids.input_ids.to(self.torch_device))[0]

        def run():
            with torch.no_grad(), torch_autocast(self.device, self.args.precision):
                result = encode([""] * batch), encode(prompts(batch))
            self.sync()
            return result

        return timed_calls(run, self.args.repeats)[1]

    def decode_seconds(self, batch):
        import torch

        latent = self.size // 8
        z = torch.from_numpy(
            np.random.default_rng(0).normal(size=(batch, 4, latent, latent)).astype("float32")
        )
        z = z.to(self.torch_device)
        vae = self.pipeline.vqvae

        def run():
            with torch.no_grad(), torch_autocast(self.device, self.args.precision):
                images = (vae.decode(z / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
            return to_uint8_from_unit(images.float().permute(0, 2, 3, 1).cpu().numpy())

        return timed_calls(run, self.args.repeats)[1]

    def unet_params(self):
        return count_params(self.eager_unet)

    def unet_inputs(self, x, t, context):
        import torch

        return tuple(torch.from_numpy(v).to(self.torch_device) for v in (x, t, context))

    def unet_flops(self, x, t, context):
        """FLOPs of one eager fp32 forward, counted per op from shapes by torch's FlopCounterMode."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

        aten = torch.ops.aten
        # CPU attention kernel, not in torch's table; same count as the GPU SDPA kernels.
        extra = {
            aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, out_shape=None, **kw: (
                sdpa_flop_count(q, k, v)
            )
        }
        x, t, context = self.unet_inputs(x, t, context)
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=extra) as counter:
            self.eager_unet(x, t, encoder_hidden_states=context)
        return counter.get_total_flops()

    def unet_forward_seconds(self, x, t, context):
        import torch

        x, t, context = self.unet_inputs(x, t, context)
        unet = self.pipeline.unet

        def run():
            with torch.no_grad(), torch_autocast(self.device, self.args.precision):
                out = unet(x, t, encoder_hidden_states=context).sample
            self.sync()
            return out

        return timed_calls(run, self.args.repeats)[1]

    def train(self, images, token_ids):
        """(samples/s) of AdamW steps doing what `LatentDiffusion.train_step` does."""
        import torch
        import torch.nn.functional as F

        pipeline, device = self.pipeline, self.torch_device
        unet, bert, vae, scheduler = pipeline.unet, pipeline.bert, pipeline.vqvae, pipeline.scheduler
        vae.requires_grad_(False)
        trained = [self.eager_unet] + ([] if self.args.freeze_text_encoder else [bert])
        bert.requires_grad_(not self.args.freeze_text_encoder)
        for module in trained:
            module.train()
        parameters = [p for module in trained for p in module.parameters()]
        optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.01)
        images = torch.from_numpy(np.transpose(images, (0, 3, 1, 2))).to(device)
        token_ids = torch.from_numpy(token_ids.astype("int64")).to(device)
        alphas = scheduler.alphas_cumprod.to(device)
        scale = vae.config.scaling_factor

        def step():
            x = images.float() / 127.5 - 1.0
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
                with torch.no_grad():
                    latents = vae.encode(x).latent_dist.sample().float() * scale
                t = torch.randint(0, len(alphas), (len(latents),), device=device)
                noise = torch.randn_like(latents)
                a = alphas[t][:, None, None, None]
                noisy = a.sqrt() * latents + (1.0 - a).sqrt() * noise
                context = bert(token_ids)[0]
                prediction = unet(noisy, t, encoder_hidden_states=context).sample
            loss = F.mse_loss(prediction.float(), noise)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

        for _ in range(TRAIN_WARMUP_STEPS):
            step()
        self.sync()
        start = time.perf_counter()
        for _ in range(self.args.train_steps):
            loss = step()
        loss = float(loss.item())  # waits for the device
        seconds = time.perf_counter() - start
        if not np.isfinite(loss):
            return NotMeasured(f"the training loss is {loss}")
        return len(images) * self.args.train_steps / seconds


# -- the run ---------------------------------------------------------------------------------------


def measure_generation(side, device, args):
    """{batch: (first s, median s)} for each batch size, plus the peak memory of this phase."""
    baseline = device.reset_peak()
    if isinstance(side, DiffusersSide):
        side.to_device()
    results = {}
    for batch in args.batches:
        results[batch] = attempt(
            lambda batch=batch: timed_calls(lambda: side.generate(batch), args.repeats)[:2]
        )
        result = results[batch]
        if isinstance(result, NotMeasured):
            progress(f"{side.name} generation, batch {batch}: {result}")
        else:
            first, median = result
            progress(f"{side.name} generation, batch {batch}: first call {first:.3g} s, then {median:.3g} s")
    return results, attempt(lambda: device.peak(baseline))


def time_split(side, batch, total):
    """Seconds in text encoding, decoding+uint8 and (the remainder) the sampling loop at `batch`."""
    if isinstance(total, NotMeasured):
        return total
    text = side.text_seconds(batch)
    decode = side.decode_seconds(batch)
    return text, total[1] - text - decode, decode


def main(argv=None):
    args = parse_args(argv)
    prepare_device(args.device, args.threads)  # before jax/tensorflow/torch are imported: they read it then
    backend = select_backend(args.backend)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from keras_ldm.backend.lazy_tensorflow import tensorflow_installed

    if args.threads is not None and tensorflow_installed():
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    device_kind = resolve_device(args.device, backend)
    require("diffusers", "transformers")
    if args.precision is None:
        args.precision = "mixed_bfloat16" if device_kind == "gpu" else "float32"

    import keras
    import torch

    if keras.backend.backend() != backend:
        fail(
            f"Keras runs on {keras.backend.backend()!r}, not {backend!r}; set KERAS_BACKEND before starting."
        )
    config = args.config
    keras_device, torch_device = Device(device_kind, backend), Device(device_kind, "torch")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        with phase("build and save the diffusers pipeline"):
            pipeline, path = build_pipeline(config, folder)
        import keras_ldm  # noqa: F401  (imported before the load is timed)

        with phase("keras_ldm from_preset"):
            load_start = time.perf_counter()
            ours = KerasSide(path, args, device_kind)
            loading = {ours.name: time.perf_counter() - load_start}
        with phase("diffusers from_pretrained"):
            loading[DiffusersSide.name] = attempt(lambda: diffusers_load_seconds(path))
        setup = time.perf_counter() - start
    theirs = DiffusersSide(pipeline, args, device_kind)
    sides = (ours, theirs)

    generation = {}
    with phase("keras_ldm generation"):
        generation[ours.name] = measure_generation(ours, keras_device, args)
    with phase("diffusers generation"):
        generation[theirs.name] = measure_generation(theirs, torch_device, args)
    split_batch = max(args.batches)
    with phase("time splits"):
        splits = {
            s.name: attempt(lambda s=s: time_split(s, split_batch, generation[s.name][0][split_batch]))
            for s in sides
        }

    # correctness: both from the same starting latents (before training changes keras_ldm's weights)
    latent = config["image_size"] // 8
    latents = np.random.default_rng(1).normal(size=(2, latent, latent, 4)).astype("float32")
    with phase("correctness"):
        correctness = attempt(
            lambda: (ours.generate(2, latents=latents), theirs.generate(2, latents=latents, as_float=True))
        )

    # UNet forward on the guidance batch
    unet_batch = 2 * max(args.batches)
    rng = np.random.default_rng(2)
    unet_args = (
        rng.normal(size=(unet_batch, 4, latent, latent)).astype("float32"),
        np.full((unet_batch,), 500.0, dtype="float32"),
        rng.normal(size=(unet_batch, 77, config["unet"]["cross_attention_dim"])).astype("float32"),
    )
    with phase("UNet forward"):
        flops = attempt(lambda: theirs.unet_flops(*unet_args))
        forward = {s.name: attempt(lambda s=s: s.unet_forward_seconds(*unet_args)) for s in sides}
    for name, seconds in forward.items():
        progress(f"{name} UNet forward, batch {unet_batch}: {_shown(seconds)} s (FLOPs: {_shown(flops)})")

    # training
    training = {}
    if args.train_batch:
        size = config["image_size"]
        images = np.random.default_rng(3).integers(0, 256, (args.train_batch, size, size, 3), dtype="uint8")
        token_ids = np.asarray(
            keras.ops.convert_to_numpy(ours.model.tokenizer(prompts(args.train_batch))), dtype="int32"
        )
        for side in sides:
            with phase(f"{side.name} training"):
                training[side.name] = attempt(lambda side=side: side.train(images, token_ids))
            progress(
                f"{side.name} training, batch {args.train_batch}: {_shown(training[side.name])} samples/s"
            )
    else:
        training = {s.name: NotMeasured("--train-batch 0") for s in sides}

    report(
        args,
        backend,
        device_kind,
        config,
        sides,
        generation,
        splits,
        correctness,
        flops,
        forward,
        training,
        loading,
        setup,
    )


def diffusers_load_seconds(path):
    """Seconds diffusers takes to load the pipeline folder (the keras side is timed on `from_preset`)."""
    import diffusers

    start = time.perf_counter()
    diffusers.LDMTextToImagePipeline.from_pretrained(path)
    return time.perf_counter() - start


# -- the table -------------------------------------------------------------------------------------


def report(
    args,
    backend,
    device_kind,
    config,
    sides,
    generation,
    splits,
    correctness,
    flops,
    forward,
    training,
    loading,
    setup,
):
    import diffusers
    import keras
    import torch

    ours, theirs = sides
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
    latency = [_pick(generation[n][0][first], lambda r: r[1] / first) for n in names]
    cells(f"generation latency, batch {first} (s/image)", latency, "time", lambda v: f"{v:.3g}")
    for batch in rest:
        rate = [_pick(generation[n][0][batch], lambda r, batch=batch: batch / r[1]) for n in names]
        cells(f"throughput, batch {batch} (images/s)", rate, "rate", lambda v: f"{v:.3g}")
    cells(
        "load the pipeline folder (s; from_preset vs from_pretrained)",
        [loading[n] for n in names],
        "time",
        lambda v: f"{v:.3g}",
    )
    compile_time = [_pick(generation[n][0][first], lambda r: r[0]) for n in names]
    steady = [_pick(generation[n][0][first], lambda r: r[1]) for n in names]
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
        flops if isinstance(flops, NotMeasured) else _pick(forward[n], lambda s: flops / s / 1e12)
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
    if hasattr(ours, "jit_compile"):
        print(
            f"training: keras_ldm train_on_batch after LatentDiffusion.compile() (AdamW, lr 1e-4, weight decay "
            f"0.01; Keras resolved jit_compile={ours.jit_compile}) vs torch.optim.AdamW on the same modules; "
            f"{args.precision}; timed over {args.train_steps} steps after {TRAIN_WARMUP_STEPS} warm-up steps."
        )
    if device_kind == "cpu":
        print(f"peak accelerator memory: n/a (CPU run); precision on CPU: {args.precision}.")


def _shown(value):
    return str(value) if isinstance(value, NotMeasured) else f"{value:.3g}"


def _pick(value, fn):
    return value if isinstance(value, NotMeasured) else fn(value)


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


if __name__ == "__main__":
    main()
