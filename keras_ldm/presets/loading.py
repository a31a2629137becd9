"""`from_preset`: one entry point for every place a model can come from.

`preset` may be
- a shipped preset name (`shapes_t2i`, `photo_sr4x`, `photo_inpaint`): trained weights inside the package;
- an architecture preset name (`ldm_text2im_large_256`, `kl_f8`, ...): the released CompVis models; the
  weights are found in the local Hugging Face cache, or downloaded when online, or the error says how to
  get them; `load_weights=False` builds the architecture;
- a preset folder written by `save_to_preset`;
- a diffusers pipeline folder (`model_index.json`), converted on the fly without PyTorch;
- `hf://org/name`: a diffusers pipeline on the Hugging Face Hub (downloaded, or read from the local cache
  when offline);
- a CompVis `.ckpt` file with its YAML `config` (needs PyTorch to unpickle).
"""

import os

from keras_ldm.convert.compvis import from_compvis_checkpoint
from keras_ldm.convert.pipelines import (
    from_diffusers_pipeline,
    is_diffusers_pipeline,
    pipeline_generation_defaults,
)
from keras_ldm.presets import files
from keras_ldm.presets.architectures import ARCHITECTURES
from keras_ldm.presets.shipped import SHIPPED, shipped_path

HF_PREFIX = "hf://"


def all_presets():
    """`{name: description}` of every named preset (shipped first, then architectures)."""
    presets = {name: preset["description"] for name, preset in SHIPPED.items()}
    presets.update({name: arch.description for name, arch in ARCHITECTURES.items()})
    return presets


def from_preset(preset, load_weights=True, dtype=None, config=None, kind="latent_diffusion"):
    """Loads a model from any preset source (see the module docstring).

    Args:
        preset: a preset name, a folder, `hf://org/name`, or a `.ckpt` path.
        load_weights: False builds the architecture with random weights.
        dtype: a dtype policy for the model (e.g. `"mixed_bfloat16"`); default: as saved.
        config: the CompVis YAML config of a `.ckpt`.
        kind: `"latent_diffusion"` or `"autoencoder"`: which named presets fit the calling class.
    """
    if not isinstance(preset, (str, os.PathLike)):
        raise TypeError(f"`preset` must be a preset name, a folder or a path; got {type(preset).__name__}.")
    preset = os.fspath(preset)
    if preset.startswith(HF_PREFIX):
        return _from_hub(preset[len(HF_PREFIX) :], load_weights, dtype)
    if preset in SHIPPED:
        return files.load_preset(shipped_path(preset), load_weights, dtype)
    named = _named_architecture(preset, kind)
    if named is not None:
        return _from_architecture(named, load_weights, dtype)
    if preset.endswith(".ckpt"):
        return _from_checkpoint(preset, config, load_weights, dtype)
    if os.path.isdir(preset):
        return _from_folder(preset, load_weights, dtype)
    if os.path.exists(preset):
        raise ValueError(
            f"`preset`={preset!r} is a file, but not a CompVis `.ckpt`; expected a preset folder, a diffusers "
            f"pipeline folder, `hf://org/name` or a `.ckpt` with `config=`."
        )
    raise ValueError(
        f"Unknown preset {preset!r}: not a folder, not a file, not `hf://...`. Named presets: "
        f"{sorted(preset_names(kind))}."
    )


def preset_names(kind):
    """The named presets that build a model of `kind` (`"latent_diffusion"` or `"autoencoder"`)."""
    names = list(SHIPPED) if kind == "latent_diffusion" else []
    return names + [name for name, arch in ARCHITECTURES.items() if arch.kind == kind]


def _named_architecture(preset, kind):
    arch = ARCHITECTURES.get(preset)
    if arch is not None and arch.kind != kind:
        raise ValueError(
            f"Preset {preset!r} is a {arch.kind.replace('_', ' ')}, not a {kind.replace('_', ' ')}; load it "
            f"with the matching class. Presets of this kind: {sorted(preset_names(kind))}."
        )
    return arch


def _from_folder(path, load_weights, dtype):
    if files.is_preset_dir(path):
        return files.load_preset(path, load_weights, dtype)
    if is_diffusers_pipeline(path):
        if not load_weights:
            raise ValueError(
                f"{path!r} is a diffusers pipeline: its architecture comes with its weights; load it with "
                f"load_weights=True (or use a named architecture preset for an empty model)."
            )
        model = from_diffusers_pipeline(path, dtype=dtype)
        model.generation_defaults = _generation_defaults_of_pipeline(path)
        return model
    raise ValueError(
        f"`preset`={path!r} is a folder but neither a keras_ldm preset (config.json + model.weights.h5) nor "
        f"a diffusers pipeline (model_index.json); it holds {sorted(os.listdir(path))[:10]}."
    )


def _generation_defaults_of_pipeline(path):
    """The pipeline's own `__call__` defaults as `generation_defaults` (sampler, steps, eta, guidance, size)."""
    defaults = pipeline_generation_defaults(path)
    kept = {
        key: defaults[key] for key in ("num_steps", "guidance_scale", "sampler", "eta") if key in defaults
    }
    if defaults.get("height") and defaults.get("height") == defaults.get("width"):
        kept["image_size"] = defaults["height"]
    return kept


def _from_hub(repo_id, load_weights, dtype):
    if repo_id.count("/") != 1:
        raise ValueError(f"`hf://` presets name a Hub repository `hf://org/name`; got hf://{repo_id!r}.")
    return _from_folder(hub_snapshot(repo_id), load_weights, dtype)


def hub_snapshot(repo_id):
    """The local folder of a Hub repository: the cached snapshot, else a download (when online)."""
    try:
        import huggingface_hub
    except ImportError as error:
        raise ImportError("`hf://` presets need `pip install huggingface_hub`.") from error
    try:
        return huggingface_hub.snapshot_download(repo_id, local_files_only=True)
    except (OSError, ValueError):  # LocalEntryNotFoundError: not cached, try the network
        pass
    try:
        return huggingface_hub.snapshot_download(repo_id)
    except Exception as error:
        raise ValueError(
            f"Could not get hf://{repo_id}: it is not in the local Hugging Face cache and downloading it failed "
            f"({type(error).__name__}: {error}). When online, run `huggingface-cli download {repo_id}` once; "
            f"or download the repository elsewhere and pass its folder to from_preset."
        ) from error


def _from_architecture(arch, load_weights, dtype):
    if not load_weights:
        with files._dtype_policy(dtype):
            return arch.build()
    hub_repo = arch.weights.get("hf")
    if hub_repo:
        return _from_hub(hub_repo, load_weights, dtype)
    raise ValueError(
        f"The weights of {arch.name!r} are not shipped and are not on the Hugging Face Hub in diffusers form. "
        f"{arch.how_to_load} (load_weights=False builds the architecture without them.)"
    )


def _from_checkpoint(path, config, load_weights, dtype):
    if config is None:
        raise ValueError(
            f"A CompVis checkpoint needs its YAML config: from_preset({path!r}, config='.../config.yaml')."
        )
    if not os.path.isfile(path):
        raise ValueError(f"The checkpoint {path!r} does not exist.")
    if not load_weights:
        raise ValueError(
            "A `.ckpt` preset is its weights; use a named architecture preset for an empty model."
        )
    return from_compvis_checkpoint(path, config, dtype=dtype)
