"""CompVis checkpoints: tiny diffusers models with random weights, renamed to CompVis' module layout
(`openaimodel.UNetModel`, `ldm.modules.diffusionmodules.model`, x-transformers' BERT) by the helpers
below, saved as `.ckpt` with a YAML config, loaded with `from_compvis_checkpoint` and compared with
diffusers within 1e-4.

The helpers' renaming is itself checked against diffusers' own CompVis converter
(`convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`) and, for the fused `qkv` of CompVis'
`AttentionBlock`, against a re-implementation of its `QKVAttentionLegacy`.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
yaml = pytest.importorskip("yaml")

import diffusers
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import (
    LDMBertConfig,
    LDMBertModel,
)
from diffusers.pipelines.stable_diffusion.convert_from_ckpt import (
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)

from keras_ldm.convert.compvis import from_compvis_checkpoint
from keras_ldm.models import AutoencoderKL, LatentDiffusion, VQAutoencoder
from tests.conftest import nchw_to_nhwc, to_numpy
from tests.convert.diffusers_references import AUTOENCODER, assert_close, unet_2d, vq_model
from tests.convert.diffusers_references import cross_attention_unet as diffusers_cross_attention_unet
from tests.convert.diffusers_references import randomize_norms as randomize

VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle"]
RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
AUTOENCODER_ATTENTION_NAMES = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


# -- diffusers -> CompVis names (the inverse of what the loader does) ----------------------------------


class Renamer:
    """Moves tensors of a diffusers state dict to CompVis names; every tensor must be moved once."""

    def __init__(self, module):
        self.source = {key: value.detach().clone() for key, value in module.state_dict().items()}
        self.target = {}

    def move(self, source, target, names=None, unsqueeze=0):
        keys = [key for key in self.source if key.startswith(source + ".")]
        assert keys, f"nothing under {source}"
        for key in keys:
            module, _, parameter = key[len(source) + 1 :].rpartition(".")
            module = (names or {}).get(module, module)
            value = self.source.pop(key)
            if value.ndim == 2 and unsqueeze:  # a Linear that CompVis holds as a 1x1 conv
                value = value.reshape(*value.shape, *(1,) * unsqueeze)
            self.target[".".join(filter(None, (target, module, parameter)))] = value

    def done(self):
        assert not self.source, f"not moved: {sorted(self.source)[:5]}"
        return self.target


def merge_qkv(parts, heads, new_order=False):
    """q, k, v -> CompVis' fused qkv: per head `[q_h, k_h, v_h]` (legacy) or `[q, k, v]` (new order)."""
    if new_order:
        return torch.cat(parts)
    per_head = [part.reshape(heads, -1, *part.shape[1:]) for part in parts]
    return torch.stack(per_head, 1).reshape(-1, *parts[0].shape[1:])


def move_attention(renamer, module, source, target, new_order=False):
    if not isinstance(module, Attention):  # a Transformer2DModel: CompVis' SpatialTransformer names
        renamer.move(source, target)
        return
    for parameter in ("weight", "bias"):
        parts = [renamer.source.pop(f"{source}.to_{name}.{parameter}") for name in "qkv"]
        fused = merge_qkv(parts, module.heads, new_order)
        renamer.target[f"{target}.qkv.{parameter}"] = fused[..., None] if parameter == "weight" else fused
    renamer.move(f"{source}.to_out.0", f"{target}.proj_out", unsqueeze=1)
    renamer.move(f"{source}.group_norm", f"{target}.norm")


def move_resampler(renamer, module, source, target, conv_name):
    if isinstance(module, ResnetBlock2D):
        renamer.move(source, target, RESNET_NAMES)
    else:
        renamer.move(f"{source}.conv", f"{target}.{conv_name}")


