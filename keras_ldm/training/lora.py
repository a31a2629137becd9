"""LoRA fine-tuning: low-rank adapters on the attention projections, trained alone and saved alone.

`enable_lora` turns on Keras' own `Dense.enable_lora(rank)` on the UNet's attention projections (`to_q`,
`to_k`, `to_v`, `to_out` of every attention block: the modules diffusers' LoRA scripts target) and, on
request, the text encoder's (`q_proj`, `k_proj`, `v_proj`, `out_proj`), then freezes every other weight,
so that `fit()` trains only the adapters. Such a layer computes `x @ (W + (alpha / rank) A B) + bias` with
`A` (`lora_kernel_a`, `[in, rank]`, random) and `B` (`lora_kernel_b`, `[rank, out]`, zeros at first).

`save_lora_weights` writes only `A` and `B` (a small safetensors file, keyed by layer path, rank and alpha
in its metadata); `load_lora_weights` reads it back, or a diffusers/PEFT LoRA file
(`keras_ldm.convert.diffusers_lora`), as adapters or merged into the kernels.
"""

import collections
import json
import math
import os

import keras
import numpy as np

FORMAT = "keras_ldm.lora"
TARGETS = {  # Dense layer names by `target`
    "attention": ("to_q", "to_k", "to_v", "to_out"),
    "transformer": ("to_q", "to_k", "to_v", "to_out", "proj_in", "proj_out", "proj", "out"),
}
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def enable_lora(model, rank, target="attention", text_encoder=False, alpha=None):
    """Adds rank-`rank` LoRA adapters to `model`'s UNet (and text encoder) and freezes everything else.

    Call `compile()` afterwards: an optimizer that has already trained knows only the old variables.

    Args:
        model: a `LatentDiffusion` (or a bare `UNet`).
        rank: the adapters' rank, a positive int (4 to 64 is usual).
        target: `"attention"` (`to_q`, `to_k`, `to_v`, `to_out` of every attention block, as diffusers'
            LoRA training scripts), `"transformer"` (those plus the transformer blocks' `proj_in`,
            `proj_out` and feed-forward layers), or a list of Dense layer names.
        text_encoder: also adapt the text encoder's attention (`q_proj`, `k_proj`, `v_proj`, `out_proj`).
        alpha: the delta is scaled by `alpha / rank`; default `rank` (scale 1).

    Returns:
        The number of layers that got adapters.

    Example:
    >>> from keras_ldm.models import UNet
    >>> unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,),
    ...             num_res_blocks=1, attention_resolutions=(1,), num_heads=2, context_dim=16)
    >>> enable_lora(unet, rank=4)
    32
    >>> sorted({v.name for v in unet.trainable_variables})
    ['lora_kernel_a', 'lora_kernel_b']
    """
    rank = _check_rank(rank)
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))):
        raise TypeError(f"alpha={alpha!r}; expected a number (the delta is scaled by alpha / rank) or None.")
    _refuse_ema(model, "enable_lora")
    components = _components(model)
    layers = _targets(components["unet"], "unet", _target_names(target), f"target={target!r}")
    if text_encoder:
        if "text_encoder" not in components:
            raise ValueError("text_encoder=True, but this model has no text encoder.")
        layers += _targets(
            components["text_encoder"], "text_encoder", TEXT_ENCODER_TARGETS, "text_encoder=True"
        )
    enabled = [key for key, layer in layers if layer.lora_enabled]
    if enabled:
        raise ValueError(
            f"LoRA is already enabled on {len(enabled)} of these layers, e.g. {enabled[:2]}; Keras enables it "
            f"once per layer (load_lora_weights on such a model replaces the adapters' values instead)."
        )
    for _, layer in layers:
        layer.enable_lora(rank, lora_alpha=alpha)
    _freeze_all_but_lora(model)
    _forget_compiled(model)
    return len(layers)


def lora_layers(model):
    """`{layer key: Dense layer}` of the layers of `model` with LoRA enabled, keys such as
    `"unet/mid_block_attentions_0/transformer_blocks_0/attn1/to_q"` (the component, then the layer's path).

    Example:
    >>> from keras_ldm.models import UNet
    >>> unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,),
    ...             num_res_blocks=1, attention_resolutions=(1,), num_heads=2, context_dim=16)
    >>> enable_lora(unet, rank=2, target=["to_k"])
    8
    >>> sorted(lora_layers(unet))[0]
    'unet/down_blocks_0_attentions_0/transformer_blocks_0/attn1/to_k'
    """
    return {key: layer for key, layer in dense_layers(model).items() if layer.lora_enabled}


