"""keras_ldm models: the first-stage autoencoders and the denoising UNet."""

from keras_ldm.models.autoencoder import AutoencoderKL, Decoder, Encoder, VQAutoencoder
from keras_ldm.models.conditioners import ClassEmbedder
from keras_ldm.models.latent_diffusion import LatentDiffusion
from keras_ldm.models.unet import UNet

__all__ = ["AutoencoderKL", "ClassEmbedder", "Decoder", "Encoder", "LatentDiffusion", "UNet", "VQAutoencoder"]
