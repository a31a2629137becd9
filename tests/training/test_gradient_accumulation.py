"""Gradient accumulation through `LatentDiffusion.compile`: k batches of b make one update equal to one batch
of k*b, and the EMA moves once per update."""

import keras
import numpy as np
import pytest

from keras_ldm.models import LatentDiffusion
from tests import tiny_models
from tests.conftest import to_numpy


@pytest.fixture
def fixed_noise(monkeypatch):
    """The same noise value and timestep for every example: a batch's loss is then the mean of its examples'
    losses whatever the batch split, so gradient accumulation must reproduce the big batch exactly."""
    monkeypatch.setattr(keras.random, "normal", lambda shape, *args, **kwargs: keras.ops.full(shape, 0.3))
    monkeypatch.setattr(
        keras.random, "randint", lambda shape, *args, **kwargs: keras.ops.full(shape, 37, dtype="int32")
    )


def tiny_model(**kwargs):
    return LatentDiffusion(tiny_models.unet(), tiny_models.vae(), **kwargs)


IMAGES = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype("uint8")


def test_two_accumulated_batches_equal_one_batch_of_twice_the_size(fixed_noise):
    accumulated, big = tiny_model(), tiny_model()
    big.set_weights(accumulated.get_weights())
    accumulated.compile(optimizer=keras.optimizers.SGD(0.5, gradient_accumulation_steps=2))
    big.compile(optimizer=keras.optimizers.SGD(0.5))
    before = to_numpy(accumulated.unet.trainable_variables[-1])
    accumulated.fit({"images": IMAGES}, batch_size=2, epochs=1, shuffle=False, verbose=0)
    big.fit({"images": IMAGES}, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for ours, theirs in zip(accumulated.unet.trainable_variables, big.unet.trainable_variables):
        np.testing.assert_allclose(to_numpy(ours), to_numpy(theirs), atol=1e-5, err_msg=ours.path)
    assert np.abs(to_numpy(accumulated.unet.trainable_variables[-1]) - before).max() > 1e-4  # it trained
    assert int(to_numpy(accumulated.optimizer.iterations)) == 1  # updates (Keras counts batches // k)


def test_the_ema_moves_once_per_update_and_compile_passes_the_steps_on():
    model = tiny_model(ema_decay=0.9)
    model.compile(learning_rate=1e-3, gradient_accumulation_steps=2)
    assert model.optimizer.gradient_accumulation_steps == 2
    first = to_numpy(model.unet.trainable_variables[0])
    model.fit({"images": IMAGES[:2]}, batch_size=2, epochs=1, verbose=0)  # one micro-step: nothing applied
    np.testing.assert_array_equal(to_numpy(model.unet.trainable_variables[0]), first)
    assert float(to_numpy(model.ema.num_updates)) == 0.0
    model.fit({"images": IMAGES}, batch_size=2, epochs=1, verbose=0)  # micro-steps 2 and 3: one update
    assert float(to_numpy(model.ema.num_updates)) == 1.0
    with pytest.raises(ValueError, match="pass it there"):
        model.compile(optimizer="sgd", gradient_accumulation_steps=2)
