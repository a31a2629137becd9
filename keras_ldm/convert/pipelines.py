"""Load a whole diffusers latent-diffusion pipeline folder (`model_index.json`) as a `LatentDiffusion`.

No PyTorch: every component is read with the safetensors numpy API (see `convert/diffusers.py` and
`convert/ldm_bert.py`). Supported pipelines and what they become:

| `_class_name`                | components                                 | `LatentDiffusion`        |
|------------------------------|--------------------------------------------|--------------------------|
| `LDMTextToImagePipeline`     | vqvae, bert, tokenizer, unet, scheduler    | `cross_attention="text"` |
| `LDMSuperResolutionPipeline` | vqvae, unet (latent + image in), scheduler | `concat="low_res"`       |
| `LDMPipeline`                | vqvae, unet, scheduler                     | unconditional            |

What each pipeline's `__call__` does, and how the loaded model reproduces it:
- noise schedule: the scheduler's betas (`beta_schedule`, `beta_start`, `beta_end`,
  `num_train_timesteps`; diffusers `"scaled_linear"` is CompVis `"linear"`, diffusers `"linear"` is
  CompVis `"sqrt_linear"`) and its `prediction_type` (the UNet's parameterization);
- latent scaling: `LDMTextToImagePipeline` decodes `latents / vqvae.config.scaling_factor` (0.18215 when
  the config leaves it out), `LDMSuperResolutionPipeline` decodes the latents as they are. `LDMPipeline`
  divides by `scaling_factor` too since diffusers 0.22 (PR #5213), which breaks the VQ models it was made
  for (`CompVis/ldm-celebahq-256`, whose config has no `scaling_factor`: diffusers issue #6725); keras_ldm
  follows CompVis there: VQ latents are not scaled (a KL first stage uses its `scaling_factor`). Pass
  `scale_factor=` to choose another factor;
- sampling: `generate(..., sampler="ddim", eta=...)` equals the pipeline with a `DDIMScheduler` set up as
  CompVis samples (`steps_offset=1`, `set_alpha_to_one=False`, `clip_sample=False`, `"leading"` spacing);
  other settings load too, with a warning that names them (see `sampler_differences`).
"""

import json
import os
import warnings

from keras_ldm.convert.diffusers import from_diffusers
from keras_ldm.convert.ldm_bert import ldm_bert_from_diffusers, tokenizer_from_diffusers
from keras_ldm.diffusion.schedule import NoiseSchedule
from keras_ldm.models.latent_diffusion import LatentDiffusion

MODEL_INDEX = "model_index.json"
SCHEDULER_CONFIG = "scheduler_config.json"
# diffusers' AutoencoderKL / VQModel default, used when a config has no `scaling_factor`.
DEFAULT_SCALING_FACTOR = 0.18215

# Per pipeline: its components, its conditioning, which latents it divides by the first stage's
# `scaling_factor` ("config": always, "kl_only": a KL first stage's, "none": never) and the
# `num_inference_steps` default of its `__call__`.
PIPELINES = {
    "LDMTextToImagePipeline": dict(
        components=("vqvae", "bert", "tokenizer", "unet", "scheduler"),
        conditioning=dict(cross_attention="text"),
        latent_scaling="config",
        num_steps=50,
    ),
    "LDMSuperResolutionPipeline": dict(
        components=("vqvae", "unet", "scheduler"),
        conditioning=dict(concat="low_res"),
        latent_scaling="none",
        num_steps=100,
    ),
    "LDMPipeline": dict(
        components=("vqvae", "unet", "scheduler"),
        conditioning={},
        latent_scaling="kl_only",
        num_steps=50,
    ),
}

# diffusers beta_schedule -> keras_ldm (CompVis) beta_schedule.
BETA_SCHEDULES = {"scaled_linear": "linear", "linear": "sqrt_linear"}
PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
SAMPLERS = {
    "DDIMScheduler": "ddim",
    "PNDMScheduler": "plms",
    "DDPMScheduler": "ddpm",
    "DPMSolverMultistepScheduler": "dpmpp_2m",
    "EulerDiscreteScheduler": "euler",
}
# Scheduler settings keras_ldm's samplers follow: key -> (what keras_ldm does, diffusers' default).
SAMPLER_SETTINGS = {
    "DDIMScheduler": {
        "steps_offset": (1, 0),
        "set_alpha_to_one": (False, True),
        "clip_sample": (False, True),
        "thresholding": (False, False),
        "timestep_spacing": ("leading", "leading"),
    },
    "PNDMScheduler": {
        "skip_prk_steps": (True, False),
        "steps_offset": (1, 0),
        "set_alpha_to_one": (False, False),
        "timestep_spacing": ("leading", "leading"),
    },
    "DDPMScheduler": {
        "steps_offset": (1, 0),
        "clip_sample": (False, True),
        "variance_type": ("fixed_small", "fixed_small"),
        "timestep_spacing": ("leading", "leading"),
    },
    "DPMSolverMultistepScheduler": {
        "algorithm_type": ("dpmsolver++", "dpmsolver++"),
        "solver_order": (2, 2),
        "steps_offset": (1, 0),
        "timestep_spacing": ("leading", "linspace"),
    },
    "EulerDiscreteScheduler": {"steps_offset": (1, 0), "timestep_spacing": ("leading", "linspace")},
}


