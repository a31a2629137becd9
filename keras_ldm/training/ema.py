"""Exponential moving average of trained weights, with CompVis' warm-up decay `min(d, (1+n)/(10+n))`.

The averages are non-trainable variables of the model that owns them, so they are saved, restored
and checkpointed with it. The maths is here, in `keras.ops`; the training step that applies it after the
optimizer step (statelessly on JAX, by assignment elsewhere) is `keras_ldm.backend.ema.ema_train_step`.
"""

import contextlib

import keras
import numpy as np
from keras import ops


def warmup_decay(decay, num_updates):
    """CompVis `LitEma` decay after `num_updates` updates: `min(decay, (1 + n) / (10 + n))`.

    Example:
    >>> round(float(keras.ops.convert_to_numpy(warmup_decay(0.9999, 1))), 4)
    0.1818
    """
    n = ops.cast(num_updates, "float32")
    return ops.minimum(decay, (1.0 + n) / (10.0 + n))


class ExponentialMovingAverage:
    """Shadow copies of `variables` (created on `owner`), updated after every training step.

    Args:
        owner: the Keras model or layer that holds the averages (they are its non-trainable weights).
        variables: the variables to average (e.g. a UNet's trainable variables).
        decay: the target decay (CompVis uses 0.9999).

    Example:
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> owner = keras.layers.Layer()
    >>> ema = ExponentialMovingAverage(owner, layer.trainable_variables, decay=0.9)
    >>> ema.update()
    >>> float(keras.ops.convert_to_numpy(ema.num_updates))
    1.0
    """

    def __init__(self, owner, variables, decay):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay={decay!r}; expected a value in (0, 1), e.g. 0.9999.")
        self.decay = decay
        self.sources = list(variables)
        self.averages = [
            owner.add_weight(
                shape=v.shape,
                initializer=_copy_of(v),
                trainable=False,
                name=f"ema_{i}_{v.name}",
                dtype=v.dtype,
            )
            for i, v in enumerate(self.sources)
        ]
        self.num_updates = owner.add_weight(
            shape=(), initializer="zeros", trainable=False, name="ema_num_updates"
        )

    def new_values(self, source_values, average_values, num_updates, applied=None):
        """Pure update: `(averages, num_updates)` after folding in `source_values`.

        `applied`: a boolean scalar, False on the micro-steps of gradient accumulation where the optimizer
        did not change the weights: the averages and the count then stay as they are.
        """
        count = num_updates + 1.0
        decay = warmup_decay(self.decay, count)
        averages = [
            decay * ops.cast(a, "float32") + (1.0 - decay) * ops.cast(s, "float32")
            for s, a in zip(source_values, average_values)
        ]
        averages = [ops.cast(a, v.dtype) for a, v in zip(averages, self.averages)]
        if applied is None:
            return averages, count
        averages = [ops.where(applied, new, old) for new, old in zip(averages, average_values)]
        return averages, ops.where(applied, count, num_updates)

    def update(self, applied=None):
        """Stateful update from the current values of the source variables (see `new_values`)."""
        averages, count = self.new_values(
            [ops.convert_to_tensor(v) for v in self.sources],
            [ops.convert_to_tensor(a) for a in self.averages],
            ops.convert_to_tensor(self.num_updates),
            applied,
        )
        for average, value in zip(self.averages, averages):
            average.assign(value)
        self.num_updates.assign(count)

    def stateless_update(self, model, trainable_values, non_trainable_values, applied=None):
        """The model's new non-trainable values, given its trainable and non-trainable values (for JAX's
        pure training step); `applied` as in `new_values`."""
        trainable_index = {id(v): i for i, v in enumerate(model.trainable_variables)}
        non_trainable_index = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
        sources = [trainable_values[trainable_index[id(v)]] for v in self.sources]
        average_slots = [non_trainable_index[id(a)] for a in self.averages]
        count_slot = non_trainable_index[id(self.num_updates)]
        averages, count = self.new_values(
            sources,
            [non_trainable_values[i] for i in average_slots],
            non_trainable_values[count_slot],
            applied,
        )
        values = list(non_trainable_values)
        for slot, value in zip(average_slots, averages):
            values[slot] = value
        values[count_slot] = count
        return values

    @contextlib.contextmanager
    def scope(self):
        """Temporarily puts the averages into the source variables (CompVis `ema_scope`)."""
        raw = [np.array(keras.ops.convert_to_numpy(v)) for v in self.sources]
        for source, average in zip(self.sources, self.averages):
            source.assign(average)
        try:
            yield
        finally:
            for source, value in zip(self.sources, raw):
                source.assign(value)


def _copy_of(variable):
    value = np.array(keras.ops.convert_to_numpy(variable))
    return lambda shape, dtype=None: ops.cast(ops.convert_to_tensor(value), dtype or variable.dtype)
