"""Step checkpoints of a training run: written atomically every N steps, found, restored and pruned.

A checkpoint is a folder `step-00001000/` inside the run's checkpoint folder:
```
config.json        the model (`keras.saving.serialize_keras_object`, without its compile config)
model.weights.h5   every weight the model saves: the networks, EMA averages, optimizer state, loss weights
seeds.npz          the states of the model's seed generators (Keras' weight files leave them out)
state.json         the step, plus what the caller stores (run settings, data fingerprint, ...)
```
Restoring all of it into a model built from `config.json` and compiled as before continues a run
exactly: with the same batches (see `keras_ldm.data.folder_batches`), a run killed at step k and resumed
ends with the weights of an uninterrupted one. Each checkpoint is written into a temporary folder and
renamed into place (`keras_ldm.presets.atomic.atomic_folder`): a run killed or failing while it writes
leaves the earlier checkpoints as they were, and no partial one where a checkpoint is looked for.
"""

import json
import os
import re
import shutil

import keras
import numpy as np

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
SEEDS_FILE = "seeds.npz"
STATE_FILE = "state.json"
_NAME = re.compile(r"^step-(\d+)$")


def checkpoint_path(directory, step):
    """The folder of the checkpoint of `step` in `directory`.

    Example:
    >>> checkpoint_path("out/checkpoints", 250)
    'out/checkpoints/step-00000250'
    """
    return os.path.join(directory, f"step-{step:08d}")


def list_checkpoints(directory):
    """`[(step, path)]` of the complete checkpoints in `directory`, by step (none if it does not exist)."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        match = _NAME.match(name)
        path = os.path.join(directory, name)
        if match and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(directory):
    """`(step, path)` of the newest complete checkpoint in `directory`, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def seed_variables(model):
    """The state variables of the seed generators of `model` (Keras saves none of them in weight files)."""
    return [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]


def write_checkpoint(model, directory, step, state=None):
    """Writes the checkpoint of `step` (replacing one of that step) and returns its path.

    Args:
        model: a built (usually compiled) Keras model whose config round-trips.
        directory: the checkpoint folder (created if missing).
        step: the training step the model has completed.
        state: a JSON-able dict stored in `state.json` beside `"step"`.
    """
    from keras_ldm.presets.atomic import atomic_folder  # presets/ sits above training/

    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    path = checkpoint_path(directory, step)
    with atomic_folder(path) as folder:
        _write_json(os.path.join(folder, CONFIG_FILE), config)
        model.save_weights(os.path.join(folder, WEIGHTS_FILE))
        seeds = {f"seed_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(seed_variables(model))}
        np.savez(os.path.join(folder, SEEDS_FILE), **seeds)
        _write_json(os.path.join(folder, STATE_FILE), {**(state or {}), "step": int(step)})
    return path


def read_checkpoint(path):
    """`(config, state)` of a checkpoint folder: the serialized model and the `state.json` dict."""
    return _read_json(os.path.join(path, CONFIG_FILE)), _read_json(os.path.join(path, STATE_FILE))


def restore_checkpoint(model, path):
    """Loads a checkpoint's weights, optimizer state and seed states into `model`.

    `model` must be built from the checkpoint's config and compiled as when it was written, with its
    optimizer built (`optimizer.build(model.trainable_variables)`), so that every variable exists.
    """
    try:
        model.load_weights(os.path.join(path, WEIGHTS_FILE))
    except (OSError, KeyError, ValueError) as error:
        raise ValueError(f"The checkpoint {path!r} does not fit the model to resume: {error}") from error
    with np.load(os.path.join(path, SEEDS_FILE)) as seeds:
        variables = seed_variables(model)
        if len(seeds.files) != len(variables):
            raise ValueError(
                f"The checkpoint {path!r} holds {len(seeds.files)} seed-generator states; the model to "
                f"resume has {len(variables)}: it is another model."
            )
        for index, variable in enumerate(variables):
            variable.assign(seeds[f"seed_{index}"])


def prune_checkpoints(directory, keep):
    """Deletes all but the newest `keep` checkpoints of `directory`."""
    for _, path in list_checkpoints(directory)[:-keep] if keep else []:
        shutil.rmtree(path, ignore_errors=True)


class StepCheckpoints(keras.callbacks.Callback):
    """Writes a checkpoint every `every` steps of `fit` and after the last one, keeping the newest `keep`.

    Args:
        directory: the checkpoint folder.
        every: steps between checkpoints.
        first_step: the step the run starts from (a resumed run: the checkpoint's step); `fit`'s batch
            `b` completes step `first_step + (b + 1) / batches_per_step`.
        last_step: the step the run ends at (always checkpointed).
        state: a dict, or a callable `step -> dict`, stored with each checkpoint.
        keep: how many checkpoints to keep (older ones are deleted once a new one is written), >= 1.
        batches_per_step: batches per optimizer step (gradient accumulation).
        after_save: called with `(model, step)` after each checkpoint (e.g. to write sample images).

    Example:
    >>> callback = StepCheckpoints("/tmp/run/checkpoints", every=500, last_step=2000)
    >>> callback.steps_to_save(0, 1200)
    [500, 1000]
    """

    def __init__(
        self,
        directory,
        every,
        last_step,
        first_step=0,
        state=None,
        keep=3,
        batches_per_step=1,
        after_save=None,
    ):
        super().__init__()
        for name, value in (("every", every), ("keep", keep), ("batches_per_step", batches_per_step)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1; got {value!r}.")
        self.directory, self.every, self.keep = directory, every, keep
        self.first_step, self.last_step = first_step, last_step
        self.state, self.batches_per_step, self.after_save = state, batches_per_step, after_save
        self.written = []

    def steps_to_save(self, start, stop):
        """The checkpointed steps in `(start, stop]`."""
        return [s for s in range(start + 1, stop + 1) if s % self.every == 0 or s == self.last_step]

    def on_train_batch_end(self, batch, logs=None):
        done, remainder = divmod(batch + 1, self.batches_per_step)
        step = self.first_step + done
        if remainder or not self.steps_to_save(step - 1, step):
            return
        model = self.model  # on JAX this syncs the training state into the variables
        state = self.state(step) if callable(self.state) else self.state
        path = write_checkpoint(model, self.directory, step, state)
        self.written.append(path)
        prune_checkpoints(self.directory, self.keep)
        print(f"\ncheckpoint: {path}", flush=True)
        if self.after_save is not None:
            self.after_save(model, step)


def _write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"Could not read {path!r} of a checkpoint: {error}") from error