def compvis_unet_state(unet, new_order=False):
    """A diffusers UNet's tensors under `openaimodel.UNetModel` names."""
    r = Renamer(unet)
    for source, target in (
        ("time_embedding.linear_1", "time_embed.0"),
        ("time_embedding.linear_2", "time_embed.2"),
        ("conv_in", "input_blocks.0.0"),
        ("conv_norm_out", "out.0"),
        ("conv_out", "out.2"),
    ):
        r.move(source, target)
    if unet.class_embedding is not None:
        r.move("class_embedding", "label_emb")
    index = 1
    for level, block in enumerate(unet.down_blocks):
        for j in range(len(block.resnets)):
            r.move(f"down_blocks.{level}.resnets.{j}", f"input_blocks.{index}.0", RESNET_NAMES)
            if getattr(block, "attentions", None):
                move_attention(
                    r,
                    block.attentions[j],
                    f"down_blocks.{level}.attentions.{j}",
                    f"input_blocks.{index}.1",
                    new_order,
                )
            index += 1
        if block.downsamplers:
            move_resampler(
                r,
                block.downsamplers[0],
                f"down_blocks.{level}.downsamplers.0",
                f"input_blocks.{index}.0",
                "op",
            )
            index += 1
    r.move("mid_block.resnets.0", "middle_block.0", RESNET_NAMES)
    move_attention(r, unet.mid_block.attentions[0], "mid_block.attentions.0", "middle_block.1", new_order)
    r.move("mid_block.resnets.1", "middle_block.2", RESNET_NAMES)
    index = 0
    for up, block in enumerate(unet.up_blocks):
        for j in range(len(block.resnets)):
            r.move(f"up_blocks.{up}.resnets.{j}", f"output_blocks.{index}.0", RESNET_NAMES)
            position = 1
            if getattr(block, "attentions", None):
                move_attention(
                    r,
                    block.attentions[j],
                    f"up_blocks.{up}.attentions.{j}",
                    f"output_blocks.{index}.1",
                    new_order,
                )
                position = 2
            if block.upsamplers and j == len(block.resnets) - 1:
                move_resampler(
                    r,
                    block.upsamplers[0],
                    f"up_blocks.{up}.upsamplers.0",
                    f"output_blocks.{index}.{position}",
                    "conv",
                )
            index += 1
    return r.done()


def compvis_autoencoder_state(vae):
    """A diffusers AutoencoderKL / VQModel's tensors under CompVis' Encoder/Decoder names."""
    r = Renamer(vae)
    levels = len(vae.encoder.down_blocks)
    for coder, blocks, stage, sampler in (
        ("encoder", "down_blocks", "down", "downsample"),
        ("decoder", "up_blocks", "up", "upsample"),
    ):
        for i, block in enumerate(getattr(getattr(vae, coder), blocks)):
            level = i if coder == "encoder" else levels - 1 - i
            for j in range(len(block.resnets)):
                r.move(
                    f"{coder}.{blocks}.{i}.resnets.{j}",
                    f"{coder}.{stage}.{level}.block.{j}",
                    {"conv_shortcut": "nin_shortcut"},
                )
            for j in range(len(getattr(block, "attentions", []))):
                r.move(
                    f"{coder}.{blocks}.{i}.attentions.{j}",
                    f"{coder}.{stage}.{level}.attn.{j}",
                    AUTOENCODER_ATTENTION_NAMES,
                    unsqueeze=2,
                )
            if getattr(block, f"{sampler}rs"):
                r.move(f"{coder}.{blocks}.{i}.{sampler}rs.0.conv", f"{coder}.{stage}.{level}.{sampler}.conv")
        r.move(f"{coder}.mid_block.resnets.0", f"{coder}.mid.block_1")
        r.move(f"{coder}.mid_block.resnets.1", f"{coder}.mid.block_2")
        if getattr(vae, coder).mid_block.attentions[0] is not None:
            r.move(f"{coder}.mid_block.attentions.0", f"{coder}.mid.attn_1", AUTOENCODER_ATTENTION_NAMES, 2)
        for name in ("conv_in", "conv_out"):
            r.move(f"{coder}.{name}", f"{coder}.{name}")
        r.move(f"{coder}.conv_norm_out", f"{coder}.norm_out")
    for name in ("quant_conv", "post_quant_conv", "quantize"):
        if any(key.startswith(name + ".") for key in r.source):
            r.move(name, name)
    return r.done()


