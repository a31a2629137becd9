"""Tiny diffusers reference models shared by the conversion tests (CompVis checkpoints, diffusers
models and pipelines): the block layouts they build, the norm perturbation that makes a mis-mapped tensor
show, and the float comparison.

Each builder takes keyword overrides of its layout; it does not seed torch (the tests do, where they
always have) and does not randomize (the tests choose how).
"""

import diffusers
import numpy as np
import torch

from tests.conftest import to_numpy

TOLERANCE = 1e-4  # largest absolute difference of float32 model outputs

LEVELS = dict(block_out_channels=(32, 64), layers_per_block=1)
AUTOENCODER = dict(
    sample_size=16,
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    **LEVELS,
)
UNET_2D = dict(  # unconditional, attention in the lower level
    sample_size=8,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=16,
    **LEVELS,
)
CROSS_ATTENTION_UNET = dict(  # cross-attention in the upper level
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    **LEVELS,
)


def unet_2d(**overrides):
    return diffusers.UNet2DModel(**{**UNET_2D, **overrides})


def cross_attention_unet(**overrides):
    return diffusers.UNet2DConditionModel(**{**CROSS_ATTENTION_UNET, **overrides})


def vq_model(**overrides):
    """A VQModel with a 16-code codebook of 3 channels."""
    return diffusers.VQModel(
        **{"latent_channels": 3, "num_vq_embeddings": 16, "vq_embed_dim": 3, **AUTOENCODER, **overrides}
    )


def randomize_norms(module):
    """diffusers starts norms at (1, 0); perturb them so that a mis-mapped norm shows. Returns the module
    in eval mode."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name:
                param.copy_(torch.randn_like(param) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
    return module.eval()


def assert_close(ours, theirs, tolerance=TOLERANCE):
    ours, theirs = to_numpy(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    assert np.max(np.abs(ours - theirs)) <= tolerance
