"""Learning-rate schedules used to train LDMs."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ldm")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Ramps the learning rate linearly from 0 to `learning_rate` over `warmup_steps`, then holds it.

    CompVis' `LambdaLinearScheduler` with one cycle and a constant tail.

    Example:
    >>> schedule = LinearWarmup(1e-4, warmup_steps=100)
    >>> [round(float(keras.ops.convert_to_numpy(schedule(s))), 6) for s in (0, 50, 100, 1000)]
    [1e-06, 5.1e-05, 0.0001, 0.0001]
    """

    def __init__(self, learning_rate, warmup_steps):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps={warmup_steps!r}; expected a number >= 0.")
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        return self.learning_rate * ops.minimum(1.0, step / max(float(self.warmup_steps), 1.0))

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}
