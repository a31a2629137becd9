"""`keras-ldm train-autoencoder`: a first-stage autoencoder trained on a folder of images.

keras-ldm train-autoencoder --images ./photos --out ./my_vae --architecture small --steps 20000

CompVis' first-stage recipe (`models/first_stage_models/*/config.yaml`): Adam(lr, beta_1=0.5, beta_2=0.9)
for the autoencoder and the discriminator, L1 + LPIPS (`--perceptual-weight`, 1) + KL 1e-6 (or the
codebook loss of VQ), and the PatchGAN hinge loss from `--disc-start` on, with the adaptive weight. The
learning rate is CompVis' base rate 4.5e-6 times the batch size (12: 5.4e-5). Grey (1-channel) and RGBA
(4-channel) images train models of that many channels. The preset in `--out` holds the autoencoder
without its training state (`AutoencoderKL.from_preset(out)`); the checkpoints hold all of it.
See `keras_ldm.cli_train` for the run itself (checkpoints, resuming, samples).
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
from keras_ldm.data.folder_batches import StepBatches
from keras_ldm.models.generation import images_to_uint8
from keras_ldm.presets import training_sizes

BASE_LEARNING_RATE = 4.5e-6  # CompVis' first stages: lr = base * batch size
DEFAULT_BATCH_SIZE = 12  # CompVis' kl-f8 config
# The flags whose values decide the model or the batches: stored with every checkpoint, kept on resume.
SETTINGS = (
    "architecture",
    "from_preset",
    "channels",
    "image_size",
    "batch_size",
    "learning_rate",
    "disc_start",
    "perceptual_weight",
    "seed",
)


def run_train_autoencoder(args, callbacks=()):
    """`keras-ldm train-autoencoder` with the parsed `args`; `callbacks` are added to `fit`."""
    out = TrainingOutput(args.out, args.resume, args.overwrite)
    state, path, first_step, total_steps = resume_point(out, "train-autoencoder", args.steps)
    settings = resolve_settings(args, SETTINGS, state)
    if state is None:
        model = _new_model(settings)
        folder = scan_images(args, settings["channels"], settings["image_size"])
        if model is not None:
            check_channels(folder, settings["channels"], model.in_channels, "--from-preset")
        settings.update(_defaults(settings, folder, total_steps))
        model = model or training_sizes.build_autoencoder(settings["architecture"], folder.channels)
        compile_autoencoder(model, settings)
    else:
        folder = scan_images(args, settings["channels"], settings["image_size"])
        check_data_unchanged(folder, state)
        model = restore_model(path, lambda m: compile_autoencoder(m, settings))
    check_image_size(folder, model.downsample_factor, "the autoencoder")
    _check_discriminator(model, folder)
    job = Job(
        command="train-autoencoder",
        settings=settings,
        model=model,
        batches=StepBatches(folder, settings["batch_size"], settings["seed"], workers=data_workers()),
        first_step=first_step,
        total_steps=total_steps,
        sample=_reconstruction_grid(folder, args.num_samples),
        final_model=uncompiled_copy,
        description=f"Autoencoder trained on {len(folder)} images of {args.images} (keras-ldm train-autoencoder).",
        metadata={"training": training_metadata(settings, folder)},
    )
    train_from_folder(job, out, args, callbacks)


def _new_model(settings):
    """The `--from-preset` autoencoder (None for a new `--architecture`); fills in the settings it decides."""
    if settings["from_preset"] and settings["architecture"]:
        raise ValueError(
            "--architecture builds a new autoencoder, --from-preset fine-tunes one: pass one of them."
        )
    keras.utils.set_random_seed(settings["seed"] or 0)
    if not settings["from_preset"]:
        settings["architecture"] = settings["architecture"] or "small"
        settings["discriminator"] = training_sizes.discriminator_settings(settings["architecture"])
        return None
    model, metadata = load_autoencoder(settings["from_preset"])
    trained = metadata.get("training", {})  # a preset of this command: the discriminator it trained with
    settings["discriminator"] = trained.get("discriminator") or training_sizes.COMPVIS_DISCRIMINATOR
    return model


def _defaults(settings, folder, total_steps):
    """The settings not given: CompVis' recipe, scaled to the batch size and the run's length."""
    batch_size = settings["batch_size"] or DEFAULT_BATCH_SIZE
    return {
        "channels": folder.channels,
        "batch_size": batch_size,
        "learning_rate": default(settings["learning_rate"], BASE_LEARNING_RATE * batch_size),
        "disc_start": default(settings["disc_start"], min(50001, total_steps // 2)),
        "perceptual_weight": default(settings["perceptual_weight"], 1.0),
        "seed": settings["seed"] or 0,
    }


def compile_autoencoder(model, settings):
    """CompVis' first-stage training: Adam(lr, 0.5, 0.9) for both players, LPIPS, the hinge PatchGAN."""
    try:
        model.compile(
            optimizer=keras.optimizers.Adam(settings["learning_rate"], beta_1=0.5, beta_2=0.9),
            discriminator_optimizer=keras.optimizers.Adam(settings["learning_rate"], beta_1=0.5, beta_2=0.9),
            perceptual_weight=settings["perceptual_weight"],
            disc_start=settings["disc_start"],
            seed=settings["seed"],
            **settings["discriminator"],
        )
    except Exception as error:  # Keras' VGG16 download: an offline machine without the cached weights
        if settings["perceptual_weight"] and "vgg16" in str(error).lower() + type(error).__name__.lower():
            raise ValueError(
                f"--perceptual-weight {settings['perceptual_weight']}: LPIPS needs Keras' ImageNet VGG16 weights "
                f"(downloaded once to ~/.keras/models), which failed: {error}. Pass --perceptual-weight 0 to "
                f"train without the perceptual loss."
            ) from error
        raise


def _check_discriminator(model, folder):
    """The discriminator must fit the image size (e.g. 32x32 for CompVis' 3 layers)."""
    try:
        model.check_data(np.zeros((1, folder.height, folder.width, folder.channels), "uint8"))
    except ValueError as error:
        raise ValueError(f"Images of {folder.height}x{folder.width}: {error}") from None


def _reconstruction_grid(folder, count):
    """The sample grid: the first `count` images of the folder above their reconstructions."""
    if not count:
        return None
    images = np.stack([folder.read(i) for i in range(min(count, len(folder)))])

    def grid(model):
        reconstructions = model(images.astype("float32") / 127.5 - 1.0)
        reconstructions = keras.ops.convert_to_numpy(images_to_uint8(reconstructions))
        return image_grid(np.concatenate([images, reconstructions]), columns=len(images))

    return grid


def uncompiled_copy(model):
    """The trained autoencoder without its training state (optimizers, discriminator, LPIPS)."""
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    copy = keras.saving.deserialize_keras_object(config)
    values = {_inner_path(v): v for v in model.variables}
    for variable in copy.variables:
        variable.assign(values[_inner_path(variable)].value)
    return copy


def _inner_path(variable):
    """A variable's path below its model (`autoencoder_kl_3/encoder/...` -> `encoder/...`)."""
    return variable.path.partition("/")[2]
