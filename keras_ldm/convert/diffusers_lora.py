"""diffusers LoRA files for a keras_ldm UNet: their key layouts, read with numpy and mapped to our layers.

| layout (who writes it)                        | down (A), `[rank, in]`             | up (B), `[out, rank]`            |
|-----------------------------------------------|------------------------------------|----------------------------------|
| PEFT (current diffusers `save_lora_weights`)  | `unet.{module}.lora_A.weight`      | `unet.{module}.lora_B.weight`    |
| diffusers before PEFT                         | `unet.{module}.lora.down.weight`   | `unet.{module}.lora.up.weight`   |
| attention processors (`save_attn_procs`)      | `{attn}.processor.to_q_lora.down.weight` | `….to_q_lora.up.weight`    |

`{module}` is a diffusers `UNet2DConditionModel` module name (`…attn1.to_q`, `…attn2.to_out.0`); the
`unet.` prefix is optional. Each module's delta is `W += (alpha / rank) * up @ down` (torch Linear layout
`[out, in]`); `alpha` comes from a `{module}.alpha` tensor (kohya-style network alphas), else from the
`lora_adapter_metadata` that diffusers stores in the file (`lora_alpha`, `alpha_pattern`), else it is the
rank (scale 1). The module names map to our Dense layers through `keras_ldm.convert.diffusers.dense_paths`,
the mapping the diffusers UNet converter uses.
"""

import json

import numpy as np

from keras_ldm.convert.diffusers import dense_paths

LAYOUTS = (  # (suffix of down, suffix of up)
    (".lora_A.weight", ".lora_B.weight"),
    (".lora.down.weight", ".lora.up.weight"),
)
PREFIXES = ("unet.",)
TEXT_ENCODER_PREFIXES = ("text_encoder", "lora_te")
METADATA_KEY = "lora_adapter_metadata"


def diffusers_lora_adapters(unet, tensors, metadata=None, source="tensors"):
    """`{kernel variable path: (a, b, alpha)}` of a diffusers LoRA state dict for our `unet`.

    `a = down.T` (`[in, rank]`) and `b = up.T` (`[rank, out]`) in our Dense layout, so that the delta of
    the kernel is `(alpha / rank) * a @ b`.

    Args:
        unet: the keras_ldm `UNet` (e.g. converted with `keras_ldm.convert.from_diffusers`).
        tensors: the file's numpy arrays, by key.
        metadata: the file's safetensors metadata (a dict of str), or None.
        source: what to call the file in errors.

    Example:
    >>> from keras_ldm.models import UNet
    >>> unet = UNet(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1,),
    ...             num_res_blocks=1, attention_resolutions=(1,), num_heads=2, context_dim=16)
    >>> module = "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k"
    >>> tensors = {f"{module}.lora_A.weight": np.ones((2, 16), "float32"),
    ...            f"{module}.lora_B.weight": np.ones((32, 2), "float32")}
    >>> [(path.split("/", 1)[1], a.shape, b.shape, alpha)
    ...  for path, (a, b, alpha) in diffusers_lora_adapters(unet, tensors).items()]
    [('mid_block_attentions_0/transformer_blocks_0/attn2/to_k/kernel', (16, 2), (2, 32), 2.0)]
    """
    modules = lora_modules(tensors, source)
    alphas = _alphas(modules, tensors, metadata, source)
    paths = dense_paths(unet)
    unknown = sorted(module for module in modules if module not in paths)
    if unknown:
        matched = len(modules) - len(unknown)
        raise ValueError(
            f"{source}: {len(unknown)} of its {len(modules)} LoRA modules are not Dense layers of this UNet "
            f"({matched} are), e.g. {unknown[:3]}; this UNet's attention modules are named like "
            f"{sorted(p for p in paths if '.attn' in p)[:2]}. Was the LoRA made for another architecture?"
        )
    return {paths[module]: (down.T, up.T, alphas[module]) for module, (down, up) in modules.items()}