def compvis_bert_state(bert):
    """An LDMBertModel's tensors under x-transformers' `TransformerWrapper` names (BERTEmbedder)."""
    r = Renamer(bert)
    r.move("model.embed_tokens", "transformer.token_emb")
    r.move("model.embed_positions", "transformer.pos_emb.emb")
    r.move("model.layer_norm", "transformer.norm")
    r.move("to_logits", "transformer.to_logits")
    for i in range(len(bert.model.layers)):
        attention, feed_forward = (
            f"transformer.attn_layers.layers.{2 * i}",
            f"transformer.attn_layers.layers.{2 * i + 1}",
        )
        r.move(f"model.layers.{i}.self_attn_layer_norm", f"{attention}.0")
        for ours, theirs in (
            ("q_proj", "to_q"),
            ("k_proj", "to_k"),
            ("v_proj", "to_v"),
            ("out_proj", "to_out"),
        ):
            r.move(f"model.layers.{i}.self_attn.{ours}", f"{attention}.1.{theirs}")
        r.move(f"model.layers.{i}.final_layer_norm", f"{feed_forward}.0")
        r.move(f"model.layers.{i}.fc1", f"{feed_forward}.1.net.0.0")
        r.move(f"model.layers.{i}.fc2", f"{feed_forward}.1.net.2")
    return r.done()


# -- tiny models and their CompVis configs ---------------------------------------------------------


DDCONFIG = dict(
    double_z=False,
    z_channels=3,
    resolution=16,
    in_channels=3,
    out_ch=3,
    ch=32,
    ch_mult=[1, 2],
    num_res_blocks=1,
    attn_resolutions=[],
    dropout=0.0,
)


def vq_without_attention():
    vae = vq_model(mid_block_add_attention=False)
    config = {
        "target": "ldm.models.autoencoder.VQModelInterface",
        "params": {
            "embed_dim": 3,
            "n_embed": 16,
            "ddconfig": dict(DDCONFIG, attn_type="none"),
            "lossconfig": {"target": "torch.nn.Identity"},
        },
    }
    return randomize(vae), config


def kl_with_attention():
    vae = diffusers.AutoencoderKL(
        **dict(
            AUTOENCODER,
            latent_channels=4,
            down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
            up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
        )
    )
    ddconfig = dict(DDCONFIG, double_z=True, z_channels=4, attn_resolutions=[8])
    config = {
        "target": "ldm.models.autoencoder.AutoencoderKL",
        "params": {"embed_dim": 4, "ddconfig": ddconfig},
    }
    return randomize(vae), config


UNET_PARAMS = dict(
    image_size=8, model_channels=32, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[2]
)


def inpainting_unet():
    """inpainting_big's shape: 2 c + 1 input channels, ResBlock resampling, a head count."""
    unet = unet_2d(
        in_channels=7,
        out_channels=3,
        attention_head_dim=32,
        down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"),
        downsample_type="resnet",
        upsample_type="resnet",
    )
    return randomize(unet), dict(
        UNET_PARAMS, in_channels=7, out_channels=3, num_heads=2, resblock_updown=True
    )


def super_resolution_unet():
    """bsr_sr's shape: latent + image input channels, head width 16."""
    unet = unet_2d(in_channels=7, out_channels=4)
    return randomize(unet), dict(UNET_PARAMS, in_channels=7, out_channels=4, num_head_channels=16)


