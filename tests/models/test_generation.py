"""LatentDiffusion.generate(): every conditioning, reproducibility, guidance, EMA, inpainting compositing."""

import keras
import numpy as np
import pytest

from keras_ldm.models import (
    AutoencoderKL,
    ClassEmbedder,
    LatentDiffusion,
    VQAutoencoder,
)
from tests.conftest import to_numpy
from tests.tiny_models import randomized, text_model, unet, vae


def test_unconditional_generation_is_reproducible_and_accepts_latents():
    model = LatentDiffusion(unet(), vae())
    first = model.generate(batch_size=2, num_steps=4, height=8, width=8, seed=1)
    assert first.shape == (2, 8, 8, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, model.generate(batch_size=2, num_steps=4, height=8, width=8, seed=1))
    assert np.any(first != model.generate(batch_size=2, num_steps=4, height=8, width=8, seed=2))
    noise = keras.random.normal((2, 8, 8, 4), seed=1)
    np.testing.assert_array_equal(
        first, model.generate(latents=noise, num_steps=4, height=8, width=8, seed=1)
    )
    wide = model.generate(batch_size=1, num_steps=2, height=8, width=24, sampler="dpmpp_2m")
    assert wide.shape == (1, 8, 24, 3)


def test_text_generation_guidance_negative_prompts_and_one_compiled_function():
    model = text_model()
    single = model.generate("a red circle", num_steps=3, height=8, width=8)
    assert single.shape == (8, 8, 3)
    guided = model.generate(["a red circle", "blue"], num_steps=3, guidance_scale=4.0, height=8, width=8)
    other = model.generate(["a blue circle", "red"], num_steps=3, guidance_scale=7.0, height=8, width=8)
    assert guided.shape == (2, 8, 8, 3)
    assert np.any(guided[0] != single)  # guidance changes the result
    assert len(model._generation_fns) == 2  # unguided + guided; new prompts and scales reuse it
    negative = model.generate(
        {"prompts": ["a red circle", "blue"], "negative_prompts": ["blue", ""]},
        num_steps=3,
        guidance_scale=4.0,
        height=8,
        width=8,
    )
    assert np.any(negative[0] != guided[0]) and np.any(other != guided)
    assert len(model._generation_fns) == 2


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="torch runs the program eagerly (no_grad)")
def test_text_encoding_and_decoding_run_inside_the_compiled_program(monkeypatch):
    model = text_model()
    expected = model.generate(["a red circle", "blue"], num_steps=2, guidance_scale=3.0, height=8, width=8)

    def eager_call(*args, **kwargs):
        raise AssertionError("called outside the compiled program")

    for layer in (model.text_encoder, model.first_stage.decoder):
        monkeypatch.setattr(layer, "call", eager_call)
    again = model.generate(["a red circle", "blue"], num_steps=2, guidance_scale=3.0, height=8, width=8)
    np.testing.assert_array_equal(again, expected)


def test_class_generation_uses_the_labels():
    embedder = ClassEmbedder(num_classes=3, embed_dim=16)
    embedder.build()
    model = LatentDiffusion(
        unet(context_dim=16, scale=0.3),
        vae(),
        cross_attention="class",
        class_embedder=randomized(embedder, 1.0),
    )
    images = model.generate({"labels": [0, 2]}, num_steps=3, height=8, width=8, seed=4)
    again = model.generate({"labels": [1, 2]}, num_steps=3, height=8, width=8, seed=4)
    assert np.any(images[0] != again[0])
    np.testing.assert_array_equal(images[1], again[1])


def test_super_resolution_output_is_four_times_larger():
    model = LatentDiffusion(unet(in_channels=7), vae(), concat="low_res")
    low_res = np.random.default_rng(1).integers(0, 256, (2, 4, 4, 3)).astype("uint8")
    big = model.generate({"images": low_res}, num_steps=3)
    assert big.shape == (2, 16, 16, 3)


