"""save_to_preset / from_preset round trips and the errors of bad preset sources."""

import contextlib
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ldm.cli import main
from keras_ldm.models import AutoencoderKL, LatentDiffusion
from keras_ldm.presets import read_metadata
from tests.tiny_models import text_model, unet, vae

SETTINGS = dict(num_steps=3, height=8, width=8, seed=3)


def trained_text_model():
    model = text_model()
    model.p_uncond = 0.0
    model.compile(learning_rate=1e-3)
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype("uint8")
    batches = tf.data.Dataset.from_tensor_slices({"images": images, "prompts": ["a red circle", "blue"] * 2})
    model.fit(batches.batch(2), verbose=0)
    return model


def test_round_trip_keeps_weights_tokenizer_schedule_and_defaults(tmp_path):
    model = trained_text_model()
    model.scale_factor.assign(0.5)
    model.generation_defaults = {"num_steps": 3, "guidance_scale": 2.0}
    path = str(tmp_path / "preset")
    model.save_to_preset(path, description="tiny text model")
    assert sorted(os.listdir(path)) == ["assets", "config.json", "metadata.json", "model.weights.h5"]
    assert read_metadata(path)["description"] == "tiny text model"

    loaded = LatentDiffusion.from_preset(path)
    assert loaded.generation_defaults == {"num_steps": 3, "guidance_scale": 2.0}
    assert float(keras.ops.convert_to_numpy(loaded.scale_factor)) == 0.5
    assert loaded.schedule.get_config() == model.schedule.get_config()
    for ours, theirs in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs))
    prompts = ["a red circle", "blue circle"]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.tokenizer(prompts)),
        keras.ops.convert_to_numpy(loaded.tokenizer(prompts)),
    )
    expected = model.generate(prompts, height=8, width=8, seed=3)  # the defaults: 3 steps, guidance 2
    np.testing.assert_array_equal(loaded.generate(prompts, height=8, width=8, seed=3), expected)
    # the moving average is saved too: raw weights give other images
    assert np.any(loaded.generate(prompts, height=8, width=8, seed=3, use_ema=False) != expected) or (
        model.ema is None
    )


def test_inference_only_presets_keep_the_moving_averages_in_float16_and_nothing_for_training(tmp_path):
    autoencoder = vae()  # trained in this process: compiled with its loss (discriminator included)
    autoencoder.compile(optimizer=keras.optimizers.Adam(1e-3), perceptual_weight=0.0, disc_factor=0.0)
    autoencoder.fit(np.zeros((2, 32, 32, 3), "uint8"), batch_size=2, verbose=0)
    model = LatentDiffusion(unet(), autoencoder, ema_decay=0.5)
    model.compile(learning_rate=1e-2)
    model.fit({"images": np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype("uint8")}, verbose=0)
    path = str(tmp_path / "preset")
    model.save_to_preset(path, inference_only=True, weights_dtype="float16")

    loaded = LatentDiffusion.from_preset(path)
    assert loaded.ema is None
    assert loaded.count_params() == LatentDiffusion(unet(), vae()).count_params()  # no discriminator
    with model.ema_scope():
        expected = {v.path.split("/", 1)[-1]: keras.ops.convert_to_numpy(v) for v in model.unet.weights}
    for variable in loaded.unet.weights:
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(variable),
            expected[variable.path.split("/", 1)[-1]],
            rtol=1e-3,
            atol=1e-4,
        )
    full = str(tmp_path / "full")
    model.save_to_preset(full)
    assert (
        os.path.getsize(os.path.join(path, "model.weights.h5"))
        < os.path.getsize(os.path.join(full, "model.weights.h5")) / 2
    )


def test_load_weights_false_builds_the_architecture(tmp_path):
    model = LatentDiffusion(unet(), vae())
    path = str(tmp_path / "preset")
    model.save_to_preset(path)
    empty = LatentDiffusion.from_preset(path, load_weights=False)
    assert empty.count_params() == model.count_params()
    assert any(
        np.any(keras.ops.convert_to_numpy(a) != keras.ops.convert_to_numpy(b))
        for a, b in zip(model.unet.weights, empty.unet.weights)
    )