def dense_layers(model):
    """`{layer key: Dense layer}` of every Dense layer of `model`'s UNet and text encoder."""
    layers = {}
    for name, component in _components(model).items():
        layers.update(_component_layers(name, component))
    return layers


def _component_layers(name, component):
    """`{layer key: Dense layer}` of one component (`name`: `"unet"` or `"text_encoder"`)."""
    return {
        _layer_key(name, kernel_variable(layer).path): layer
        for layer in component._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.Dense)
    }


def save_lora_weights(model, path):
    """Writes `model`'s LoRA adapters (only `lora_kernel_a`/`lora_kernel_b`) to a safetensors file.

    Keys are `"{layer key}/lora_kernel_a"` (see `lora_layers`); the metadata holds `format`
    (`"keras_ldm.lora"`), `rank`, `lora_alpha` and `alpha_pattern` (`{layer key: alpha}` where a layer
    differs). The file is written next to `path` and then moved there: a failed save leaves an existing
    file as it was.

    Example:
    >>> import os, tempfile
    >>> from keras_ldm.models import UNet
    >>> unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,),
    ...             num_res_blocks=1, attention_resolutions=(1,), num_heads=2, context_dim=16)
    >>> _ = enable_lora(unet, rank=4)
    >>> path = os.path.join(tempfile.mkdtemp(), "lora.safetensors")
    >>> save_lora_weights(unet, path)
    >>> os.path.getsize(path) < 50_000
    True
    """
    from safetensors.numpy import save_file

    from keras_ldm.presets.atomic import atomic_file  # presets/ sits above training/

    path = _check_path(path)
    layers = lora_layers(model)
    if not layers:
        raise ValueError(
            "The model has no LoRA adapters to save; call enable_lora or load_lora_weights first."
        )
    tensors, alphas, ranks = {}, {}, []
    for key, layer in layers.items():
        for name in ("lora_kernel_a", "lora_kernel_b"):
            tensors[f"{key}/{name}"] = np.asarray(keras.ops.convert_to_numpy(getattr(layer, name)), "float32")
        alphas[key] = float(layer.lora_alpha)
        ranks.append(int(layer.lora_rank))
    alpha = collections.Counter(alphas.values()).most_common(1)[0][0]
    metadata = {
        "format": FORMAT,
        "rank": str(collections.Counter(ranks).most_common(1)[0][0]),
        "lora_alpha": repr(alpha),
        "alpha_pattern": json.dumps({key: value for key, value in alphas.items() if value != alpha}),
    }
    with atomic_file(path) as temporary:
        save_file(tensors, temporary, metadata=metadata)


def load_lora_weights(model, path, merge=False, scale=1.0):
    """Loads a LoRA file into `model`: one written by `save_lora_weights`, or a diffusers/PEFT UNet LoRA.

    A layer without LoRA gets it enabled with the file's rank (and everything but the adapters is frozen,
    as after `enable_lora`); a layer that has it gets the file's values. Nothing changes if the file does
    not fit: keys that match no layer (another architecture) or shapes that differ are a `ValueError`
    naming the file.

    Args:
        model: a `LatentDiffusion` (or a bare `UNet`).
        path: a `.safetensors` file.
        merge: add the deltas to the kernels (`W += scale * (alpha / rank) * A B`) instead of loading
            adapters: the model stays as it was, only its weights change.
        scale: multiplies every delta (diffusers' `lora_scale`).

    Example:
    >>> import os, tempfile
    >>> from keras_ldm.models import UNet
    >>> def tiny_unet():
    ...     return UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,),
    ...                 num_res_blocks=1, attention_resolutions=(1,), num_heads=2, context_dim=16)
    >>> unet = tiny_unet()
    >>> _ = enable_lora(unet, rank=4)
    >>> path = os.path.join(tempfile.mkdtemp(), "lora.safetensors")
    >>> save_lora_weights(unet, path)
    >>> other = tiny_unet()
    >>> load_lora_weights(other, path)
    >>> len(lora_layers(other)), {layer.lora_rank for layer in lora_layers(other).values()}
    (32, {4})
    """
    _refuse_ema(model, "load_lora_weights")
    path = _check_path(path)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise TypeError(f"scale={scale!r}; expected a finite number (1.0: the file's own strength).")
    tensors, metadata = _read(path)
    if metadata.get("format") == FORMAT:
        adapters = _own_adapters(tensors, metadata, path)
    else:
        from keras_ldm.convert.diffusers_lora import diffusers_lora_adapters  # convert/ sits above training/

        by_path = diffusers_lora_adapters(_components(model)["unet"], tensors, metadata, source=path)
        adapters = {_layer_key("unet", kernel_path): adapter for kernel_path, adapter in by_path.items()}
    layers = _fitting_layers(model, adapters, merge, path)
    for key, (a, b, alpha) in adapters.items():
        _apply(layers[key], a, b, alpha * scale, merge)
    if not merge:
        _freeze_all_but_lora(model)
    _forget_compiled(model)


