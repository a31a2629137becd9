"""PatchGAN discriminator architecture and the hinge / vanilla discriminator losses."""

import keras
import numpy as np
import pytest

from keras_ldm.losses.discriminator import ActNorm, NLayerDiscriminator, hinge_d_loss, vanilla_d_loss
from tests.conftest import to_numpy

RNG = np.random.default_rng(0)
REAL = RNG.normal(size=(2, 3, 3, 1)).astype("float32")
FAKE = RNG.normal(size=(2, 3, 3, 1)).astype("float32")


def test_hinge_and_vanilla_losses_equal_their_formulas():
    hinge = 0.5 * (np.mean(np.maximum(0, 1 - REAL)) + np.mean(np.maximum(0, 1 + FAKE)))
    vanilla = 0.5 * (np.mean(np.log1p(np.exp(-REAL))) + np.mean(np.log1p(np.exp(FAKE))))
    np.testing.assert_allclose(float(to_numpy(hinge_d_loss(REAL, FAKE))), hinge, rtol=1e-6)
    np.testing.assert_allclose(float(to_numpy(vanilla_d_loss(REAL, FAKE))), vanilla, rtol=1e-6)
    assert float(to_numpy(hinge_d_loss(np.full((1, 2), 2.0), np.full((1, 2), -3.0)))) == 0.0


def compvis_parameter_count(in_channels, ndf, n_layers):
    """Trainable parameters of CompVis' NLayerDiscriminator with BatchNorm, counted by hand."""
    count = in_channels * ndf * 16 + ndf
    previous = ndf
    for n in range(1, n_layers + 1):
        width = ndf * min(2**n, 8)
        count += previous * width * 16 + 2 * width  # bias-free conv + BatchNorm scale/offset
        previous = width
    return count + previous * 16 + 1


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_architecture_matches_compvis(n_layers):
    disc = NLayerDiscriminator(ndf=16, n_layers=n_layers)
    trainable = sum(int(np.prod(v.shape)) for v in disc.trainable_variables)
    assert trainable == compvis_parameter_count(3, 16, n_layers)
    assert disc.compute_output_shape((None, 256, 256, 3)) == (None, *(2 * [[126, 62, 30][n_layers - 1]]), 1)


def test_output_shape_and_logits():
    disc = NLayerDiscriminator(ndf=16, n_layers=2)
    x = RNG.uniform(-1, 1, (2, 20, 24, 3)).astype("float32")
    logits = disc(x, training=True)
    assert tuple(logits.shape) == disc.compute_output_shape((2, 20, 24, 3)) == (2, 3, 4, 1)
    clone = NLayerDiscriminator.from_config(disc.get_config())
    clone.set_weights(disc.get_weights())
    np.testing.assert_allclose(to_numpy(clone(x)), to_numpy(disc(x)), atol=1e-5)


def test_bad_images_and_settings_raise():
    disc = NLayerDiscriminator(ndf=16, n_layers=3)
    with pytest.raises(ValueError, match="images.*too small"):
        disc(np.zeros((1, 16, 16, 3), "float32"))
    with pytest.raises(ValueError, match="images.*channels"):
        disc(np.zeros((1, 64, 64, 4), "float32"))
    with pytest.raises(ValueError, match="images.*rank"):
        disc(np.zeros((64, 64, 3), "float32"))
    with pytest.raises(ValueError, match="norm"):
        NLayerDiscriminator(norm="instance")


def test_actnorm_initialises_from_the_first_training_batch():
    norm = ActNorm()
    x = RNG.normal(3.0, 2.0, (4, 5, 5, 2)).astype("float32")
    np.testing.assert_allclose(to_numpy(norm(x)), x)  # inference before initialisation: identity
    y = to_numpy(norm(x, training=True))
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.reshape(-1, 2).std(axis=0, ddof=1), 1.0, rtol=1e-4)
    other = x * 10.0
    expected = (other - x.mean(axis=(0, 1, 2))) / (x.reshape(-1, 2).std(axis=0, ddof=1) + 1e-6)
    np.testing.assert_allclose(to_numpy(norm(other, training=True)), expected, rtol=1e-4, atol=1e-4)
    disc = NLayerDiscriminator(ndf=16, n_layers=2, norm="act")
    assert tuple(disc(keras.ops.ones((1, 16, 16, 3)), training=True).shape) == (1, 2, 2, 1)
