"""Shared test helpers. The suite runs once per backend: KERAS_BACKEND=jax|tensorflow|torch."""

import numpy as np
import pytest


def to_numpy(x):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x))


def nchw_to_nhwc(x):
    return np.transpose(np.asarray(x), (0, 2, 3, 1))


def nhwc_to_nchw(x):
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def forget_uninitialized_variables():
    """Big models built under `keras.StatelessScope(initialize_variables=False)` (parameter counts) stay on
    Keras' global list of variables to initialize later; the next `fit` that builds symbolically (on torch)
    would then allocate all of them — gigabytes. Forget them after each test."""
    yield
    from keras.src.backend.common import global_state

    global_state.set_global_attribute("uninitialized_variables", [])
