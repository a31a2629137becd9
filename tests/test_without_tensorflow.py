"""keras_ldm imports and generates with TensorFlow absent (a JAX + CUDA or PyTorch host without TensorFlow)."""

import os
import subprocess
import sys

import keras
import pytest

SCRIPT = """
import sys

sys.modules["tensorflow"] = None  # as if not installed: imports fail, importlib.util.find_spec gives None
import keras_ldm
from keras_ldm.models import AutoencoderKL, LatentDiffusion, UNet

vae = AutoencoderKL(ch=32, ch_mult=(1,), num_res_blocks=1, embed_dim=4)
unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,), num_res_blocks=1,
            attention_resolutions=(), num_heads=1)
images = LatentDiffusion(unet, vae).generate(batch_size=2, num_steps=2, height=8, width=8, seed=1)
assert images.shape == (2, 8, 8, 3), images.shape
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