def test_dtype_builds_the_model_with_another_policy(tmp_path):
    model = LatentDiffusion(unet(), vae())
    path = str(tmp_path / "preset")
    model.save_to_preset(path)
    loaded = LatentDiffusion.from_preset(path, dtype="mixed_bfloat16")
    assert loaded.unet.dtype_policy.name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    images = loaded.generate(batch_size=1, **SETTINGS)
    assert images.shape == (1, 8, 8, 3)


def test_autoencoders_have_their_own_presets(tmp_path):
    path = str(tmp_path / "vae")
    autoencoder = vae()
    autoencoder.save_to_preset(path)
    loaded = AutoencoderKL.from_preset(path)
    x = np.zeros((1, 8, 8, 3), "float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(autoencoder(x)), atol=1e-6
    )
    with pytest.raises(ValueError, match="holds a AutoencoderKL, not a LatentDiffusion"):
        LatentDiffusion.from_preset(path)


def test_generate_takes_a_dataset_of_prompts_and_concatenates_the_batches():
    model = text_model()
    prompts = ["a red circle", "blue", "a blue circle"]
    expected = np.concatenate(
        [model.generate(prompts[:2], **SETTINGS), model.generate(prompts[2:], **SETTINGS)]
    )
    dataset = tf.data.Dataset.from_tensor_slices(prompts).batch(2)
    np.testing.assert_array_equal(model.generate(dataset, **SETTINGS), expected)
    as_dicts = tf.data.Dataset.from_tensor_slices({"prompts": prompts}).batch(2)
    np.testing.assert_array_equal(model.generate(as_dicts, verbose=False, **SETTINGS), expected)
    with pytest.raises(ValueError, match="empty"):
        model.generate(dataset.take(0), **SETTINGS)


@pytest.mark.parametrize(
    "preset, message",
    [
        ("no_such_preset", "Unknown preset 'no_such_preset'.*shapes_t2i"),
        ("kl_f8", "is a autoencoder, not a latent diffusion"),
        ("hf://not-a-repo-name", "hf://org/name"),
    ],
)
def test_unknown_presets_are_named(preset, message):
    with pytest.raises(ValueError, match=message):
        LatentDiffusion.from_preset(preset)


def test_folders_and_files_that_are_not_presets_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a keras_ldm preset"):
        LatentDiffusion.from_preset(str(tmp_path / "empty"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="is a file, but not a CompVis"):
        LatentDiffusion.from_preset(str(tmp_path / "notes.txt"))
    with pytest.raises(TypeError, match="`preset` must be"):
        LatentDiffusion.from_preset(3)


def test_corrupt_and_truncated_weights_are_named(tmp_path):
    model = LatentDiffusion(unet(), vae())
    path = tmp_path / "preset"
    model.save_to_preset(str(path))
    weights = path / "model.weights.h5"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        LatentDiffusion.from_preset(str(path))
    weights.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        LatentDiffusion.from_preset(str(path))
    weights.unlink()
    with pytest.raises(ValueError, match="no weights file"):
        LatentDiffusion.from_preset(str(path))


def test_bad_generation_defaults_are_named():
    with pytest.raises(ValueError, match="unknown keys \\['steps'\\]"):
        LatentDiffusion(unet(), vae(), generation_defaults={"steps": 3})
    with pytest.raises(ValueError, match="num_steps=0"):
        LatentDiffusion(unet(), vae()).generate(batch_size=1, num_steps=0, height=8, width=8)


# -- saving is atomic ------------------------------------------------------------------------------


def fail_half_way(monkeypatch):
    """Makes `save_weights` write a truncated file, then fail as a full disk does."""

    def save_weights(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"\x89HDF\r\n\x1a\n truncated")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keras.Model, "save_weights", save_weights)