def cross_attention_unet(context_dim=16):
    unet = diffusers_cross_attention_unet(attention_head_dim=4, cross_attention_dim=context_dim)
    params = dict(
        UNET_PARAMS,
        in_channels=4,
        out_channels=4,
        attention_resolutions=[1],
        num_heads=4,
        use_spatial_transformer=True,
        transformer_depth=1,
        context_dim=context_dim,
    )
    return randomize(unet), params


def tiny_bert():
    """BERTEmbedder(n_embed=16, n_layer=2): x-transformers' 8 heads of 64 and a 4x feed-forward."""
    torch.manual_seed(0)
    config = LDMBertConfig(
        vocab_size=len(VOCABULARY),
        max_position_embeddings=77,
        encoder_layers=2,
        encoder_ffn_dim=64,
        encoder_attention_heads=8,
        head_dim=64,
        d_model=16,
    )
    bert = randomize(LDMBertModel(config))
    return bert, {
        "target": "ldm.modules.encoders.modules.BERTEmbedder",
        "params": {"n_embed": 16, "n_layer": 2, "vocab_size": len(VOCABULARY)},
    }


def write_checkpoint(folder, unet, unet_params, vae, first_stage, cond_stage, state=None, **params):
    """`model.ckpt` (`{"state_dict": ...}` as Lightning saves it) and `config.yaml` in `folder`."""
    state = dict(state or {})
    state.update({f"model.diffusion_model.{k}": v for k, v in compvis_unet_state(unet).items()})
    state.update({f"first_stage_model.{k}": v for k, v in compvis_autoencoder_state(vae).items()})
    state["first_stage_model.loss.logvar"] = torch.zeros(())  # training-only tensors are skipped
    state["betas"] = torch.linspace(1e-4, 2e-2, 1000)  # LatentDiffusion's own buffers too
    if cond_stage == "__is_first_stage__":  # the same module, registered twice
        state.update({f"cond_stage_model.{k}": v for k, v in compvis_autoencoder_state(vae).items()})
    torch.save({"state_dict": state, "global_step": 3}, folder / "model.ckpt")
    config = {
        "model": {
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": {
                "linear_start": 0.0015,
                "linear_end": 0.0205,
                "timesteps": 1000,
                "unet_config": {
                    "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                    "params": unet_params,
                },
                "first_stage_config": first_stage,
                "cond_stage_config": cond_stage,
                **params,
            },
        }
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return str(folder / "model.ckpt"), str(folder / "config.yaml")


def inpainting_checkpoint(folder, **params):
    """inpainting_big's shape (`inpainting_unet`, `vq_without_attention`, conditioned on the first stage)
    as a CompVis checkpoint in `folder`: (unet, vae, (ckpt path, config path))."""
    unet, unet_params = inpainting_unet()
    vae, first_stage = vq_without_attention()
    paths = write_checkpoint(folder, unet, unet_params, vae, first_stage, "__is_first_stage__", **params)
    return unet, vae, paths


def check_unet(model, unet, context=None):
    torch.manual_seed(2)
    x, t = torch.randn(2, unet.config.in_channels, 8, 8), torch.tensor([7, 801])
    with torch.no_grad():
        kwargs = {} if context is None else {"encoder_hidden_states": torch.from_numpy(context)}
        expected = unet(x, t, **kwargs).sample
    assert_close(model.unet(nchw_to_nhwc(x), timesteps=t.numpy(), context=context), nchw_to_nhwc(expected))


def check_first_stage(model, vae):
    torch.manual_seed(3)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        encoded = vae.encode(images)
        latents = encoded.latent_dist.mean if hasattr(encoded, "latent_dist") else encoded.latents
        decoded = vae.decode(latents).sample
    ours = model.first_stage.encode(nchw_to_nhwc(images))
    ours = ours.mean if isinstance(model.first_stage, AutoencoderKL) else ours
    assert_close(ours, nchw_to_nhwc(latents))
    assert_close(model.first_stage.decode(nchw_to_nhwc(latents)), nchw_to_nhwc(decoded))


