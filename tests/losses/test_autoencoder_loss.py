"""The combined first-stage loss: adopt_weight, the adaptive weight, nll/KL/codebook terms and the d-loss gate."""

import keras
import numpy as np
import pytest

from keras_ldm.losses.autoencoder_loss import (
    AutoencoderLoss,
    adaptive_weight,
    adopt_weight,
    generator_adversarial_loss,
)
from keras_ldm.losses.discriminator import hinge_d_loss, vanilla_d_loss
from tests.conftest import to_numpy

RNG = np.random.default_rng(0)
X = RNG.uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
X_REC = RNG.uniform(-1, 1, (2, 8, 8, 3)).astype("float32")


class MeanSquare(keras.layers.Layer):
    """A stand-in perceptual model: per-example mean squared difference."""

    def call(self, x0, x1):
        return keras.ops.mean(keras.ops.square(x0 - x1), axis=(1, 2, 3))


def small_loss(regularization, **kwargs):
    kwargs.setdefault("perceptual_weight", 0.0)
    return AutoencoderLoss(regularization, disc_num_layers=1, disc_ndf=16, **kwargs)


def test_adopt_weight_switches_at_the_threshold():
    values = [float(to_numpy(adopt_weight(0.7, step, threshold=3, value=0.1))) for step in range(6)]
    np.testing.assert_allclose(values, [0.1, 0.1, 0.1, 0.7, 0.7, 0.7], rtol=1e-6)


def test_adaptive_weight_is_the_clipped_gradient_norm_ratio():
    rec, adv = RNG.normal(size=(3, 3, 8, 3)), RNG.normal(size=(3, 3, 8, 3)) * 0.01
    expected = np.linalg.norm(rec) / (np.linalg.norm(adv) + 1e-4)
    np.testing.assert_allclose(float(to_numpy(adaptive_weight(rec, adv))), expected, rtol=1e-5)
    assert float(to_numpy(adaptive_weight(rec, np.zeros_like(adv)))) == pytest.approx(1e4)  # clipped
    assert float(to_numpy(adaptive_weight(np.zeros_like(rec), adv))) == 0.0


def test_kl_nll_uses_the_learned_log_variance_and_sums_per_example():
    loss = small_loss("kl", perceptual_weight=0.5, perceptual_model=MeanSquare())
    loss.logvar.assign(0.3)
    terms = {k: float(to_numpy(v)) for k, v in loss.reconstruction_losses(X, X_REC).items()}
    perceptual = np.mean((X - X_REC) ** 2, axis=(1, 2, 3))
    rec = np.abs(X - X_REC) + 0.5 * perceptual[:, None, None, None]
    nll = np.mean(np.sum(rec / np.exp(0.3) + 0.3, axis=(1, 2, 3)))
    np.testing.assert_allclose(terms["nll_loss"], nll, rtol=1e-5)
    np.testing.assert_allclose(terms["rec_loss"], np.mean(np.abs(X - X_REC)), rtol=1e-5)
    np.testing.assert_allclose(terms["p_loss"], np.mean(perceptual), rtol=1e-5)
    assert float(to_numpy(loss.regularization_loss({"kl_loss": 2.0e3}))) == pytest.approx(2.0e-3)
    assert [v.name for v in loss.trainable_variables if v.name == "logvar"] == ["logvar"]


def test_vq_nll_is_the_mean_and_l2_is_available():
    loss = small_loss("vq", pixel_loss="l2", codebook_weight=0.25)
    assert loss.logvar is None
    terms = loss.reconstruction_losses(X, X_REC)
    np.testing.assert_allclose(float(to_numpy(terms["nll_loss"])), np.mean((X - X_REC) ** 2), rtol=1e-5)
    assert float(to_numpy(loss.regularization_loss({"codebook_loss": 2.0}))) == pytest.approx(0.5)


@pytest.mark.parametrize("disc_loss, formula", [("hinge", hinge_d_loss), ("vanilla", vanilla_d_loss)])
def test_discriminator_loss_is_zero_weighted_before_disc_start(disc_loss, formula):
    loss = small_loss("vq", disc_loss=disc_loss, disc_start=5, disc_factor=0.8)
    before = loss.discriminator_losses(X, X_REC, step=4)
    after = loss.discriminator_losses(X, X_REC, step=5)
    real, fake = to_numpy(loss.discriminator(X)), to_numpy(loss.discriminator(X_REC))
    assert float(to_numpy(before["d_loss"])) == 0.0
    np.testing.assert_allclose(
        float(to_numpy(after["d_loss"])), 0.8 * float(to_numpy(formula(real, fake))), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(to_numpy(loss.adversarial_loss(X_REC))), -np.mean(fake), rtol=1e-5, atol=1e-7
    )
    assert float(to_numpy(generator_adversarial_loss(fake))) == pytest.approx(-np.mean(fake), abs=1e-6)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"regularization": "gan"}, "regularization"),
        ({"pixel_loss": "l3"}, "pixel_loss"),
        ({"disc_loss": "wgan"}, "disc_loss"),
        ({"kl_weight": -1.0}, "kl_weight"),
        ({"disc_start": "soon"}, "disc_start"),
    ],
)
def test_bad_settings_raise(kwargs, name):
    kwargs = {"regularization": "kl", "perceptual_weight": 0.0, **kwargs}
    with pytest.raises(ValueError, match=name):
        AutoencoderLoss(**kwargs)


def test_config_round_trip():
    loss = small_loss("kl", disc_start=7, disc_weight=0.3, kl_weight=1e-5, seed=3)
    clone = AutoencoderLoss.from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    assert clone.discriminator.n_layers == 1 and clone.disc_start == 7
