"""Architecture presets of the released CompVis models: names, metadata, structure and parameter counts.

The parameter counts are checked twice: ours (built inside a `StatelessScope`, nothing allocated) against
the table below, and the table against diffusers models built on PyTorch's meta device from the diffusers
translation of each CompVis YAML config (`test_reference_counts_match_diffusers_on_meta_device`).
"""

import dataclasses

import keras
import numpy as np
import pytest

from keras_ldm.models import AutoencoderKL, LatentDiffusion, VQAutoencoder
from keras_ldm.presets.architectures import ARCHITECTURES, FIRST_STAGES, UNETS, Architecture, architecture

LATENT_DIFFUSION = [
    "ldm_text2im_large_256",
    "ldm_super_resolution_4x",
    "ldm_inpainting_big",
    "ldm_celebahq_256",
    "ldm_ffhq_256",
    "ldm_lsun_churches_256",
    "ldm_lsun_bedrooms_256",
    "ldm_cin256_v2",
    "ldm_semantic_synthesis_256",
    "ldm_semantic_synthesis_512",
    "ldm_layout2img_openimages_256",
]
AUTOENCODERS = ["kl_f4", "kl_f8", "kl_f16", "kl_f32", "vq_f4", "vq_f8", "vq_f16"]

# Reference parameter counts (all equal to the diffusers models of `_diffusers_counts`).
UNET_PARAMS = {
    "text2im_large_256": 872_300_484,
    "super_resolution_4x": 113_622_563,
    "inpainting_big": 387_245_827,
    "faces_256": 274_056_163,
    "lsun_churches_256": 294_966_916,
    # also printed by CompVis' scripts/latent_imagenet_diffusion.ipynb: "DiffusionWrapper has 400.92 M params."
    "cin256_v2": 400_920_579,
    "semantic_synthesis": 215_229_315,
    "layout2img_openimages_256": 246_277_379,
}
FIRST_STAGE_PARAMS = {
    "kl_f4": 55_312_063,
    "kl_f8": 83_653_863,
    "kl_f16": 69_610_963,
    "kl_f32": 103_880_131,
    "vq_f4": 55_322_782,
    "vq_f4_noattn": 53_219_486,
    "vq_f8": 67_717_295,
    "vq_f16": 69_593_371,
}
LDM_BERT_PARAMS = 542_895_360  # diffusers LDMBertModel(LDMBertConfig()).model, as in tests/models
CIN_CLASS_EMBEDDER_PARAMS = 1001 * 512  # CompVis ClassEmbedder(n_classes=1001, embed_dim=512)
SEMANTIC_RESCALER_PARAMS = 182 * 3  # CompVis SpatialRescaler's 1x1 Conv2d(182, 3, bias=False)
# CompVis BERTEmbedder(n_embed=512, n_layer=16, vocab_size=8192, max_seq_len=92) without its unused logits
# head: 8192 x 512 tokens + 92 x 512 positions + 16 x (LN, 3 x 512 x 512 q/k/v, out 512 x 512 + 512, LN,
# FF 512 -> 2048 -> 512 with biases) + the final LN (also checked against CompVis' code in
# tests/models/test_layout.py)
LAYOUT_ENCODER_PARAMS = 8192 * 512 + 92 * 512 + 16 * (4 * 512 + 4 * 512 * 512 + 512 + 2 * 512 * 2048 + 2048 + 512) + 2 * 512

