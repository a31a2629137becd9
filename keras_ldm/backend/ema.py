"""The EMA step: a training step followed by folding the new weights into the moving averages.

| backend           | `ema_train_step(model, parent_train_step, *args)`                                   |
|-------------------|-------------------------------------------------------------------------------------|
| jax               | Keras' step is pure, `(state, data) -> (logs, state)`: the averages' new values are |
|                   | computed from the returned trainable values (`model.ema.stateless_update`)          |
| tensorflow, torch | the step, then `model.ema.update()` assigns the averages                            |

The maths (CompVis' warm-up decay, the update) is `keras_ldm.training.ema.ExponentialMovingAverage`, in
`keras.ops`; `model.ema` is one. With an optimizer that accumulates gradients
(`gradient_accumulation_steps=k`), the averages move only on the steps where the optimizer applied them
(every k-th), as in diffusers' and CompVis' training loops.
"""

import keras
from keras import ops


def ema_train_step(model, parent_train_step, *args):
    """Runs the backend's `train_step` (`parent_train_step`), then updates `model.ema`."""
    if keras.backend.backend() == "jax":
        return _jax_ema_train_step(model, parent_train_step, *args)
    return _stateful_ema_train_step(model, parent_train_step, *args)


def _jax_ema_train_step(model, parent_train_step, state, data):
    logs, (trainable, non_trainable, optimizer_values, metrics) = parent_train_step(state, data)
    iterations = None
    if _accumulation_steps(model):
        slots = {id(v): i for i, v in enumerate(model.optimizer.variables)}
        iterations = optimizer_values[slots[id(_micro_steps(model))]]
    applied = _applied(model, iterations)
    non_trainable = model.ema.stateless_update(model, trainable, non_trainable, applied)
    return logs, (trainable, non_trainable, optimizer_values, metrics)


def _stateful_ema_train_step(model, parent_train_step, *args):
    logs = parent_train_step(*args)
    model.ema.update(_applied(model, _micro_steps(model) if _accumulation_steps(model) else None))
    return logs


def _accumulation_steps(model):
    return getattr(model.optimizer, "gradient_accumulation_steps", None)


def _micro_steps(model):
    """The optimizer's count of batches; its public `iterations` counts the updates (batches // k)."""
    return model.optimizer._iterations


def _applied(model, iterations):
    """Whether the step that just ran applied the gradients: None (always) without accumulation."""
    if iterations is None:
        return None
    steps = _accumulation_steps(model)
    return ops.equal(ops.mod(ops.convert_to_tensor(iterations), steps), 0)
