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
    with pytest.raises(ValueError, match=r"Float `images` must be finite and in \[-1, 1\]"):
        sr.generate({"images": np.full((1, 4, 4, 3), 200.0, "float32")}, num_steps=2)


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
    for bad in (-1.0, "hot", 11, float("nan")):
        with pytest.raises((ValueError, TypeError), match=r"temperature=.*expected a (finite )?number"):
            model.generate(batch_size=1, temperature=bad, **settings)


@pytest.fixture(scope="module")
def text():
    return text_model()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(guidance_scale=float("inf")), ValueError, "guidance_scale=inf; expected a finite number"),
        (dict(guidance_scale=float("nan")), ValueError, "guidance_scale=nan"),
        (dict(guidance_scale="4"), TypeError, "guidance_scale='4'; expected a number"),
        (dict(eta=float("nan")), ValueError, "eta=nan"),
        (dict(height=0), ValueError, "height=0; it must be a positive multiple"),
        (dict(width=8.0), ValueError, "width=8.0"),
        (dict(num_steps=2.0), ValueError, "num_steps=2.0"),
        (dict(seed=1.5), TypeError, "seed=1.5; expected an int"),
        (dict(sampler=None, num_steps=None), None, None),  # the defaults are fine
        (dict(latents=np.full((1, 8, 8, 4), np.nan, "float32")), ValueError, "256 NaN or inf"),
        (dict(latents=np.zeros((2, 8, 8, 4), "float32")), ValueError, r"expected floats of shape \(1, 8, 8, 4\)"),
        (dict(latents=np.zeros((1, 4, 4, 4), "float32")), ValueError, "`latents` has shape"),
        (dict(inputs={"prompts": "a", "images": np.zeros((8, 8, 3))}), ValueError, r"also hold \['images'\]"),
        (dict(inputs={"prompts": "a", "negative_prompts": [1]}), ValueError, "negative_prompts=\\[1\\]"),
        (dict(inputs=[]), ValueError, "non-empty list of str"),
        (dict(inputs=7), ValueError, "non-empty list of str"),
    ],
)
def test_bad_text_generation_requests_are_named_before_the_program_runs(text, kwargs, error, message):
    request = dict(dict(inputs="a red circle", num_steps=2, height=8, width=8), **kwargs)
    if error is None:
        assert text.generate(**dict(request, num_steps=2)).shape == (8, 8, 3)
        return
    with pytest.raises(error, match=message):
        text.generate(**request)


def test_seeds_outside_int32_and_upper_case_samplers_are_accepted(text):
    settings = dict(num_steps=2, height=8, width=8)
    image = text.generate("a red circle", seed=5, sampler="ddim", **settings)
    np.testing.assert_array_equal(image, text.generate("a red circle", seed=5 + 2**31, sampler="DDIM", **settings))
    np.testing.assert_array_equal(image, text.generate("a red circle", seed=np.int64(5), **settings))
    assert text.generate("a red circle", seed=2**64 + 3, **settings).shape == (8, 8, 3)
    assert text.generate("a red circle", seed=None, **settings).shape == (8, 8, 3)
    guided = dict(settings, guidance_scale=3.0)
    np.testing.assert_array_equal(  # one negative prompt for all, as the SavedModel takes it
        text.generate({"prompts": ["a", "red"], "negative_prompts": ["blue"]}, **guided),
        text.generate({"prompts": ["a", "red"], "negative_prompts": ["blue", "blue"]}, **guided),
    )


