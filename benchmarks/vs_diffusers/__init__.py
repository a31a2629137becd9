"""The parts of `benchmarks/ldm_vs_diffusers.py` (run that script; its docstring says what is timed).

- `environment`: the Keras backend, the device and the thread count, chosen before any library starts;
- `models`: the two sides' networks: one random diffusers pipeline, saved and loaded by keras_ldm;
- `timing`: the one timing loop, and the `NotMeasured` cells a failed figure becomes;
- `generation`: `generate()` against the diffusers pipeline, its time split and the UNet forward;
- `training`: keras_ldm `train_on_batch` against a PyTorch AdamW step on the diffusers modules;
- `report`: the markdown table and the notes under it;
- `cli`: the command line and the order of the run.

Nothing here imports Keras, JAX, TensorFlow or PyTorch at module level: `cli.main` sets the backend and
the device first.
"""
