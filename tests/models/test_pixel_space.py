"""`PixelSpace`: a LatentDiffusion without an autoencoder (f = 1) trains, generates and saves as a preset."""

import numpy as np
import pytest

from keras_ldm.models import LatentDiffusion, UNet
from keras_ldm.models.pixel_space import PixelSpace


def pixel_model():
    unet = UNet(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1,), num_res_blocks=1,
                attention_resolutions=(), num_heads=1)  # fmt: skip
    return LatentDiffusion(unet, PixelSpace(channels=3))


def test_the_first_stage_is_the_identity():
    images = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    model = pixel_model()
    np.testing.assert_array_equal(np.asarray(model.encode_images(images)), images)
    assert model.first_stage.downsample_factor == 1 and not model.first_stage.weights


def test_fit_generate_and_preset_round_trip(tmp_path):
    model = pixel_model()
    model.compile(learning_rate=1e-3)
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype("uint8")
    history = model.fit({"images": images}, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    before = model.generate(batch_size=2, num_steps=2, height=8, width=8, seed=3)
    model.save_to_preset(str(tmp_path / "pixels"))
    loaded = LatentDiffusion.from_preset(str(tmp_path / "pixels"))
    assert isinstance(loaded.first_stage, PixelSpace)
    np.testing.assert_array_equal(
        loaded.generate(batch_size=2, num_steps=2, height=8, width=8, seed=3), before
    )


def test_channels_are_checked():
    with pytest.raises(ValueError, match="`channels` must be an int >= 1; got 0"):
        PixelSpace(channels=0)
    with pytest.raises(ValueError, match="images"):
        PixelSpace(channels=3).encode(np.zeros((1, 8, 8, 1), "float32"))
