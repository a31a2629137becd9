"""`Conv2D` and `TwoPassGroupNormalization`: the same numbers as Keras' layers and numpy, on every backend
(on PyTorch through `keras_ldm.backend.torch_kernels`, which these tests check is the path taken)."""

import keras
import numpy as np
import pytest

from keras_ldm.layers.conv import Conv2D, conv2d
from keras_ldm.layers.normalization import TwoPassGroupNormalization, group_norm
from tests.conftest import to_numpy

ON_TORCH = keras.backend.backend() == "torch"


@pytest.mark.parametrize(
    "kernel_size, strides, padding, direct",
    [
        (3, 1, "same", True),
        (1, 1, "same", True),
        (3, 2, "valid", True),
        (3, 1, "valid", True),
        ((3, 1), 1, "same", True),
        (2, 1, "same", False),  # an even kernel pads unevenly: Keras' own conv
        (3, 2, "same", False),
    ],
)
def test_conv2d_equals_keras_conv2d(kernel_size, strides, padding, direct, rng):
    x = rng.normal(size=(2, 9, 7, 4)).astype("float32")
    ours = Conv2D(6, kernel_size, strides=strides, padding=padding, bias_initializer="random_normal")
    reference = keras.layers.Conv2D(6, kernel_size, strides=strides, padding=padding)
    expected_shape = tuple(reference(x).shape)
    ours.build(x.shape)
    reference.set_weights(ours.get_weights())
    out = ours(x)
    assert tuple(out.shape) == expected_shape
    np.testing.assert_allclose(to_numpy(out), to_numpy(reference(x)), atol=1e-5)
    assert (ours._torch_padding is not None) == (direct and ON_TORCH)


def test_conv2d_under_mixed_precision_and_from_config(rng):
    x = rng.normal(size=(1, 8, 8, 3)).astype("float32")
    conv = conv2d(5, strides=2, name="down")
    conv.build(x.shape)
    half = Conv2D.from_config({**conv.get_config(), "dtype": "mixed_bfloat16"})
    half.build(x.shape)
    half.set_weights(conv.get_weights())
    out = half(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(to_numpy(out).astype("float32"), to_numpy(conv(x)), atol=5e-2)


def test_conv2d_gradients_equal_keras_conv2d(rng):
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    y = rng.normal(size=(2, 6, 6, 4)).astype("float32")
    models = []
    for layer in (conv2d(4), keras.layers.Conv2D(4, 3, padding="same")):
        model = keras.Sequential([keras.Input((6, 6, 3)), layer])
        model.compile(keras.optimizers.SGD(1.0), "mse")
        models.append(model)
    models[1].set_weights(models[0].get_weights())
    initial = models[0].get_weights()
    for model in models:
        model.train_on_batch(x, y)
    for ours, reference in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert not np.allclose(models[0].get_weights()[0], initial[0])


def _numpy_group_norm(x, groups, gamma, beta, epsilon):
    x = x.astype("float64")
    grouped = x.reshape(*x.shape[:-1], groups, -1)
    axes = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
    centred = grouped - grouped.mean(axis=axes, keepdims=True)
    normalized = centred / np.sqrt((centred**2).mean(axis=axes, keepdims=True) + epsilon)
    return normalized.reshape(x.shape) * gamma + beta


@pytest.mark.parametrize("shape", [(2, 5, 3, 16), (2, 7, 16)])
def test_group_norm_matches_numpy(shape, rng):
    x = (3.0 * rng.normal(size=shape) + 1.0).astype("float32")
    norm = group_norm(1e-5, groups=4)
    norm.build(shape)
    gamma, beta = rng.normal(size=(2, shape[-1])).astype("float32")
    norm.set_weights([gamma, beta])
    expected = _numpy_group_norm(x, 4, gamma, beta, 1e-5)
    np.testing.assert_allclose(to_numpy(norm(x)), expected, atol=1e-5)


def test_group_norm_stays_precise_for_large_means(rng):
    """PyTorch's channels-last kernel alone would be off by about 3 here (E[x^2] - E[x]^2)."""
    x = (1000.0 + 1e-2 * rng.normal(size=(2, 4, 4, 8))).astype("float32")
    y = to_numpy(TwoPassGroupNormalization(groups=2, epsilon=1e-6)(x))
    np.testing.assert_allclose(y, _numpy_group_norm(x, 2, 1.0, 0.0, 1e-6), atol=2e-2)