# preset -> (unet, first stage, conditioning parameters) and the CompVis linear_start / linear_end.
LDM_PARTS = {
    "ldm_text2im_large_256": ("text2im_large_256", "kl_f8", LDM_BERT_PARAMS, (0.00085, 0.012)),
    "ldm_super_resolution_4x": ("super_resolution_4x", "vq_f4", 0, (0.0015, 0.0155)),
    "ldm_inpainting_big": ("inpainting_big", "vq_f4_noattn", 0, (0.0015, 0.0205)),
    "ldm_celebahq_256": ("faces_256", "vq_f4", 0, (0.0015, 0.0195)),
    "ldm_ffhq_256": ("faces_256", "vq_f4", 0, (0.0015, 0.0195)),
    "ldm_lsun_churches_256": ("lsun_churches_256", "kl_f8", 0, (0.0015, 0.0155)),
    "ldm_lsun_bedrooms_256": ("faces_256", "vq_f4", 0, (0.0015, 0.0195)),
    "ldm_cin256_v2": ("cin256_v2", "vq_f4", CIN_CLASS_EMBEDDER_PARAMS, (0.0015, 0.0195)),
    "ldm_semantic_synthesis_256": ("semantic_synthesis", "vq_f4", SEMANTIC_RESCALER_PARAMS, (0.0015, 0.0205)),
    "ldm_semantic_synthesis_512": ("semantic_synthesis", "vq_f4", SEMANTIC_RESCALER_PARAMS, (0.0015, 0.0205)),
    "ldm_layout2img_openimages_256": ("layout2img_openimages_256", "vq_f4", LAYOUT_ENCODER_PARAMS, (0.0015, 0.0205)),
}


def build_stateless(name):
    """The preset's model with its variables never allocated (counts and attributes only)."""
    with keras.StatelessScope(initialize_variables=False):
        return architecture(name).build()


# -- names and metadata ---------------------------------------------------------------------------


def test_registry_has_exactly_the_released_models():
    assert list(ARCHITECTURES) == LATENT_DIFFUSION + AUTOENCODERS
    for name, arch in ARCHITECTURES.items():
        assert arch.name == name and architecture(name) is arch
        assert arch.kind == ("autoencoder" if name in AUTOENCODERS else "latent_diffusion")
        assert arch.description and arch.how_to_load and callable(arch.build)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown architecture preset 'ldm_nope'.*'kl_f8'.*'ldm_cin256_v2'"):
        architecture("ldm_nope")


