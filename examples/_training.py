"""The train-or-resume step shared by the training scripts (`train_shapes_t2i.py`, `train_photo_presets.py`).

The scripts run with `examples/` on `sys.path` (as `python examples/<script>.py` puts it there).
"""

import os

import keras

from keras_ldm.training.fit_steps import fit_steps


def fit_or_load(model, name, args, make_data, steps, batch_size, time_budget, **compile_options):
    """Loads `model`'s weights from `<args.work_dir>/<name>.weights.h5` when a run saved them (returns
    False); else compiles it with `compile_options`, trains it `steps` steps on `make_data()` with
    `fit_steps` (a backup in `<name>_backup` to resume from; `time_budget` ends it early), saves the weights
    there and returns True."""
    path = os.path.join(args.work_dir, f"{name}.weights.h5")
    if os.path.exists(path):
        model.load_weights(path)
        print(f"{name}: loaded {path}")
        return False
    model.compile(**compile_options)
    data = make_data()
    backup = os.path.join(args.work_dir, f"{name}_backup")
    fit_steps(model, data, steps, batch_size, name, args.log_every, backup, time_budget)
    model.save_weights(path)
    return True


def fit_or_load_autoencoder(autoencoder, args, make_images):
    """`fit_or_load` for the first stage: Adam, L1 + KL (no perceptual or adversarial loss)."""
    return fit_or_load(
        autoencoder,
        "autoencoder",
        args,
        make_images,
        args.ae_steps,
        args.ae_batch_size,
        args.ae_time_budget,
        optimizer=keras.optimizers.Adam(args.ae_learning_rate, beta_1=0.5, beta_2=0.9),
        perceptual_weight=0.0,
        disc_factor=0.0,
    )
