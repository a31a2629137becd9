"""`benchmarks/ldm_vs_diffusers.py` end to end: `--small` on the current KERAS_BACKEND prints every row of
its table (no assertion on any time), and input it cannot serve exits non-zero with a message.

The script runs in a subprocess: it picks the Keras backend and the device before importing Keras.
"""

import os
import re
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "ldm_vs_diffusers.py")
BACKEND = keras.backend.backend()


def run_script(*args, backend=BACKEND):
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, SCRIPT, *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def table_rows(output):
    """{metric: [keras_ldm cell, diffusers cell, comparison]} of the markdown table."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] != "metric":
            rows[cells[0]] = cells[1:]
    return rows


def is_number(cell):
    return re.fullmatch(r"[0-9.e+-]+", cell) is not None


def test_small_run_prints_every_row():
    # Compiling the training step alone takes ~40 s on 2 cores under JAX and TensorFlow, so the training
    # row is checked measured on torch (eager) and as "not measured (--train-batch 0)" elsewhere.
    training = ["--train-batch", "2", "--train-steps", "1"] if BACKEND == "torch" else ["--train-batch", "0"]
    result = run_script(
        "--small",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--batches",
        "1,2",
        *training,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows = table_rows(result.stdout)
    assert f"| metric | keras_ldm ({BACKEND}) | diffusers (torch) | keras_ldm vs diffusers |" in result.stdout
    timed = [
        "generation latency, batch 1 (s/image)",
        "throughput, batch 2 (images/s)",
        "load the pipeline folder (s; from_preset vs from_pretrained)",
        "first call, batch 1 (s, compile + run)",
        "first call minus a warm call, batch 1 (s)",
        "UNet forward, batch 4 (ms)",
        "UNet forward, batch 4 (TFLOP/s)",
    ]
    memory = "peak accelerator memory, generation up to batch 2 (GiB)"
    (training_row,) = [name for name in rows if name.startswith("training, batch")]
    assert sorted(rows) == sorted([*timed, memory, training_row])
    for name in timed:
        assert all(is_number(cell) for cell in rows[name][:2]), (name, rows[name])
        assert rows[name][2].endswith(("faster", "slower")), (name, rows[name])
    assert rows[memory] == ["n/a (CPU)", "n/a (CPU)", "n/a"]
    if BACKEND == "torch":
        assert all(is_number(cell) for cell in rows[training_row][:2]), rows[training_row]
    else:
        assert rows[training_row][:2] == ["not measured (--train-batch 0)"] * 2
    assert "error" not in result.stdout
    # each figure also goes to stderr when measured, so a run cut short keeps what it had
    assert re.search(r"\[measured\] keras_ldm generation, batch 2: first call [0-9.e+-]+ s", result.stderr)
    assert "[measured] diffusers UNet forward, batch 4:" in result.stderr
    assert "counted by torch.utils.flop_counter.FlopCounterMode" in result.stdout
    # the correctness line: same latents, float32 on CPU -> at most one grey level apart
    difference = re.search(r"max \|keras_ldm - diffusers\| = ([0-9.e+-]+) in \[0, 1\]", result.stdout)
    assert difference is not None, result.stdout
    assert float(difference.group(1)) <= 1.01 / 255


@pytest.mark.parametrize(
    "args, backend, message",
    [
        (["--device", "gpu", "--small"], BACKEND, r"--device gpu, but no GPU is visible"),
        (
            ["--backend", "jax" if BACKEND != "jax" else "torch", "--small"],
            BACKEND,
            r"--backend=\w+ but KERAS_BACKEND=" + BACKEND,
        ),
        (["--small"], "numpy", r"KERAS_BACKEND='numpy'; this benchmark runs on jax, tensorflow, torch"),
        (["--batches", "0,8"], BACKEND, r"--batches: .*positive ints"),
    ],
)
def test_what_cannot_run_exits_non_zero_with_a_message(args, backend, message):
    if "gpu" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is visible here")
    result = run_script(*args, backend=backend)
    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr[-2000:]
    assert "| metric |" not in result.stdout


@pytest.mark.skipif(BACKEND != "torch", reason="a shell wrapper: one backend's run covers it")
def test_gpu_wrapper_refuses_an_unknown_mode_and_a_host_without_gpu(tmp_path):
    import torch

    wrapper = os.path.join(ROOT, "benchmarks", "run_on_gpu.sh")

    def run(*args):
        return subprocess.run(
            ["bash", wrapper, *args], capture_output=True, text=True, timeout=600, check=False
        )

    refused = run(str(tmp_path / "out"), "fast")
    assert refused.returncode == 2 and "mode must be eager or compiled, not fast" in refused.stderr
    assert not (tmp_path / "out").exists()
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    no_gpu = run(str(tmp_path / "out"), "eager")
    assert no_gpu.returncode != 0
    assert "| metric |" not in no_gpu.stdout
