"""`keras-ldm train`: a latent diffusion model trained on a folder of images.

keras-ldm train --images ./photos --out ./my_ldm --conditioning text --autoencoder ./my_vae

The conditioning comes from the folder: `text` reads a caption from the sidecar `.txt` of each image (a
word vocabulary is built from them for a new LDMBert), `class` takes the sub-folder names as classes
(sorted; their names are saved in the preset's `metadata.json` as `class_names`), `inpainting` draws random
box and stroke masks, `sr` makes the low-resolution inputs with the BSR degradation (`--degradation`,
`--sr-factor`); `unconditional` uses the images alone.

CompVis' recipe, the defaults: AdamW (weight decay 0.01) at CompVis' base rate 2e-6 times the batch size
times the accumulated batches (16: 3.2e-5); an EMA of the weights (decay 0.9999, the preset holds the
averages); 10% condition dropout for text and class, so that classifier-free guidance works (the preset
samples with guidance 3); `scale_by_std` for a KL first stage (VQ latents are used unscaled). `--from-preset`
fine-tunes an LDM preset instead (its scale factor, schedule and tokenizer are kept). See
`keras_ldm.cli_train` for the run itself (checkpoints, resuming, samples).
"""

import keras
import numpy as np

from keras_ldm.cli import image_grid
from keras_ldm.cli_train import (
    Job,
    TrainingOutput,
    check_channels,
    check_data_unchanged,
    check_image_size,
    data_workers,
    default,
    load_autoencoder,
    resolve_settings,
    restore_model,
    resume_point,
    scan_images,
    train_from_folder,
    training_metadata,
)
from keras_ldm.data.folder_batches import StepBatches, folder_captions, folder_classes, low_res_images
from keras_ldm.data.masks import random_masks
from keras_ldm.models import AutoencoderKL, ClassEmbedder, LatentDiffusion, LDMBertTokenizer
from keras_ldm.models.tokenizer import SEQUENCE_LENGTH, read_vocabulary, word_vocabulary
from keras_ldm.presets import training_sizes

BASE_LEARNING_RATE = 2.0e-6  # CompVis celeba256 / ffhq256 / lsun_beds256: lr = base * batch * accumulation
DEFAULT_BATCH_SIZE = 16
# `--conditioning` in `LatentDiffusion` terms: (cross_attention, concat).
CONDITIONINGS = {
    "unconditional": (None, None),
    "text": ("text", None),
    "class": ("class", None),
    "inpainting": (None, "masks"),
    "sr": (None, "low_res"),
}
# The flags whose values decide the model or the batches: stored with every checkpoint, kept on resume.
SETTINGS = (
    "conditioning",
    "architecture",
    "from_preset",
    "autoencoder",
    "channels",
    "image_size",
    "batch_size",
    "learning_rate",
    "gradient_accumulation_steps",
    "ema",
    "ema_decay",
    "condition_dropout",
    "sr_factor",
    "degradation",
    "seed",
)


def run_train(args, callbacks=()):
    """`keras-ldm train` with the parsed `args`; `callbacks` are added to `fit`."""
    out = TrainingOutput(args.out, args.resume, args.overwrite)
    state, path, first_step, total_steps = resume_point(out, "train", args.steps)
    settings = resolve_settings(args, SETTINGS, state)
    if state is None:
        preset_model, first_stage = _sources(settings)
    folder = scan_images(args, settings["channels"], settings["image_size"])
    columns, class_names = _condition_columns(settings["conditioning"], folder)
    if state is None:
        source = "--from-preset" if preset_model else "--autoencoder"
        settings["channels"] = check_channels(folder, settings["channels"], first_stage.in_channels, source)
        settings.update(_defaults(settings))
        model = _model(settings, first_stage, preset_model, columns, class_names, folder)
        compile_ldm(model, settings)
    else:
        check_data_unchanged(folder, state)
        if state.get("class_names") not in (None, class_names):
            raise ValueError(
                f"--resume: the class folders of --images are {class_names[:10]}, the checkpoint's "
                f"{state['class_names'][:10]}; the labels would change meaning. Restore the folders, or start "
                f"again with --overwrite."
            )
        model = restore_model(path, lambda m: compile_ldm(m, settings))
    if "prompts" in columns:
        columns["token_ids"] = np.asarray(keras.ops.convert_to_numpy(model.tokenizer(columns.pop("prompts"))))
    batches = _batches(folder, settings, columns)
    _check_sizes(model, folder, settings)
    model.batch_keys(set(batches.batch(0)))  # the model takes exactly what the batches hold
    metadata = {"training": training_metadata(settings, folder)}
    if class_names:
        metadata["class_names"] = class_names
    job = Job(
        command="train",
        settings=settings,
        model=model,
        batches=batches,
        first_step=first_step,
        total_steps=total_steps,
        sample=_generation_grid(folder, args, settings, class_names),
        final_model=lambda trained: trained.inference_copy(),  # the EMA weights, no optimizer state
        description=f"{settings['conditioning']} LDM trained on {len(folder)} images of {args.images} "
        f"(keras-ldm train).",
        metadata=metadata,
    )
    train_from_folder(job, out, args, callbacks)


