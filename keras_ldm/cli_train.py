"""The run behind `keras-ldm train-autoencoder` and `keras-ldm train`: train on a folder, resumably.

keras-ldm train-autoencoder --images ./photos --out ./my_vae --steps 20000
keras-ldm train --images ./photos --out ./my_ldm --conditioning text --autoencoder ./my_vae

Both commands (`keras_ldm.cli_train_autoencoder`, `keras_ldm.cli_train_ldm`) build a `Job` and hand it to
`train_from_folder`, which `fit`s the model on `StepBatches` (the batch of step s is a pure function of the
seed and s, so the batch order never depends on where a run started) with Keras' progress bar plus the
learning rate and img/s (`TrainingProgress`), writes a checkpoint every `--checkpoint-every` steps into
`<out>/checkpoints/` (atomically; the newest `--keep-checkpoints` are kept) with a sample grid PNG in
`<out>/samples/`, logs to TensorBoard with `--tensorboard`, and saves the model as a preset in `--out`.

`--resume` rebuilds the model from the newest checkpoint, restores its weights, optimizer state, EMA, step
and random streams, and continues: a run killed at any step and resumed ends with the weights of an
uninterrupted one. The settings that decide the model and the batches (architecture, batch size, learning
rate, seed, ...) are stored in each checkpoint; a resumed run takes them from there, and a flag that
contradicts them is an error. `--steps` may grow on resume: training continues to the new total.
"""

import dataclasses
import os
import shutil
import uuid

import keras

from keras_ldm.data.folder_batches import CHANNEL_NAMES, StepBatches, scan_image_folder
from keras_ldm.presets import files
from keras_ldm.training import checkpoints
from keras_ldm.training.callbacks import TrainingProgress

DEFAULT_STEPS = 20000


@dataclasses.dataclass
class Job:
    """One training run, as a command sets it up for `train_from_folder`.

    Attributes:
        command: `"train"` or `"train-autoencoder"` (checkpoints of one do not resume the other).
        settings: the run's settings (JSON-able; stored with every checkpoint), with at least
            `batch_size` and `learning_rate`, and `gradient_accumulation_steps` if any.
        model: the compiled model, fresh or restored.
        batches: the run's `StepBatches`.
        first_step, total_steps: where training starts (0, or the checkpoint's step) and ends.
        sample: `model -> uint8 grid (H, W, C)` drawn at each checkpoint, or None.
        final_model: `model -> model` to save as the preset (e.g. without the optimizer state).
        description: the preset's one-line description.
        metadata: more entries for the preset's `metadata.json` (and the checkpoints' state).
    """

    command: str
    settings: dict
    model: keras.Model
    batches: StepBatches
    first_step: int
    total_steps: int
    sample: object
    final_model: object
    description: str
    metadata: dict


def train_from_folder(job, out, args, callbacks=()):
    """Fits `job.model` from `job.first_step` to `job.total_steps` with checkpoints and samples, then
    saves the preset into `out` (a `TrainingOutput`); `args` gives the logging flags."""
    settings = job.settings
    per_step = settings.get("gradient_accumulation_steps") or 1
    progress = TrainingProgress(
        settings["batch_size"], settings["learning_rate"], job.first_step, per_step, args.tensorboard
    )
    saver = checkpoints.StepCheckpoints(
        out.checkpoints,
        args.checkpoint_every,
        job.total_steps,
        job.first_step,
        state=_checkpoint_state(job),
        keep=args.keep_checkpoints,
        batches_per_step=per_step,
        after_save=_sample_writer(job, out, args.num_samples, progress),
    )
    print(
        f"{job.command}: steps {job.first_step + 1}-{job.total_steps} on {len(job.batches.folder)} images, "
        f"batch {settings['batch_size']}, learning rate {settings['learning_rate']:.3g}"
    )
    out.begin()
    try:
        if job.total_steps > job.first_step:
            job.batches.start, job.batches.stop = job.first_step * per_step, job.total_steps * per_step
            callbacks = [progress, saver, *callbacks]
            # shuffle=False: Keras would shuffle a PyDataset's batches; their order is the step's
            job.model.fit(job.batches, epochs=1, shuffle=False, verbose=1, callbacks=callbacks)
    except BaseException as error:
        out.failed(wrote_checkpoint=bool(saver.written))
        if isinstance(error, KeyboardInterrupt):
            print(f"\nInterrupted; continue from the newest checkpoint with --resume (--out {out.path}).")
        raise
    metadata = dict(job.metadata, training=dict(job.metadata.get("training", {}), steps=job.total_steps))
    out.save_preset(job.final_model(job.model), job.description, metadata)
    print(f"wrote {out.path} ({type(job.model).__name__} preset, {job.total_steps} steps)")