# -- the helpers against diffusers' converter and CompVis' attention -----------------------------------


def test_renaming_helpers_agree_with_diffusers_converter():
    unet, _ = cross_attention_unet()
    state = {f"model.diffusion_model.{k}": v for k, v in compvis_unet_state(unet).items()}
    converted = convert_ldm_unet_checkpoint(state, dict(unet.config))
    expected = unet.state_dict()
    assert sorted(converted) == sorted(expected)
    assert all(torch.equal(converted[key].reshape(expected[key].shape), expected[key]) for key in expected)
    # diffusers' converter knows attention only in the middle block (the SD autoencoders)
    vae = randomize(diffusers.AutoencoderKL(latent_channels=4, **AUTOENCODER))
    converted = convert_ldm_vae_checkpoint(compvis_autoencoder_state(vae), dict(vae.config))
    expected = vae.state_dict()
    assert sorted(converted) == sorted(expected)
    assert all(torch.equal(converted[key].reshape(expected[key].shape), expected[key]) for key in expected)


def compvis_attention_block(x, norm, qkv, proj_out, heads):
    """CompVis `AttentionBlock` with `QKVAttentionLegacy` (openaimodel.py), in torch."""
    batch, channels = x.shape[:2]
    flat = x.reshape(batch, channels, -1)
    h = torch.nn.functional.group_norm(flat, 32, *norm, eps=1e-5)
    qkv_out = torch.nn.functional.conv1d(h, *qkv)
    ch = qkv_out.shape[1] // (3 * heads)
    q, k, v = qkv_out.reshape(batch * heads, ch * 3, -1).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    attended = torch.einsum("bts,bcs->bct", weight, v).reshape(batch, -1, flat.shape[-1])
    return (flat + torch.nn.functional.conv1d(attended, *proj_out)).reshape(x.shape)


def test_fused_qkv_helper_matches_compvis_attention():
    unet, _ = super_resolution_unet()
    attention = unet.mid_block.attentions[0]
    assert attention.heads == 4
    state = compvis_unet_state(unet)
    x = torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        expected = attention(x)
        ours = compvis_attention_block(
            x,
            (state["middle_block.1.norm.weight"], state["middle_block.1.norm.bias"]),
            (state["middle_block.1.qkv.weight"], state["middle_block.1.qkv.bias"]),
            (state["middle_block.1.proj_out.weight"], state["middle_block.1.proj_out.bias"]),
            heads=4,
        )
    assert torch.max(torch.abs(ours - expected)) < 1e-5


# -- loading -----------------------------------------------------------------------------------------


def test_inpainting_checkpoint_matches_diffusers(tmp_path):
    unet, vae, (ckpt, config) = inpainting_checkpoint(tmp_path, cond_stage_key="masked_image", loss_type="l1")
    model = LatentDiffusion.from_preset(ckpt, config=config)  # the user-facing door
    assert model.concat == "masks" and model.cross_attention is None
    assert model.signed_masks  # conditioned as scripts/inpaint.py does
    assert isinstance(model.first_stage, VQAutoencoder) and not model.first_stage.encoder.mid_attention
    assert model.loss_type == "l1" and float(to_numpy(model.scale_factor)) == 1.0
    schedule = model.schedule.get_config()
    assert (schedule["beta_schedule"], schedule["linear_start"], schedule["linear_end"]) == (
        "linear",
        0.0015,
        0.0205,
    )
    check_unet(model, unet)
    check_first_stage(model, vae)