def lora_modules(tensors, source="tensors"):
    """`{diffusers module name: (down [rank, in], up [out, rank])}` of a LoRA state dict in any layout
    above; a `ValueError` (naming `source` and example keys) for keys of no known layout.

    Example:
    >>> tensors = {"unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.lora.down.weight":
    ...            np.zeros((4, 32)),
    ...            "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.lora.up.weight":
    ...            np.zeros((32, 4))}
    >>> {module: (down.shape, up.shape) for module, (down, up) in lora_modules(tensors).items()}
    {'up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0': ((4, 32), (32, 4))}
    """
    text = sorted(key for key in tensors if key.startswith(TEXT_ENCODER_PREFIXES))
    if text:
        raise ValueError(
            f"{source} holds {len(text)} text-encoder LoRA tensors, e.g. {text[:2]}; keras_ldm loads diffusers "
            f"LoRA into the UNet only (drop the `text_encoder.*` keys to load the UNet part)."
        )
    halves, unknown = {}, []
    for key, value in tensors.items():
        name = _diffusers_key(key)
        if name.endswith(".alpha"):
            continue
        module, half = _split(name)
        if module is None:
            unknown.append(key)
        else:
            halves.setdefault(module, {})[half] = _matrix(value)
    if unknown or not halves:
        raise ValueError(
            f"{source}: {len(unknown)} of its {len(tensors)} tensors are not LoRA weights of a known layout, "
            f"e.g. {sorted(unknown or tensors)[:3]}; expected diffusers/PEFT UNet LoRA keys such as "
            f"'unet.{{module}}.lora_A.weight'/'lora_B.weight' or 'unet.{{module}}.lora.down.weight'/'lora.up.weight'."
        )
    incomplete = sorted(module for module, pair in halves.items() if len(pair) != 2)
    if incomplete:
        raise ValueError(f"{source}: LoRA modules without both halves (down and up), e.g. {incomplete[:3]}.")
    for module, pair in halves.items():
        if pair["down"].shape[0] != pair["up"].shape[1]:
            raise ValueError(
                f"{source}: module {module!r} has down {pair['down'].shape} and up {pair['up'].shape}; "
                f"their ranks (down rows, up columns) differ."
            )
    return {module: (pair["down"], pair["up"]) for module, pair in halves.items()}


def _split(name):
    """`(module, "down" | "up")` of a LoRA weight's key, or `(None, None)`."""
    for suffixes in LAYOUTS:
        for half, suffix in zip(("down", "up"), suffixes):
            if name.endswith(suffix):
                return name[: -len(suffix)], half
    return None, None


def _diffusers_key(key):
    """A key without the `unet.` prefix, attention-processor names as module names."""
    for prefix in PREFIXES:
        key = key.removeprefix(prefix)
    key = key.replace(".processor.", ".")
    for name in ("to_q", "to_k", "to_v"):
        key = key.replace(f".{name}_lora.", f".{name}.lora.")
    return key.replace(".to_out_lora.", ".to_out.0.lora.")


def _matrix(value):
    """A LoRA weight as a float32 matrix (`[out, in, 1, 1]` of a 1x1 conv as `[out, in]`)."""
    value = np.asarray(value, dtype="float32")
    return value.reshape(value.shape[0], -1)


def _alphas(modules, tensors, metadata, source):
    """`{module: alpha}`: a `{module}.alpha` tensor, else diffusers' adapter metadata, else the rank."""
    config = _adapter_config(metadata, source)
    alphas = {}
    for module, (down, _) in modules.items():
        rank = down.shape[0]
        alpha = next((tensors[k] for k in (f"{module}.alpha", f"unet.{module}.alpha") if k in tensors), None)
        if alpha is None:
            alpha = _pattern_value(config.get("alpha_pattern", {}), module, config.get("lora_alpha", rank))
        alphas[module] = float(np.asarray(alpha).reshape(()))
    return alphas


def _adapter_config(metadata, source):
    """The UNet's LoRA config in diffusers' `lora_adapter_metadata` (keys with or without `unet.`)."""
    raw = (metadata or {}).get(METADATA_KEY)
    if not raw:
        return {}
    config = json.loads(raw)
    config = {key.removeprefix("unet."): value for key, value in config.items()}
    for option in ("use_rslora", "use_dora"):
        if config.get(option):
            raise ValueError(f"{source}: its LoRA config has {option}=True; keras_ldm loads plain LoRA only.")
    return config


def _pattern_value(patterns, module, default):
    """PEFT's `alpha_pattern` lookup: the value of the first key that is `module` or a dotted suffix of it."""
    for pattern, value in patterns.items():
        pattern = pattern.lstrip("^")
        if module == pattern or module.endswith("." + pattern):
            return value
    return default
