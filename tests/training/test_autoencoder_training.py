"""First-stage training with fit() on every backend: the loss falls, the discriminator switches on at
disc_start, the adaptive weight equals its formula, and the documented metrics are logged."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ldm.losses.discriminator import NLayerDiscriminator
from keras_ldm.models import AutoencoderKL, VQAutoencoder
from keras_ldm.training import OptimizerPair, metric_names
from tests.conftest import to_numpy


def coloured_squares(n=8, size=16, seed=0):
    """uint8 images: a flat colour with a square of another colour."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), "uint8")
    for i in range(n):
        images[i] = rng.integers(0, 256, 3)
        top, left = rng.integers(0, size // 2, 2)
        images[i, top : top + size // 2, left : left + size // 2] = rng.integers(0, 256, 3)
    return images


IMAGES = coloured_squares()


def tiny(kind):
    """f = 1 autoencoders: compile time dominates on CPU; down-sampling is covered by the model tests."""
    shared = dict(ch=32, ch_mult=(1,), num_res_blocks=1, embed_dim=4, z_channels=4)
    return AutoencoderKL(**shared) if kind == "kl" else VQAutoencoder(n_embed=32, **shared)


def small_critic(**kwargs):
    return dict(perceptual_weight=0.0, disc_num_layers=1, disc_ndf=16, seed=0, **kwargs)


def values(variables):
    return [np.array(to_numpy(v)) for v in variables]


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_kl_loss_falls_on_a_tf_data_pipeline_and_metrics_are_logged():
    keras.utils.set_random_seed(1)
    model = tiny("kl")
    model.compile(keras.optimizers.Adam(1e-3), **small_critic(disc_start=60, disc_norm="act"))
    data = tf.data.Dataset.from_tensor_slices({"images": IMAGES}).batch(4)  # uint8 dicts
    history = model.fit(data, epochs=60, shuffle=False, verbose=0).history
    assert set(history) == {"loss", *metric_names("kl")}
    rec, loss = history["rec_loss"], history["loss"]
    assert np.all(np.isfinite(loss))
    assert rec[-1] < 0.6 * rec[0], rec
    assert np.mean(loss[-5:]) < 0.8 * np.mean(loss[:5]), loss
    # The discriminator joins half-way (disc_start = step 60 = epoch 30).
    assert history["disc_factor"][29] == 0.0 and history["disc_factor"][30] == 1.0
    assert history["d_loss"][29] == 0.0 and history["d_loss"][30] > 0.0
    actnorm = model.autoencoder_loss.discriminator.blocks[1][1]
    assert int(to_numpy(actnorm.initialized)) == 1  # initialised once the discriminator trained
    logs = model.evaluate(IMAGES[:4], verbose=0, return_dict=True)
    assert set(logs) == {"loss", *metric_names("kl")} and np.isfinite(logs["loss"])


def test_vq_discriminator_switches_on_at_disc_start_and_the_loss_falls(tmp_path):
    keras.utils.set_random_seed(2)
    model = tiny("vq")
    model.compile(keras.optimizers.Adam(1e-3), **small_critic(disc_start=1))
    critic = model.autoencoder_loss.discriminator
    batch = {"images": IMAGES[:4]}

    critic_before, generator_before = values(critic.variables), values(model.encoder.variables)
    trained = model.optimizer.generator._trainable_variables
    trained_before = values(trained)
    logs = model.train_on_batch(batch, return_dict=True)  # step 0: before disc_start
    # A first Adam step moves every weight by at most the learning rate (codebook included).
    steps = [np.max(np.abs(a - b)) for a, b in zip(values(trained), trained_before)]
    assert max(steps) <= 1e-3 * (1 + 1e-4) and max(steps) > 0.5e-3
    assert set(logs) == {"loss", *metric_names("vq")}
    assert logs["disc_factor"] == 0.0 and logs["d_loss"] == 0.0
    np.testing.assert_allclose(logs["loss"], logs["nll_loss"] + logs["codebook_loss"], rtol=1e-5)
    assert same(critic_before, values(critic.variables))  # weights and BatchNorm statistics
    assert int(to_numpy(model.optimizer.discriminator.iterations)) == 0
    assert not same(generator_before, values(model.encoder.variables))

    logs = model.train_on_batch(batch, return_dict=True)  # step 1: active
    assert logs["disc_factor"] == 1.0 and logs["d_loss"] > 0.0
    expected = logs["nll_loss"] + logs["codebook_loss"] + logs["d_weight"] * logs["g_loss"]
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-4, atol=1e-6)
    assert not same(critic_before, values(critic.variables))
    assert int(to_numpy(model.optimizer.discriminator.iterations)) == 1
    assert int(to_numpy(model.autoencoder_loss.step)) == 2

    # With the discriminator on, a plain float array in [-1, 1]: the reconstruction error falls.
    history = model.fit(IMAGES / 127.5 - 1.0, batch_size=4, epochs=60, verbose=0).history
    assert set(history) == {"loss", *metric_names("vq")}
    assert history["rec_loss"][-1] < 0.6 * history["rec_loss"][0], history["rec_loss"]
    assert np.all(np.asarray(history["d_loss"]) > 0.0)

    # model.save keeps the loss settings and both optimizers' state.
    model.save(tmp_path / "vq.keras")
    restored = keras.saving.load_model(tmp_path / "vq.keras")
    assert isinstance(restored.optimizer, OptimizerPair)
    assert restored.autoencoder_loss.disc_start == 1
    assert same(values(model.optimizer.variables), values(restored.optimizer.variables))
    assert same(values(critic.variables), values(restored.autoencoder_loss.discriminator.variables))
    assert same(values(model.variables), values(restored.variables))


class LinearCritic(keras.layers.Layer):
    """logits = x . w + c per pixel, so that d g_loss / d x_rec = -w / (B H W) is known in closed form."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(3,), initializer=keras.initializers.RandomNormal(seed=3))
        self.c = self.add_weight(shape=(), initializer="zeros")

    def call(self, x, training=None):
        return keras.ops.sum(x * self.w, axis=-1, keepdims=True) + self.c


def kernel_gradient(features, output_gradient):
    """d L / d W of a 3x3 'same' conv from its input and d L / d output (numpy)."""
    padded = np.pad(features, ((0, 0), (1, 1), (1, 1), (0, 0)))
    height, width = features.shape[1:3]
    grad = np.zeros((3, 3, features.shape[-1], output_gradient.shape[-1]))
    for i in range(3):
        for j in range(3):
            window = padded[:, i : i + height, j : j + width]
            grad[i, j] = np.einsum("bhwc,bhwo->co", window, output_gradient)
    return grad


def test_adaptive_weight_equals_the_formula_with_numpy_gradients():
    model = tiny("kl")
    model.compile(**small_critic(discriminator=LinearCritic(), disc_weight=0.5, disc_start=0))
    model.autoencoder_loss.logvar.assign(0.2)
    images = IMAGES[:2].astype("float32") / 127.5 - 1.0
    terms = {k: to_numpy(v) for k, v in model.generator_losses(images, training=False).items()}

    features = to_numpy(model.decoder.features(model.post_quant_conv(model.encode(images).mode())))
    kernel, bias = to_numpy(model.decoder.conv_out.kernel), to_numpy(model.decoder.conv_out.bias)
    padded = np.pad(features, ((0, 0), (1, 1), (1, 1), (0, 0)))
    reconstructions = bias + sum(
        np.einsum("bhwc,co->bhwo", padded[:, i : i + 16, j : j + 16], kernel[i, j])
        for i in range(3)
        for j in range(3)
    )
    np.testing.assert_allclose(terms["reconstructions"], reconstructions, rtol=1e-4, atol=1e-4)
    batch, pixels = 2, 16 * 16
    # nll = sum(|x - x_rec| / exp(logvar) + logvar) / B;  g_loss = -mean(x_rec . w + c)
    nll_grad = np.sign(reconstructions - images) / (batch * np.exp(0.2))
    w = to_numpy(model.autoencoder_loss.discriminator.w)
    g_grad = np.broadcast_to(-w / (batch * pixels), reconstructions.shape)
    rec_norm = np.linalg.norm(kernel_gradient(features, nll_grad))
    adv_norm = np.linalg.norm(kernel_gradient(features, g_grad))
    expected = 0.5 * np.clip(rec_norm / (adv_norm + 1e-4), 0, 1e4)
    np.testing.assert_allclose(float(terms["d_weight"]), expected, rtol=1e-4)
    total = terms["nll_loss"] + 1e-6 * terms["kl_loss"] + terms["d_weight"] * terms["g_loss"]
    np.testing.assert_allclose(float(terms["loss"]), float(total), rtol=1e-5)


def test_bad_input_and_settings_raise():
    model = tiny("vq")
    with pytest.raises(ValueError, match="compile"):
        model.generator_losses(IMAGES[:2])
    with pytest.raises(ValueError, match="kl_weight"):
        model.compile(kl_weight=1e-6, perceptual_weight=0.0)
    with pytest.raises(ValueError, match="discriminator_optimizer"):
        model.compile(OptimizerPair(), "adam", perceptual_weight=0.0)
    model.compile(**small_critic(discriminator=NLayerDiscriminator(ndf=16, n_layers=1)))
    with pytest.raises(ValueError, match="images.*rank"):
        model.fit(IMAGES[:, :, :, 0], batch_size=4, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="images.*channels"):
        model.fit(np.concatenate([IMAGES, IMAGES[..., :1]], axis=-1), batch_size=4, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="images"):
        model.fit({"pixels": IMAGES}, batch_size=4, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="images.*too small"):
        model.fit(IMAGES[:, :2, :2], batch_size=4, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="images.*channels"):
        model.evaluate(tf.data.Dataset.from_tensor_slices({"images": IMAGES[..., :2]}).batch(4), verbose=0)
    # The refused calls left the model's variables in place.
    assert all(np.all(np.isfinite(v)) for v in values(model.variables))