def is_diffusers_pipeline(path):
    """Whether `path` is a folder with a diffusers `model_index.json`.

    Example:
    >>> is_diffusers_pipeline("/nonexistent")
    False
    """
    return os.path.isfile(os.path.join(str(path), MODEL_INDEX))


def from_diffusers_pipeline(path, dtype=None, scale_factor=None):
    """Returns the `LatentDiffusion` of a saved diffusers LDM pipeline, without PyTorch.

    Args:
        path: folder written by a pipeline's `save_pretrained` (with `model_index.json`), e.g. a
            local copy of `CompVis/ldm-text2im-large-256` or `CompVis/ldm-super-resolution-4x-openimages`.
        dtype: optional Keras dtype policy for the networks (e.g. `"float32"`, `"mixed_bfloat16"`).
        scale_factor: the factor latents are divided by before decoding; by default what the pipeline
            does (see the module docstring).

    Example:
    >>> model = from_diffusers_pipeline("ldm-text2im-large-256")  # doctest: +SKIP
    >>> defaults = pipeline_generation_defaults("ldm-text2im-large-256")  # doctest: +SKIP
    >>> images = model.generate("a painting of a squirrel eating a burger", **defaults)  # doctest: +SKIP
    """
    path = str(path)
    spec = PIPELINES[read_model_index(path)["_class_name"]]
    scheduler = read_scheduler_config(path)
    for message in sampler_differences(scheduler):
        warnings.warn(message, stacklevel=2)
    schedule, parameterization = schedule_from_scheduler_config(scheduler)
    first_stage = from_diffusers(component_path(path, "vqvae"), dtype=dtype)
    kwargs = dict(
        unet=from_diffusers(component_path(path, "unet"), dtype=dtype),
        first_stage=first_stage,
        schedule=schedule,
        parameterization=parameterization,
        scale_factor=_scale_factor(path, spec) if scale_factor is None else float(scale_factor),
        **spec["conditioning"],
    )
    if "bert" in spec["components"]:
        kwargs["text_encoder"] = ldm_bert_from_diffusers(component_path(path, "bert"), dtype=dtype)
        kwargs["tokenizer"] = tokenizer_from_diffusers(component_path(path, "tokenizer"))
    return LatentDiffusion(**kwargs)


def read_model_index(path):
    """The parsed `model_index.json` of a supported pipeline folder, with its component folders checked."""
    index_path = os.path.join(path, MODEL_INDEX)
    if not os.path.isfile(index_path):
        raise ValueError(
            f"path={path!r} is not a diffusers pipeline folder: expected {MODEL_INDEX} in it (as written by "
            f"a pipeline's save_pretrained). For a single model folder use keras_ldm.convert.from_diffusers."
        )
    with open(index_path) as f:
        index = json.load(f)
    name = index.get("_class_name")
    if name not in PIPELINES:
        raise ValueError(f"{index_path} describes _class_name={name!r}; keras_ldm loads {sorted(PIPELINES)}.")
    for component in PIPELINES[name]["components"]:
        component_path(path, component)
    return index


def component_path(path, name):
    """The folder of one pipeline component (a clear `ValueError` when it is missing)."""
    folder = os.path.join(path, name)
    if not os.path.isdir(folder):
        found = sorted(entry for entry in os.listdir(path) if os.path.isdir(os.path.join(path, entry)))
        raise ValueError(
            f"The pipeline folder {path!r} has no {name!r} component folder; found folders {found}."
        )
    return folder


def read_scheduler_config(path):
    """The parsed `scheduler/scheduler_config.json` of a pipeline folder."""
    config_path = os.path.join(component_path(path, "scheduler"), SCHEDULER_CONFIG)
    if not os.path.isfile(config_path):
        raise ValueError(f"No {SCHEDULER_CONFIG} in {os.path.dirname(config_path)!r}.")
    with open(config_path) as f:
        return json.load(f)