def weights_of(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_a_save_that_fails_half_way_leaves_the_old_preset_as_it_was(tmp_path, monkeypatch):
    path = str(tmp_path / "preset")
    old = LatentDiffusion(unet(), vae(), generation_defaults={"num_steps": 3})
    old.save_to_preset(path, description="old")
    files = {name: (tmp_path / "preset" / name).read_bytes() for name in os.listdir(path)}
    fail_half_way(monkeypatch)
    new = LatentDiffusion(unet(scale=0.3), vae())
    with pytest.raises(OSError, match="No space left"):
        new.save_to_preset(path, description="new", generation_defaults={"num_steps": 5})
    assert os.listdir(tmp_path) == ["preset"]  # the half-written temporary folder is gone
    assert {name: (tmp_path / "preset" / name).read_bytes() for name in os.listdir(path)} == files
    loaded = LatentDiffusion.from_preset(path)
    assert loaded.generation_defaults == {"num_steps": 3} and read_metadata(path)["description"] == "old"
    for ours, theirs in zip(weights_of(old), weights_of(loaded)):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(OSError, match="No space left"):  # an autoencoder's preset, into a new folder
        vae().save_to_preset(str(tmp_path / "vae"))
    assert os.listdir(tmp_path) == ["preset"]


def test_replacing_a_preset_keeps_the_folders_other_files_and_drops_stale_assets(tmp_path):
    path = tmp_path / "preset"
    text_model().save_to_preset(str(path))
    (path / "README.md").write_text("how it was trained")
    model = LatentDiffusion(unet(), vae(), generation_defaults={"num_steps": 4})
    model.save_to_preset(str(path))
    assert sorted(os.listdir(path)) == ["README.md", "config.json", "metadata.json", "model.weights.h5"]
    assert (path / "README.md").read_text() == "how it was trained"
    assert os.listdir(tmp_path) == ["preset"]
    assert LatentDiffusion.from_preset(str(path)).generation_defaults == {"num_steps": 4}


def test_saving_onto_a_file_or_a_folder_that_is_not_a_preset_is_an_error(tmp_path):
    model = LatentDiffusion(unet(), vae())
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"keep me")
    with pytest.raises(ValueError, match=r"path='.*notes.txt' is a file; expected a folder"):
        model.save_to_preset(str(notes))
    assert notes.read_bytes() == b"keep me"
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(b"keep me too")
    with pytest.raises(ValueError, match=r"path='.*photos' is not empty and is not a keras_ldm preset.*cat"):
        model.save_to_preset(str(folder))
    assert os.listdir(folder) == ["cat.png"] and (folder / "cat.png").read_bytes() == b"keep me too"
    preset = tmp_path / "empty"
    preset.mkdir()
    model.save_to_preset(str(preset))  # an empty folder is fine
    with pytest.raises(ValueError, match="already holds a preset; pass overwrite=True"):
        model.save_to_preset(str(preset), overwrite=False)
    assert sorted(os.listdir(tmp_path)) == ["empty", "notes.txt", "photos"]


def test_a_failed_cli_convert_leaves_the_old_preset_folder(tmp_path, monkeypatch, capsys):
    source, out = str(tmp_path / "source"), str(tmp_path / "out")
    LatentDiffusion(unet(scale=0.3), vae()).save_to_preset(source)
    LatentDiffusion(unet(), vae(), generation_defaults={"num_steps": 3}).save_to_preset(out)
    before = {name: (tmp_path / "out" / name).read_bytes() for name in os.listdir(out)}
    fail_half_way(monkeypatch)
    with contextlib.suppress(OSError):  # reported by main (exit code 2) or raised through
        assert main(["convert", "--source", source, "--out", out]) == 2
    assert {name: (tmp_path / "out" / name).read_bytes() for name in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ["out", "source"]
    assert main(["convert", "--source", source, "--out", str(tmp_path)]) == 2
    assert "is not a keras_ldm preset folder" in capsys.readouterr().err
