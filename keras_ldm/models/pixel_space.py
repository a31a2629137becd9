"""`PixelSpace`: the identity first stage (f = 1, no autoencoder), for diffusion directly on pixels.

The paper's §4.1 compares LDMs with downsampling factors f = 2 ... 32 against a pixel-space diffusion model
(LDM-1, "no first stage"). With `PixelSpace` as its `first_stage`, `LatentDiffusion` is that model: the UNet
denoises the images themselves (in [-1, 1]); training, sampling, presets and export are unchanged.

Example:
>>> from keras_ldm.models import LatentDiffusion, UNet
>>> unet = UNet(in_channels=3, out_channels=3, model_channels=32, channel_mult=(1,), num_res_blocks=1,
...             attention_resolutions=(), num_heads=1)
>>> model = LatentDiffusion(unet, PixelSpace(channels=3))
>>> model.generate(batch_size=2, num_steps=2, height=8, width=8).shape
(2, 8, 8, 3)
"""

import keras

from keras_ldm.models.checks import check_feature_map


@keras.saving.register_keras_serializable(package="keras_ldm")
class PixelSpace(keras.Model):
    """The identity first stage: `encode(x) = x`, `decode(z) = z`, with f = 1 and no weights.

    Args:
        channels: image channels (3 for RGB, 1 for grey); the "latent" channels are the same.
    """

    downsample_factor = 1
    regularization = None

    def __init__(self, channels=3, **kwargs):
        super().__init__(**kwargs)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"`channels` must be an int >= 1; got {channels!r}.")
        self.in_channels = self.out_channels = self.embed_dim = channels
        self.built = True

    def encode(self, images, training=None):
        """Images `(B, H, W, channels)` in [-1, 1] -> the same tensor (the "latents")."""
        check_feature_map(images, "images", self.in_channels)
        return images

    def decode(self, latents, training=None):
        """Latents (pixels) -> the same tensor."""
        check_feature_map(latents, "latents", self.embed_dim)
        return latents

    def call(self, images, training=None):
        return self.encode(images)

    def get_config(self):
        return {**super().get_config(), "channels": self.in_channels}
