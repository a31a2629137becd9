"""`keras-ldm train-autoencoder` and `keras-ldm train` end to end on tiny folders, with the `tiny` architecture.

Covered: each conditioning (text from sidecar captions, class from sub-folders, inpainting, sr), grey and
RGBA images, non-square images, checkpoints and sample grids, exact resume after a kill (the weights, the
optimizer state and the EMA equal those of an uninterrupted run), atomic checkpoints, and the errors for
bad input.
"""

import json
import os

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

from keras_ldm.cli import build_parser, main
from keras_ldm.cli_train_autoencoder import run_train_autoencoder
from keras_ldm.cli_train_ldm import run_train
from keras_ldm.models import AutoencoderKL, LatentDiffusion
from keras_ldm.presets.training_sizes import build_autoencoder, build_unet
from keras_ldm.training import checkpoints

CAPTIONS = ["a red circle", "a blue square"]
TINY = ["--architecture", "tiny", "--batch-size", "2", "--seed", "3"]


def make_folder(path, count=8, shape=(16, 16, 3), classes=None, captions=True):
    """`count` random images of `shape` (`(H, W)` for grey), with captions, in class sub-folders if given."""
    rng = np.random.default_rng(len(str(path)))
    for index in range(count):
        folder = path / classes[index % len(classes)] if classes else path
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype="uint8")).save(folder / f"{index}.png")
        if captions:
            (folder / f"{index}.txt").write_text(CAPTIONS[index % 2])
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_cli")
    autoencoders = {}
    for channels in (1, 3, 4):  # untrained tiny first stages: the LDM tests need no trained one
        autoencoders[channels] = str(root / f"autoencoder_{channels}")
        build_autoencoder("tiny", channels).save_to_preset(autoencoders[channels])
    return {
        "root": root,
        "rgb": make_folder(root / "rgb"),
        "grey": make_folder(root / "grey", shape=(16, 24)),
        "rgba": make_folder(root / "rgba", shape=(16, 16, 4)),
        "classes": make_folder(root / "classes", classes=["cats", "dogs"], captions=False),
        "autoencoders": autoencoders,
    }


@pytest.fixture(scope="module", autouse=True)
def jax_compilation_cache(tmp_path_factory):
    """On JAX, the runs of one test compile the same programs for new model objects: XLA's compilation cache
    (keyed by the program) compiles each once. Nothing else changes."""
    if keras.backend.backend() != "jax":
        yield
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    settings = {"jax_compilation_cache_dir": str(tmp_path_factory.mktemp("xla_cache"))}
    settings["jax_persistent_cache_min_compile_time_secs"] = 0.0
    previous = {name: getattr(jax.config, name) for name in settings}
    for name, value in settings.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()
    yield
    for name, value in previous.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


class KillAt(keras.callbacks.Callback):
    """Stops a run as a kill would: an exception as batch `batch` begins, nothing saved after it."""

    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.batch:
            raise KeyboardInterrupt("killed")


def weights(path):
    """Every array of a weights file, by its path in the file."""
    arrays = {}
    with h5py.File(path) as file:
        file.visititems(
            lambda name, item: arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None
        )
    return arrays


def assert_same_weights(path_a, path_b):
    a, b = weights(path_a), weights(path_b)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-6, err_msg=name)


def kill_then_resume(run, argv, out, kill_at):
    """Runs `argv` into `out` until batch `kill_at` begins, then resumes it through the command line."""
    with pytest.raises(KeyboardInterrupt):
        run(build_parser().parse_args([*argv, "--out", out]), callbacks=[KillAt(kill_at)])
    assert [step for step, _ in checkpoints.list_checkpoints(os.path.join(out, "checkpoints"))] == [2]
    assert not os.path.exists(os.path.join(out, "config.json"))  # no preset from a killed run
    assert main([*argv, "--out", out, "--resume"]) == 0


def test_autoencoder_on_grey_non_square_images_resumes_exactly(data, tmp_path):
    argv = ["train-autoencoder", "--images", data["grey"], *TINY, "--steps", "4", "--checkpoint-every", "2"]
    argv += ["--perceptual-weight", "0", "--disc-start", "1", "--num-samples", "2"]
    whole, resumed = str(tmp_path / "whole"), str(tmp_path / "resumed")
    assert main([*argv, "--out", whole]) == 0
    kill_then_resume(run_train_autoencoder, argv, resumed, kill_at=3)

    last = os.path.join("checkpoints", "step-00000004", "model.weights.h5")  # weights, optimizers, critic
    assert_same_weights(os.path.join(whole, last), os.path.join(resumed, last))
    assert_same_weights(os.path.join(whole, "model.weights.h5"), os.path.join(resumed, "model.weights.h5"))
    vae = AutoencoderKL.from_preset(resumed)
    assert (vae.in_channels, vae.out_channels) == (1, 1)
    assert tuple(vae(np.zeros((1, 16, 24, 1), "float32")).shape) == (1, 16, 24, 1)
    grid = np.asarray(Image.open(os.path.join(resumed, "samples", "step-00000004.png")))
    assert grid.shape == (32, 48)  # 2 images over their 2 reconstructions, grey
    with open(os.path.join(resumed, "metadata.json")) as file:
        metadata = json.load(file)
    assert metadata["training"]["steps"] == 4 and metadata["training"]["architecture"] == "tiny"


