"""keras_ldm models: the first-stage autoencoders and the denoising UNet."""

from keras_ldm.models.autoencoder import AutoencoderKL, Decoder, Encoder, VQAutoencoder
from keras_ldm.models.conditioners import ClassEmbedder
from keras_ldm.models.latent_diffusion import LatentDiffusion
from keras_ldm.models.pixel_space import PixelSpace
from keras_ldm.models.spatial_rescaler import SpatialRescaler
from keras_ldm.models.text_encoder import LDMBertEncoder
from keras_ldm.models.tokenizer import LDMBertTokenizer
from keras_ldm.models.unet import UNet

__all__ = [
    "AutoencoderKL",
    "ClassEmbedder",
    "Decoder",
    "Encoder",
    "LDMBertEncoder",
    "LDMBertTokenizer",
    "LatentDiffusion",
    "PixelSpace",
    "SpatialRescaler",
    "UNet",
    "VQAutoencoder",
]
