"""The `keras-ldm` command line: presets, generate (text, super-resolution, inpainting) and convert."""

import os
import re
import shlex

import numpy as np
import pytest
from PIL import Image

from keras_ldm.cli import image_grid, main
from keras_ldm.models import LatentDiffusion
from tests.tiny_models import text_model, unet, vae


@pytest.fixture(scope="module")
def text_preset(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("presets") / "text")
    text_model().save_to_preset(path, generation_defaults={"num_steps": 2, "image_size": 8})
    return path


def test_presets_lists_shipped_and_architecture_presets(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "shapes_t2i" in out and "ldm_text2im_large_256" in out and "kl_f8" in out


def test_generate_writes_a_grid_of_the_prompts(tmp_path, text_preset):
    out = tmp_path / "grid.png"
    args = [
        "generate",
        "--preset",
        text_preset,
        "--prompt",
        "a red circle",
        "--prompt",
        "blue",
        "--num-images",
        "2",
    ]
    assert main([*args, "--out", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape == (8, 32, 3)  # 4 images of 8x8 in one row


def test_generate_super_resolution_and_inpainting_from_image_files(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype="uint8")).save(tmp_path / "small.png")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype="uint8")).save(tmp_path / "photo.png")
    mask = np.zeros((8, 8), "uint8")
    mask[2:6, 2:6] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    sr, inpaint = str(tmp_path / "sr"), str(tmp_path / "inpaint")
    LatentDiffusion(unet(in_channels=7), vae(), concat="low_res").save_to_preset(sr)
    LatentDiffusion(unet(in_channels=9), vae(), concat="masks").save_to_preset(inpaint)

    big = tmp_path / "big.png"
    assert (
        main(
            [
                "generate",
                "--preset",
                sr,
                "--image",
                str(tmp_path / "small.png"),
                "--num-steps",
                "2",
                "--out",
                str(big),
            ]
        )
        == 0
    )
    assert np.asarray(Image.open(big)).shape == (16, 16, 3)
    sr_args = ["generate", "--preset", sr, "--image", str(tmp_path / "small.png"), "--num-steps", "2"]
    cold = [tmp_path / f"cold_{seed}.png" for seed in (1, 2)]
    for seed, path in zip((1, 2), cold):
        assert main([*sr_args, "--temperature", "0", "--seed", str(seed), "--out", str(path)]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(cold[0])), np.asarray(Image.open(cold[1])))
    assert main([*sr_args, "--temperature", "-1", "--out", str(big)]) == 2  # a clear error, not a crash
    filled = tmp_path / "filled.png"
    photo = str(tmp_path / "photo.png")
    args = ["generate", "--preset", inpaint, "--image", photo, "--mask", str(tmp_path / "mask.png")]
    assert main([*args, "--num-steps", "2", "--out", str(filled)]) == 0
    result, original = np.asarray(Image.open(filled)), np.asarray(Image.open(photo))
    outside = mask == 0
    np.testing.assert_array_equal(result[outside], original[outside])


def test_convert_rewrites_a_preset_folder(tmp_path, text_preset):
    out = str(tmp_path / "converted")
    assert main(["convert", "--source", text_preset, "--out", out]) == 0
    converted = LatentDiffusion.from_preset(out)
    np.testing.assert_array_equal(
        converted.generate("a red circle"), LatentDiffusion.from_preset(text_preset).generate("a red circle")
    )


def _image_file(path, shape):
    Image.fromarray(np.zeros(shape, "uint8")).save(path)
    return str(path)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--preset", "no_such_preset"], "Unknown preset 'no_such_preset'"),
        ([], "needs --prompt"),
        (["--prompt", "a", "--num-images", "0"], "--num-images: '0' is not an int >= 1"),
        (["--prompt", "a", "--num-steps", "-3"], "--num-steps: '-3' is not an int >= 1"),
        (["--prompt", "a", "--height", "x"], "--height: 'x' is not an int >= 1"),
        (["--prompt", "a", "--guidance-scale", "nan"], "guidance_scale=nan"),
        (["--prompt", "a", "--sampler", "heun"], "sampler='heun'"),
        (["--prompt", "a", "--out", "{tmp}/grid"], "needs an image file extension"),
        (["--prompt", "a", "--out", "{tmp}"], "is a folder"),
        (["--prompt", "a", "--image", "{tmp}/a.png"], "does not use --image"),
        (["--prompt", "a", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_requests_exit_2_with_one_line_and_no_traceback(tmp_path, text_preset, capsys, flags, message):
    _image_file(tmp_path / "a.png", (8, 8, 3))
    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    out = ["--out", str(tmp_path / "x.png")] if "--out" not in flags else []
    preset = ["--preset", text_preset] if "--preset" not in flags else []
    try:
        code = main(["generate", *preset, *out, *flags])
    except SystemExit as exit:  # argparse
        code = exit.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "x.png").exists()


def test_unreadable_images_are_named(tmp_path, capsys):
    sr = str(tmp_path / "sr")
    LatentDiffusion(unet(in_channels=7), vae(), concat="low_res").save_to_preset(sr)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    for image in ("missing.png", "broken.png"):
        code = main(["generate", "--preset", sr, "--image", str(tmp_path / image), "--out", str(tmp_path / "o.png")])
        assert code == 2 and f"--image '{tmp_path / image}' is not a readable image" in capsys.readouterr().err


def test_the_readme_command_writes_into_a_folder_that_does_not_exist_yet(tmp_path, monkeypatch):
    """The README's first command (shipped preset, three prompts, `--out outputs/shapes.png` in a fresh
    clone), at 2 steps: `outputs/` is created."""
    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")).read()
    command = re.search(r"keras-ldm (generate --preset shapes_t2i .*?--out \S+)", readme).group(1)
    monkeypatch.chdir(tmp_path)
    args = shlex.split(command) + ["--num-steps", "2"]
    assert main(args) == 0
    out = tmp_path / args[args.index("--out") + 1]
    assert os.path.dirname(args[args.index("--out") + 1])  # the README's --out is inside a folder
    assert np.asarray(Image.open(out)).shape == (2 * 64, 8 * 64, 3)  # 3 prompts x 4 images: 8 columns, 2 rows


def test_image_grid_fills_rows_in_order():
    images = np.arange(3)[:, None, None, None] * np.ones((3, 2, 2, 3), "uint8")
    grid = image_grid(images, columns=2)
    assert grid.shape == (4, 4, 3)
    assert grid[0, 2, 0] == 1 and grid[2, 0, 0] == 2 and grid[2, 2, 0] == 0
