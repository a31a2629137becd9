"""`fit` for a number of optimizer steps on in-memory arrays: logged, resumable, and within a time budget.

The shipped presets are trained this way (`examples/train_shapes_t2i.py`, `examples/train_photo_presets.py`):
numpy arrays need no TensorFlow, so the same script runs on a CPU box and on a JAX + CUDA host.
"""

import time

import keras

from keras_ldm.training.callbacks import TimeBudget, progress_logger


def fit_steps(model, data, steps, batch_size, name, log_every=100, backup_dir=None, time_budget=None):
    """Trains a compiled `model` for `steps` batches of `batch_size` drawn from `data` (reshuffled each pass).

    Args:
        model: a compiled Keras model (`LatentDiffusion`, `AutoencoderKL`, ...).
        data: a dict of arrays with a common first axis (`{"images": uint8 (N, H, W, 3), ...}`) or one array.
        steps: optimizer steps to run (rounded down to a multiple of `log_every`).
        batch_size: examples per step; `N` is cut to a multiple of `batch_size * log_every` (Keras then
            starts each new pass over the data at an epoch boundary), so `N >= batch_size * log_every`.
        name: the label of the progress lines (one every `log_every` steps).
        backup_dir: if set, `keras.callbacks.BackupAndRestore` there: an interrupted run resumes.
        time_budget: seconds after which training stops early (`None`: no limit).

    Returns:
        The number of steps run in this call.

    Example:
    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):  # one progress line every 3 steps, then a summary
    ...     steps = fit_steps(model, (np.zeros((12, 2)), np.zeros((12, 1))), 6, batch_size=4, name="d", log_every=3)
    >>> steps
    6
    """
    if steps < log_every:
        raise ValueError(f"`steps` ({steps}) must be at least `log_every` ({log_every}).")
    data = _whole_passes(data, batch_size * log_every)
    budget = TimeBudget(time_budget or float("inf"))
    callbacks = [progress_logger(name), budget]
    if backup_dir:
        callbacks.insert(0, keras.callbacks.BackupAndRestore(backup_dir))
    x, y = data if isinstance(data, tuple) else (data, None)
    start = time.time()
    model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=steps // log_every,
        steps_per_epoch=log_every,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    stop = " (time budget reached)" if budget.stopped else ""
    print(f"{name}: {budget.steps} steps in {time.time() - start:.0f} s{stop}", flush=True)
    return budget.steps


def _whole_passes(data, multiple):
    """`data` cut to the largest multiple of `multiple` examples."""
    arrays = keras.tree.flatten(data)
    count = len(arrays[0])
    if count < multiple:
        raise ValueError(
            f"`data` holds {count} examples; `fit_steps` needs at least batch_size * log_every = {multiple}."
        )
    return keras.tree.map_structure(lambda array: array[: count - count % multiple], data)