def kernel_variable(layer):
    """A Dense layer's kernel variable; with LoRA enabled, `layer.kernel` is the merged tensor instead.

    Example:
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> layer.enable_lora(1)
    >>> variable = kernel_variable(layer)
    >>> variable.name, tuple(variable.shape), variable.trainable
    ('kernel', (3, 2), False)
    """
    if not getattr(layer, "lora_enabled", False):
        return layer.kernel
    return next(weight for weight in layer.weights if weight.name == "kernel")


def merged_kernel(layer):
    """A LoRA Dense layer's kernel with its adapter's delta added, `W + (alpha / rank) A B`, computed in
    float32 and returned in the kernel variable's dtype (what a copy without adapters needs).

    Example:
    >>> layer = keras.layers.Dense(2)
    >>> layer.build((None, 3))
    >>> layer.enable_lora(1)
    >>> _ = layer.lora_kernel_b.assign(keras.ops.ones((1, 2)))
    >>> delta = keras.ops.convert_to_numpy(merged_kernel(layer) - kernel_variable(layer))
    >>> bool(np.allclose(delta, keras.ops.convert_to_numpy(layer.lora_kernel_a) @ np.ones((1, 2))))
    True
    """
    kernel = kernel_variable(layer)
    delta = keras.ops.matmul(layer.lora_kernel_a, layer.lora_kernel_b) * (layer.lora_alpha / layer.lora_rank)
    return keras.ops.cast(keras.ops.cast(kernel, "float32") + delta, kernel.dtype)


# -- helpers -----------------------------------------------------------------------------------------


def _refuse_ema(model, call):
    """LoRA and a moving average do not mix: the average covers the frozen weights, not the adapters, and
    sampling inside `ema_scope()` would put back averages without a merged delta."""
    if getattr(model, "ema", None) is not None:
        raise ValueError(
            f"{call} on a model with ema_decay={model.ema_decay}: the moving average covers the weights "
            f"LoRA freezes, not the adapters. Rebuild it without EMA (e.g. model.inference_copy())."
        )


def _check_rank(rank):
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank={rank!r}; expected a positive int (4 to 64 is usual).")
    return int(rank)


def _check_path(path):
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"path={path!r:.80}; expected a file path (a str or os.PathLike).")
    return os.fspath(path)


def _components(model):
    """`{"unet": ..., "text_encoder": ...}` of a `LatentDiffusion`; `{"unet": model}` of a bare UNet."""
    from keras_ldm.models.unet import UNet

    if isinstance(model, UNet):
        return {"unet": model}
    if not isinstance(getattr(model, "unet", None), UNet):
        raise TypeError(f"model is a {type(model).__name__}; expected a LatentDiffusion or a UNet.")
    components = {"unet": model.unet}
    if getattr(model, "text_encoder", None) is not None:
        components["text_encoder"] = model.text_encoder
    return components


def _layer_key(component, kernel_path):
    """`"u_net_3/…/to_q/kernel"` of component `"unet"` -> `"unet/…/to_q"` (the model's own name dropped:
    a model built twice in one process gets a numbered one)."""
    return component + "/" + kernel_path.split("/", 1)[1].rsplit("/", 1)[0]


def _target_names(target):
    if isinstance(target, str):
        if target not in TARGETS:
            raise ValueError(
                f"target={target!r}; expected one of {sorted(TARGETS)} or a list of layer names."
            )
        return TARGETS[target]
    if isinstance(target, (list, tuple)) and target and all(isinstance(n, str) for n in target):
        return tuple(target)
    raise TypeError(f"target={target!r:.80}; expected one of {sorted(TARGETS)} or a list of layer names.")


def _targets(component, name, names, argument):
    """`[(key, Dense layer)]` of `component`'s Dense layers with one of `names`."""
    found = _component_layers(name, component)
    chosen = [(key, layer) for key, layer in found.items() if layer.name in names]
    if not chosen:
        available = sorted({layer.name for layer in found.values()})
        raise ValueError(
            f"{argument} matches no Dense layer of the {name}; its Dense layers are {available}."
        )
    return chosen