def schedule_from_scheduler_config(config):
    """`(NoiseSchedule, parameterization)` from a diffusers scheduler config dict.

    Missing keys take diffusers' defaults (`"linear"` betas from 1e-4 to 0.02 over 1000 steps, epsilon).

    Example:
    >>> schedule, parameterization = schedule_from_scheduler_config(
    ...     {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})
    >>> schedule.beta_schedule, schedule.linear_end, parameterization
    ('linear', 0.012, 'eps')
    """
    name = config.get("_class_name", "scheduler")
    if config.get("trained_betas") is not None:
        raise ValueError(f"{name} config has trained_betas; keras_ldm needs a named beta_schedule.")
    if config.get("rescale_betas_zero_snr", False):
        raise ValueError(f"{name} config has rescale_betas_zero_snr=True; keras_ldm does not support it.")
    betas = config.get("beta_schedule", "linear")
    if betas not in BETA_SCHEDULES:
        raise ValueError(
            f"{name} config has beta_schedule={betas!r}; keras_ldm supports {sorted(BETA_SCHEDULES)} "
            f"(as CompVis {sorted(BETA_SCHEDULES.values())})."
        )
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise ValueError(
            f"{name} config has prediction_type={prediction!r}; expected one of {sorted(PREDICTION_TYPES)}."
        )
    schedule = NoiseSchedule(
        BETA_SCHEDULES[betas],
        int(config.get("num_train_timesteps", 1000)),
        config.get("beta_start", 1e-4),
        config.get("beta_end", 0.02),
    )
    return schedule, PREDICTION_TYPES[prediction]


def sampler_differences(config):
    """Messages naming the scheduler settings known to differ from keras_ldm's matching sampler.

    For a `DDIMScheduler`, empty means `generate(sampler="ddim")` takes the scheduler's steps (tested).

    Example:
    >>> sampler_differences({"_class_name": "DDIMScheduler", "steps_offset": 1,
    ...                      "set_alpha_to_one": False, "clip_sample": False})
    []
    """
    name = config.get("_class_name")
    if name not in SAMPLERS:
        message = (
            f"The pipeline's scheduler is {name!r}, which keras_ldm has no sampler for; generate() "
            f"defaults to DDIM. keras_ldm samplers stand for {sorted(SAMPLERS)}."
        )
        return [message]
    settings = SAMPLER_SETTINGS.get(name, {})
    differ = {
        key: config.get(key, default)
        for key, (ours, default) in settings.items()
        if config.get(key, default) != ours
    }
    if not differ:
        return []
    wanted = {key: settings[key][0] for key in differ}
    message = (
        f"The pipeline's {name} has {differ}; keras_ldm's {SAMPLERS[name]!r} sampler follows CompVis "
        f"({wanted}), so its images differ slightly from this pipeline's."
    )
    return [message]


def sampler_for_scheduler(config):
    """The keras_ldm sampler name for a diffusers scheduler config (`"ddim"` for unknown ones).

    Example:
    >>> sampler_for_scheduler({"_class_name": "PNDMScheduler"})
    'plms'
    """
    return SAMPLERS.get(config.get("_class_name"), "ddim")


def pipeline_generation_defaults(path):
    """`generate()` keyword arguments that stand for the pipeline's own `__call__` defaults.

    `sampler` (from the scheduler class), `num_steps` and `eta` for every pipeline; `guidance_scale`,
    `height`, `width` for text-to-image; `upscale` (the first stage's factor: the pipeline samples
    latents as large as the low-resolution image) for super-resolution; `height`, `width` for
    unconditional pipelines (the UNet's `sample_size` in latent pixels).

    Example:
    >>> pipeline_generation_defaults("ldm-super-resolution-4x-openimages")  # doctest: +SKIP
    {'sampler': 'ddim', 'num_steps': 100, 'eta': 0.0, 'upscale': 4}
    """
    path = str(path)
    name = read_model_index(path)["_class_name"]
    spec = PIPELINES[name]
    defaults = dict(
        sampler=sampler_for_scheduler(read_scheduler_config(path)), num_steps=spec["num_steps"], eta=0.0
    )
    factor = 2 ** (len(_component_config(path, "vqvae")["block_out_channels"]) - 1)
    if name == "LDMSuperResolutionPipeline":
        return dict(defaults, upscale=factor)
    size = _component_config(path, "unet").get("sample_size")
    size = size[0] if isinstance(size, (list, tuple)) else size
    if size:
        defaults.update(height=size * factor, width=size * factor)
    if name == "LDMTextToImagePipeline":
        defaults["guidance_scale"] = 1.0
    return defaults


def _component_config(path, name):
    with open(os.path.join(component_path(path, name), "config.json")) as f:
        return json.load(f)


def _scale_factor(path, spec):
    """The factor latents are divided by before decoding (1 where they are not)."""
    config = _component_config(path, "vqvae")
    if spec["latent_scaling"] == "none":
        return 1.0
    if spec["latent_scaling"] == "kl_only" and config.get("_class_name") == "VQModel":
        return 1.0
    return float(config.get("scaling_factor", DEFAULT_SCALING_FACTOR))