def test_architecture_is_frozen_and_validated():
    arch = architecture("kl_f8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.name = "other"
    with pytest.raises(ValueError, match=r"kind='unet'; expected one of"):
        Architecture("x", "unet", "d", lambda: None, {"hf": "a/b"}, "load it")
    with pytest.raises(
        ValueError, match=r"needs weights with 'hf' or with 'url' and 'config'; got \['url'\]"
    ):
        Architecture("x", "autoencoder", "d", lambda: None, {"url": "https://x"}, "load it")


@pytest.mark.parametrize(
    "name, hub_repo",
    [
        ("ldm_text2im_large_256", "CompVis/ldm-text2im-large-256"),
        ("ldm_super_resolution_4x", "CompVis/ldm-super-resolution-4x-openimages"),
        ("ldm_celebahq_256", "CompVis/ldm-celebahq-256"),
    ],
)
def test_diffusers_hosted_presets_name_their_hub_repository(name, hub_repo):
    arch = architecture(name)
    assert arch.weights["hf"] == hub_repo
    assert (
        f"hf://{hub_repo}" in arch.how_to_load and f"huggingface-cli download {hub_repo}" in arch.how_to_load
    )


@pytest.mark.parametrize(
    "name, url, config",
    [
        ("ldm_inpainting_big", "inpainting_big.zip", "models/ldm/inpainting_big/config.yaml"),
        ("ldm_ffhq_256", "ffhq.zip", "models/ldm/ffhq256/config.yaml"),
        ("ldm_lsun_churches_256", "lsun_churches.zip", "models/ldm/lsun_churches256/config.yaml"),
        ("ldm_lsun_bedrooms_256", "lsun_bedrooms.zip", "models/ldm/lsun_beds256/config.yaml"),
        ("ldm_cin256_v2", "nitro/cin/model.ckpt", "configs/latent-diffusion/cin256-v2.yaml"),
        ("ldm_semantic_synthesis_256", "semantic_synthesis256.zip", "models/ldm/semantic_synthesis256/config.yaml"),
        ("ldm_semantic_synthesis_512", "semantic_synthesis.zip", "models/ldm/semantic_synthesis512/config.yaml"),
        ("ldm_layout2img_openimages_256", "layout2img_model.zip", "models/ldm/layout2img-openimages256/config.yaml"),
        ("kl_f4", "kl-f4.zip", "models/first_stage_models/kl-f4/config.yaml"),
        ("kl_f32", "kl-f32.zip", "models/first_stage_models/kl-f32/config.yaml"),
        ("vq_f16", "vq-f16.zip", "models/first_stage_models/vq-f16/config.yaml"),
    ],
)
def test_compvis_hosted_presets_name_download_and_config(name, url, config):
    arch = architecture(name)
    assert "hf" not in arch.weights
    assert arch.weights == {"url": "https://ommer-lab.com/files/latent-diffusion/" + url, "config": config}
    assert arch.weights["url"] in arch.how_to_load and config in arch.how_to_load
    cls = {"kl": "AutoencoderKL", "vq": "VQAutoencoder"}.get(name[:2], "LatentDiffusion")
    assert f"{cls}.from_preset(" in arch.how_to_load


# -- parameter counts -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", LATENT_DIFFUSION)
def test_latent_diffusion_parameter_counts(name):
    unet, first_stage, conditioning, _ = LDM_PARTS[name]
    model = build_stateless(name)
    assert isinstance(model, LatentDiffusion)
    assert model.unet.count_params() == UNET_PARAMS[unet]
    assert model.first_stage.count_params() == FIRST_STAGE_PARAMS[first_stage]
    conditioner = model.text_encoder or model.class_embedder or model.spatial_encoder
    assert (conditioner.count_params() if conditioner is not None else 0) == conditioning
    networks = UNET_PARAMS[unet] + FIRST_STAGE_PARAMS[first_stage] + conditioning
    # besides the networks: the scalars scale_factor, scale_factor_ready and the seed generator's state
    assert 0 <= model.count_params() - networks <= 4


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_autoencoder_parameter_counts_and_factor(name):
    model = build_stateless(name)
    assert isinstance(model, VQAutoencoder if name.startswith("vq") else AutoencoderKL)
    assert model.count_params() == FIRST_STAGE_PARAMS[name]
    assert model.downsample_factor == int(name.split("_f")[1])


def test_table_covers_every_network():
    assert set(UNET_PARAMS) == set(UNETS) and set(FIRST_STAGE_PARAMS) == set(FIRST_STAGES)


def _diffusers_counts():
    """Parameter counts of diffusers models on the meta device (nothing allocated), one per CompVis config."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel

    def count(module):
        return sum(p.numel() for p in module.parameters())

    down, attn_down, up, attn_up = "DownBlock2D", "AttnDownBlock2D", "UpBlock2D", "AttnUpBlock2D"
    res_down, res_up = "ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D"  # CompVis resblock_updown

    def unet2d(blocks, down_types, up_types, **kwargs):
        return count(
            diffusers.UNet2DModel(
                block_out_channels=blocks, down_block_types=down_types, up_block_types=up_types, **kwargs
            )
        )

    def cross_attention_unet(blocks, down_types, up_types, **kwargs):
        return count(
            diffusers.UNet2DConditionModel(
                block_out_channels=blocks, down_block_types=down_types, up_block_types=up_types, **kwargs
            )
        )

    def autoencoder(cls, blocks, attention_levels, latent_channels, **kwargs):
        levels = range(len(blocks))
        down_types = tuple(
            "AttnDownEncoderBlock2D" if i in attention_levels else "DownEncoderBlock2D" for i in levels
        )
        up_types = tuple(
            "AttnUpDecoderBlock2D" if i in attention_levels else "UpDecoderBlock2D" for i in reversed(levels)
        )
        return count(
            cls(
                block_out_channels=blocks,
                down_block_types=down_types,
                up_block_types=up_types,
                layers_per_block=2,
                latent_channels=latent_channels,
                **kwargs,
            )
        )

    with torch.device("meta"):
        unets = {
            "text2im_large_256": cross_attention_unet(
                (320, 640, 1280, 1280),
                ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                in_channels=4,
                out_channels=4,
                cross_attention_dim=1280,
                attention_head_dim=8,
            ),
            "super_resolution_4x": unet2d(
                (160, 320, 320, 640),
                (down, down, down, attn_down),
                (attn_up, up, up, up),
                in_channels=6,
                out_channels=3,
                attention_head_dim=32,
            ),
            "inpainting_big": unet2d(
                (256, 512, 768, 1024),
                (res_down, attn_down, attn_down, attn_down),
                (attn_up, attn_up, attn_up, res_up),
                in_channels=7,
                out_channels=3,
                attention_head_dim=32,
                downsample_type="resnet",
                upsample_type="resnet",
            ),
            "faces_256": unet2d(
                (224, 448, 672, 896),
                (down, attn_down, attn_down, attn_down),
                (attn_up, attn_up, attn_up, up),
                in_channels=3,
                out_channels=3,
                attention_head_dim=32,
            ),
            # attn_norm_num_groups: diffusers drops the mid attention's GroupNorm with scale_shift otherwise
            "lsun_churches_256": unet2d(
                (192, 384, 384, 768, 768),
                (attn_down, attn_down, attn_down, attn_down, res_down),
                (res_up, attn_up, attn_up, attn_up, attn_up),
                in_channels=4,
                out_channels=4,
                attention_head_dim=24,
                downsample_type="resnet",
                upsample_type="resnet",
                resnet_time_scale_shift="scale_shift",
                attn_norm_num_groups=32,
            ),
            # CompVis' semantic UNet: attention only in the middle block
            "semantic_synthesis": unet2d(
                (128, 512, 1024), (down,) * 3, (up,) * 3, in_channels=6, out_channels=3, attention_head_dim=128
            ),
            "layout2img_openimages_256": cross_attention_unet(
                (128, 256, 384, 512),
                ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
                ("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",),
                in_channels=3,
                out_channels=3,
                cross_attention_dim=512,
                transformer_layers_per_block=3,
                attention_head_dim=(4, 8, 12, 16),  # 32-channel heads
            ),
            "cin256_v2": cross_attention_unet(
                (192, 384, 576, 960),
                ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
                ("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",),
                in_channels=3,
                out_channels=3,
                cross_attention_dim=512,
                attention_head_dim=1,
            ),
        }
        kl, vq = diffusers.AutoencoderKL, diffusers.VQModel
        first_stages = {
            "kl_f4": autoencoder(kl, (128, 256, 512), (), 3),
            "kl_f8": autoencoder(kl, (128, 256, 512, 512), (), 4),
            "kl_f16": autoencoder(kl, (128, 128, 256, 256, 512), (4,), 16),
            "kl_f32": autoencoder(kl, (128, 128, 256, 256, 512, 512), (4, 5), 64),
            "vq_f4": autoencoder(vq, (128, 256, 512), (), 3, num_vq_embeddings=8192),
            "vq_f4_noattn": autoencoder(
                vq, (128, 256, 512), (), 3, num_vq_embeddings=8192, mid_block_add_attention=False
            ),
            "vq_f8": autoencoder(vq, (128, 256, 256, 512), (3,), 4, num_vq_embeddings=16384),
            "vq_f16": autoencoder(vq, (128, 128, 256, 256, 512), (4,), 8, num_vq_embeddings=16384),
        }
        ldm_bert = count(LDMBertModel(LDMBertConfig()).model)
    return unets, first_stages, ldm_bert


def test_reference_counts_match_diffusers_on_meta_device():
    unets, first_stages, ldm_bert = _diffusers_counts()
    assert unets == UNET_PARAMS
    assert first_stages == FIRST_STAGE_PARAMS
    assert ldm_bert == LDM_BERT_PARAMS
    assert round(UNET_PARAMS["cin256_v2"] / 1e6, 2) == 400.92  # CompVis' own printout for cin256-v2


# -- structure the counts do not show ---------------------------------------------------------------


@pytest.mark.parametrize("name", LATENT_DIFFUSION)
def test_schedules_follow_the_compvis_configs(name):
    linear_start, linear_end = LDM_PARTS[name][3]
    schedule = build_stateless(name).schedule
    assert (schedule.beta_schedule, schedule.num_timesteps) == ("linear", 1000)
    np.testing.assert_allclose([schedule.betas[0], schedule.betas[-1]], [linear_start, linear_end], rtol=1e-6)


def test_conditioning_of_each_model():
    text = build_stateless("ldm_text2im_large_256")
    assert (text.cross_attention, text.concat, text.tokenizer) == ("text", None, None)
    assert len(text.text_encoder.transformer_layers) == 32 and text.text_encoder.d_model == 1280
    assert text.unet.context_dim == 1280

    classes = build_stateless("ldm_cin256_v2")
    assert classes.cross_attention == "class" and classes.class_embedder.null_label == 1000
    assert classes.unet.context_dim == 512 and classes.unet.num_classes is None

    sr = build_stateless("ldm_super_resolution_4x")
    assert (sr.cross_attention, sr.concat, sr.unet.in_channels, sr.loss_type) == (None, "low_res", 6, "l2")

    inpainting = build_stateless("ldm_inpainting_big")
    assert (inpainting.concat, inpainting.unet.in_channels, inpainting.loss_type) == ("masks", 7, "l1")
    assert inpainting.signed_masks  # scripts/inpaint.py: the hole at -1, the mask channel in ±1
    # attn_type: none: no attention anywhere in the first stage, middle blocks included
    assert inpainting.first_stage.architecture["mid_attention"] is False
    assert inpainting.first_stage.architecture["attn_resolutions"] == []

    for name in ("ldm_celebahq_256", "ldm_ffhq_256", "ldm_lsun_bedrooms_256", "ldm_lsun_churches_256"):
        model = build_stateless(name)
        assert (model.cross_attention, model.concat, model.unet.context_dim) == (None, None, None)
    for name in ("ldm_semantic_synthesis_256", "ldm_semantic_synthesis_512"):
        semantic = build_stateless(name)
        assert (semantic.concat, semantic.unet.in_channels, semantic.loss_type) == ("segmentation", 6, "l1")
        assert semantic.spatial_encoder.num_classes == 182 and semantic.spatial_encoder.n_stages == 2
        assert semantic.first_stage.architecture["mid_attention"] is True
    layout = build_stateless("ldm_layout2img_openimages_256")
    assert (layout.cross_attention, layout.unet.context_dim, layout.loss_type) == ("layout", 512, "l1")
    assert layout.tokenizer.sequence_length == 92 and layout.tokenizer.num_classes == 601
    assert layout.unet.architecture["transformer_depth"] == 3
    churches = build_stateless("ldm_lsun_churches_256")
    assert churches.scale_by_std and churches.loss_type == "l1"
    assert (
        churches.unet.architecture["use_scale_shift_norm"] and churches.unet.architecture["resblock_updown"]
    )


def test_generation_defaults_follow_compvis_sampling_settings():
    expected = {
        "ldm_text2im_large_256": {"num_steps": 50, "guidance_scale": 5.0, "eta": 0.0},
        "ldm_cin256_v2": {"num_steps": 20, "guidance_scale": 3.0, "eta": 0.0},
        "ldm_celebahq_256": {"num_steps": 200, "eta": 0.0},
        "ldm_ffhq_256": {"num_steps": 200, "eta": 1.0},
        "ldm_lsun_churches_256": {"num_steps": 400, "eta": 0.0},
        "ldm_lsun_bedrooms_256": {"num_steps": 200, "eta": 1.0},
        "ldm_layout2img_openimages_256": {"num_steps": 200, "eta": 0.0},
    }
    for name, defaults in expected.items():
        model = build_stateless(name)
        assert model.generation_defaults["sampler"] == "ddim"
        assert {key: model.generation_defaults[key] for key in defaults} == defaults
