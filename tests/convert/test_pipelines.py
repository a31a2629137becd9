"""Whole diffusers LDM pipelines: tiny random pipelines saved with `save_pretrained`, loaded with
`from_diffusers_pipeline`, sampled with the same starting noise by diffusers and by `generate()`.

Images must agree within 1e-3 in [0, 1] units (floats from the loaded parts) and within one grey
level as the uint8 images `generate()` returns, on every backend.
"""

import json
import shutil
import warnings

import diffusers
import numpy as np
import pytest
import torch
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
from transformers import BertTokenizer

from keras_ldm.convert.pipelines import (
    from_diffusers_pipeline,
    is_diffusers_pipeline,
    pipeline_generation_defaults,
    sampler_differences,
    schedule_from_scheduler_config,
)
from keras_ldm.diffusion.guidance import classifier_free_guidance
from keras_ldm.diffusion.loop import make_sampling_fn
from keras_ldm.models import AutoencoderKL, LatentDiffusion, VQAutoencoder
from tests.conftest import nchw_to_nhwc, to_numpy
from tests.convert.diffusers_references import (
    AUTOENCODER,
    assert_close,
    cross_attention_unet,
    randomize_norms,
    unet_2d,
    vq_model,
)

TOLERANCE = 1e-3  # in [0, 1] image units
VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square", "on"]
PROMPTS = ["a red circle", "a blue square on a red circle"]
COMPVIS_DDIM = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


def randomize(module, scale=1.0):
    """Norms away from (1, 0), strong timestep embeddings and, with `scale`, larger weights, so that a
    mis-mapped tensor or another timestep discretisation shows."""
    randomize_norms(module)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "norm" in name:
                continue
            if "time_emb" in name:  # make the UNet sensitive to which timesteps are visited
                param.mul_(3.0)
            elif scale != 1.0:
                param.mul_(scale)
    return module


def text_to_image_pipeline(folder):
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(VOCABULARY) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    bert = LDMBertModel(
        LDMBertConfig(
            vocab_size=len(VOCABULARY),
            max_position_embeddings=77,
            encoder_layers=1,
            encoder_ffn_dim=32,
            encoder_attention_heads=2,
            head_dim=8,
            d_model=16,
        )
    )
    unet = cross_attention_unet(cross_attention_dim=16, attention_head_dim=4)
    vae = diffusers.AutoencoderKL(latent_channels=4, scaling_factor=0.5, **AUTOENCODER)
    return diffusers.LDMTextToImagePipeline(
        vqvae=randomize(vae),
        bert=randomize(bert, scale=25.0),  # std 0.5 weights: prompts give clearly different contexts
        tokenizer=BertTokenizer(str(vocab)),
        unet=randomize(unet),
        scheduler=diffusers.DDIMScheduler(**COMPVIS_DDIM),
    )


def super_resolution_pipeline():
    torch.manual_seed(0)
    unet = unet_2d(in_channels=6, out_channels=3)
    scheduler = diffusers.DDIMScheduler(**dict(COMPVIS_DDIM, beta_start=0.0015, beta_end=0.0155))
    return diffusers.LDMSuperResolutionPipeline(
        vqvae=randomize(vq_model()), unet=randomize(unet), scheduler=scheduler
    )


def unconditional_pipeline():
    torch.manual_seed(0)
    unet = unet_2d(in_channels=3, out_channels=3)
    vqvae = vq_model(scaling_factor=1.0)
    scheduler = diffusers.DDIMScheduler(**dict(COMPVIS_DDIM, beta_schedule="linear"))
    return diffusers.LDMPipeline(vqvae=randomize(vqvae), unet=randomize(unet), scheduler=scheduler)