def _sources(settings):
    """`(preset LDM or None, first stage)` of a new run: `--from-preset`, or `--autoencoder`."""
    if bool(settings["from_preset"]) == bool(settings["autoencoder"]):
        raise ValueError(
            "Pass --autoencoder (a trained first stage, e.g. from keras-ldm train-autoencoder) to train a new "
            "LDM, or --from-preset to fine-tune an LDM preset: one of them."
        )
    if settings["from_preset"] and settings["architecture"]:
        raise ValueError("--architecture builds a new LDM, --from-preset fine-tunes one: pass one of them.")
    keras.utils.set_random_seed(settings["seed"] or 0)
    if settings["from_preset"]:
        model = LatentDiffusion.from_preset(settings["from_preset"])
        return model, model.first_stage
    settings["architecture"] = settings["architecture"] or "small"
    return None, load_autoencoder(settings["autoencoder"])[0]


def _condition_columns(conditioning, folder):
    """`({column: per-image values}, class names)` of the conditioning: the captions or class labels."""
    try:
        if conditioning == "text":
            return {"prompts": folder_captions(folder)}, None
        if conditioning == "class":
            labels, names = folder_classes(folder)
            return {"labels": labels}, names
    except ValueError as error:
        raise ValueError(f"--images (--conditioning {conditioning}): {error}") from None
    return {}, None


def _defaults(settings):
    """The settings not given: CompVis' recipe."""
    guided = settings["conditioning"] in ("text", "class")
    batch_size = settings["batch_size"] or DEFAULT_BATCH_SIZE
    accumulation = settings["gradient_accumulation_steps"] or 1
    return {
        "batch_size": batch_size,
        "gradient_accumulation_steps": accumulation,
        "learning_rate": default(settings["learning_rate"], BASE_LEARNING_RATE * batch_size * accumulation),
        "ema": default(settings["ema"], True),
        "ema_decay": default(settings["ema_decay"], 0.9999),
        "condition_dropout": default(settings["condition_dropout"], 0.1 if guided else 0.0),
        "sr_factor": settings["sr_factor"] or 4,
        "degradation": settings["degradation"] or "bsr",
        "seed": settings["seed"] or 0,
    }


def _model(settings, first_stage, preset_model, columns, class_names, folder):
    """The `LatentDiffusion` to train: new, or the preset's parts with the run's EMA, dropout and seed."""
    cross_attention, concat = CONDITIONINGS[settings["conditioning"]]
    if preset_model is not None:
        parts = _preset_parts(preset_model, settings["conditioning"], class_names)
    else:
        parts = _new_parts(
            settings["architecture"], first_stage, cross_attention, concat, columns, class_names
        )
        parts["generation_defaults"] = _generation_defaults(settings, folder)
        parts["scale_by_std"] = isinstance(first_stage, AutoencoderKL)  # VQ latents: unscaled (CompVis)
    return LatentDiffusion(
        first_stage=first_stage,
        cross_attention=cross_attention,
        concat=concat,
        p_uncond=settings["condition_dropout"],
        ema_decay=settings["ema_decay"] if settings["ema"] else None,
        seed=settings["seed"],
        **parts,
    )


def _new_parts(architecture, first_stage, cross_attention, concat, columns, class_names):
    """The UNet and the conditioner of a new LDM of size `architecture`."""
    latent = first_stage.embed_dim
    extra = {None: 0, "low_res": first_stage.in_channels, "masks": latent + 1}[concat]
    context = training_sizes.context_dim(architecture) if cross_attention else None
    parts = {"unet": training_sizes.build_unet(architecture, latent + extra, latent, context)}
    if cross_attention == "text":
        vocabulary = word_vocabulary(columns["prompts"])
        words = LDMBertTokenizer(vocabulary, sequence_length=2).python_word_piece
        length = min(SEQUENCE_LENGTH, max(len(words(prompt)) for prompt in columns["prompts"]) + 2)
        parts["tokenizer"] = LDMBertTokenizer(vocabulary, sequence_length=length)
        parts["text_encoder"] = training_sizes.build_text_encoder(architecture, len(vocabulary), length)
    if cross_attention == "class":
        parts["class_embedder"] = ClassEmbedder(num_classes=len(class_names), embed_dim=context)
    return parts