def test_super_resolution_checkpoint_matches_diffusers(tmp_path):
    unet, unet_params = super_resolution_unet()
    vae, first_stage = kl_with_attention()
    paths = write_checkpoint(
        tmp_path,
        unet,
        unet_params,
        vae,
        first_stage,
        {"target": "torch.nn.Identity"},
        scale_factor=0.5,
        beta_schedule="sqrt_linear",
        conditioning_key="concat",
    )
    model = from_compvis_checkpoint(*paths)
    assert model.concat == "low_res" and isinstance(model.first_stage, AutoencoderKL)
    assert float(to_numpy(model.scale_factor)) == 0.5 and model.schedule.beta_schedule == "sqrt_linear"
    check_unet(model, unet)
    check_first_stage(model, vae)


def test_text_checkpoint_matches_diffusers(tmp_path):
    unet, unet_params = cross_attention_unet()
    vae, first_stage = kl_with_attention()
    bert, cond_stage = tiny_bert()
    state = {f"cond_stage_model.{k}": v for k, v in compvis_bert_state(bert).items()}
    paths = write_checkpoint(
        tmp_path,
        unet,
        unet_params,
        vae,
        first_stage,
        cond_stage,
        state,
        conditioning_key="crossattn",
        scale_factor=0.18215,
    )
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(VOCABULARY) + "\n")
    model = from_compvis_checkpoint(*paths, tokenizer=str(vocab))
    assert model.cross_attention == "text"
    token_ids = to_numpy(model.tokenizer(["a red circle", "blue"]))
    with torch.no_grad():
        expected = bert(torch.from_numpy(token_ids.astype("int64"))).last_hidden_state.numpy()
    context = to_numpy(model.text_encoder(token_ids))
    assert_close(context, expected)
    check_unet(model, unet, context=expected)
    check_first_stage(model, vae)
    with pytest.raises(ValueError, match=r"BERT vocabulary is not in it: pass tokenizer="):
        from_compvis_checkpoint(*paths)


def test_class_checkpoint_has_the_null_class(tmp_path):
    unet, unet_params = cross_attention_unet(context_dim=8)
    vae, first_stage = vq_without_attention()
    unet_params = dict(unet_params, in_channels=3, out_channels=3)
    unet = randomize(
        diffusers.UNet2DConditionModel.from_config(dict(unet.config, in_channels=3, out_channels=3))
    )
    table = torch.randn(1001, 8)
    cond_stage = {
        "target": "ldm.modules.encoders.modules.ClassEmbedder",
        "params": {"embed_dim": 8, "n_classes": 1001},
    }
    paths = write_checkpoint(
        tmp_path,
        unet,
        unet_params,
        vae,
        first_stage,
        cond_stage,
        {"cond_stage_model.embedding.weight": table},
        conditioning_key="crossattn",
    )
    model = from_compvis_checkpoint(*paths)
    assert model.cross_attention == "class" and model.class_embedder.null_label == 1000
    np.testing.assert_array_equal(
        to_numpy(model.class_embedder(np.array([0, 1000])))[:, 0], table[[0, 1000]].numpy()
    )


def test_ema_weights_are_used_when_asked(tmp_path):
    unet, unet_params = inpainting_unet()
    vae, first_stage = vq_without_attention()
    torch.manual_seed(5)
    averaged = diffusers.UNet2DModel.from_config(unet.config).eval()
    ema = {
        "model_ema." + ("diffusion_model." + k).replace(".", ""): v
        for k, v in compvis_unet_state(averaged).items()
    }
    ema["model_ema.num_updates"] = torch.tensor(10)
    paths = write_checkpoint(tmp_path, unet, unet_params, vae, first_stage, "__is_first_stage__", ema)
    check_unet(from_compvis_checkpoint(*paths), averaged)
    check_unet(from_compvis_checkpoint(*paths, use_ema=False), unet)


