"""The EMA step: a training step followed by folding the new weights into the moving averages.

| backend           | `ema_train_step(model, parent_train_step, *args)`                                   |
|-------------------|-------------------------------------------------------------------------------------|
| jax               | Keras' step is pure, `(state, data) -> (logs, state)`: the averages' new values are |
|                   | computed from the returned trainable values (`model.ema.stateless_update`)          |
| tensorflow, torch | the step, then `model.ema.update()` assigns the averages                            |

The maths (CompVis' warm-up decay, the update) is `keras_ldm.training.ema.ExponentialMovingAverage`, in
`keras.ops`; `model.ema` is one.
"""

import keras


def ema_train_step(model, parent_train_step, *args):
    """Runs the backend's `train_step` (`parent_train_step`), then updates `model.ema`."""
    if keras.backend.backend() == "jax":
        return _jax_ema_train_step(model, parent_train_step, *args)
    return _stateful_ema_train_step(model, parent_train_step, *args)


def _jax_ema_train_step(model, parent_train_step, state, data):
    logs, (trainable, non_trainable, optimizer_values, metrics) = parent_train_step(state, data)
    non_trainable = model.ema.stateless_update(model, trainable, non_trainable)
    return logs, (trainable, non_trainable, optimizer_values, metrics)


def _stateful_ema_train_step(model, parent_train_step, *args):
    logs = parent_train_step(*args)
    model.ema.update()
    return logs