def test_image_inputs_take_rgba_grey_unbatched_and_float_images_and_0_255_masks():
    vq = VQAutoencoder(ch=32, ch_mult=(1,), num_res_blocks=1, embed_dim=3, n_embed=16)
    inpaint = LatentDiffusion(unet(in_channels=7, out_channels=3), vq, concat="masks")
    rgb = np.random.default_rng(3).integers(0, 256, (8, 8, 3)).astype("uint8")
    mask = np.zeros((8, 8), "float32")
    mask[2:6, 2:6] = 1
    settings = dict(num_steps=2, seed=1)
    expected = inpaint.generate({"images": rgb[None], "masks": mask[None]}, **settings)
    assert expected.shape == (1, 8, 8, 3)
    rgba = np.concatenate([rgb, np.full((8, 8, 1), 255, "uint8")], axis=-1)
    as_float = rgb.astype("float32") / 127.5 - 1.0
    for images, masks in [
        (rgb, mask),  # one image, no batch axis: no batch axis out
        (rgba, (mask * 255).astype("uint8")),  # RGBA (alpha dropped), a 0/255 mask as read from a PNG
        (as_float, mask.astype(bool)),  # floats in [-1, 1], a boolean mask
    ]:
        np.testing.assert_array_equal(inpaint.generate({"images": images, "masks": masks}, **settings), expected[0])
    sr = LatentDiffusion(unet(in_channels=7), vae(), concat="low_res")
    grey = rgb[..., 0]
    np.testing.assert_array_equal(
        sr.generate({"images": grey}, **settings),
        sr.generate({"images": np.repeat(grey[..., None], 3, axis=-1)}, **settings),
    )
    assert sr.generate({"images": grey}, **settings).shape == (32, 32, 3)


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"images": np.zeros((0, 4, 4, 3), "uint8")}, r"none of size 0; got shape \(0, 4, 4, 3\)"),
        ({"images": np.zeros((1, 4, 4, 2), "uint8")}, "also 1 or 4 channels"),
        ({"images": np.full((4, 4, 3), np.nan, "float32")}, "must be finite"),
        ({"images": np.zeros((4, 4, 3), "uint8"), "prompts": "a"}, r"also hold \['prompts'\]"),
        ({"images": np.array([["a"]])}, "uint8 in \\[0, 255\\] or floats"),
        ("a prompt", "takes a dict with 'images'"),
    ],
)
def test_bad_super_resolution_inputs_are_named(inputs, message):
    sr = LatentDiffusion(unet(in_channels=7), vae(), concat="low_res")
    with pytest.raises(ValueError, match=message):
        sr.generate(inputs, num_steps=2)


def test_bad_class_labels_and_batch_sizes_are_named():
    embedder = ClassEmbedder(num_classes=3, embed_dim=16)
    model = LatentDiffusion(unet(context_dim=16), vae(), cross_attention="class", class_embedder=embedder)
    for labels, message in (([3], r"in \[0, 2\]"), ([-1], r"in \[0, 2\]"), ([], "non-empty"), ([0.5], "ints")):
        with pytest.raises(ValueError, match=message):
            model.generate({"labels": labels}, num_steps=2, height=8, width=8)
    unconditional = LatentDiffusion(unet(), vae())
    for batch_size in (0, -1, 1.5):
        with pytest.raises(ValueError, match=f"batch_size={batch_size}"):
            unconditional.generate(batch_size=batch_size, num_steps=2, height=8, width=8)


def test_mask_shapes_of_one_image_and_of_a_batch():
    """One image's mask may be (H, W) or (H, W, 1); a batch's (B, H, W) or (B, H, W, 1), 0/1 or 0/255."""
    from keras_ldm.models.generation_inputs import mask_input

    for masks, image_shape in [
        (np.zeros((8, 8)), (1, 8, 8, 3)),
        (np.zeros((8, 8, 1)), (1, 8, 8, 3)),  # found by the property tests: read as a batch of 8 before
        (np.full((2, 8, 8), 255, "uint8"), (2, 8, 8, 3)),
        (np.ones((2, 8, 8, 1), bool), (2, 8, 8, 3)),
    ]:
        assert mask_input({"masks": masks}, image_shape).shape == (*image_shape[:3], 1)
    with pytest.raises(ValueError, match=r"images' size \(2, 8, 8\); got shape \(8, 8, 1, 1\)"):
        mask_input({"masks": np.zeros((8, 8, 1))}, (2, 8, 8, 3))
