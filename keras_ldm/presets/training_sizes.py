"""Model sizes for training from scratch (`keras-ldm train-autoencoder` / `keras-ldm train`).

Autoencoders (`--architecture` of `train-autoencoder`):

| name       | model                                                                  | parameters |
|------------|------------------------------------------------------------------------|-----------:|
| `tiny`     | KL, f=1, ch 32, 4 latent channels; a 1-layer discriminator. **For tests** (seconds on a CPU) | 0.14M |
| `small`    | KL-f4, ch 64, mult 1,2,4, 3 latent channels (CompVis kl-f4 at half width) | 13.9M |
| `kl_f4` ... `vq_f16` | the CompVis first stages (`keras_ldm.presets.architectures.FIRST_STAGES`) | kl_f8: 84M |

Denoisers (`--architecture` of `train`; the text encoder or class table comes with the size), parameters
without / with cross-attention:

| name    | UNet                                                            | parameters  | LDMBert text encoder      |
|---------|-----------------------------------------------------------------|-------------|---------------------------|
| `tiny`  | 32 channels, one level, one block. **For tests**                | 0.16M/0.25M | 1 layer, width 16         |
| `small` | 64 channels, mult 1,2,4, attention at 2,4, 32-channel heads      | 16M/25M     | 4 layers, width 256, 3.4M |
| `base`  | CompVis celeba256/ffhq256: 224, mult 1,2,3,4, attention 8,4,2   | 274M/415M   | 8 layers, width 512, 26M  |

A class-conditional model's class embedding has the text encoder's width (cin256-v2: 512).

Example:
>>> vae = build_autoencoder("tiny", channels=1)
>>> vae.in_channels, vae.out_channels, vae.downsample_factor
(1, 1, 1)
>>> build_unet("tiny", in_channels=4, out_channels=4).channel_mult
(1,)
"""

from keras_ldm.models.autoencoder import AutoencoderKL, VQAutoencoder
from keras_ldm.models.text_encoder import LDMBertEncoder
from keras_ldm.models.unet import UNet
from keras_ldm.presets.architectures import FIRST_STAGES

# CompVis' discriminator (NLayerDiscriminator, ndf 64, 3 layers) unless a size says otherwise.
COMPVIS_DISCRIMINATOR = {"disc_ndf": 64, "disc_num_layers": 3}
AUTOENCODER_SIZES = {
    "tiny": {
        "model": {"ch": 32, "ch_mult": (1,), "num_res_blocks": 1, "z_channels": 4, "embed_dim": 4},
        "discriminator": {"disc_ndf": 8, "disc_num_layers": 1},
    },
    "small": {
        "model": {"ch": 64, "ch_mult": (1, 2, 4), "num_res_blocks": 2, "z_channels": 3, "embed_dim": 3},
        "discriminator": COMPVIS_DISCRIMINATOR,
    },
}
UNET_SIZES = {
    "tiny": {
        "unet": {"model_channels": 32, "channel_mult": (1,), "num_res_blocks": 1, "num_heads": 2},
        "attention": (1,),
        "context": {
            "encoder_layers": 1,
            "d_model": 16,
            "encoder_attention_heads": 2,
            "head_dim": 8,
            "encoder_ffn_dim": 32,
        },
    },
    "small": {
        "unet": {
            "model_channels": 64,
            "channel_mult": (1, 2, 4),
            "num_res_blocks": 2,
            "num_head_channels": 32,
        },
        "attention": (2, 4),
        "context": {
            "encoder_layers": 4,
            "d_model": 256,
            "encoder_attention_heads": 4,
            "head_dim": 64,
            "encoder_ffn_dim": 1024,
        },
    },
    "base": {
        "unet": {
            "model_channels": 224,
            "channel_mult": (1, 2, 3, 4),
            "num_res_blocks": 2,
            "num_head_channels": 32,
        },
        "attention": (8, 4, 2),
        "context": {
            "encoder_layers": 8,
            "d_model": 512,
            "encoder_attention_heads": 8,
            "head_dim": 64,
            "encoder_ffn_dim": 2048,
        },
    },
}


def autoencoder_names():
    """Every `--architecture` of `train-autoencoder`: the sizes, then the CompVis first stages."""
    return [*AUTOENCODER_SIZES, *FIRST_STAGES]


def build_autoencoder(name, channels=3):
    """A new autoencoder `name` (see `autoencoder_names`) for images of `channels` channels."""
    _check_name(name, autoencoder_names(), "autoencoder")
    config = dict(AUTOENCODER_SIZES[name]["model"] if name in AUTOENCODER_SIZES else FIRST_STAGES[name])
    config.update(in_channels=channels, out_channels=channels)
    n_embed = config.pop("n_embed", None)
    return AutoencoderKL(**config) if n_embed is None else VQAutoencoder(n_embed=n_embed, **config)


def discriminator_settings(name):
    """The `compile()` discriminator settings of autoencoder `name`: `{"disc_ndf", "disc_num_layers"}`."""
    _check_name(name, autoencoder_names(), "autoencoder")
    return dict(AUTOENCODER_SIZES.get(name, {}).get("discriminator", COMPVIS_DISCRIMINATOR))


def build_unet(name, in_channels, out_channels, context_dim=None):
    """A new UNet of size `name`. `tiny` has (cross-)attention only with a context (fast tests); the
    others also have self-attention without one, as CompVis' unconditional and concat configs."""
    _check_name(name, list(UNET_SIZES), "UNet")
    size = UNET_SIZES[name]
    attention = size["attention"] if context_dim or name != "tiny" else ()
    return UNet(
        in_channels=in_channels,
        out_channels=out_channels,
        attention_resolutions=attention,
        context_dim=context_dim,
        **size["unet"],
    )


def context_dim(name):
    """The width of the text encoder / class embedding that goes with UNet size `name`."""
    _check_name(name, list(UNET_SIZES), "UNet")
    return UNET_SIZES[name]["context"]["d_model"]


def build_text_encoder(name, vocab_size, sequence_length):
    """A new LDMBert text encoder of size `name` (no dropout: resumed runs stay exact)."""
    _check_name(name, list(UNET_SIZES), "UNet")
    return LDMBertEncoder(
        vocab_size=vocab_size,
        max_position_embeddings=sequence_length,
        dropout=0.0,
        **UNET_SIZES[name]["context"],
    )


def _check_name(name, names, what):
    if name not in names:
        raise ValueError(f"Unknown {what} architecture {name!r}; expected one of {names}.")
