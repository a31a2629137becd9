"""Parity with diffusers: tiny random models built by diffusers, saved, loaded into keras_ldm.

Every output must match within 1e-4 (largest absolute difference, float32), on every backend.
"""

import diffusers
import numpy as np
import pytest
import torch

from keras_ldm.convert import from_diffusers
from keras_ldm.models import AutoencoderKL, UNet, VQAutoencoder
from tests.conftest import nchw_to_nhwc, to_numpy
from tests.convert.diffusers_references import (
    AUTOENCODER,
    CROSS_ATTENTION_UNET,
    TOLERANCE,
    UNET_2D,
    assert_close,
    randomize_norms,
    unet_2d,
)


def save_and_load(reference, tmp_path):
    reference.save_pretrained(tmp_path, safe_serialization=True)
    model = from_diffusers(str(tmp_path))
    assert model.count_params() == sum(p.numel() for p in reference.parameters())
    return model


AUTOENCODER_BLOCKS = {
    "plain": (("DownEncoderBlock2D",) * 2, ("UpDecoderBlock2D",) * 2, True),
    "eight_norm_groups": (("DownEncoderBlock2D",) * 2, ("UpDecoderBlock2D",) * 2, True, 8),
    "attention_levels": (
        ("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
        ("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
        True,
    ),
    "no_mid_attention": (("DownEncoderBlock2D",) * 2, ("UpDecoderBlock2D",) * 2, False),
}


def autoencoder_kwargs(blocks):
    down, up, mid_attention, *groups = AUTOENCODER_BLOCKS[blocks]
    return dict(
        AUTOENCODER,
        in_channels=3,
        out_channels=3,
        down_block_types=down,
        up_block_types=up,
        mid_block_add_attention=mid_attention,
        norm_num_groups=groups[0] if groups else 32,
    )


@pytest.mark.parametrize("blocks", sorted(AUTOENCODER_BLOCKS))
def test_autoencoder_kl_matches_diffusers(tmp_path, blocks):
    torch.manual_seed(0)
    reference = randomize_norms(diffusers.AutoencoderKL(latent_channels=4, **autoencoder_kwargs(blocks)))
    model = save_and_load(reference, tmp_path)
    assert isinstance(model, AutoencoderKL)
    images = torch.randn(2, 3, 16, 16)
    latents = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        mean = reference.encode(images).latent_dist.mean
        decoded = reference.decode(latents).sample
    posterior = model.encode(nchw_to_nhwc(images))
    assert_close(posterior.mean, nchw_to_nhwc(mean))
    assert_close(model.decode(nchw_to_nhwc(latents)), nchw_to_nhwc(decoded))


@pytest.mark.parametrize("blocks", ["plain", "no_mid_attention", "eight_norm_groups"])
def test_vq_autoencoder_matches_diffusers(tmp_path, blocks):
    torch.manual_seed(0)
    reference = diffusers.VQModel(
        latent_channels=3, num_vq_embeddings=64, vq_embed_dim=3, **autoencoder_kwargs(blocks)
    )
    reference = randomize_norms(reference)
    model = save_and_load(reference, tmp_path)
    assert isinstance(model, VQAutoencoder)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        h = reference.encode(images).latents
        quantized, loss, (_, _, indices) = reference.quantize(h)
        decoded = reference.decode(h).sample
    ours_h = model.encode(nchw_to_nhwc(images))
    assert_close(ours_h, nchw_to_nhwc(h))
    ours = model.quantize_latents(ours_h)
    np.testing.assert_array_equal(to_numpy(ours["indices"]).reshape(-1), indices.numpy().reshape(-1))
    assert_close(ours["quantized"], nchw_to_nhwc(quantized))
    assert abs(float(to_numpy(ours["loss"])) - float(loss)) <= TOLERANCE
    assert_close(model.decode(ours_h), nchw_to_nhwc(decoded))


CROSS_ATTENTION_UNETS = {
    "heads_by_count": dict(attention_head_dim=4),
    "heads_by_channels": dict(
        attention_head_dim=(2, 4),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    ),
    "depth2_scale_shift": dict(
        attention_head_dim=2, transformer_layers_per_block=2, resnet_time_scale_shift="scale_shift"
    ),
    "class_conditional": dict(attention_head_dim=4, num_class_embeds=10),
    "eight_norm_groups": dict(attention_head_dim=4, norm_num_groups=8),
    "linear_projection": dict(attention_head_dim=4, use_linear_projection=True),
}


@pytest.mark.parametrize("variant", sorted(CROSS_ATTENTION_UNETS))
def test_cross_attention_unet_matches_diffusers(tmp_path, variant):
    kwargs = {**CROSS_ATTENTION_UNET, "cross_attention_dim": 24, **CROSS_ATTENTION_UNETS[variant]}
    torch.manual_seed(0)
    reference = randomize_norms(diffusers.UNet2DConditionModel(**kwargs))
    model = save_and_load(reference, tmp_path)
    assert isinstance(model, UNet) and model.context_dim == 24
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 5, 24)
    labels = torch.tensor([3, 7]) if "num_class_embeds" in kwargs else None
    with torch.no_grad():
        expected = reference(x, t, encoder_hidden_states=context, class_labels=labels).sample
    ours = model(
        nchw_to_nhwc(x),
        timesteps=t.numpy(),
        context=context.numpy(),
        labels=None if labels is None else labels.numpy(),
    )
    assert_close(ours, nchw_to_nhwc(expected))


UNCONDITIONAL_UNETS = {
    "concat_6_channels": dict(in_channels=6, out_channels=3),
    "eight_norm_groups": dict(in_channels=3, out_channels=3, norm_num_groups=8),
    "resblock_updown_classes": dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"),
        downsample_type="resnet",
        upsample_type="resnet",
        num_class_embeds=5,
    ),
}


