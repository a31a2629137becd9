"""`fit_steps`: a step-counted `fit` on in-memory arrays, with whole passes and a time budget."""

import keras
import numpy as np
import pytest

from keras_ldm.training.callbacks import TimeBudget
from keras_ldm.training.fit_steps import fit_steps


def dense_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


def test_runs_the_asked_steps_over_several_passes_and_learns():
    x = np.random.default_rng(0).normal(size=(20, 2)).astype("float32")
    y = x @ np.array([[1.0], [-2.0]], "float32")
    model = dense_model()

    def error():
        return np.abs(keras.ops.convert_to_numpy(model.layers[0].kernel).ravel() - [1.0, -2.0]).max()

    before = error()
    assert fit_steps(model, (x, y), steps=30, batch_size=4, name="dense", log_every=5) == 30  # 20 -> 3 passes
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 30
    assert error() < before / 2


def test_the_time_budget_ends_training_early(capsys):
    model = dense_model()
    x, y = np.zeros((8, 2), "float32"), np.zeros((8, 1), "float32")
    assert fit_steps(model, (x, y), steps=40, batch_size=2, name="dense", log_every=4, time_budget=1e-9) == 1
    out = capsys.readouterr().out
    assert "dense: 1 steps in" in out and "(time budget reached)" in out


def test_bad_arguments_are_named():
    model = dense_model()
    with pytest.raises(ValueError, match=r"`data` holds 3 examples; .* at least batch_size \* log_every = 8"):
        fit_steps(model, (np.zeros((3, 2)), np.zeros((3, 1))), steps=8, batch_size=2, name="d", log_every=4)
    with pytest.raises(ValueError, match=r"`steps` \(2\) must be at least `log_every` \(4\)"):
        fit_steps(model, (np.zeros((8, 2)), np.zeros((8, 1))), steps=2, batch_size=2, name="d", log_every=4)
    with pytest.raises(ValueError, match=r"`seconds` must be a positive number; got 0"):
        TimeBudget(0)