def test_unconditional_checkpoint_with_new_attention_order(tmp_path):
    unet, unet_params = super_resolution_unet()
    unet = randomize(diffusers.UNet2DModel.from_config(dict(unet.config, in_channels=3, out_channels=3)))
    unet_params = dict(unet_params, in_channels=3, out_channels=3, use_new_attention_order=True)
    vae, first_stage = vq_without_attention()
    ckpt, config = write_checkpoint(tmp_path, unet, unet_params, vae, first_stage, "__is_unconditional__")
    state = torch.load(ckpt, weights_only=True)
    renamed = compvis_unet_state(unet, new_order=True)  # qkv stacked as [q, k, v]
    state["state_dict"].update({f"model.diffusion_model.{k}": v for k, v in renamed.items()})
    torch.save(state, ckpt)
    model = from_compvis_checkpoint(ckpt, config)
    assert model.cross_attention is None and model.concat is None
    check_unet(model, unet)


# -- files and errors ----------------------------------------------------------------------------------


class TrainingState:
    """Stands for the Lightning objects (callbacks, hparams) that real `.ckpt` files pickle."""


def test_pickled_objects_need_weights_only_false(tmp_path):
    unet, _, (ckpt, config) = inpainting_checkpoint(tmp_path)
    checkpoint = torch.load(ckpt, weights_only=True)
    torch.save(dict(checkpoint, callbacks=TrainingState()), ckpt)
    with pytest.raises(ValueError, match=r"holds Python objects besides tensors.*weights_only=False"):
        from_compvis_checkpoint(ckpt, config)
    check_unet(from_compvis_checkpoint(ckpt, config, weights_only=False), unet)


NO_TORCH_SCRIPT = """
import sys
sys.modules["torch"] = None  # any `import torch` now fails
import keras_ldm.convert.pipelines
from keras_ldm.convert.compvis import from_compvis_checkpoint
model = from_compvis_checkpoint(sys.argv[1], sys.argv[2])
print(model.concat)
try:
    from_compvis_checkpoint(sys.argv[3], sys.argv[2])
except ImportError as error:
    print(error)
"""


def test_safetensors_checkpoints_load_without_pytorch(tmp_path):
    from safetensors.torch import save_file

    _, _, (ckpt, config) = inpainting_checkpoint(tmp_path)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH_SCRIPT, str(tmp_path / "model.safetensors"), config, ckpt],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    assert "masks" in result.stdout and "needs PyTorch: `pip install torch`" in result.stdout


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(conditioning_key="hybrid"), r"conditioning_key='hybrid'; keras_ldm supports"),
        (
            dict(cond_stage_config={"target": "torch.nn.Identity"}),
            r"Concat conditioning with .*torch.nn.Identity",
        ),
        (
            dict(first_stage_attn_type="linear"),
            r"attn_type='linear'; keras_ldm supports \['vanilla', 'none'\]",
        ),
        (dict(unet_num_classes="sequential"), r"num_classes='sequential'; keras_ldm supports an int"),
    ],
)
def test_unsupported_configs_are_named(tmp_path, change, message):
    unet, unet_params = inpainting_unet()
    vae, first_stage = vq_without_attention()
    change = dict(change)
    if "first_stage_attn_type" in change:
        first_stage["params"]["ddconfig"]["attn_type"] = change.pop("first_stage_attn_type")
    if "unet_num_classes" in change:
        unet_params["num_classes"] = change.pop("unet_num_classes")
    cond_stage = change.pop("cond_stage_config", "__is_first_stage__")
    paths = write_checkpoint(tmp_path, unet, unet_params, vae, first_stage, cond_stage, **change)
    with pytest.raises(ValueError, match=message):
        from_compvis_checkpoint(*paths)


def test_a_config_that_is_not_a_latent_diffusion_model(tmp_path):
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"model": {"target": "ldm.models.autoencoder.VQModel"}})
    )
    (tmp_path / "model.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"model.target='ldm.models.autoencoder.VQModel'; expected"):
        from_compvis_checkpoint(str(tmp_path / "model.ckpt"), str(tmp_path / "config.yaml"))


def test_reading_a_ckpt_without_pytorch_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "config.yaml").write_text(
        "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n"
        "    unet_config: {}\n    first_stage_config: {}\n"
    )
    (tmp_path / "model.ckpt").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"needs PyTorch: `pip install torch`"):
        from_compvis_checkpoint(str(tmp_path / "model.ckpt"), str(tmp_path / "config.yaml"))


