"""Tiled denoising and decoding (CompVis' split-input sampling): the blending, and `generate(tile_size=...)`."""

import keras
import numpy as np
import pytest

from keras_ldm.diffusion.tiling import border_weights, tile_origins, tiled
from keras_ldm.models import LatentDiffusion
from tests.conftest import to_numpy
from tests.tiny_models import unet, vae


def test_weights_are_compvis_clipped_border_distances():
    """CompVis' `delta_border(h, w)`: min over (y/(h-1), x/(w-1), 1 - both), clipped to [0.01, 0.5]."""
    weights = border_weights(5, 9)
    y, x = np.meshgrid(np.arange(5) / 4, np.arange(9) / 8, indexing="ij")
    expected = np.clip(np.minimum.reduce([y, x, 1 - y, 1 - x]), 0.01, 0.5)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert weights[2, 4] == 0.5 and weights[0, 0] == 0.01
    assert tile_origins(128, 64, 32) == [0, 32, 64] and tile_origins(100, 64, 32) == [0, 32, 36]


def test_a_pointwise_denoiser_is_unchanged_by_any_tiling():
    """Without spatial context every tile predicts the same values: the blend must give them back."""
    layer = keras.layers.Dense(3)
    x = np.random.default_rng(0).normal(size=(2, 13, 10, 4)).astype("float32")
    expected = to_numpy(layer(x))
    pointwise = lambda x, timesteps, context=None: layer(x)  # noqa: E731
    for tile, stride in [(4, 2), (6, 5), (8, 8), (13, 1)]:
        np.testing.assert_allclose(to_numpy(tiled(pointwise, tile, stride)(x, None)), expected, atol=1e-5)


def test_a_pointwise_upsampler_is_unchanged_by_tiled_decoding():
    """A decoder-like map to twice the size (each latent pixel to 2 x 2 pixels), tiled with scale 2."""
    layer = keras.layers.Dense(3)
    upsample = lambda z: keras.ops.repeat(keras.ops.repeat(layer(z), 2, axis=1), 2, axis=2)  # noqa: E731
    z = np.random.default_rng(1).normal(size=(1, 12, 9, 4)).astype("float32")
    expected = to_numpy(upsample(z))
    for tile, stride in [(4, 2), (6, 3), (8, 8)]:
        np.testing.assert_allclose(to_numpy(tiled(upsample, tile, stride, scale=2)(z)), expected, atol=1e-5)


def sr_model():
    return LatentDiffusion(unet(in_channels=7), vae(), concat="low_res")


def test_tiled_generation_equals_untiled_when_one_tile_covers_the_canvas():
    model, low_res = sr_model(), np.random.default_rng(1).integers(0, 256, (1, 4, 4, 3)).astype("uint8")
    whole = model.generate({"images": low_res}, num_steps=2, seed=4)
    one_tile = model.generate({"images": low_res}, num_steps=2, seed=4, tile_size=16)
    np.testing.assert_array_equal(one_tile, whole)


def test_tiled_super_resolution_has_no_visible_seams():
    """A smooth low-res input, upscaled in 3 x 3 overlapping tiles: the jumps between neighbouring pixels
    at the tile borders stay within the jumps elsewhere in the image."""
    model = sr_model()
    ramp = np.linspace(0, 255, 8)
    low_res = np.stack([ramp[:, None] + 0 * ramp, 0 * ramp[:, None] + ramp, 128 + 0 * ramp[:, None] * ramp], -1)
    images = model.generate({"images": low_res.astype("uint8")}, num_steps=3, seed=2, tile_size=16, tile_stride=8)
    assert images.shape == (32, 32, 3)
    steps = np.abs(np.diff(images.astype("float32"), axis=1)).mean(axis=(0, 2))  # per column boundary
    borders = [8 - 1, 16 - 1, 24 - 1]  # tile edges at 8, 16, 24 (stride 8, tiles of 16)
    inside = np.delete(steps, borders)
    assert steps[borders].max() <= inside.max() * 1.5 + 1.0


def test_bad_tiling_is_named():
    model, low_res = sr_model(), np.zeros((1, 4, 4, 3), "uint8")
    for options, match in [
        ({"tile_size": 0}, "tile_size=0"),
        ({"tile_size": 8.0}, "tile_size=8.0"),
        ({"tile_size": 8, "tile_stride": 9}, r"tile_stride=9; expected an int in \[1, tile_size=8\]"),
        ({"tile_stride": 4}, "tile_stride=4 needs a tile_size"),
    ]:
        with pytest.raises(ValueError, match=match):
            model.generate({"images": low_res}, num_steps=1, **options)
