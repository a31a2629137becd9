"""Deprecated alias of keras_ldm.backend.gradients: `keras_ldm.training.gradients` warns on import and will be removed."""

import warnings

from keras_ldm.backend.gradients import apply_gradients, run_test_step, run_train_step, snapshot, value_and_grad

__all__ = ["apply_gradients", "run_test_step", "run_train_step", "snapshot", "value_and_grad"]

warnings.warn(
    "keras_ldm.training.gradients is deprecated: import from keras_ldm.backend.gradients.",
    DeprecationWarning,
    stacklevel=2,
)
