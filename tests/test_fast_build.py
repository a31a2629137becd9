"""`random_init_skipped`: models whose weights are loaded next are built without running backend initializers."""

import keras
import numpy as np
import pytest

from keras_ldm import LatentDiffusion
from keras_ldm.backend.fast_build import CONSTANT_INITIALIZERS, RANDOM_INITIALIZERS, random_init_skipped
from keras_ldm.presets import files
from keras_ldm.presets.shipped import shipped_path
from tests.conftest import to_numpy


def deferred_variables():
    from keras.src.backend.common import global_state

    return list(global_state.get_global_attribute("uninitialized_variables", []) or [])


def forbid_backend_initializers(monkeypatch):
    """Random and constant Keras initializers raise: each would run a backend program (on JAX, one
    XLA compile per new shape)."""

    def refuse(self, shape, dtype=None):
        raise AssertionError(f"{type(self).__name__} ran for a variable of shape {shape}")

    for cls in RANDOM_INITIALIZERS + CONSTANT_INITIALIZERS:
        monkeypatch.setattr(cls, "__call__", refuse)


def test_random_initializers_give_zeros_and_constant_ones_their_constant(monkeypatch):
    forbid_backend_initializers(monkeypatch)
    before = deferred_variables()
    with random_init_skipped():
        dense = keras.layers.Dense(3, bias_initializer=keras.initializers.Constant(0.5))
        dense.build((None, 2))
        norm = keras.layers.LayerNormalization()
        norm.build((None, 3))
        custom = keras.layers.Dense(
            3,
            kernel_initializer=lambda shape, dtype=None: np.full(shape, 2.0, dtype),  # runs as it is
            bias_initializer=keras.initializers.Constant(np.array([1.0, 2.0, 3.0])),
        )
        custom.build((None, 1))
    assert deferred_variables() == before
    np.testing.assert_array_equal(to_numpy(custom.kernel), np.full((1, 3), 2.0))
    np.testing.assert_array_equal(to_numpy(custom.bias), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(to_numpy(dense.kernel), np.zeros((2, 3)))
    np.testing.assert_array_equal(to_numpy(dense.bias), np.full(3, 0.5))
    np.testing.assert_array_equal(to_numpy(norm.gamma), np.ones(3))
    dense.kernel.assign(np.ones((2, 3), "float32"))  # an ordinary variable: assignable, usable
    np.testing.assert_allclose(to_numpy(dense(np.ones((1, 2), "float32"))), np.full((1, 3), 2.5))


def test_an_error_inside_leaves_no_variables_for_keras_to_initialize_later():
    before = deferred_variables()
    with pytest.raises(RuntimeError, match="config"), random_init_skipped():
        keras.layers.Dense(3).build((None, 2))
        raise RuntimeError("a bad config")
    assert deferred_variables() == before


def test_inside_an_outer_stateless_scope_it_changes_nothing():
    with keras.StatelessScope(initialize_variables=False), random_init_skipped():
        dense = keras.layers.Dense(3)
        dense.build((None, 2))
        assert dense.kernel._value is None  # still Keras' own deferred variable
    from keras.src.backend.common import global_state

    global_state.set_global_attribute("uninitialized_variables", [])


def test_preset_loads_without_random_initializers_and_with_every_weight(monkeypatch):
    """The shipped preset's weights, loaded the ordinary way, equal those loaded with the skip."""
    path = shipped_path("shapes_t2i")
    config = files.read_json(f"{path}/{files.CONFIG_FILE}")
    config["config"]["tokenizer"]["config"]["vocabulary"] = f"{path}/{files.VOCABULARY_FILE}"
    ordinary = keras.saving.deserialize_keras_object(config)
    files.load_weights_file(ordinary, f"{path}/{files.WEIGHTS_FILE}")
    forbid_backend_initializers(monkeypatch)
    loaded = LatentDiffusion.from_preset("shapes_t2i")
    assert len(loaded.variables) == len(ordinary.variables)  # same order; names differ by a `_1` suffix
    for fast, slow in zip(loaded.variables, ordinary.variables):
        np.testing.assert_array_equal(to_numpy(fast), to_numpy(slow), err_msg=fast.path)
