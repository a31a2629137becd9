"""`fit` under Keras' mixed-precision policies: finite losses, float32 weights, and (mixed_float16) the
loss-scaling optimizer Keras adds."""

import keras
import numpy as np
import pytest

from keras_ldm.models import LatentDiffusion
from tests import tiny_models
from tests.conftest import to_numpy


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_is_finite(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = LatentDiffusion(tiny_models.unet(), tiny_models.vae(), ema_decay=0.9)
        model.compile(learning_rate=1e-3)
        images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype("uint8")
        history = model.fit({"images": images}, batch_size=2, epochs=2, verbose=0)
    finally:
        keras.config.set_dtype_policy(previous)
    losses = history.history["loss"]
    assert len(losses) == 2 and np.all(np.isfinite(losses)), losses
    assert {v.dtype for v in model.unet.trainable_variables} == {"float32"}
    assert np.all([np.isfinite(to_numpy(v)).all() for v in model.ema.averages])
    is_loss_scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert is_loss_scaled == (policy == "mixed_float16")
