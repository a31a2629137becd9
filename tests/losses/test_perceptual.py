"""LPIPS: zero for identical images, positive otherwise, and the LPIPS formula over the backbone's features."""

import keras
import numpy as np
import pytest

from keras_ldm.losses.perceptual import CAFFE_BGR_MEAN, LPIPS, LPIPS_SCALE, LPIPS_SHIFT, LPIPS_VGG16_LAYERS
from tests.conftest import to_numpy


def tiny_backbone():
    inputs = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="b")(h)
    return keras.Model(inputs, h, name="tiny")


@pytest.fixture(scope="module")
def vgg_lpips():
    return LPIPS(weights=None)


def images(seed, shape=(2, 16, 16, 3)):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def test_vgg_lpips_is_zero_for_identical_images_and_positive_otherwise(vgg_lpips):
    x, y = images(0), images(1)
    assert vgg_lpips.layer_names == LPIPS_VGG16_LAYERS
    assert vgg_lpips.channels == [64, 128, 256, 512, 512]
    assert not vgg_lpips.trainable_weights
    np.testing.assert_array_equal(to_numpy(vgg_lpips(x, x)), np.zeros(2))
    distance = to_numpy(vgg_lpips(x, y))
    assert distance.shape == (2,) and np.all(distance > 0)
    np.testing.assert_allclose(to_numpy(vgg_lpips(y, x)), distance, rtol=1e-5)
    slightly = to_numpy(vgg_lpips(x, x + 0.01))
    assert np.all(slightly > 0) and np.all(slightly < distance)


def numpy_lpips(features0, features1, heads):
    total = 0.0
    for f0, f1, w in zip(features0, features1, heads):
        n0 = f0 / (np.sqrt(np.sum(f0**2, axis=-1, keepdims=True)) + 1e-10)
        n1 = f1 / (np.sqrt(np.sum(f1**2, axis=-1, keepdims=True)) + 1e-10)
        total = total + np.mean(np.sum((n0 - n1) ** 2 * w, axis=-1), axis=(1, 2))
    return total


def test_lpips_matches_numpy_over_the_backbone_features():
    lpips = LPIPS(backbone=tiny_backbone(), layer_names=("a", "b"))
    heads = [np.random.default_rng(2).uniform(0, 1, c).astype("float32") for c in lpips.channels]
    lpips.set_linear_weights([h.reshape(1, -1, 1, 1) for h in heads])  # the official (1, C, 1, 1) layout
    x, y = images(3), images(4)
    f0 = [to_numpy(f) for f in lpips.features(lpips.preprocess(x))]
    f1 = [to_numpy(f) for f in lpips.features(lpips.preprocess(y))]
    np.testing.assert_allclose(to_numpy(lpips(x, y)), numpy_lpips(f0, f1, heads), rtol=1e-5, atol=1e-7)


def test_input_scaling():
    x = images(5, (1, 2, 2, 3))
    lpips = LPIPS(backbone=tiny_backbone(), layer_names=("a",))
    assert lpips.preprocessing == "lpips"
    expected = (x - np.array(LPIPS_SHIFT)) / np.array(LPIPS_SCALE)
    np.testing.assert_allclose(to_numpy(lpips.preprocess(x)), expected, rtol=1e-5)
    caffe = LPIPS(backbone=tiny_backbone(), layer_names=("a",), preprocessing="caffe")
    expected = (x + 1.0)[..., ::-1] * 127.5 - np.array(CAFFE_BGR_MEAN)
    np.testing.assert_allclose(to_numpy(caffe.preprocess(x)), expected, rtol=1e-5, atol=1e-4)


def test_heads_are_non_negative_and_the_layer_round_trips_its_config():
    lpips = LPIPS(backbone=tiny_backbone(), layer_names=("a", "b"))
    for head in lpips.linear:
        assert isinstance(head.constraint, keras.constraints.NonNeg)
    clone = LPIPS.from_config(lpips.get_config())
    clone.set_weights(lpips.get_weights())
    x, y = images(6), images(7)
    np.testing.assert_allclose(to_numpy(clone(x, y)), to_numpy(lpips(x, y)), rtol=1e-6)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="preprocessing"):
        LPIPS(backbone=tiny_backbone(), layer_names=("a",), preprocessing="torch")
    with pytest.raises(ValueError, match="layer_names"):
        LPIPS(backbone=tiny_backbone(), layer_names=("missing",))
    lpips = LPIPS(backbone=tiny_backbone(), layer_names=("a", "b"))
    with pytest.raises(ValueError, match="weights"):
        lpips.set_linear_weights([np.ones(4)])
    with pytest.raises(ValueError, match="weights"):
        lpips.set_linear_weights([np.ones(4), np.ones(5)])
