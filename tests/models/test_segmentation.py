"""Semantic synthesis: `SpatialRescaler` equal to CompVis' (PyTorch interpolate + 1x1 conv), and an LDM
conditioned on segmentation maps that fits, samples at its training size and larger, and saves."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch

from keras_ldm.models import AutoencoderKL, LatentDiffusion, SpatialRescaler
from keras_ldm.models.spatial_rescaler import resize_like_torch
from tests.conftest import to_numpy
from tests.tiny_models import randomized
from tests.tiny_models import unet as tiny_unet

CLASSES = 5
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (4, 8, 8, 3)).astype("uint8")
MAPS = RNG.integers(0, CLASSES, (4, 8, 8)).astype("int32")


@pytest.mark.parametrize("method", ["nearest", "bilinear", "area"])
@pytest.mark.parametrize("size,scale", [(8, 0.5), (9, 0.5), (7, 0.25), (5, 2.0), (6, 1.5)])
def test_resize_equals_torch_interpolate(method, size, scale):
    x = RNG.normal(size=(2, size, size + 2, 3)).astype("float32")
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x).permute(0, 3, 1, 2), scale_factor=scale, mode=method
    )
    ours = to_numpy(resize_like_torch(x, scale, method))
    np.testing.assert_allclose(ours, expected.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_spatial_rescaler_equals_compvis_on_random_weights():
    """CompVis: `n_stages` x interpolate(scale_factor=multiplier, mode=method), then a 1x1 conv with bias."""
    rescaler = SpatialRescaler(n_stages=2, in_channels=CLASSES, out_channels=3, bias=True)
    rescaler.build()
    conv = torch.nn.Conv2d(CLASSES, 3, 1, bias=True)
    rescaler.channel_mapper.set_weights(
        [conv.weight.detach().numpy().transpose(2, 3, 1, 0), conv.bias.detach().numpy()]
    )
    maps = RNG.integers(0, CLASSES, (2, 16, 12))
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(maps), CLASSES).permute(0, 3, 1, 2).float()
    expected = one_hot
    for _ in range(2):
        expected = torch.nn.functional.interpolate(expected, scale_factor=0.5, mode="bilinear")
    expected = conv(expected).permute(0, 2, 3, 1).detach().numpy()
    np.testing.assert_allclose(to_numpy(rescaler(maps)), expected, atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(rescaler(to_numpy(keras.ops.one_hot(maps, CLASSES)))), expected, atol=1e-5
    )
    assert SpatialRescaler.from_config(rescaler.get_config()).get_config() == rescaler.get_config()


def semantic_model():
    """f = 2 (one down-sampling level), so the rescaler really down-samples."""
    vae = AutoencoderKL(ch=32, ch_mult=(1, 1), num_res_blocks=1, embed_dim=4)
    rescaler = SpatialRescaler(n_stages=1, in_channels=CLASSES, out_channels=3)
    return LatentDiffusion(
        tiny_unet(in_channels=4 + 3),
        vae,
        concat="segmentation",
        spatial_encoder=rescaler,
        p_uncond=0.1,
        seed=0,
    )


def test_fit_trains_the_unet_and_the_spatial_encoder_on_maps_and_one_hot():
    model = semantic_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [np.array(w) for w in model.spatial_encoder.get_weights()]
    data = tf.data.Dataset.from_tensor_slices({"images": IMAGES, "segmentation": MAPS}).batch(2)
    assert np.all(np.isfinite(model.fit(data, verbose=0).history["loss"]))
    after = [np.array(w) for w in model.spatial_encoder.get_weights()]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, after))
    one_hot = np.eye(CLASSES, dtype="float32")[MAPS]
    history = model.fit({"images": IMAGES, "segmentation": one_hot}, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_generate_follows_the_maps_size_at_and_beyond_the_training_size(tmp_path):
    model = semantic_model()
    randomized(model.unet)
    first = model.generate({"segmentation": MAPS[:2]}, num_steps=2, seed=3)
    assert first.shape == (2, 8, 8, 3) and first.dtype == np.uint8
    big = RNG.integers(0, CLASSES, (16, 24))  # one map, 2x and 3x the training size: convolutional
    assert model.generate({"segmentation": big}, num_steps=2, seed=3).shape == (16, 24, 3)
    one_hot = np.eye(CLASSES, dtype="float32")[MAPS[:2]]
    np.testing.assert_array_equal(model.generate({"segmentation": one_hot}, num_steps=2, seed=3), first)
    model.save_to_preset(str(tmp_path / "semantic"))
    loaded = LatentDiffusion.from_preset(str(tmp_path / "semantic"))
    np.testing.assert_array_equal(loaded.generate({"segmentation": MAPS[:2]}, num_steps=2, seed=3), first)


def test_bad_maps_and_set_ups_are_named():
    model = semantic_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match=r"segmentation.*\[0, 4\].*\[5\]"):
        model.generate({"segmentation": np.full((1, 8, 8), 5)}, num_steps=1)
    with pytest.raises(ValueError, match=r"segmentation.*\[-1\]"):
        model.fit({"images": IMAGES, "segmentation": -np.ones((4, 8, 8), "int32")}, verbose=0)
    with pytest.raises(ValueError, match=r"one-hot floats \(B, H, W, 5\); got shape \(1, 8, 8, 4\)"):
        model.generate({"segmentation": np.zeros((1, 8, 8, 4), "float32")}, num_steps=1)
    with pytest.raises(ValueError, match=r"segmentation.*like `images`"):
        model.fit({"images": IMAGES, "segmentation": MAPS[:, :4]}, verbose=0)
    with pytest.raises(ValueError, match=r"`segmentation` maps of size 7x8.*multiples of 2"):
        model.generate({"segmentation": np.zeros((1, 7, 8), "int32")}, num_steps=1)
    with pytest.raises(ValueError, match="prompts"):
        model.generate({"segmentation": MAPS[:1], "prompts": ["a"]}, num_steps=1)
    with pytest.raises(ValueError, match="spatial_encoder"):
        LatentDiffusion(tiny_unet(in_channels=4), model.first_stage, concat="segmentation")


def test_export_says_semantic_models_are_not_exportable_yet(tmp_path):
    with pytest.raises(ValueError, match="concat='segmentation'"):
        semantic_model().export(str(tmp_path / "served"))