def _checkpoint_state(job):
    """What each checkpoint stores besides the model: the command, settings, total steps, the data."""
    folder = job.batches.folder
    state = {key: value for key, value in job.metadata.items() if key != "training"}
    state.update(command=job.command, settings=job.settings, total_steps=job.total_steps)
    state["data"] = {"images": len(folder), "fingerprint": folder.fingerprint()}
    return state


def _sample_writer(job, out, count, progress):
    """`after_save` of the checkpoints: a sample grid PNG in `<out>/samples/` (and in TensorBoard)."""
    if not count or job.sample is None:
        return None

    def write(model, step):
        seeds = checkpoints.seed_variables(model)
        saved = [keras.ops.convert_to_numpy(v) for v in seeds]
        try:
            grid = job.sample(model)
        finally:  # drawing samples must not move the training's random streams
            for variable, value in zip(seeds, saved):
                variable.assign(value)
        os.makedirs(out.samples, exist_ok=True)
        save_png(grid, os.path.join(out.samples, f"step-{step:08d}.png"))
        progress.log_images("samples", grid[None], step)

    return write


def save_png(image, path):
    """Writes a uint8 `(H, W, C)` image (C = 1, 3 or 4) as a PNG."""
    from PIL import Image

    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


class TrainingOutput:
    """The `--out` folder of a run: its checks, `checkpoints/` and `samples/`, and the final preset.

    A new run needs a new or empty folder, or `--overwrite` of an earlier run's output: that run's
    checkpoints are set aside (a hidden folder) until the new run ends, and put back if it fails before
    writing one of its own. `--resume` continues the newest checkpoint, or starts a new run if there is
    none yet. The preset is written atomically, keeping `checkpoints/`, `samples/` and logs beside it.
    """

    def __init__(self, path, resume=False, overwrite=False):
        self.path = os.path.abspath(path)
        self.checkpoints = os.path.join(self.path, "checkpoints")
        self.samples = os.path.join(self.path, "samples")
        self.resume, self.overwrite = resume, overwrite
        self._aside = None
        if resume and overwrite:
            raise ValueError(
                "--resume continues the run in --out, --overwrite replaces it: pass one of them."
            )
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"--out {path!r} is a file; expected a folder for the trained preset.")
        entries = set(os.listdir(self.path)) if os.path.isdir(self.path) else set()
        ours = bool(entries & {"checkpoints", "samples"}) or files.is_preset_dir(self.path)
        if entries and not ours:
            raise ValueError(
                f"--out {path!r} holds {sorted(entries)[:5]}, not the output of a training run; choose a new "
                f"or empty folder."
            )
        if ours and not (resume or overwrite):
            raise ValueError(
                f"--out {path!r} already holds a trained preset or checkpoints; pass --resume to continue that "
                f"run, or --overwrite to train a new model in its place."
            )

    def latest_checkpoint(self):
        """`(step, path)` of the checkpoint to resume, or None (a new run)."""
        if not self.resume:
            return None
        latest = checkpoints.latest_checkpoint(self.checkpoints)
        if latest is None and files.is_preset_dir(self.path):
            raise ValueError(
                f"--resume: --out {self.path!r} holds a preset but no checkpoint to resume from; pass "
                f"--overwrite to train a new model, or fine-tune it with --from-preset and another --out."
            )
        if latest is None:
            print(f"--resume: no checkpoint in {self.checkpoints!r} yet; starting a new run.")
        return latest

    def begin(self):
        """With `--overwrite`, moves an earlier run's checkpoints aside."""
        if self.overwrite and os.path.isdir(self.checkpoints):
            self._aside = os.path.join(self.path, f".checkpoints-replaced-{uuid.uuid4().hex[:8]}")
            os.rename(self.checkpoints, self._aside)

    def failed(self, wrote_checkpoint):
        """After a failed run: the set-aside checkpoints go back unless the run wrote its own."""
        if self._aside and not wrote_checkpoint:
            shutil.rmtree(self.checkpoints, ignore_errors=True)
            os.rename(self._aside, self.checkpoints)
        elif self._aside:
            print(f"The replaced run's checkpoints are kept in {self._aside!r}.")

    def save_preset(self, model, description, metadata):
        """Writes the preset into `--out` (atomically), keeping the folder's other entries."""
        keep = set(os.listdir(self.path)) - set(files.PRESET_ENTRIES) if os.path.isdir(self.path) else ()
        files.save_preset(model, self.path, description, metadata=metadata, keep_entries=tuple(keep))
        if self._aside:
            shutil.rmtree(self._aside, ignore_errors=True)


# -- settings and resuming -------------------------------------------------------------------------------


