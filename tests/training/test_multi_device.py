"""Data-parallel `fit` on 4 virtual CPU devices with TensorFlow's `tf.distribute.MirroredStrategy`, against
the same training on one device (JAX's `keras.distribution.DataParallel`, whose losses equal one device's,
is tested in tests/models/test_latent_diffusion.py).

The device count is fixed when TensorFlow starts, so the runs are a fresh Python process.

- `MirroredStrategy` runs the model once per replica, and each replica draws its own noise for its quarter
  of the batch: the losses are the same quantity but not the same numbers. What must hold is the scale:
  each replica's loss is divided by the replicas (Keras sums their gradients), so the logged losses and
  the size of the updates match one device; before that division they were 4x.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = r"""
import json, os, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 4)
import contextlib
import keras, numpy as np
from keras_ldm.models import LatentDiffusion
from tests.tiny_models import unet, vae

def train(distributed):
    keras.utils.set_random_seed(0)
    scope = contextlib.nullcontext()
    if distributed:
        scope = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")]).scope()
    with scope:
        model = LatentDiffusion(unet(), vae(), seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [np.array(w) for w in model.unet.get_weights()]
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3)).astype("uint8")
    history = model.fit({"images": images}, batch_size=8, epochs=3, verbose=0, shuffle=False)
    after = model.unet.get_weights()
    change = float(np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(after, before))))
    return {"losses": history.history["loss"], "change": change}

print(json.dumps({"one": train(False), "four": train(True)}))
"""


def run_both():
    env = dict(os.environ, PYTHONPATH=ROOT, KERAS_BACKEND="tensorflow")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute: TensorFlow's run")
def test_mirrored_strategy_on_four_replicas_trains_at_the_scale_of_one_device():
    runs = run_both()
    four, one = np.array(runs["four"]["losses"]), np.array(runs["one"]["losses"])
    assert np.all(np.isfinite(four)) and np.all(np.abs(four / one - 1) < 0.25), (four, one)
    assert 0.75 < runs["four"]["change"] / runs["one"]["change"] < 1.33, (runs["four"]["change"], runs["one"]["change"])
