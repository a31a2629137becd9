"""The data helpers' batches feed a tiny LatentDiffusion (a `fit` and the SR conditioning) on every backend."""

import keras
import numpy as np

from keras_ldm.data import (
    all_prompts,
    inpainting_pairs,
    photo_crops_dataset,
    shapes_dataset,
    super_resolution_pairs,
)
from keras_ldm.models import (
    LatentDiffusion,
    LDMBertEncoder,
    LDMBertTokenizer,
)
from tests.tiny_models import fresh_unet as tiny_unet
from tests.tiny_models import vae as tiny_vae


def shapes_tokenizer():
    words = sorted({word for prompt in all_prompts() for word in prompt.split()})
    return LDMBertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words], sequence_length=10)


def text_model(concat=None, in_channels=4):
    tokenizer = shapes_tokenizer()
    encoder = LDMBertEncoder(
        vocab_size=tokenizer.vocabulary_size,
        max_position_embeddings=10,
        encoder_layers=1,
        encoder_ffn_dim=32,
        encoder_attention_heads=2,
        head_dim=8,
        d_model=16,
    )
    unet = tiny_unet(in_channels=in_channels, context_dim=16)
    return LatentDiffusion(
        unet, tiny_vae(), cross_attention="text", concat=concat, text_encoder=encoder, tokenizer=tokenizer
    )


def test_the_90_prompts_tokenize_to_distinct_known_words():
    token_ids = np.asarray(keras.ops.convert_to_numpy(shapes_tokenizer()(all_prompts())))
    assert token_ids.shape == (90, 10)
    words = token_ids[:, 1:8]  # [CLS] a {color} {shape} on a {background} background [SEP]
    assert np.all(words > 4) and np.all(token_ids[:, 0] == 2) and np.all(token_ids[:, 8] == 3)
    assert len({tuple(ids) for ids in words}) == 90


def test_shapes_prompts_and_masks_fit_a_hybrid_model():
    """Prompts (text cross-attention) plus inpainting masks (concat) from the data helpers, trained by fit."""
    ldm = text_model(concat="masks", in_channels=9)
    data = inpainting_pairs(shapes_dataset(4, image_size=16, seed=0).batch(2), "mixed", seed=0)
    # Compiling costs more than running two tiny steps, except on JAX whose eager mode is slower still.
    ldm.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=keras.backend.backend() != "jax")
    before = [np.array(w) for w in ldm.unet.get_weights()]
    assert np.all(np.isfinite(ldm.fit(data, epochs=1, shuffle=False, verbose=0).history["loss"]))
    assert any(np.any(a != b) for a, b in zip(before, ldm.unet.get_weights()))


def test_bsr_low_res_conditions_a_super_resolution_model():
    crops = photo_crops_dataset("train", size=16, batch_size=2, seed=0, num_examples=2)
    batch = next(super_resolution_pairs(crops, 4, "bsr", seed=0).as_numpy_iterator())
    ldm = LatentDiffusion(tiny_unet(in_channels=7), tiny_vae(), concat="low_res")
    condition = keras.ops.convert_to_numpy(
        ldm.concat_condition(batch, None, (2, 16, 16, 4), np.zeros(2, bool))  # f = 1: latents are 16 x 16
    )
    assert condition.shape == (2, 16, 16, 3)
    # The uint8 low-res image, upsampled 4x: its mean colour survives the bicubic upsampling.
    np.testing.assert_allclose(
        condition.mean(axis=(1, 2)), batch["low_res"].mean(axis=(1, 2)) / 127.5 - 1, atol=0.05
    )
