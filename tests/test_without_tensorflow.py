"""keras_ldm imports, generates and trains with TensorFlow absent (a JAX + CUDA or PyTorch host without TensorFlow)."""

import os
import subprocess
import sys

import keras
import pytest

SCRIPT = """
import sys

sys.modules["tensorflow"] = None  # as if not installed: imports fail
sys.modules["keras_hub"] = None
import keras
import keras_ldm
from keras_ldm.models import AutoencoderKL, LatentDiffusion, UNet

vae = AutoencoderKL(ch=32, ch_mult=(1,), num_res_blocks=1, embed_dim=4)
unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,), num_res_blocks=1,
            attention_resolutions=(), num_heads=1)
images = LatentDiffusion(unet, vae).generate(batch_size=2, num_steps=2, height=8, width=8, seed=1)
assert images.shape == (2, 8, 8, 3), images.shape

# text-to-image: the BERT tokenizer is plain Python (keras-hub, which needs TensorFlow, only for export)
from keras_ldm.models import LDMBertEncoder, LDMBertTokenizer
tokenizer = LDMBertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red", "circle"], sequence_length=6)
assert tokenizer.python_word_piece is not None
assert keras.ops.convert_to_numpy(tokenizer("A red dog")).tolist() == [[2, 4, 5, 1, 3, 0]]
encoder = LDMBertEncoder(vocab_size=7, max_position_embeddings=6, encoder_layers=1, encoder_ffn_dim=16,
                         encoder_attention_heads=2, head_dim=4, d_model=8)
unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,), num_res_blocks=1,
            attention_resolutions=(1,), num_heads=1, context_dim=8)
model = LatentDiffusion(unet, vae, cross_attention="text", text_encoder=encoder, tokenizer=tokenizer, p_uncond=0.1)
images = model.generate(["a red circle", "a circle"], num_steps=2, guidance_scale=3.0, height=8, width=8, seed=1)
assert images.shape == (2, 8, 8, 3), images.shape

# training on prompts held in memory: tokenized in plain Python, no tf.data
import numpy as np
model.compile(learning_rate=1e-3)
history = model.fit({"images": np.zeros((2, 8, 8, 3), "uint8"), "prompts": ["a red circle", "a circle"]},
                    batch_size=2, verbose=0)
assert np.isfinite(history.history["loss"][0])
assert not [m for m in sys.modules if m.startswith("tensorflow") and sys.modules[m] is not None]
print("ok")
"""


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="the TensorFlow backend needs TensorFlow")
def test_generate_runs_with_tensorflow_blocked():
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
