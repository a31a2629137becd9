"""What every converter shares: reading safetensors with numpy, and assigning them to Keras variables.

A converter describes a model as `(keras_variable, checkpoint_key, layout)` entries; the layouts
are `"conv"` (torch `(out, in, kh, kw)`), `"dense"` (torch `(out, in)` or a 1x1 conv), and
`"vector"`/`"matrix"` (copied as they are).
"""

import json
import os

import numpy as np

from keras_ldm.training.lora import kernel_variable


def read_safetensors(path, weights_name, how_to_save):
    """All tensors of `path/weights_name` (or of its sharded `.index.json`), as numpy arrays."""
    from safetensors.numpy import load_file

    single, index = os.path.join(path, weights_name), os.path.join(path, weights_name + ".index.json")
    if os.path.isfile(single):
        return load_file(single)
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors = {}
        for shard in shards:
            tensors.update(load_file(os.path.join(path, shard)))
        return tensors
    raise ValueError(
        f"No {weights_name} (or {weights_name}.index.json) in {path!r}; found {sorted(os.listdir(path))}. "
        f"Re-save it with {how_to_save}."
    )


def conv(layer, key):
    """Entries of a Conv2D layer."""
    yield layer.kernel, f"{key}.weight", "conv"
    if layer.use_bias:
        yield layer.bias, f"{key}.bias", "vector"


def dense(layer, key):
    """Entries of a Dense layer (from a torch Linear or 1x1 conv)."""
    yield kernel_variable(layer), f"{key}.weight", "dense"
    if layer.use_bias:
        yield layer.bias, f"{key}.bias", "vector"


def norm(layer, key):
    """Entries of a GroupNorm / LayerNorm layer."""
    yield layer.gamma, f"{key}.weight", "vector"
    yield layer.beta, f"{key}.bias", "vector"


def to_keras_layout(array, layout):
    """A torch-layout array in the layout of the matching Keras variable."""
    if layout == "conv":
        return np.transpose(array, (2, 3, 1, 0))
    if layout == "dense":
        return np.transpose(array.reshape(array.shape[0], -1))
    return array


def assign_weights(entries, tensors, source="tensors", unused=(), aliases=None):
    """Assigns `tensors` to the variables of `entries`; every weight must be present and fit.

    Args:
        entries: `(keras_variable, key, layout)` tuples.
        tensors: dict of numpy arrays, keyed like the checkpoint.
        source: what to call the checkpoint in error messages.
        unused: keys the checkpoint holds that the model does not use.
        aliases: optional `key -> [older key, ...]` for checkpoints saved with older names.
    """
    pending = {key: value for key, value in tensors.items() if key not in unused}
    missing = []
    for variable, key, layout in entries:
        found = next((k for k in [key, *(aliases(key) if aliases else [])] if k in pending), None)
        if found is None:
            missing.append(key)
            continue
        value = to_keras_layout(pending.pop(found), layout)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"{source}: tensor {found!r} has shape {tuple(value.shape)} in Keras layout; the model built "
                f"from its config expects {tuple(variable.shape)} for {variable.path}."
            )
        variable.assign(value.astype(variable.dtype))
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} tensors the config implies are missing, e.g. {missing[:5]}."
        )
    if pending:
        raise ValueError(
            f"{source}: {len(pending)} tensors do not fit the config, e.g. {sorted(pending)[:5]}."
        )
