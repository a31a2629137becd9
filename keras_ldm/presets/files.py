"""Preset folders on disk, in keras-hub's layout: `config.json`, `metadata.json`, `model.weights.h5`, assets.

```
my_preset/
  config.json                       # keras.saving.serialize_keras_object(model)
  metadata.json                     # description, versions, parameter count, date
  model.weights.h5                  # every weight: UNet, first stage, text encoder, EMA, scale_factor
  assets/tokenizer/vocabulary.txt   # text models: the word pieces, one a line
```
Everything the model needs to generate (schedule, parameterization, `generation_defaults`, ...) is in its
config; the tokenizer's vocabulary is stored as a file and referenced by a relative path.
"""

import contextlib
import datetime
import json
import os

import keras

from keras_ldm.backend.fast_build import random_init_skipped
from keras_ldm.presets.atomic import atomic_folder

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
VOCABULARY_FILE = os.path.join("assets", "tokenizer", "vocabulary.txt")
# What `save_preset` writes; replacing a preset replaces these and keeps the folder's other entries.
PRESET_ENTRIES = (CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE, "assets")


def is_preset_dir(path):
    """Whether `path` is a folder written by `save_preset` (it holds a `config.json` naming a Keras class)."""
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        return False
    try:
        with open(config_path, encoding="utf-8") as f:
            return "class_name" in json.load(f)
    except (OSError, ValueError):
        return False


def save_preset(
    model, path, description="", overwrite=True, weights_dtype=None, metadata=None, keep_entries=()
):
    """Writes `model` (any keras_ldm model) as a preset folder `path`, atomically.

    Everything is written into a temporary folder next to `path` and swapped in once complete (see
    `atomic_folder`): if saving fails half-way, a preset already at `path` is left as it was. Entries of
    an existing preset folder that are not preset files (e.g. a `README.md`) are kept.

    Args:
        model: a built Keras model whose `get_config()` round-trips (e.g. a `LatentDiffusion`).
        path: the folder to write: a new or empty folder, or an existing preset (missing parents are
            created). A file, or a non-empty folder that is not a preset, is an error.
        description: one line shown by `keras-ldm presets` and stored in `metadata.json`.
        overwrite: replace an existing preset at `path`; if False such a folder is an error.
        weights_dtype: store float weights in this dtype (e.g. `"float16"`, half the size); they are cast
            back to the variables' dtype on loading.
        metadata: more JSON-able entries for `metadata.json` (e.g. the class names of a trained model).
        keep_entries: names of other entries `path` may hold besides a preset's (e.g. the `checkpoints`
            folder of a training run); they are kept.
    """
    _check_preset_path(path, overwrite, keep_entries)
    with atomic_folder(path, replaces=PRESET_ENTRIES) as folder:
        _write_preset(model, folder, description, weights_dtype, metadata)