def resume_point(out, command, steps):
    """`(checkpoint state or None, checkpoint path or None, first step, total steps)` of a run.

    `steps` is `--steps` (None: the checkpoint's total, or `DEFAULT_STEPS`). A checkpoint of the other
    command is an error.
    """
    latest = out.latest_checkpoint()
    if latest is None:
        return None, None, 0, steps or DEFAULT_STEPS
    step, path = latest
    _, state = checkpoints.read_checkpoint(path)
    if state.get("command") != command:
        raise ValueError(
            f"--resume: the checkpoint {path!r} was written by `keras-ldm {state.get('command')}`, not "
            f"`keras-ldm {command}`; use another --out."
        )
    total = steps or state.get("total_steps") or DEFAULT_STEPS
    if total < step:
        print(f"--resume: the checkpoint is at step {step}, past --steps {total}; saving it as it is.")
    return state, path, step, max(total, step)


def resolve_settings(args, names, checkpoint_state):
    """The run's settings `names`: the flags as given (None: not given), or on resume the checkpoint's,
    which a given flag must agree with."""
    given = {name: _json_value(getattr(args, name)) for name in names}
    if checkpoint_state is None:
        return given
    stored = checkpoint_state["settings"]
    for name, value in given.items():
        if value is not None and value != stored.get(name):
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"--resume: {flag} {_show(value)} differs from the checkpoint's {_show(stored.get(name))} "
                f"(another run, or another architecture); a resumed run keeps its settings. Drop the flag, or "
                f"train a new model with --overwrite or another --out."
            )
    return dict(stored)


def _json_value(value):
    return list(value) if isinstance(value, tuple) else value


def _show(value):
    return "x".join(map(str, value)) if isinstance(value, list) else str(value)


def default(value, fallback):
    """`value`, or `fallback` when it is None (not given)."""
    return fallback if value is None else value


def check_data_unchanged(folder, state):
    """Warns when a resumed run's folder is not the one its checkpoint trained on."""
    record = state.get("data", {})
    if record and record.get("fingerprint") != folder.fingerprint():
        print(
            f"Warning: the images changed since the checkpoint ({record.get('images')} -> {len(folder)} images);"
            f" training continues, but not exactly as the uninterrupted run would have."
        )


def restore_model(path, compile_model):
    """The model of checkpoint `path`: rebuilt from its config, compiled by `compile_model`, restored."""
    config, _ = checkpoints.read_checkpoint(path)
    model = keras.saving.deserialize_keras_object(config)
    compile_model(model)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    checkpoints.restore_checkpoint(model, path)
    return model


# -- the images and the models ---------------------------------------------------------------------------


def scan_images(args, channels, image_size):
    """The checked `--images` folder (errors name the flag). `--out` must not lie inside it (the run's
    sample grids would become training images) nor hold it."""
    out, images = os.path.realpath(args.out), os.path.realpath(args.images)
    if os.path.commonpath([out, images]) in (out, images):
        raise ValueError(
            f"--out {args.out!r} and --images {args.images!r} must not contain each other: the run writes "
            f"images (sample grids) into --out."
        )
    try:
        return scan_image_folder(args.images, channels, image_size and tuple(image_size))
    except ValueError as error:
        raise ValueError(f"--images: {error}") from None


def check_image_size(folder, multiple, what):
    """Height and width must be multiples of `multiple` (a model's total downsampling)."""
    if folder.height % multiple or folder.width % multiple:
        source = "--image-size" if folder.crop else "the images' size (pass --image-size HxW to crop them)"
        raise ValueError(
            f"{source} {folder.height}x{folder.width}: {what} needs a height and width that are multiples of "
            f"{multiple}."
        )


def check_channels(folder, given, model_channels, source):
    """The channel count of a model loaded from `source`: `--channels` (`given`), if given, and else the
    images' own count must be it."""
    if given is not None and given != model_channels:
        raise ValueError(f"--channels {given}: the model of {source} takes {model_channels}-channel images.")
    if folder.channels != model_channels:
        raise ValueError(
            f"--images: the images are {CHANNEL_NAMES[folder.channels]}, but the model of {source} takes "
            f"{model_channels}-channel images; pass --channels {model_channels} to convert them."
        )
    return model_channels


def load_autoencoder(preset):
    """`(autoencoder, metadata)` of a preset (an LDM preset gives its first stage)."""
    from keras_ldm.presets.loading import from_preset, preset_names

    kind = "autoencoder" if preset in preset_names("autoencoder") else "latent_diffusion"
    model = from_preset(preset, kind=kind)
    metadata = files.read_metadata(preset) if os.path.isdir(preset) else {}
    return getattr(model, "first_stage", model), metadata


def training_metadata(settings, folder):
    """The `training` entry of a preset's metadata: the settings and the data it was trained on."""
    return {**settings, "images": len(folder), "image_size": [folder.height, folder.width]}


def data_workers():
    """Threads reading the images (Keras `PyDataset` workers): half the cores, at most 4."""
    return max(1, min(4, (os.cpu_count() or 1) // 2))
