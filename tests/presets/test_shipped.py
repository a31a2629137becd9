"""The trained presets shipped in the package: they load offline, generate, and keep what they learned.

README reports the full measurements (benchmarks/shapes_t2i.py on all 90 prompts, benchmarks/photo_presets.py
on 64 held-out crops), where every preset meets its target. These tests run the same checks on fewer images
so that they stay quick, with bars a little below what those few images measured on every backend.
"""

import numpy as np
import pytest

from benchmarks.photo_presets import bicubic_upsample, psnr
from keras_ldm import LatentDiffusion
from keras_ldm.data.degradations import bicubic_downsample
from keras_ldm.data.masks import random_masks
from keras_ldm.data.photos import random_photo_crops
from keras_ldm.data.scenes import scenes_arrays, segmentation_accuracy
from keras_ldm.data.shapes import all_prompts, prompt_accuracy
from keras_ldm.presets import SHIPPED, read_metadata
from keras_ldm.presets.shipped import shipped_path

WEIGHTS_LIMIT_MB = 48  # float16 weights: four presets of 7 to 9.6 MB, room for a fifth


@pytest.fixture(scope="module")
def shapes():
    return LatentDiffusion.from_preset("shapes_t2i")


@pytest.fixture(scope="module")
def held_out_crops():
    return random_photo_crops("held_out", size=64, count=8, seed=1)


def test_shipped_weights_fit_the_size_budget():
    import os

    total = sum(os.path.getsize(os.path.join(shipped_path(name), "model.weights.h5")) for name in SHIPPED)
    assert total <= WEIGHTS_LIMIT_MB * 2**20, f"{total / 2**20:.1f} MB"
    assert all(read_metadata(shipped_path(name))["description"] for name in SHIPPED)


def test_shapes_t2i_draws_the_asked_colour_shape_and_background(shapes):
    prompts = all_prompts()[::5]  # 18 of the 90, every colour, shape and background
    images = shapes.generate(prompts, seed=0)
    assert images.shape == (18, 64, 64, 3) and images.dtype == np.uint8
    rates = prompt_accuracy(images, prompts)
    assert rates["all three"] >= 0.9, rates  # measured 100% here on every backend, and on all 90 prompts


def test_shapes_t2i_is_reproducible_and_convolutional(shapes):
    prompt = "a yellow square on a black background"
    first = shapes.generate(prompt, num_steps=10, seed=5)
    np.testing.assert_array_equal(first, shapes.generate(prompt, num_steps=10, seed=5))
    assert np.any(first != shapes.generate(prompt, num_steps=10, seed=6))
    wide = shapes.generate(prompt, num_steps=10, height=96, width=128, seed=5)
    assert wide.shape == (96, 128, 3)


def test_shapes_semantic_paints_held_out_maps_at_and_beyond_the_training_size():
    model = LatentDiffusion.from_preset("shapes_semantic")
    maps = scenes_arrays(8, image_size=32, split="held_out")["segmentation"]
    images = model.generate({"segmentation": maps}, num_steps=20, seed=0)
    assert images.shape == (8, 32, 32, 3)
    assert segmentation_accuracy(images, maps) >= 0.93  # README: 97.2% on 64 maps (DDIM 50)
    big = scenes_arrays(2, image_size=64, split="held_out")["segmentation"]
    assert segmentation_accuracy(model.generate({"segmentation": big}, num_steps=20, seed=0), big) >= 0.93


def test_photo_sr4x_restores_held_out_crops(held_out_crops):
    model = LatentDiffusion.from_preset("photo_sr4x")
    low_res = bicubic_downsample(held_out_crops, 4).numpy()
    restored = model.generate({"images": low_res}, seed=0)
    assert restored.shape == (8, 64, 64, 3)
    # these 8 crops: 27.66-27.70 dB (jax, torch, tensorflow) against bicubic's 27.47 dB
    assert psnr(restored, held_out_crops) > psnr(bicubic_upsample(low_res), held_out_crops) - 0.3


def test_photo_inpaint_fills_the_hole_and_keeps_the_rest(held_out_crops):
    cv2 = pytest.importorskip("cv2")
    model = LatentDiffusion.from_preset("photo_inpaint")
    masks = random_masks((64, 64), num_masks=8, seed=1)
    filled = model.generate({"images": held_out_crops, "masks": masks}, seed=0)
    keep = np.broadcast_to(masks == 0, filled.shape)
    np.testing.assert_array_equal(filled[keep], held_out_crops[keep])
    telea = np.stack(
        [
            cv2.inpaint(c, (m[..., 0] * 255).astype("uint8"), 3, cv2.INPAINT_TELEA)
            for c, m in zip(held_out_crops, masks)
        ]
    )
    # these 8 crops: 22.66-23.06 dB in the hole (torch, jax, tensorflow) against Telea's 22.59 dB
    assert psnr(filled, held_out_crops, masks) > psnr(telea, held_out_crops, masks) - 0.5
