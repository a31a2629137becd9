"""The first stage: Encoder/Decoder and the KL- and VQ-regularised autoencoders."""

from functools import partial

import keras
from keras import ops

from keras_ldm.backend.traced_call import kept_traced_call
from keras_ldm.layers.attention import AttnBlock
from keras_ldm.layers.conv import conv2d
from keras_ldm.layers.distributions import DiagonalGaussian
from keras_ldm.layers.normalization import group_norm
from keras_ldm.layers.quantizer import VectorQuantizer
from keras_ldm.layers.resnet import Downsample, ResBlock, Upsample
from keras_ldm.models.blocks import Stage, build_stage, mid_stage, run_mid_stage
from keras_ldm.models.checks import check_feature_map
from keras_ldm.models.preset_mixin import PresetMixin
from keras_ldm.training.autoencoder_trainer import AutoencoderTrainer

EPSILON = 1e-6  # GroupNorm epsilon of the CompVis autoencoders


def _level_stage(name, channels, count, attention, make_resampler, dropout, groups):
    """One resolution level of the Encoder (`down_blocks_i`) or Decoder (`up_blocks_i`): `count`
    ResBlocks, each followed by an AttnBlock when `attention`, then `make_resampler()` if given
    (created last, as the layers were before this helper)."""
    resnets = [
        ResBlock(channels, dropout=dropout, epsilon=EPSILON, groups=groups, name=f"{name}_resnets_{j}")
        for j in range(count)
    ]
    attentions = (
        [AttnBlock(groups=groups, name=f"{name}_attentions_{j}") for j in range(count)] if attention else []
    )
    resampler = None if make_resampler is None else make_resampler()
    return Stage(resnets, attentions, resampler, name=name)


def _mid_block(channels, attention, dropout, groups):
    """The middle stage shared by Encoder and Decoder (its AttnBlock only with `attention`)."""
    block = AttnBlock(groups=groups, name="mid_block_attentions_0") if attention else None
    return mid_stage(channels, block, dropout=dropout, epsilon=EPSILON, groups=groups)


def _run_level_stages(stages, h, training):
    """Runs `_level_stage`s in order: ResBlock (-> AttnBlock) per block, then the resampler."""
    for stage in stages:
        for j, resnet in enumerate(stage.resnets):
            h = resnet(h, training=training)
            if stage.attentions:
                h = stage.attentions[j](h)
        if stage.resampler is not None:
            h = stage.resampler(h)
    return h


