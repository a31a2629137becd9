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


def scene_preset_parser(description, name, steps):
    """The command line of the scene presets' scripts (`train_shapes_semantic.py`, `train_shapes_layout.py`):
    training length and batch, scoring, and where checkpoints (`outputs/train_<name>`) and the preset
    (the package's `presets/<name>` folder) go."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--examples", type=int, default=32_000, help="training scenes drawn")
    parser.add_argument("--time-budget", type=float, help="seconds after which training stops")
    parser.add_argument("--score-count", type=int, default=64, help="held-out scenes scored at each size")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", default=f"outputs/train_{name}")
    presets = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "keras_ldm", "presets")
    parser.add_argument("--out", default=os.path.join(presets, name))
    return parser