def test_semantic_synthesis_checkpoint_matches_diffusers_and_torch_rescaler(tmp_path):
    """semantic_synthesis256's shape: a SpatialRescaler of one-hot maps concatenated to VQ-f4 latents."""
    unet = randomize(unet_2d(in_channels=6, out_channels=3))
    unet_params = dict(UNET_PARAMS, in_channels=6, out_channels=3, num_head_channels=16)
    vae, first_stage = vq_without_attention()
    torch.manual_seed(4)
    mapper = torch.nn.Conv2d(5, 3, 1, bias=False)
    cond_stage = {"target": "ldm.modules.encoders.modules.SpatialRescaler",
                  "params": {"n_stages": 2, "in_channels": 5, "out_channels": 3}}  # fmt: skip
    state = {"cond_stage_model.channel_mapper.weight": mapper.weight.detach()}
    paths = write_checkpoint(
        tmp_path, unet, unet_params, vae, first_stage, cond_stage, state, concat_mode=True, loss_type="l1"
    )
    model = from_compvis_checkpoint(*paths)
    assert model.concat == "segmentation" and model.spatial_encoder.num_classes == 5
    maps = np.random.default_rng(0).integers(0, 5, (2, 16, 16))
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(maps), 5).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        for _ in range(2):
            one_hot = torch.nn.functional.interpolate(one_hot, scale_factor=0.5, mode="bilinear")
        expected = mapper(one_hot)
    assert_close(model.spatial_encoder(maps), nchw_to_nhwc(expected))
    check_unet(model, unet)
    check_first_stage(model, vae)


def test_layout_checkpoint_loads_the_layout_encoder(tmp_path):
    """layout2img-openimages256's shape: BERTEmbedder(use_tokenizer=False) over layout tokens, crossattn."""
    from keras_ldm.models.layout_tokenizer import LayoutTokenizer
    from tests.models.compvis_layout_reference import BERTEmbedder

    unet, unet_params = cross_attention_unet(context_dim=16)
    vae, first_stage = kl_with_attention()
    torch.manual_seed(5)
    encoder = BERTEmbedder(n_embed=16, n_layer=1, vocab_size=8192, max_seq_len=92).eval()
    state = {f"cond_stage_model.{k}": v for k, v in encoder.state_dict().items()}
    cond_stage = {"target": "ldm.modules.encoders.modules.BERTEmbedder",
                  "params": {"n_embed": 16, "n_layer": 1, "vocab_size": 8192, "max_seq_len": 92,
                             "use_tokenizer": False}}  # fmt: skip
    paths = write_checkpoint(
        tmp_path, unet, unet_params, vae, first_stage, cond_stage, state, conditioning_key="crossattn"
    )
    model = from_compvis_checkpoint(*paths)
    assert model.cross_attention == "layout" and model.tokenizer.get_config() == dict(
        num_classes=601, max_objects=30, num_tokens=8192, encode_crop=True
    )
    tokens = model.layout_token_ids({"boxes": [[[0.1, 0.2, 0.5, 0.9]], []], "box_labels": [[600], []]})
    with torch.no_grad():
        expected = encoder(torch.from_numpy(tokens.astype("int64"))).numpy()
    assert_close(model.text_encoder(tokens), expected)
    check_unet(model, unet, context=expected)
    mine = LayoutTokenizer(num_classes=7)
    assert from_compvis_checkpoint(*paths, tokenizer=mine).tokenizer is mine
    with pytest.raises(ValueError, match="LayoutTokenizer of at most 92 tokens"):
        from_compvis_checkpoint(*paths, tokenizer="vocab.txt")