@pytest.fixture(scope="module")
def text_to_image(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ldm_text2im")
    pipeline = text_to_image_pipeline(folder)
    pipeline.save_pretrained(folder / "pipeline")
    return pipeline, folder / "pipeline"


@pytest.fixture(scope="module")
def super_resolution(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ldm_sr") / "pipeline"
    pipeline = super_resolution_pipeline()
    pipeline.save_pretrained(folder)
    return pipeline, folder


def assert_uint8_close(ours, theirs):
    """`generate()`'s uint8 against diffusers' [0, 1] floats: at most one grey level apart."""
    expected = np.round(np.asarray(theirs) * 255.0)
    assert ours.dtype == np.uint8 and ours.shape == expected.shape
    difference = np.abs(ours.astype("float32") - expected)
    assert difference.max() <= 1 and difference.mean() < 0.05


def assert_images_close(ours, theirs):
    assert_close(ours, theirs, tolerance=TOLERANCE)
    assert 0.02 < np.asarray(theirs).std()  # not a flat (e.g. fully clipped) image


def unit_range(images):
    return np.clip(to_numpy(images) / 2.0 + 0.5, 0.0, 1.0)


def guided_ddim(model, context, unconditional, latents, num_steps, guidance_scale):
    """Float images from the loaded parts: DDIM with classifier-free guidance, then decode."""

    def build(unet, inputs):
        def conditional(x, t, context):
            return unet(x, timesteps=t, context=context)

        return classifier_free_guidance(conditional, inputs["context"], inputs["uncond"], inputs["scale"])

    sample = make_sampling_fn("ddim", model.unet, build, model.schedule, num_steps, eta=0.0)
    inputs = {"context": context, "uncond": unconditional, "scale": np.float32(guidance_scale)}
    return unit_range(model.decode_latents(sample(latents, inputs)))


# -- parity ---------------------------------------------------------------------------------------


def test_text_to_image_matches_diffusers(text_to_image):
    reference, folder = text_to_image
    model = LatentDiffusion.from_preset(str(folder))
    assert model.cross_attention == "text" and isinstance(model.first_stage, AutoencoderKL)
    assert abs(float(to_numpy(model.scale_factor)) - 0.5) < 1e-7
    torch.manual_seed(2)
    latents = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        # the pipeline sizes latents as height // 8 whatever the first stage's factor (2 here)
        expected = reference(
            PROMPTS,
            height=64,
            width=64,
            num_inference_steps=4,
            guidance_scale=3.0,
            eta=0.0,
            latents=latents,
            output_type="np",
        ).images
    context = model.text_encoder(model.tokenizer(PROMPTS))
    unconditional = model.text_encoder(model.tokenizer(["", ""]))
    ours = guided_ddim(model, context, unconditional, nchw_to_nhwc(latents), 4, 3.0)
    assert_images_close(ours, expected)
    images = model.generate(
        PROMPTS,
        num_steps=4,
        guidance_scale=3.0,
        eta=0.0,
        sampler="ddim",
        latents=nchw_to_nhwc(latents),
        height=16,
        width=16,
    )
    assert_uint8_close(images, expected)


def test_text_to_image_without_guidance_matches_diffusers(text_to_image):
    reference, folder = text_to_image
    model = from_diffusers_pipeline(folder)
    torch.manual_seed(3)
    latents = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        expected = reference(
            PROMPTS[0], height=64, width=64, num_inference_steps=3, latents=latents, output_type="np"
        ).images
    image = model.generate(PROMPTS[0], num_steps=3, latents=nchw_to_nhwc(latents), height=16, width=16)
    assert_uint8_close(image[None], expected)


def test_super_resolution_matches_diffusers(super_resolution):
    reference, folder = super_resolution
    model = LatentDiffusion.from_preset(str(folder))
    assert model.concat == "low_res" and isinstance(model.first_stage, VQAutoencoder)
    assert float(to_numpy(model.scale_factor)) == 1.0
    low_res = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype("uint8")
    image = torch.from_numpy(np.transpose(low_res, (0, 3, 1, 2)).astype("float32") / 127.5 - 1.0)
    with torch.no_grad():
        expected = reference(
            image,
            num_inference_steps=5,
            eta=0.0,
            generator=torch.Generator().manual_seed(4),
            output_type="np",
        ).images
    latents = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))  # the pipeline's noise
    sample = make_sampling_fn(
        "ddim", model.unet, lambda unet, inputs: _concat_denoiser(unet, inputs), model.schedule, 5, eta=0.0
    )
    low_res_unit = low_res.astype("float32") / 127.5 - 1.0
    ours = unit_range(model.decode_latents(sample(nchw_to_nhwc(latents), {"low_res": low_res_unit})))
    assert_images_close(ours, expected)
    defaults = pipeline_generation_defaults(folder)
    assert defaults == {"sampler": "ddim", "num_steps": 100, "eta": 0.0, "upscale": 2}
    images = model.generate({"images": low_res}, **dict(defaults, num_steps=5), latents=nchw_to_nhwc(latents))
    assert_uint8_close(images, expected)


def _concat_denoiser(unet, inputs):
    from keras import ops

    return lambda x, t: unet(ops.concatenate([x, inputs["low_res"]], axis=-1), timesteps=t)


def test_unconditional_pipeline_matches_diffusers(tmp_path):
    reference = unconditional_pipeline()
    reference.save_pretrained(tmp_path)
    model = from_diffusers_pipeline(tmp_path)
    assert model.cross_attention is None and model.concat is None
    assert model.schedule.beta_schedule == "sqrt_linear"
    with torch.no_grad():
        expected = reference(
            batch_size=1, num_inference_steps=3, generator=torch.Generator().manual_seed(5), output_type="np"
        ).images
    latents = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    defaults = pipeline_generation_defaults(tmp_path)
    assert defaults == {"sampler": "ddim", "num_steps": 50, "eta": 0.0, "height": 16, "width": 16}
    images = model.generate(**dict(defaults, num_steps=3), latents=nchw_to_nhwc(latents))
    assert_uint8_close(images, expected)


