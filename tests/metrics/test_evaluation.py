"""Whole evaluations (`keras_ldm.metrics.evaluation`) and the `keras-ldm evaluate` commands, on tiny folders
with a small stand-in feature extractor (the Inception network itself is tested in test_inception.py)."""

import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_ldm.cli import main
from keras_ldm.metrics import FrechetInceptionDistance, KernelInceptionDistance, PrecisionRecall, psnr
from keras_ldm.metrics.evaluation import evaluate_autoencoder, evaluate_images, generated_batches, reconstruct
from keras_ldm.models import LatentDiffusion
from tests import tiny_models


def features(images):
    """A deterministic stand-in extractor: 6 per-channel statistics of each image."""
    images = np.asarray(images, "float64")
    return np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2))], axis=1)


def write_folder(folder, images):
    os.makedirs(folder, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(image.squeeze()).save(os.path.join(folder, f"{index:03d}.png"))
    return str(folder)


@pytest.fixture(scope="module")
def image_sets():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (24, 16, 16, 3), dtype="uint8")
    fake = np.clip(real.astype(int) // 2 + rng.integers(0, 90, real.shape), 0, 255).astype("uint8")
    return real, fake


def test_one_pass_equals_each_metric_on_its_own(image_sets, tmp_path):
    real, fake = image_sets
    report = evaluate_images(
        write_folder(tmp_path / "fake", fake),
        write_folder(tmp_path / "real", real),
        "fid,kid,pr",
        feature_extractor=features,
        progress=False,
        kid_subset_size=10,
        save_reference_statistics=str(tmp_path / "real.npz"),
    )
    expected = {}
    for name, metric in [
        ("fid", FrechetInceptionDistance),
        ("kid", KernelInceptionDistance),
        ("pr", PrecisionRecall),
    ]:
        instance = metric(feature_extractor=features, **({"subset_size": 10} if name == "kid" else {}))
        instance.update(real, real=True)
        instance.update(fake, real=False)
        expected[name] = instance.result()
    assert report["num_generated"] == report["num_reference"] == 24
    assert report["fid"] == pytest.approx(expected["fid"], rel=1e-9) and report["fid"] > 1.0
    assert (report["kid_mean"], report["kid_std"]) == pytest.approx(tuple(expected["kid"]), rel=1e-9)
    assert (report["precision"], report["recall"]) == pytest.approx(tuple(expected["pr"]))
    # The saved statistics stand in for the folder.
    again = evaluate_images(
        [fake], str(tmp_path / "real.npz"), ["fid"], feature_extractor=features, progress=False
    )
    assert again["fid"] == pytest.approx(report["fid"], rel=1e-9)


def test_statistics_serve_fid_only(image_sets, tmp_path):
    _, fake = image_sets
    with pytest.raises(ValueError, match=r"FID statistics only.*\['kid'\]"):
        evaluate_images([fake], (np.zeros(6), np.eye(6)), ["fid", "kid"], feature_extractor=features)
    with pytest.raises(ValueError, match="`metrics` must be a non-empty list of"):
        evaluate_images([fake], [fake], ["fid", "lpips"], feature_extractor=features)


def test_grey_and_rgba_images_reach_the_extractor_as_rgb():
    seen = []

    def extractor(images):
        seen.append(images.shape)
        return features(images)

    grey = np.zeros((3, 8, 8, 1), "uint8") + np.arange(3, dtype="uint8")[:, None, None, None]
    evaluate_images(
        [grey], [np.zeros((3, 8, 8, 4), "uint8") + 7], ["kid"], extractor, False, kid_subset_size=2
    )
    assert seen == [(3, 8, 8, 3), (3, 8, 8, 3)]


def test_generated_batches_cycle_labels_and_prompts():
    class Recorder:
        concat, cross_attention = None, "class"
        class_embedder = type("Classes", (), {"num_classes": 3})()
        calls = []

        def generate(self, inputs, seed, verbose, batch_size=None):
            self.calls.append((inputs, seed, batch_size))
            return np.zeros((len(inputs["labels"]) if inputs else batch_size, 4, 4, 3), "uint8")

    model = Recorder()
    batches = list(generated_batches(model, 5, batch_size=2, seed=7))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert [call[0]["labels"] for call in model.calls] == [[0, 1], [2, 0], [1]]
    assert [call[1] for call in model.calls] == [7, 8, 9]
    model.cross_attention = "text"
    with pytest.raises(ValueError, match="needs `prompts`"):
        next(generated_batches(model, 2))
    model.concat = "masks"
    with pytest.raises(ValueError, match="conditioned on images"):
        next(generated_batches(model, 2))


def test_evaluate_autoencoder_averages_per_image_values(image_sets):
    real, _ = image_sets
    vae = tiny_models.vae()
    report = evaluate_autoencoder(vae, [real[:10], real[10:]], ["psnr", "rfid"], features, progress=False)
    expected = np.mean(keras.ops.convert_to_numpy(psnr(real, reconstruct(vae, real))))
    assert report["num_images"] == 24
    assert report["psnr"] == pytest.approx(float(expected), rel=1e-5)
    assert np.isfinite(report["rfid"]) and report["rfid"] > 0


@pytest.fixture(scope="module")
def extractor_file(tmp_path_factory):
    model = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    path = str(tmp_path_factory.mktemp("extractor") / "features.keras")
    model.save(path)
    return path


def test_cli_evaluate_folders_and_a_preset(image_sets, extractor_file, tmp_path, capsys):
    real, fake = image_sets
    real_dir, fake_dir = write_folder(tmp_path / "real", real), write_folder(tmp_path / "fake", fake)
    flags = ["--feature-extractor", extractor_file, "--kid-subset-size", "5", "--batch-size", "10"]
    report_path = str(tmp_path / "out" / "report.json")
    code = main(["evaluate", "--images", fake_dir, "--reference", real_dir, "--metrics", "fid,kid,is,pr",
                 "--report", report_path, *flags])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    with open(report_path) as file:
        report = json.load(file)
    assert set(report) == {"fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall",
                           "num_generated", "num_reference"}  # fmt: skip
    assert "fid " in capsys.readouterr().out

    tiny_models_preset = str(tmp_path / "uncond")
    LatentDiffusion(tiny_models.unet(), tiny_models.vae()).save_to_preset(tiny_models_preset)
    code = main(["evaluate", "--preset", tiny_models_preset, "--reference", real_dir, "--num-images", "6",
                 "--num-steps", "2", "--height", "16", "--width", "16", "--metrics", "fid,kid", *flags])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "num_generated  6" in out.out


def test_cli_evaluate_autoencoder(image_sets, extractor_file, tmp_path, capsys):
    real, _ = image_sets
    preset = str(tmp_path / "vae")
    tiny_models.vae().save_to_preset(preset)
    code = main(["evaluate-autoencoder", "--preset", preset, "--images", write_folder(tmp_path / "real", real),
                 "--metrics", "psnr,ssim,rfid", "--feature-extractor", extractor_file])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "psnr" in out.out and "ssim" in out.out and "num_images  24" in out.out


def test_cli_bad_inputs_name_what_is_wrong(image_sets, extractor_file, tmp_path, capsys):
    real, _ = image_sets
    real_dir = write_folder(tmp_path / "real", real)
    mixed = write_folder(tmp_path / "mixed", real[:2])
    Image.fromarray(np.zeros((6, 8, 3), "uint8")).save(os.path.join(mixed, "zz_small.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    np.savez(tmp_path / "wrong.npz", mean=np.zeros(3))
    cases = [
        (["--images", str(empty), "--reference", real_dir], "No images"),
        (["--images", mixed, "--reference", real_dir], "zz_small.png' is 6x8"),
        (["--images", real_dir, "--reference", str(tmp_path / "wrong.npz")], "mu"),
        (["--images", real_dir, "--reference", str(tmp_path / "nothing")], "does not exist"),
        (["--reference", real_dir], "either --preset"),
        (["--images", real_dir, "--reference", real_dir, "--metrics", "fid,psnr"], "psnr"),
    ]
    for flags, message in cases:
        code = main(["evaluate", *flags, "--feature-extractor", extractor_file])
        error = capsys.readouterr().err
        assert code == 2 and message in error, (flags, error)