def _generation_defaults(settings, folder):
    """DDIM, 50 steps, eta 0; guidance 3 for a model trained with condition dropout; the training size."""
    defaults = {"num_steps": 50, "sampler": "ddim", "eta": 0.0}
    if settings["condition_dropout"] > 0 and settings["conditioning"] in ("text", "class"):
        defaults["guidance_scale"] = 3.0
    if folder.height == folder.width:
        defaults["image_size"] = folder.height
    return defaults


def _preset_parts(model, conditioning, class_names):
    """The parts of a preset LDM to fine-tune; its conditioning must be `conditioning`."""
    knobs = (model.cross_attention, model.concat)
    have = next((name for name, kind in CONDITIONINGS.items() if kind == knobs), None)
    if have is None:
        raise ValueError(
            f"--from-preset is a model with cross_attention={knobs[0]!r}, concat={knobs[1]!r}; keras-ldm train "
            f"fine-tunes {sorted(CONDITIONINGS)} models (train the others with LatentDiffusion.fit)."
        )
    if have != conditioning:
        raise ValueError(
            f"--from-preset is a {have} model; --conditioning {conditioning} needs a {conditioning} one."
        )
    if conditioning == "class" and model.class_embedder.num_classes != len(class_names):
        raise ValueError(
            f"--from-preset has {model.class_embedder.num_classes} classes; --images has {len(class_names)} "
            f"class folders: {class_names[:10]}."
        )
    return {
        "unet": model.unet,
        "text_encoder": model.text_encoder,
        "tokenizer": _inline_tokenizer(model.tokenizer),
        "class_embedder": model.class_embedder,
        "schedule": model.schedule,
        "parameterization": model.parameterization,
        "loss_type": model.loss_type,
        "signed_masks": model.signed_masks,
        "scale_factor": float(keras.ops.convert_to_numpy(model.scale_factor)),  # the preset's, kept
        "generation_defaults": model.generation_defaults,
    }


def _inline_tokenizer(tokenizer):
    """The tokenizer with its vocabulary in its config (not a file of the preset): checkpoints stand alone."""
    if not isinstance(tokenizer, LDMBertTokenizer):
        return tokenizer
    return LDMBertTokenizer.from_config(
        dict(tokenizer.get_config(), vocabulary=read_vocabulary(tokenizer.vocabulary))
    )


def compile_ldm(model, settings):
    """AdamW (weight decay 0.01, CompVis' torch default), gradients accumulated over k batches."""
    accumulation = settings["gradient_accumulation_steps"]
    model.compile(
        learning_rate=settings["learning_rate"],
        gradient_accumulation_steps=accumulation if accumulation > 1 else None,
    )


def _batches(folder, settings, columns):
    """The run's `StepBatches`: images, the conditioning's columns, and masks or low-res inputs."""
    extra = {"masks": settings["conditioning"] == "inpainting"}
    if settings["conditioning"] == "sr":
        extra["low_res"] = (settings["sr_factor"], settings["degradation"])
    return StepBatches(
        folder, settings["batch_size"], settings["seed"], columns, workers=data_workers(), **extra
    )


def _check_sizes(model, folder, settings):
    multiple = model.first_stage.downsample_factor * 2 ** (len(model.unet.channel_mult) - 1)
    check_image_size(folder, multiple, "the LDM (its first stage and UNet levels)")
    if settings["conditioning"] == "sr":
        check_image_size(folder, settings["sr_factor"], f"--sr-factor {settings['sr_factor']}")


def _generation_grid(folder, args, settings, class_names):
    """The sample grid: `generate()` (EMA weights, DDIM `--sample-steps`) on fixed inputs of the conditioning."""
    count = min(args.num_samples or 0, len(folder))
    if not count:
        return None
    conditioning = settings["conditioning"]
    options = {"num_steps": args.sample_steps, "seed": 0, "verbose": 0}
    if settings["condition_dropout"] > 0 and conditioning in ("text", "class"):
        options["guidance_scale"] = 3.0
    images = np.stack([folder.read(i) for i in range(count)])
    inputs = None
    if conditioning in ("unconditional", "text", "class"):
        options.update(height=folder.height, width=folder.width)
    if conditioning == "unconditional":
        options["batch_size"] = count
    elif conditioning == "text":
        inputs = {"prompts": folder_captions(folder)[:count]}
    elif conditioning == "class":
        inputs = {"labels": [i % len(class_names) for i in range(count)]}
    elif conditioning == "inpainting":
        inputs = {"images": images, "masks": random_masks((folder.height, folder.width), count, seed=0)}
    else:
        inputs = {"images": low_res_images(images, settings["sr_factor"], settings["degradation"], seed=0)}
        options["upscale"] = settings["sr_factor"]

    def grid(model):
        return image_grid(np.asarray(model.generate(inputs, **options)), columns=min(count, 8))

    return grid
