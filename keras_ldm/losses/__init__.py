"""First-stage training losses: LPIPS perceptual distance, the PatchGAN discriminator and their combination."""

from keras_ldm.losses.autoencoder_loss import (
    AutoencoderLoss,
    adaptive_weight,
    adopt_weight,
    generator_adversarial_loss,
)
from keras_ldm.losses.discriminator import ActNorm, NLayerDiscriminator, hinge_d_loss, vanilla_d_loss
from keras_ldm.losses.perceptual import LPIPS, LPIPS_VGG16_LAYERS

__all__ = [
    "LPIPS",
    "LPIPS_VGG16_LAYERS",
    "ActNorm",
    "AutoencoderLoss",
    "NLayerDiscriminator",
    "adaptive_weight",
    "adopt_weight",
    "generator_adversarial_loss",
    "hinge_d_loss",
    "vanilla_d_loss",
]
