"""The procedural scenes: maps, boxes and labels agree with the pixels; splits are disjoint and stable;
the two scores read the scenes themselves as right and wrong images as wrong."""

import numpy as np
import pytest

from keras_ldm.data.scenes import (
    COLORS,
    OBJECT_CLASSES,
    PALETTE,
    layout_accuracy,
    render_scene,
    scenes_arrays,
    segmentation_accuracy,
)


def test_maps_are_the_pixels_colour_classes_and_boxes_bound_the_objects():
    scenes = scenes_arrays(30, image_size=32)
    np.testing.assert_array_equal(PALETTE[scenes["segmentation"]], scenes["images"])
    assert scenes["num_boxes"].min() >= 1 and scenes["num_boxes"].max() <= 3
    for i in range(30):
        for j in range(scenes["num_boxes"][i]):
            x0, y0, x1, y1 = np.round(scenes["boxes"][i, j] * 32).astype(int)
            assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32 and x1 - x0 == y1 - y0  # square boxes
            if j == scenes["num_boxes"][i] - 1:  # the last object drawn is whole: it fills its box as its shape
                color, shape = OBJECT_CLASSES[scenes["box_labels"][i, j]]
                cover = (scenes["segmentation"][i, y0:y1, x0:x1] == COLORS.index(color)).mean()
                assert cover >= {"circle": 0.7, "square": 1.0, "triangle": 0.45}[shape]
        padding = scenes["box_labels"][i, scenes["num_boxes"][i] :]
        assert (padding == 0).all() and (scenes["boxes"][i, scenes["num_boxes"][i] :] == 0).all()


def test_a_lone_object_fills_its_box_as_its_shape_does():
    image, classes = render_scene(0, [(3, 0, 16, 8, 8)], 32)  # a yellow circle of diameter 16
    inside = classes[8:24, 8:24] == 3
    assert abs(inside.mean() - np.pi / 4) < 0.05 and (classes[:8] == 0).all()
    assert (image[16, 16] == PALETTE[3]).all()


def test_splits_are_disjoint_and_each_scene_stable():
    train, held_out = scenes_arrays(8, image_size=32), scenes_arrays(8, image_size=32, split="held_out")
    assert not any((train["images"][i] == held_out["images"][i]).all() for i in range(8))
    later = scenes_arrays(4, image_size=32, start=4)
    np.testing.assert_array_equal(later["segmentation"], train["segmentation"][4:])


def test_scores_of_the_scenes_and_of_wrong_images():
    scenes = scenes_arrays(40, image_size=32)
    assert segmentation_accuracy(scenes["images"], scenes["segmentation"]) == 1.0
    layout = (scenes["boxes"], scenes["box_labels"], scenes["num_boxes"])
    ceiling = layout_accuracy(scenes["images"], *layout)
    assert 0.85 < ceiling <= 1.0  # objects hidden under later ones are the misses
    shuffled = scenes["images"][::-1]
    assert segmentation_accuracy(shuffled, scenes["segmentation"]) < 0.5
    assert layout_accuracy(shuffled, *layout) < 0.5
    grey = np.full_like(scenes["images"], 128)
    assert layout_accuracy(grey, *layout) < 0.3


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split='test'"):
        scenes_arrays(1, split="test")
    with pytest.raises(ValueError, match="image_size"):
        scenes_arrays(1, image_size=8)
    with pytest.raises(ValueError, match="num_scenes"):
        scenes_arrays(0)
    with pytest.raises(ValueError, match="differ in size"):
        segmentation_accuracy(np.zeros((1, 8, 8, 3), "uint8"), np.zeros((1, 4, 4), "int32"))
