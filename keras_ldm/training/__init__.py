"""Training machinery: the autoencoders' adversarial `fit()`, EMA, schedules, callbacks, fit steps.

The backend-specific parts (gradients, the EMA training step) are in `keras_ldm.backend`."""

from keras_ldm.training.autoencoder_trainer import AutoencoderTrainer, metric_names
from keras_ldm.training.optimizers import OptimizerPair

__all__ = ["AutoencoderTrainer", "OptimizerPair", "metric_names"]
