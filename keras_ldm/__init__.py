"""keras_ldm: Latent Diffusion Models (Rombach et al., CVPR 2022) for Keras 3 on JAX, TensorFlow and PyTorch."""

from keras_ldm import convert, diffusion, layers, losses, metrics, models, training
from keras_ldm.models import AutoencoderKL, LatentDiffusion, UNet, VQAutoencoder

__version__ = "0.1.0"

__all__ = [
    "AutoencoderKL",
    "LatentDiffusion",
    "UNet",
    "VQAutoencoder",
    "convert",
    "diffusion",
    "layers",
    "losses",
    "models",
    "training",
]