@pytest.mark.parametrize("variant", sorted(UNCONDITIONAL_UNETS))
def test_unet_2d_matches_diffusers(tmp_path, variant):
    kwargs = {**UNET_2D, **UNCONDITIONAL_UNETS[variant]}
    torch.manual_seed(0)
    reference = randomize_norms(diffusers.UNet2DModel(**kwargs))
    model = save_and_load(reference, tmp_path)
    assert isinstance(model, UNet) and model.context_dim is None
    x, t = torch.randn(2, kwargs["in_channels"], 8, 8), torch.tensor([3, 900])
    labels = torch.tensor([0, 4]) if "num_class_embeds" in kwargs else None
    with torch.no_grad():
        expected = reference(x, t, class_labels=labels).sample
    ours = model(nchw_to_nhwc(x), timesteps=t.numpy(), labels=None if labels is None else labels.numpy())
    assert_close(ours, nchw_to_nhwc(expected))


NO_TORCH_SCRIPT = """
import sys
sys.modules["torch"] = None  # any `import torch` now fails
import numpy as np
from keras_ldm.convert import from_diffusers
model = from_diffusers(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.asarray(model(x, timesteps=np.array([10, 500]))))
"""


def test_from_diffusers_needs_no_pytorch(tmp_path):
    import os
    import subprocess
    import sys

    torch.manual_seed(0)
    reference = randomize_norms(unet_2d(in_channels=3, out_channels=3))
    reference.save_pretrained(tmp_path / "unet")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = reference(x, torch.tensor([10, 500])).sample
    np.save(tmp_path / "x.npy", nchw_to_nhwc(x))
    env = dict(os.environ, KERAS_BACKEND="jax")
    subprocess.run(
        [
            sys.executable,
            "-c",
            NO_TORCH_SCRIPT,
            str(tmp_path / "unet"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "out.npy"),
        ],
        check=True,
        env=env,
    )
    assert_close(np.load(tmp_path / "out.npy"), nchw_to_nhwc(expected))
