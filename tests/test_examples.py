"""The preset training scripts run end to end, tiny, on a host without TensorFlow (as on a JAX or PyTorch + CUDA box)."""

import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK_TENSORFLOW = """
import runpy, sys
sys.modules["tensorflow"] = None  # as if not installed
sys.modules["keras_hub"] = None
script, *sys.argv[1:] = sys.argv[1:]
sys.argv[0] = script
sys.path.insert(0, __import__("os").path.dirname(script))
runpy.run_path(script, run_name="__main__")
"""
TINY = [
    "--ae-steps",
    "4",
    "--ldm-steps",
    "4",
    "--log-every",
    "2",
    "--ae-batch-size",
    "2",
    "--batch-size",
    "2",
]

# The scripts use keras.ops only: one backend stands for all. PyTorch runs them eagerly in 32 s; JAX spent
# 112 s compiling the tiny training steps.
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="the scripts' torch run stands for all"
)


def run_without_tensorflow(script, *args):
    env = dict(os.environ, KERAS_BACKEND="torch")
    command = [sys.executable, "-c", BLOCK_TENSORFLOW, os.path.join(ROOT, "examples", script), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_shapes_script_trains_and_writes_a_preset_without_tensorflow(tmp_path):
    from keras_ldm import LatentDiffusion

    out = str(tmp_path / "preset")
    stdout = run_without_tensorflow(
        "train_shapes_t2i.py", *TINY, "--examples", "40", "--work-dir", str(tmp_path / "work"), "--out", out
    )
    assert "autoencoder: 4 steps in" in stdout and "ldm: 4 steps in" in stdout and "reconstructions" in stdout
    assert "sample (2, 64, 64, 3)" in stdout  # the script generates from the trained model
    model = LatentDiffusion.from_preset(out)
    assert model.ema is None and model.generation_defaults["image_size"] == 64  # an inference-only preset


def test_photo_script_trains_super_resolution_without_tensorflow(tmp_path):
    from keras_ldm import LatentDiffusion

    out = str(tmp_path / "preset")
    args = [*TINY, "--examples", "40", "--work-dir", str(tmp_path / "work"), "--task", "sr", "--out", out]
    stdout = run_without_tensorflow("train_photo_presets.py", *args)  # the autoencoder, then the LDM
    assert "autoencoder: 4 steps in" in stdout and "sr: 4 steps in" in stdout
    model = LatentDiffusion.from_preset(out)
    assert model.sampling_options() == {
        "num_steps": 10, "guidance_scale": 1.0, "sampler": "ddim", "eta": 0.0, "temperature": 0.5
    }  # fmt: skip


def test_compression_study_quick_writes_its_table_and_plots(tmp_path):
    import csv

    out = str(tmp_path / "study")
    stdout = run_without_tensorflow("compression_tradeoff.py", "--quick", "--out", out)
    assert "f=8 ae: 2 steps in" in stdout and "f=1 ldm: 2 steps in" in stdout
    with open(os.path.join(out, "results.csv")) as file:
        rows = list(csv.DictReader(file))
    assert [(row["f"], row["step"]) for row in rows] == [("1", "2"), ("1", "4"), ("8", "2"), ("8", "4")]
    for row in rows:
        assert float(row["fid"]) >= 0 and 0 <= float(row["accuracy"]) <= 1 and float(row["samples_per_second"]) > 0
    for name in ("quality_vs_steps.png", "quality_vs_throughput.png"):
        assert os.path.getsize(os.path.join(out, name)) > 10_000


@pytest.mark.parametrize("task, score", [("semantic", "segmentation accuracy"), ("layout", "layout accuracy")])
def test_scene_scripts_train_score_and_write_a_preset_without_tensorflow(tmp_path, task, score):
    from keras_ldm import LatentDiffusion

    out = str(tmp_path / "preset")
    args = ["--steps", "4", "--log-every", "2", "--batch-size", "2", "--examples", "40", "--score-count", "2"]
    stdout = run_without_tensorflow(
        f"train_shapes_{task}.py", *args, "--work-dir", str(tmp_path / "work"), "--out", out
    )
    assert "ldm: 4 steps in" in stdout
    assert f"held-out 32x32: {score}" in stdout and f"held-out 64x64: {score}" in stdout
    model = LatentDiffusion.from_preset(out)
    assert model.ema is None and model.generation_defaults["image_size"] == 32
    assert model.cross_attention == ("layout" if task == "layout" else None)