def _freeze_all_but_lora(model):
    """Only the LoRA weights stay trainable (biases, norms, convs, embeddings, kernels are frozen)."""
    adapters = {
        id(v) for layer in lora_layers(model).values() for v in (layer.lora_kernel_a, layer.lora_kernel_b)
    }
    for component in _components(model).values():
        if any(id(v) in adapters for v in component.variables):
            component.trainable = True  # a frozen text encoder would hide its adapters
    for variable in model.variables:
        variable.trainable = id(variable) in adapters


def _forget_compiled(model):
    """Drops what was compiled or recorded for the old layers (the generation programs, PyTorch
    recordings, Keras' train/test/predict functions): new variables and alphas need new ones."""
    model.__dict__.pop("_generation_fns", None)
    model.__dict__.pop("_traced_calls", None)
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)


def _read(path):
    """The file's numpy tensors and metadata; a `ValueError` naming it when it is not safetensors."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise ValueError(f"path={path!r} is not a file; expected a LoRA .safetensors file.")
    try:
        with safe_open(path, framework="numpy") as f:
            return {key: f.get_tensor(key) for key in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(
            f"{path} is not a readable safetensors file ({type(error).__name__}: {error})."
        ) from None


def _own_adapters(tensors, metadata, path):
    """`{layer key: (a, b, alpha)}` of a file written by `save_lora_weights`."""
    halves = collections.defaultdict(dict)
    for key, value in tensors.items():
        layer, _, name = key.rpartition("/")
        if name not in ("lora_kernel_a", "lora_kernel_b"):
            raise ValueError(
                f"{path}: tensor {key!r} is not a LoRA weight (…/lora_kernel_a or …/lora_kernel_b)."
            )
        halves[layer][name] = value
    incomplete = sorted(layer for layer, pair in halves.items() if len(pair) != 2)
    if incomplete:
        raise ValueError(
            f"{path}: LoRA layers without both lora_kernel_a and lora_kernel_b, e.g. {incomplete[:3]}."
        )
    alpha, pattern = metadata.get("lora_alpha"), json.loads(metadata.get("alpha_pattern") or "{}")
    return {
        layer: (
            pair["lora_kernel_a"],
            pair["lora_kernel_b"],
            float(pattern.get(layer, alpha if alpha is not None else pair["lora_kernel_a"].shape[1])),
        )
        for layer, pair in halves.items()
    }


def _fitting_layers(model, adapters, merge, path):
    """`{key: Dense layer}` for every adapter; a `ValueError` naming `path` when any does not fit."""
    layers = dense_layers(model)
    unknown = sorted(key for key in adapters if key not in layers)
    if unknown:
        raise ValueError(
            f"{path}: {len(unknown)} of its {len(adapters)} LoRA layers are not in this model, e.g. {unknown[:3]} "
            f"(this model's layers are named like {sorted(k for k in layers if k.endswith('/to_q'))[:2]}). "
            f"Was it saved from another architecture?"
        )
    for key, (a, b, _) in adapters.items():
        layer = layers[key]
        kernel_shape = tuple(kernel_variable(layer).shape)
        if a.ndim != 2 or b.ndim != 2 or (a.shape[0], b.shape[1]) != kernel_shape or a.shape[1] != b.shape[0]:
            raise ValueError(
                f"{path}: LoRA layer {key!r} has A {a.shape} and B {b.shape}; the model's kernel there is "
                f"{kernel_shape}, which needs A (in, rank) = ({kernel_shape[0]}, r) and B (r, {kernel_shape[1]})."
            )
        if not merge and layer.lora_enabled and layer.lora_rank != a.shape[1]:
            raise ValueError(
                f"{path}: LoRA layer {key!r} has rank {a.shape[1]}; the model's adapter there has rank "
                f"{layer.lora_rank}. Load it into a model without LoRA, or with merge=True."
            )
    return {key: layers[key] for key in adapters}


def _apply(layer, a, b, alpha, merge):
    """Sets `layer`'s adapter to `(a, b, alpha)`, or adds `(alpha / rank) a b` to its kernel."""
    rank = a.shape[1]
    if merge:
        kernel = kernel_variable(layer)
        delta = (alpha / rank) * (np.asarray(a, "float32") @ np.asarray(b, "float32"))
        base = np.asarray(keras.ops.convert_to_numpy(kernel), "float32")
        kernel.assign(keras.ops.cast(base + delta, kernel.dtype))
        return
    if not layer.lora_enabled:
        layer.enable_lora(rank, lora_alpha=alpha)
    layer.lora_alpha = alpha
    layer.lora_kernel_a.assign(np.asarray(a, "float32"))
    layer.lora_kernel_b.assign(np.asarray(b, "float32"))