def test_unconditional_ldm_resumes_exactly_with_ema_and_accumulation(data, tmp_path):
    argv = ["train", "--images", data["rgb"], "--conditioning", "unconditional"]
    argv += ["--autoencoder", data["autoencoders"][3], *TINY, "--steps", "4", "--checkpoint-every", "2"]
    argv += ["--gradient-accumulation-steps", "2", "--num-samples", "2", "--sample-steps", "2"]
    whole, resumed = str(tmp_path / "whole"), str(tmp_path / "resumed")
    assert main([*argv, "--out", whole]) == 0
    kill_then_resume(run_train, argv, resumed, kill_at=5)  # batch 5: in step 3, after its first half

    last = os.path.join("checkpoints", "step-00000004", "model.weights.h5")  # weights, EMA, AdamW state
    assert_same_weights(os.path.join(whole, last), os.path.join(resumed, last))
    assert_same_weights(os.path.join(whole, "model.weights.h5"), os.path.join(resumed, "model.weights.h5"))
    model = LatentDiffusion.from_preset(resumed)
    assert model.ema is None and model.generation_defaults["image_size"] == 16  # the preset: EMA weights
    assert sorted(os.listdir(os.path.join(resumed, "samples"))) == ["step-00000002.png", "step-00000004.png"]


@pytest.mark.parametrize(
    "conditioning, folder, channels",
    [("text", "rgb", 3), ("class", "classes", 3), ("inpainting", "grey", 1), ("sr", "rgba", 4)],
)
def test_each_conditioning_trains_from_a_folder(data, tmp_path, conditioning, folder, channels):
    out = str(tmp_path / conditioning)
    argv = ["train", "--images", data[folder], "--conditioning", conditioning, "--out", out]
    argv += ["--autoencoder", data["autoencoders"][channels], *TINY, "--steps", "1"]
    argv += ["--num-samples", "2", "--sample-steps", "1"]
    assert main(argv) == 0

    model = LatentDiffusion.from_preset(out)
    assert model.first_stage.in_channels == channels
    with open(os.path.join(out, "metadata.json")) as file:
        metadata = json.load(file)
    assert metadata["training"]["conditioning"] == conditioning
    grid = np.asarray(Image.open(os.path.join(out, "samples", "step-00000001.png")))
    height, width = (16, 24) if folder == "grey" else (16, 16)
    assert grid.shape[:2] == (height, 2 * width)
    if conditioning == "text":
        assert model.tokenizer.pieces[5:] == ["a", "blue", "circle", "red", "square"]
        assert model.p_uncond == 0.1 and model.generation_defaults["guidance_scale"] == 3.0
    if conditioning == "class":
        assert metadata["class_names"] == ["cats", "dogs"] and model.class_embedder.num_classes == 2