def test_inpainting_keeps_every_pixel_outside_the_mask():
    vq = VQAutoencoder(ch=32, ch_mult=(1,), num_res_blocks=1, embed_dim=3, n_embed=16)
    model = LatentDiffusion(unet(in_channels=7, out_channels=3), vq, concat="masks")
    photo = np.random.default_rng(2).integers(0, 256, (1, 8, 8, 3)).astype("uint8")
    mask = np.zeros((1, 8, 8), "float32")
    mask[:, 2:6, 3:7] = 1
    filled = model.generate({"images": photo, "masks": mask}, num_steps=3, sampler="plms")
    np.testing.assert_array_equal(filled[mask == 0], photo[mask == 0])
    assert np.any(filled[mask == 1] != photo[mask == 1])


def test_generation_uses_the_moving_average_weights():
    model = LatentDiffusion(unet(), vae(), ema_decay=0.5)
    for average in model.ema.averages:  # a moving average that differs from the raw weights
        average.assign(to_numpy(average) * 0.5)
    with_ema = model.generate(batch_size=1, num_steps=3, height=8, width=8)
    raw = model.generate(batch_size=1, num_steps=3, height=8, width=8, use_ema=False)
    assert np.any(with_ema != raw)
    for source, average in zip(model.ema.sources, model.ema.averages):
        source.assign(average)
    np.testing.assert_array_equal(with_ema, model.generate(batch_size=1, num_steps=3, height=8, width=8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sampler="heun"), "sampler='heun'"),
        (dict(num_steps=0), "num_steps=0"),
        (dict(eta=-1.0), "eta=-1.0"),
        (dict(height=-8), "height=-8"),
        (dict(inputs="a prompt"), "unconditional"),
    ],
)
def test_bad_generation_requests_are_named(kwargs, message):
    model = LatentDiffusion(unet(), vae())
    with pytest.raises(ValueError, match=message):
        model.generate(**{"num_steps": 2, "height": 8, "width": 8, **kwargs})


def test_bad_inpainting_and_super_resolution_inputs_are_named():
    vq = VQAutoencoder(ch=32, ch_mult=(1,), num_res_blocks=1, embed_dim=3, n_embed=16)
    inpaint = LatentDiffusion(unet(in_channels=7, out_channels=3), vq, concat="masks")
    photo = np.zeros((1, 8, 8, 3), "uint8")
    with pytest.raises(ValueError, match="0/1 values"):
        inpaint.generate({"images": photo, "masks": np.full((1, 8, 8), 0.5)}, num_steps=2)
    with pytest.raises(ValueError, match="0/1 values"):
        inpaint.generate({"images": photo, "masks": np.ones((1, 4, 4))}, num_steps=2)
    sr = LatentDiffusion(unet(in_channels=7), vae(), concat="low_res")
    with pytest.raises(ValueError, match="uint8 RGB"):
        sr.generate({"images": np.zeros((1, 4, 4, 3), "float32")}, num_steps=2)


def test_sizes_must_divide_by_the_down_sampling():
    model = LatentDiffusion(unet(), AutoencoderKL(ch=32, ch_mult=(1, 2), num_res_blocks=1, embed_dim=4))
    with pytest.raises(ValueError, match="width=13; it must be a positive multiple of 2"):
        model.generate(batch_size=1, num_steps=2, height=8, width=13)


def test_temperature_scales_the_starting_noise_and_comes_from_the_defaults():
    model = LatentDiffusion(unet(), vae(), generation_defaults={"temperature": 0.5})
    noise = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    settings = dict(num_steps=3, height=8, width=8, seed=1)
    np.testing.assert_array_equal(
        model.generate(latents=noise, **settings),  # the default: 0.5
        model.generate(latents=0.5 * noise, temperature=1.0, **settings),
    )
    cold = [model.generate(batch_size=2, temperature=0.0, **dict(settings, seed=s)) for s in (1, 2)]
    np.testing.assert_array_equal(cold[0], cold[1])  # DDIM (eta 0) from zero noise: no randomness left
    assert model.sampling_options()["temperature"] == 0.5
    for bad in (-1.0, "hot", 11):
        with pytest.raises(ValueError, match=r"temperature=.*expected a number in \[0, 10\]"):
            model.generate(batch_size=1, temperature=bad, **settings)
