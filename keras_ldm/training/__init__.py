"""Training machinery: the autoencoders' adversarial `fit()` and the backend-specific gradient helpers."""

from keras_ldm.training.autoencoder_trainer import AutoencoderTrainer, metric_names
from keras_ldm.training.optimizers import OptimizerPair

__all__ = ["AutoencoderTrainer", "OptimizerPair", "metric_names"]