def test_unconditional_vq_latents_are_not_scaled(tmp_path):
    """diffusers' LDMPipeline divides by scaling_factor (0.18215 by default), CompVis does not for VQ."""
    pipeline = unconditional_pipeline()
    pipeline.vqvae.register_to_config(scaling_factor=0.18215)  # what VQModel() and old configs give
    pipeline.save_pretrained(tmp_path)
    assert float(to_numpy(from_diffusers_pipeline(tmp_path).scale_factor)) == 1.0
    chosen = from_diffusers_pipeline(tmp_path, scale_factor=0.18215).scale_factor
    assert abs(float(to_numpy(chosen)) - 0.18215) < 1e-7


# -- schedules and sampler settings ---------------------------------------------------------------


@pytest.mark.parametrize("beta_schedule", ["scaled_linear", "linear"])
def test_schedule_matches_the_scheduler(beta_schedule):
    reference = diffusers.DDIMScheduler(beta_start=0.0015, beta_end=0.0205, beta_schedule=beta_schedule)
    schedule, parameterization = schedule_from_scheduler_config(dict(reference.config))
    assert parameterization == "eps" and schedule.num_timesteps == 1000
    np.testing.assert_allclose(schedule.alphas_cumprod, reference.alphas_cumprod.numpy(), rtol=1e-5)


@pytest.mark.parametrize(
    "prediction_type, parameterization", [("epsilon", "eps"), ("v_prediction", "v"), ("sample", "x0")]
)
def test_prediction_type_sets_the_parameterization(prediction_type, parameterization):
    config = {"beta_schedule": "scaled_linear", "prediction_type": prediction_type}
    assert schedule_from_scheduler_config(config)[1] == parameterization


@pytest.mark.parametrize(
    "config, message",
    [
        ({"beta_schedule": "squaredcos_cap_v2"}, r"beta_schedule='squaredcos_cap_v2'; keras_ldm supports"),
        ({"trained_betas": [0.1, 0.2]}, r"trained_betas"),
        ({"prediction_type": "flow"}, r"prediction_type='flow'; expected one of"),
    ],
)
def test_unsupported_scheduler_configs_are_named(config, message):
    with pytest.raises(ValueError, match=message):
        schedule_from_scheduler_config(config)


def test_diffusers_ddim_defaults_are_reported():
    config = dict(diffusers.DDIMScheduler(beta_schedule="scaled_linear").config, _class_name="DDIMScheduler")
    (message,) = sampler_differences(config)
    for setting in ("'steps_offset': 0", "'set_alpha_to_one': True", "'clip_sample': True"):
        assert setting in message
    compvis = dict(diffusers.DDIMScheduler(**COMPVIS_DDIM).config, _class_name="DDIMScheduler")
    assert sampler_differences(compvis) == []
    assert "no sampler for" in sampler_differences({"_class_name": "LMSDiscreteScheduler"})[0]


def test_loading_warns_about_scheduler_differences(super_resolution, tmp_path):
    _, folder = super_resolution
    shutil.copytree(folder, tmp_path / "pipeline")
    diffusers.DDIMScheduler(beta_schedule="scaled_linear").save_pretrained(
        tmp_path / "pipeline" / "scheduler"
    )
    with pytest.warns(UserWarning, match=r"DDIMScheduler has \{'steps_offset': 0"):
        from_diffusers_pipeline(tmp_path / "pipeline")


# -- folders --------------------------------------------------------------------------------------


def test_is_diffusers_pipeline(text_to_image, tmp_path):
    _, folder = text_to_image
    assert is_diffusers_pipeline(folder) and is_diffusers_pipeline(str(folder))
    assert not is_diffusers_pipeline(folder / "unet") and not is_diffusers_pipeline(tmp_path / "missing")


def test_unsupported_pipeline_class_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(
        ValueError, match=r"_class_name='StableDiffusionPipeline'; keras_ldm loads \['LDMPipeline'"
    ):
        from_diffusers_pipeline(tmp_path)


def test_missing_component_folder_is_named(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "LDMSuperResolutionPipeline"}))
    (tmp_path / "vqvae").mkdir()
    with pytest.raises(ValueError, match=r"has no 'unet' component folder; found folders \['vqvae'\]"):
        from_diffusers_pipeline(tmp_path)


def test_a_model_folder_is_not_a_pipeline(text_to_image):
    _, folder = text_to_image
    with pytest.raises(ValueError, match=r"is not a diffusers pipeline folder.*from_diffusers"):
        from_diffusers_pipeline(folder / "unet")


def test_loading_needs_no_warning_for_compvis_settings(text_to_image):
    _, folder = text_to_image
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        from_diffusers_pipeline(folder)


def test_hf_presets_load_from_the_local_hub_cache_offline(text_to_image, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub

    _, folder = text_to_image
    repo = tmp_path / "hub" / "models--CompVis--tiny-ldm"
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = LatentDiffusion.from_preset("hf://CompVis/tiny-ldm")
    assert model.cross_attention == "text"
    assert model.generation_defaults["sampler"] == "ddim" and model.generation_defaults["num_steps"] == 50
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        LatentDiffusion.from_preset("hf://CompVis/not-cached")