def test_bad_folders_are_errors_naming_the_files(data, tmp_path, capsys):
    def error(images, *extra, conditioning="unconditional"):
        argv = ["train", "--images", images, "--out", str(tmp_path / "out"), "--conditioning", conditioning]
        assert main([*argv, "--autoencoder", data["autoencoders"][3], *TINY, *extra]) == 2
        assert not os.path.exists(tmp_path / "out")
        return capsys.readouterr().err

    (tmp_path / "empty").mkdir()
    assert "No images" in error(str(tmp_path / "empty"))
    broken = make_folder(tmp_path / "broken", count=3)
    (tmp_path / "broken" / "1.png").write_bytes(b"not a png")
    assert "1.png' is not a readable image" in error(broken)
    mixed = make_folder(tmp_path / "mixed", count=3)
    Image.fromarray(np.zeros((16, 16), "uint8")).save(tmp_path / "mixed" / "2.png")
    message = error(mixed)
    assert "mix channel counts" in message and "2.png' is greyscale" in message and "--channels" in message
    os.remove(tmp_path / "mixed" / "2.png")
    Image.fromarray(np.zeros((8, 16, 3), "uint8")).save(tmp_path / "mixed" / "2.png")
    assert "mix sizes" in error(mixed) and "--image-size" in error(mixed)
    uncaptioned = make_folder(tmp_path / "uncaptioned", count=4)
    os.remove(tmp_path / "uncaptioned" / "3.txt")
    message = error(uncaptioned, conditioning="text")
    assert "1 of the 4 images" in message and "3.png" in message and "no caption file" in message
    one_class = make_folder(tmp_path / "one_class", classes=["cats"], captions=False)
    assert "at least two classes" in error(one_class, conditioning="class")
    assert "--sr-factor 5" in error(data["rgb"], "--sr-factor", "5", conditioning="sr")
    assert "the model of --autoencoder takes 3-channel images" in error(data["grey"])
    assert "--channels 1: the model of --autoencoder takes 3" in error(data["rgb"], "--channels", "1")
    argv = ["train", "--images", data["rgb"], "--conditioning", "unconditional", *TINY]
    inside = os.path.join(data["rgb"], "run")  # its sample grids would become training images
    assert main([*argv, "--out", inside, "--autoencoder", data["autoencoders"][3]]) == 2
    assert "must not contain each other" in capsys.readouterr().err and not os.path.exists(inside)
    out = str(tmp_path / "out")
    assert main([*argv[:-len(TINY)], "--out", out, "--from-preset", "shapes_semantic", "--seed", "3"]) == 2
    assert "keras-ldm train fine-tunes" in capsys.readouterr().err  # a segmentation model, named
    for flag, value in (("--learning-rate", "0"), ("--ema-decay", "1.5"), ("--condition-dropout", "nan")):
        with pytest.raises(SystemExit):
            main([*argv, "--out", out, "--autoencoder", data["autoencoders"][3], flag, value])
        assert f"argument {flag}: '{value}' is not a number in" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_an_existing_preset_or_run_in_out_is_kept(data, tmp_path, capsys):
    out = data["autoencoders"][3]  # holds a preset
    before = weights(os.path.join(out, "model.weights.h5"))
    argv = ["train-autoencoder", "--images", data["rgb"], "--out", out, *TINY, "--perceptual-weight", "0"]
    assert main(argv) == 2
    assert "already holds a trained preset" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 2  # a preset without checkpoints: nothing to resume
    assert "no checkpoint to resume" in capsys.readouterr().err
    assert weights(os.path.join(out, "model.weights.h5")).keys() == before.keys()

    # A checkpoint of a tiny LDM run; a resume asking for another architecture or command is refused.
    run = tmp_path / "run"
    model = LatentDiffusion(build_unet("tiny", 4, 4), AutoencoderKL.from_preset(data["autoencoders"][3]))
    state = {"command": "train", "settings": {"architecture": "tiny", "conditioning": "unconditional"}}
    checkpoints.write_checkpoint(model, str(run / "checkpoints"), 2, state)
    train = ["train", "--images", data["rgb"], "--out", str(run), "--conditioning", "unconditional"]
    train += ["--resume"]
    assert main([*train, "--architecture", "small"]) == 2
    assert "--architecture small differs from the checkpoint's tiny" in capsys.readouterr().err
    assert main(["train-autoencoder", "--images", data["rgb"], "--out", str(run), "--resume"]) == 2
    assert "written by `keras-ldm train`" in capsys.readouterr().err
    new_run = [*train[:-1], "--autoencoder", data["autoencoders"][3], *TINY]
    assert main(new_run) == 2  # neither --resume nor --overwrite
    assert "pass --resume" in capsys.readouterr().err

    # --overwrite, killed before its first checkpoint: the replaced run's checkpoints come back.
    with pytest.raises(KeyboardInterrupt):
        run_train(build_parser().parse_args([*new_run, "--overwrite"]), callbacks=[KillAt(0)])
    assert [step for step, _ in checkpoints.list_checkpoints(str(run / "checkpoints"))] == [2]
    assert sorted(os.listdir(run)) == ["checkpoints"]


def test_an_interrupted_checkpoint_write_leaves_the_previous_checkpoints(data, tmp_path, monkeypatch):
    model = AutoencoderKL.from_preset(data["autoencoders"][1])
    directory = str(tmp_path / "checkpoints")
    checkpoints.write_checkpoint(model, directory, 2, {"note": "good"})

    def half_written(path, *args, **kwargs):
        with open(path, "wb") as file:
            file.write(b"\x89HDF half")
        raise OSError("No space left on device")

    monkeypatch.setattr(model, "save_weights", half_written)
    for step in (2, 4):  # replacing the step-2 checkpoint, and writing a new one
        with pytest.raises(OSError, match="No space left"):
            checkpoints.write_checkpoint(model, directory, step, {"note": "bad"})
    assert os.listdir(directory) == ["step-00000002"]  # no partial folder left, the old one intact
    step, path = checkpoints.latest_checkpoint(directory)
    assert step == 2 and checkpoints.read_checkpoint(path)[1]["note"] == "good"
    checkpoints.restore_checkpoint(AutoencoderKL.from_preset(data["autoencoders"][1]), path)
