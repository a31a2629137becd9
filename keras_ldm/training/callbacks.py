"""Keras callbacks for LDM training: sample images, progress lines, a time budget, progress-bar extras."""

import os
import sys
import time

import keras
import numpy as np

from keras_ldm.backend.lazy_tensorflow import tf


class SampleImagesToTensorBoard(keras.callbacks.Callback):
    """Every `every_n_epochs`, generates images with `model.generate(inputs, ...)` and logs them.

    The images go to TensorBoard as `name` under `log_dir/samples` (TensorFlow's summary writer),
    as a grid-free batch of uint8 images; generation uses the EMA weights when the model has them.
    TensorFlow writes the summaries on every Keras backend (imported when the first one is written).

    Args:
        log_dir: the TensorBoard log directory (the one given to `keras.callbacks.TensorBoard`).
        inputs: what `generate` takes for this model (prompts, `{"labels": ...}`, ...); None for
            unconditional models.
        every_n_epochs: logging period.
        name: the summary's tag.
        **generate_kwargs: passed to `generate` (e.g. `num_steps`, `guidance_scale`, `seed`).

    Example:
    >>> callback = SampleImagesToTensorBoard("/tmp/logs", ["a red circle"], num_steps=20)
    """

    def __init__(self, log_dir, inputs=None, every_n_epochs=1, name="samples", **generate_kwargs):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs!r}; expected an int >= 1.")
        self.log_dir = os.path.join(log_dir, "samples")
        self.inputs = inputs
        self.every_n_epochs = every_n_epochs
        self.name = name
        self.generate_kwargs = generate_kwargs
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        images = self.model.generate(self.inputs, **self.generate_kwargs)
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            tf.summary.image(self.name, images, step=epoch, max_outputs=len(images))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


def progress_logger(name, stream=None):
    """A callback printing one flushed line per epoch: name, epoch, elapsed seconds and the logs.

    For long background runs whose output goes to a file (`nohup ... > log`), where Keras' progress
    bar is unreadable.

    Example:
    >>> import io
    >>> out = io.StringIO()
    >>> logger = progress_logger("vae", stream=out)
    >>> logger.on_train_begin(); logger.on_epoch_end(0, {"loss": 0.5})
    >>> out.getvalue().startswith("vae epoch 1 ")
    True
    """
    stream = stream or sys.stdout
    start = {}

    def on_train_begin(logs=None):
        start["time"] = time.time()

    def on_epoch_end(epoch, logs=None):
        values = " ".join(f"{key} {float(value):.4f}" for key, value in sorted((logs or {}).items()))
        print(
            f"{name} epoch {epoch + 1} {time.time() - start['time']:.0f}s {values}", file=stream, flush=True
        )

    return keras.callbacks.LambdaCallback(on_train_begin=on_train_begin, on_epoch_end=on_epoch_end)


class TimeBudget(keras.callbacks.Callback):
    """Stops `fit` after the batch during which `seconds` of wall time since the start of training ran out.

    For runs that must end inside a fixed slot (a lent GPU, a CI job): the model trained so far is then
    saved as usual. `steps` counts the batches run; `stopped` says whether the budget ended the run.

    Example:
    >>> budget = TimeBudget(600)
    >>> budget.seconds, budget.stopped
    (600, False)
    """

    def __init__(self, seconds):
        super().__init__()
        if not isinstance(seconds, (int, float)) or seconds <= 0:
            raise ValueError(f"`seconds` must be a positive number; got {seconds!r}.")
        self.seconds = seconds
        self.steps = 0
        self.stopped = False
        self._start = None

    def on_train_begin(self, logs=None):
        self._start = time.time()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if time.time() - self._start > self.seconds:
            self.model.stop_training = True
            self.stopped = True


class TrainingProgress(keras.callbacks.Callback):
    """Adds the learning rate (`lr`) and the throughput (`img/s`) to the logs of each batch, so that
    Keras' progress bar shows them, and writes every logged number to TensorBoard at the training step.

    Put it before the progress bar (any place in `fit`'s `callbacks`: Keras appends its bar last). The
    step of batch `b` is `first_step + (b + 1) / batches_per_step`, so a resumed run continues its curves.
    TensorBoard scalars (and `log_images`) go through TensorFlow's summary writer, on every Keras backend.

    Args:
        batch_size: images per batch.
        learning_rate: a float, or a callable `step -> float` (a schedule).
        first_step: the step the run starts from.
        batches_per_step: batches per optimizer step (gradient accumulation).
        log_dir: a TensorBoard log folder, or None.
        window: batches over which the throughput is averaged.

    Example:
    >>> progress = TrainingProgress(batch_size=8, learning_rate=1e-4)
    >>> progress.on_train_begin(); logs = {"loss": 0.5}; progress.on_train_batch_end(0, logs)
    >>> sorted(logs)
    ['img/s', 'loss', 'lr']
    """

    def __init__(self, batch_size, learning_rate, first_step=0, batches_per_step=1, log_dir=None, window=20):
        super().__init__()
        self.batch_size, self.learning_rate = batch_size, learning_rate
        self.first_step, self.batches_per_step = first_step, batches_per_step
        self.log_dir, self.window = log_dir, window
        self._times, self._writer = [], None

    def step_of(self, batch):
        """The optimizer step completed by `fit`'s batch `batch` (fractional between accumulated batches)."""
        return self.first_step + (batch + 1) / self.batches_per_step

    def on_train_begin(self, logs=None):
        self._times = [time.time()]

    def on_train_batch_end(self, batch, logs=None):
        if logs is None:
            return
        self._times = (self._times + [time.time()])[-(self.window + 1) :]
        step = self.step_of(batch)
        rate = self.learning_rate(int(step)) if callable(self.learning_rate) else self.learning_rate
        logs["lr"] = float(rate)
        elapsed = self._times[-1] - self._times[0]
        logs["img/s"] = self.batch_size * (len(self._times) - 1) / elapsed if elapsed > 0 else 0.0
        if self.log_dir and step == int(step):
            with self._summary_writer().as_default():
                for name, value in logs.items():
                    tf.summary.scalar(name, float(value), step=int(step))

    def log_images(self, name, images, step):
        """Writes uint8 images `(B, H, W, C)` (C = 1, 3 or 4) to TensorBoard at `step` (if `log_dir`)."""
        if self.log_dir:
            with self._summary_writer().as_default():
                tf.summary.image(name, np.asarray(images), step=int(step), max_outputs=len(images))
            self._writer.flush()

    def _summary_writer(self):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()