def _check_preset_path(path, overwrite, keep_entries=()):
    """Errors for a `path` that `save_preset` must not replace."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"path={os.fspath(path)!r} is a file; expected a folder to write the preset into (a new or "
            f"empty one, or an existing preset)."
        )
    if is_preset_dir(path):
        if not overwrite:
            raise ValueError(
                f"path={os.fspath(path)!r} already holds a preset; pass overwrite=True to replace it."
            )
    elif os.path.isdir(path) and set(os.listdir(path)) - set(keep_entries):
        raise ValueError(
            f"path={os.fspath(path)!r} is not empty and is not a keras_ldm preset folder (it has no "
            f"{CONFIG_FILE} naming a Keras class; it holds {sorted(os.listdir(path))[:5]}); expected a new "
            f"or empty folder, or an existing preset. Nothing was written: choose another folder."
        )


def _write_preset(model, folder, description, weights_dtype, metadata=None):
    """Writes the preset files of `model` into the empty folder `folder`."""
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)  # a preset is for inference; compile again to train
    tokenizer = getattr(model, "tokenizer", None)
    if getattr(tokenizer, "vocabulary", None) is not None:  # word pieces; a LayoutTokenizer has none
        _write_vocabulary(tokenizer, folder)
        config["config"]["tokenizer"]["config"]["vocabulary"] = VOCABULARY_FILE
    _write_json(os.path.join(folder, CONFIG_FILE), config)
    model.save_weights(os.path.join(folder, WEIGHTS_FILE))
    if weights_dtype is not None:
        _cast_weights_file(os.path.join(folder, WEIGHTS_FILE), weights_dtype)
    metadata = {
        "description": description,
        "class_name": type(model).__name__,
        "parameter_count": int(model.count_params()),
        "keras_version": keras.__version__,
        "keras_ldm_version": _version(),
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
        **(metadata or {}),
    }
    _write_json(os.path.join(folder, METADATA_FILE), metadata)


def load_preset(path, load_weights=True, dtype=None):
    """Rebuilds the model of a preset folder written by `save_preset` (weights too unless `load_weights=False`).

    Args:
        path: the preset folder.
        load_weights: load `model.weights.h5`; False returns the randomly initialised architecture.
        dtype: a dtype policy name (e.g. `"mixed_bfloat16"`, `"float16"`) to build the model with
            instead of the saved one; the saved float32 weights are cast on loading.
    """
    config = read_json(os.path.join(path, CONFIG_FILE))
    tokenizer = config.get("config", {}).get("tokenizer")
    if tokenizer and isinstance(tokenizer["config"].get("vocabulary"), str):
        vocabulary = tokenizer["config"]["vocabulary"]
        if not os.path.isabs(vocabulary):
            tokenizer["config"]["vocabulary"] = os.path.join(path, vocabulary)
    if dtype is not None:
        config = _without_dtypes(config)
    with _dtype_policy(dtype), random_init_skipped() if load_weights else contextlib.nullcontext():
        model = keras.saving.deserialize_keras_object(config)
    if load_weights:
        load_weights_file(model, os.path.join(path, WEIGHTS_FILE))
    return model


def _cast_weights_file(weights_path, dtype):
    import h5py
    import numpy as np

    temporary = weights_path + ".tmp"
    with h5py.File(weights_path, "r") as source, h5py.File(temporary, "w") as target:

        def copy(name, item):
            if isinstance(item, h5py.Group):
                target.require_group(name)
                for key, value in item.attrs.items():
                    target[name].attrs[key] = value
            elif item.dtype.kind == "f":
                target.create_dataset(name, data=np.asarray(item).astype(dtype))
            else:
                target.create_dataset(name, data=np.asarray(item))

        for key, value in source.attrs.items():
            target.attrs[key] = value
        source.visititems(copy)
    os.replace(temporary, weights_path)


def load_weights_file(model, weights_path):
    """`model.load_weights(weights_path)` with a clear error for a missing, corrupt or mismatched file."""
    if not os.path.isfile(weights_path):
        raise ValueError(
            f"The preset has no weights file {weights_path!r}; pass load_weights=False to build it empty."
        )
    try:
        model.load_weights(weights_path)
    except (OSError, KeyError) as error:  # h5py: truncated / not HDF5; Keras: missing groups
        raise ValueError(
            f"Could not read the weights file {weights_path!r}: it is corrupt or truncated ({error})."
        ) from error
    except ValueError as error:  # Keras: shapes or variable counts that do not match the config
        raise ValueError(
            f"The weights file {weights_path!r} does not fit the preset's config: {error}"
        ) from error


def read_metadata(path):
    """The `metadata.json` of a preset folder (an empty dict if it has none)."""
    metadata_path = os.path.join(path, METADATA_FILE)
    return read_json(metadata_path) if os.path.isfile(metadata_path) else {}


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as error:
        raise ValueError(f"{path!r} is not valid JSON: {error}") from error


def _write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def _write_vocabulary(tokenizer, path):
    from keras_ldm.models.tokenizer import read_vocabulary

    pieces = read_vocabulary(tokenizer.vocabulary)
    vocabulary_path = os.path.join(path, VOCABULARY_FILE)
    os.makedirs(os.path.dirname(vocabulary_path), exist_ok=True)
    with open(vocabulary_path, "w", encoding="utf-8") as f:
        f.write("".join(piece + "\n" for piece in pieces))


def _without_dtypes(config):
    """A copy of a serialized config without its `dtype` entries, so the global policy applies."""
    if isinstance(config, dict):
        return {key: _without_dtypes(value) for key, value in config.items() if key != "dtype"}
    if isinstance(config, list):
        return [_without_dtypes(value) for value in config]
    return config


@contextlib.contextmanager
def _dtype_policy(dtype):
    if dtype is None:
        yield
        return
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(dtype)
    except ValueError as error:
        raise ValueError(f"`dtype`={dtype!r} is not a Keras dtype policy: {error}") from error
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _version():
    from keras_ldm import __version__

    return __version__
