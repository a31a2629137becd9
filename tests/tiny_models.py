"""Tiny models shared by the generation and preset tests (a few ten thousand parameters each)."""

import numpy as np

from keras_ldm.models import AutoencoderKL, LatentDiffusion, LDMBertEncoder, LDMBertTokenizer, UNet

VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "on"]


def randomized(model, scale=0.1):
    """Fresh UNets have zero output layers; random weights make every input matter."""
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=scale, size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def fresh_unet(in_channels=4, out_channels=4, context_dim=None):
    """One level, attention only with a context; as initialized (zero output layers)."""
    return UNet(
        in_channels=in_channels,
        out_channels=out_channels,
        model_channels=32,
        channel_mult=(1,),
        num_res_blocks=1,
        attention_resolutions=(1,) if context_dim else (),
        num_heads=2,
        context_dim=context_dim,
    )


def unet(in_channels=4, out_channels=4, context_dim=None, scale=0.1):
    return randomized(fresh_unet(in_channels, out_channels, context_dim), scale)


def vae():
    """f = 1 keeps compile times short; the down-sampling paths are covered by the parity tests."""
    return AutoencoderKL(ch=32, ch_mult=(1,), num_res_blocks=1, embed_dim=4)


def text_model():
    encoder = LDMBertEncoder(
        vocab_size=len(VOCABULARY),
        max_position_embeddings=8,
        encoder_layers=1,
        encoder_ffn_dim=32,
        encoder_attention_heads=2,
        head_dim=8,
        d_model=16,
        dropout=0.0,  # deterministic training steps
    )
    tokenizer = LDMBertTokenizer(VOCABULARY, sequence_length=8)
    return LatentDiffusion(
        unet(context_dim=16), vae(), cross_attention="text", text_encoder=encoder, tokenizer=tokenizer
    )