@keras.saving.register_keras_serializable(package="keras_ldm")
class Encoder(keras.layers.Layer):
    """Image `(B, H, W, in_channels)` -> moments `(B, H/f, W/f, z)` with f = 2^(levels-1).

    Args:
        ch: base channel count; level i has `ch * ch_mult[i]` channels.
        ch_mult: channel multipliers per resolution level.
        num_res_blocks: ResBlocks per level.
        attn_resolutions: pixel resolutions (relative to `resolution`) that get an AttnBlock.
        resolution: nominal input size, only used to place `attn_resolutions`.
        in_channels: image channels.
        z_channels: latent channels; the output has twice as many with `double_z`.
        double_z: output mean and log-variance (KL) instead of one latent (VQ).
        dropout: dropout rate in the ResBlocks.
        mid_attention: whether the middle block has its AttnBlock (CompVis `attn_type="none"`).
        norm_num_groups: GroupNorm groups (CompVis: 32).

    Example:
    >>> enc = Encoder(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4)
    >>> tuple(enc(keras.ops.ones((1, 16, 16, 3))).shape)
    (1, 8, 8, 8)
    """

    def __init__(
        self,
        ch=128,
        ch_mult=(1, 2, 4, 4),
        num_res_blocks=2,
        attn_resolutions=(),
        resolution=256,
        in_channels=3,
        z_channels=4,
        double_z=True,
        dropout=0.0,
        mid_attention=True,
        norm_num_groups=32,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.ch, self.ch_mult, self.num_res_blocks = ch, tuple(ch_mult), num_res_blocks
        self.attn_resolutions, self.resolution = tuple(attn_resolutions), resolution
        self.in_channels, self.z_channels, self.double_z = in_channels, z_channels, double_z
        self.dropout, self.mid_attention = dropout, mid_attention
        self.norm_num_groups = groups = norm_num_groups
        self.conv_in = conv2d(ch, name="conv_in")
        self.down_blocks = []
        size = resolution
        for level, mult in enumerate(self.ch_mult):
            last = level == len(self.ch_mult) - 1
            name = f"down_blocks_{level}"
            downsample = (
                None if last else partial(Downsample, ch * mult, padding="asymmetric", name=f"{name}_downsample")
            )
            attention = size in self.attn_resolutions
            self.down_blocks.append(
                _level_stage(name, ch * mult, num_res_blocks, attention, downsample, dropout, groups)
            )
            size = size if last else size // 2
        self.mid_block = _mid_block(ch * self.ch_mult[-1], mid_attention, dropout, groups)
        self.conv_norm_out = group_norm(EPSILON, groups, name="conv_norm_out")
        self.conv_out = conv2d(2 * z_channels if double_z else z_channels, name="conv_out")

    @property
    def downsample_factor(self):
        return 2 ** (len(self.ch_mult) - 1)

    def build(self, input_shape=None):
        self.conv_in.build((None, None, None, self.in_channels))
        channels = self.ch
        for level, stage in enumerate(self.down_blocks):
            build_stage(stage, channels, self.ch * self.ch_mult[level])
            channels = self.ch * self.ch_mult[level]
        build_stage(self.mid_block, channels, channels)
        self.conv_norm_out.build((None, None, None, channels))
        self.conv_out.build((None, None, None, channels))

    def call(self, x, training=None):
        h = _run_level_stages(self.down_blocks, self.conv_in(x), training)
        h = run_mid_stage(self.mid_block, h, training=training)
        return self.conv_out(ops.silu(self.conv_norm_out(h)))

    def get_config(self):
        return {
            **super().get_config(),
            "ch": self.ch,
            "ch_mult": list(self.ch_mult),
            "num_res_blocks": self.num_res_blocks,
            "attn_resolutions": list(self.attn_resolutions),
            "resolution": self.resolution,
            "in_channels": self.in_channels,
            "z_channels": self.z_channels,
            "double_z": self.double_z,
            "dropout": self.dropout,
            "mid_attention": self.mid_attention,
            "norm_num_groups": self.norm_num_groups,
        }


@keras.saving.register_keras_serializable(package="keras_ldm")
class Decoder(keras.layers.Layer):
    """Latent `(B, h, w, z_channels)` -> image `(B, h*f, w*f, out_channels)`.

    Takes the same arguments as `Encoder` (with `out_channels` for the image) and mirrors it:
    `num_res_blocks + 1` ResBlocks per level, nearest-neighbour upsampling plus a conv.

    Example:
    >>> dec = Decoder(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=4)
    >>> tuple(dec(keras.ops.ones((1, 8, 8, 4))).shape)
    (1, 16, 16, 3)
    """

    def __init__(
        self,
        ch=128,
        ch_mult=(1, 2, 4, 4),
        num_res_blocks=2,
        attn_resolutions=(),
        resolution=256,
        out_channels=3,
        z_channels=4,
        dropout=0.0,
        mid_attention=True,
        norm_num_groups=32,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.ch, self.ch_mult, self.num_res_blocks = ch, tuple(ch_mult), num_res_blocks
        self.attn_resolutions, self.resolution = tuple(attn_resolutions), resolution
        self.out_channels, self.z_channels = out_channels, z_channels
        self.dropout, self.mid_attention = dropout, mid_attention
        self.norm_num_groups = groups = norm_num_groups
        top = ch * self.ch_mult[-1]
        self.conv_in = conv2d(top, name="conv_in")
        self.mid_block = _mid_block(top, mid_attention, dropout, groups)
        self.up_blocks = []
        size = resolution // 2 ** (len(self.ch_mult) - 1)
        for index, level in enumerate(reversed(range(len(self.ch_mult)))):
            out = ch * self.ch_mult[level]
            name = f"up_blocks_{index}"
            upsample = partial(Upsample, out, name=f"{name}_upsample") if level else None
            attention = size in self.attn_resolutions
            self.up_blocks.append(
                _level_stage(name, out, num_res_blocks + 1, attention, upsample, dropout, groups)
            )
            size = size * 2 if level else size
        self.conv_norm_out = group_norm(EPSILON, groups, name="conv_norm_out")
        self.conv_out = conv2d(out_channels, name="conv_out")

    def build(self, input_shape=None):
        channels = self.ch * self.ch_mult[-1]
        self.conv_in.build((None, None, None, self.z_channels))
        build_stage(self.mid_block, channels, channels)
        for stage, level in zip(self.up_blocks, reversed(range(len(self.ch_mult)))):
            build_stage(stage, channels, self.ch * self.ch_mult[level])
            channels = self.ch * self.ch_mult[level]
        self.conv_norm_out.build((None, None, None, channels))
        self.conv_out.build((None, None, None, channels))

    def features(self, z, training=None):
        """The activations `conv_out` maps to the image (training takes gradients at `conv_out`)."""
        h = run_mid_stage(self.mid_block, self.conv_in(z), training=training)
        h = _run_level_stages(self.up_blocks, h, training)
        return ops.silu(self.conv_norm_out(h))

    def call(self, z, training=None):
        return self.conv_out(self.features(z, training=training))

    def get_config(self):
        return {
            **super().get_config(),
            "ch": self.ch,
            "ch_mult": list(self.ch_mult),
            "num_res_blocks": self.num_res_blocks,
            "attn_resolutions": list(self.attn_resolutions),
            "resolution": self.resolution,
            "out_channels": self.out_channels,
            "z_channels": self.z_channels,
            "dropout": self.dropout,
            "mid_attention": self.mid_attention,
            "norm_num_groups": self.norm_num_groups,
        }


class _Autoencoder(PresetMixin, keras.Model):
    """What both first stages share: the encoder/decoder pair, their config and input checks."""

    preset_kind = "autoencoder"

    def __init__(
        self,
        in_channels=3,
        out_channels=3,
        ch=128,
        ch_mult=(1, 2, 4, 4),
        num_res_blocks=2,
        attn_resolutions=(),
        resolution=256,
        z_channels=4,
        embed_dim=4,
        dropout=0.0,
        mid_attention=True,
        norm_num_groups=32,
        **kwargs,
    ):
        super().__init__(**kwargs)
        shared = dict(
            ch=ch,
            ch_mult=ch_mult,
            num_res_blocks=num_res_blocks,
            attn_resolutions=attn_resolutions,
            resolution=resolution,
            z_channels=z_channels,
            dropout=dropout,
            mid_attention=mid_attention,
            norm_num_groups=norm_num_groups,
        )
        self.architecture = dict(
            shared, in_channels=in_channels, out_channels=out_channels, embed_dim=embed_dim
        )
        self.architecture["ch_mult"] = list(ch_mult)
        self.architecture["attn_resolutions"] = list(attn_resolutions)
        self.in_channels, self.out_channels, self.embed_dim = in_channels, out_channels, embed_dim
        self.z_channels = z_channels
        self.encoder = Encoder(in_channels=in_channels, double_z=self.double_z, name="encoder", **shared)
        self.decoder = Decoder(out_channels=out_channels, name="decoder", **shared)

    @property
    def downsample_factor(self):
        """Spatial factor f between images and latents."""
        return self.encoder.downsample_factor

    def _run_encoder(self, images, training):
        """The encoder; on PyTorch recorded from the second call of a signature on (see
        `keras_ldm.backend.traced_call`: training steps and repeated `generate()` calls)."""
        return kept_traced_call(self, "encoder", self.encoder, eager_calls=1)(images, training=training)

    def _run_decoder(self, features, training):
        """The decoder, recorded like the encoder."""
        return kept_traced_call(self, "decoder", self.decoder, eager_calls=1)(features, training=training)

    def _check_images(self, images):
        check_feature_map(images, "images", self.in_channels, self.downsample_factor)

    def _check_latents(self, latents):
        check_feature_map(latents, "latents", self.embed_dim)

    def get_config(self):
        return {**super().get_config(), **self.architecture}


@keras.saving.register_keras_serializable(package="keras_ldm")
class AutoencoderKL(AutoencoderTrainer, _Autoencoder):
    """KL-regularised autoencoder: `encode` gives a `DiagonalGaussian` over `embed_dim` latents.

    Images are channels-last floats in [-1, 1]; the latents are `H/f x W/f x embed_dim`.
    `compile(...)` then `fit(...)` trains it with L1 + LPIPS + KL + a PatchGAN (see `AutoencoderTrainer`).

    Example:
    >>> vae = AutoencoderKL(ch=32, ch_mult=(1, 2), num_res_blocks=1, embed_dim=4)
    >>> posterior = vae.encode(keras.ops.zeros((1, 16, 16, 3)))
    >>> tuple(vae.decode(posterior.mode()).shape)
    (1, 16, 16, 3)
    """

    double_z = True
    regularization = "kl"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.quant_conv = conv2d(2 * self.embed_dim, 1, name="quant_conv")
        self.post_quant_conv = conv2d(self.z_channels, 1, name="post_quant_conv")
        self.build()

    def build(self, input_shape=None):
        self.encoder.build()
        self.decoder.build()
        self.quant_conv.build((None, None, None, 2 * self.z_channels))
        self.post_quant_conv.build((None, None, None, self.embed_dim))
        self.built = True

    def encode(self, images, training=None):
        """Images `(B, H, W, in_channels)` -> the posterior over latents."""
        self._check_images(images)
        return DiagonalGaussian(self.quant_conv(self._run_encoder(images, training)))

    def decode(self, latents, training=None):
        """Latents `(B, h, w, embed_dim)` -> images `(B, h*f, w*f, out_channels)`."""
        self._check_latents(latents)
        return self._run_decoder(self.post_quant_conv(latents), training)

    def call(self, images, sample_posterior=False, seed=None, training=None):
        """Reconstruction of `images` (from the posterior mean unless `sample_posterior`)."""
        posterior = self.encode(images, training=training)
        latents = posterior.sample(seed) if sample_posterior else posterior.mode()
        return self.decode(latents, training=training)


@keras.saving.register_keras_serializable(package="keras_ldm")
class VQAutoencoder(AutoencoderTrainer, _Autoencoder):
    """VQ-regularised autoencoder: the quantiser sits at the start of decoding (CompVis' `VQModelInterface`).

    `encode` returns the pre-quantisation latents `h`; `decode(h)` quantises them (unless
    `force_not_quantize`) and decodes; `quantize_latents(h)` exposes codes, codebook loss and perplexity.
    `compile(...)` then `fit(...)` trains it with L1 + LPIPS + codebook loss + a PatchGAN.

    Args (besides those of `AutoencoderKL`):
        n_embed: codebook size; beta, legacy, remap, unknown_index: see `VectorQuantizer`.

    Example:
    >>> vq = VQAutoencoder(ch=32, ch_mult=(1, 2), num_res_blocks=1, embed_dim=3, n_embed=64)
    >>> h = vq.encode(keras.ops.zeros((1, 16, 16, 3)))
    >>> tuple(vq.quantize_latents(h)["indices"].shape), tuple(vq.decode(h).shape)
    ((1, 8, 8), (1, 16, 16, 3))
    """

    double_z = False
    regularization = "vq"

    def __init__(self, n_embed=8192, beta=0.25, legacy=True, remap=None, unknown_index="extra", **kwargs):
        super().__init__(**kwargs)
        self.quantizer_config = dict(
            n_embed=n_embed, beta=beta, legacy=legacy, remap=remap, unknown_index=unknown_index
        )
        self.quant_conv = conv2d(self.embed_dim, 1, name="quant_conv")
        self.quantizer = VectorQuantizer(embed_dim=self.embed_dim, name="quantize", **self.quantizer_config)
        self.post_quant_conv = conv2d(self.z_channels, 1, name="post_quant_conv")
        self.build()

    def build(self, input_shape=None):
        self.encoder.build()
        self.decoder.build()
        self.quant_conv.build((None, None, None, self.z_channels))
        self.quantizer.build((None, None, None, self.embed_dim))
        self.post_quant_conv.build((None, None, None, self.embed_dim))
        self.built = True

    def encode(self, images, training=None):
        """Images -> pre-quantisation latents `(B, h, w, embed_dim)`."""
        self._check_images(images)
        return self.quant_conv(self._run_encoder(images, training))

    def quantize_latents(self, latents):
        """Nearest-code quantisation: dict of `quantized`, `loss`, `indices`, `perplexity`."""
        self._check_latents(latents)
        return self.quantizer(latents)

    def decode(self, latents, force_not_quantize=False, training=None):
        """Latents -> images, quantising first unless `force_not_quantize`."""
        self._check_latents(latents)
        if not force_not_quantize:
            latents = self.quantizer(latents)["quantized"]
        return self._run_decoder(self.post_quant_conv(latents), training)

    def decode_indices(self, indices, training=None):
        """Code indices `(B, h, w)` -> images."""
        return self._run_decoder(self.post_quant_conv(self.quantizer.lookup(indices)), training)

    def call(self, images, training=None):
        """Reconstruction of `images` through the codebook."""
        return self.decode(self.encode(images, training=training), training=training)

    def get_config(self):
        return {**super().get_config(), **self.quantizer_config}
