"""The two sides' networks: one random diffusers `LDMTextToImagePipeline`, saved with `save_pretrained`
and loaded by keras_ldm's `from_preset` (so both run the same weights), at two sizes."""

import os
import time

import numpy as np

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


def load_keras_model(path, precision):
    """keras_ldm's `LatentDiffusion.from_preset` of the saved pipeline folder, under `precision`."""
    import keras

    from keras_ldm import LatentDiffusion

    if precision != "float32":
        keras.mixed_precision.set_global_policy(precision)
    return LatentDiffusion.from_preset(path, dtype=None if precision == "float32" else precision)


def diffusers_load_seconds(path):
    """Seconds diffusers takes to load the pipeline folder (the keras side is timed on `from_preset`)."""
    import diffusers

    start = time.perf_counter()
    diffusers.LDMTextToImagePipeline.from_pretrained(path)
    return time.perf_counter() - start


def torch_device(device):
    import torch

    return torch.device("cuda" if device == "gpu" else "cpu")


def torch_autocast(device, precision):
    import torch

    return torch.autocast(
        "cuda" if device == "gpu" else "cpu", dtype=torch.bfloat16, enabled=precision == "mixed_bfloat16"
    )


def count_params(module):
    return sum(p.numel() for p in module.parameters())


def to_uint8_from_unit(images):
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype("uint8")
