"""The procedural shapes dataset: captions match pixels, geometry bounds, determinism, the analyser."""

import itertools

import numpy as np
import pytest

from keras_ldm.data import shapes
from keras_ldm.data.shapes import (
    COLOR_VALUES,
    COLORS,
    SHAPES,
    all_prompts,
    combinations,
    describe_image,
    label_of,
    make_prompt,
    parse_prompt,
    render_shape,
    shape_parameters,
    shapes_arrays,
    shapes_dataset,
)


def colour_mask(image, color):
    return np.all(image == np.array(COLOR_VALUES[color], dtype=np.uint8), axis=-1)


def bounding_box(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def test_the_90_combinations_prompts_and_labels():
    combos = combinations()
    assert len(combos) == 90 == len(set(combos))
    assert all(color != background for color, _, background in combos)
    assert {c for c, _, _ in combos} == set(COLORS) and {s for _, s, _ in combos} == set(SHAPES)
    prompts = all_prompts()
    assert len(set(prompts)) == 90
    for label, (combo, prompt) in enumerate(zip(combos, prompts)):
        color, shape, background = combo
        assert prompt == f"a {color} {shape} on a {background} background"
        assert parse_prompt(prompt) == combo == parse_prompt(prompt.encode())
        assert label_of(*combo) == label


@pytest.mark.parametrize(
    "args, match",
    [
        (("red", "circle", "red"), "must differ"),
        (("purple", "circle", "red"), "`color` must be one of"),
        (("red", "hexagon", "blue"), "`shape` must be one of"),
        (("red", "circle", "grey"), "`background` must be one of"),
    ],
)
def test_bad_combinations_are_rejected(args, match):
    with pytest.raises(ValueError, match=match):
        make_prompt(*args)
    with pytest.raises(ValueError, match=match):
        render_shape(*args, size=20, center=(32, 32))


@pytest.mark.parametrize("prompt", ["a red circle on blue", "the red circle on a blue background", 3])
def test_parse_prompt_rejects_other_text(prompt):
    with pytest.raises(ValueError, match="prompt"):
        parse_prompt(prompt)


def test_render_shape_geometry():
    square = render_shape("red", "square", "blue", size=20, center=(30, 25), image_size=64)
    assert square.dtype == np.uint8 and square.shape == (64, 64, 3)
    mask = colour_mask(square, "red")
    assert mask.sum() == 400 and bounding_box(mask) == (15, 35, 20, 40)
    assert np.all(colour_mask(square, "blue") == ~mask)

    circle = colour_mask(render_shape("white", "circle", "black", 40, (32, 32), 64), "white")
    assert abs(circle.sum() / (np.pi * 20**2) - 1) < 0.03 and bounding_box(circle) == (12, 52, 12, 52)
    assert not circle[12, 12] and circle[32, 32]  # corners of the box are empty

    triangle = colour_mask(render_shape("green", "triangle", "yellow", 40, (32, 32), 64), "green")
    top, bottom, left, right = bounding_box(triangle)
    assert (bottom - top, right - left) in {(40, 40), (40, 39), (39, 40), (39, 39)}
    widths = triangle.sum(axis=1)[top:bottom]
    assert widths[0] <= 2 and widths[-1] >= 38 and np.all(np.diff(widths) >= 0)  # apex up, widening
    assert abs(triangle.sum() / 800 - 1) < 0.05


def test_render_shape_rejects_bad_geometry():
    with pytest.raises(ValueError, match="size"):
        render_shape("red", "square", "blue", size=0, center=(3, 3))
    with pytest.raises(ValueError, match="center"):
        render_shape("red", "square", "blue", size=4, center=(3, 3, 3))
    with pytest.raises(ValueError, match="image_size"):
        render_shape("red", "square", "blue", size=4, center=(3, 3), image_size=4)


def test_dataset_captions_match_the_pixels():
    num, size = 120, 64
    params = shape_parameters(num, size, seed=5)
    examples = list(shapes_dataset(num, size, seed=5).as_numpy_iterator())
    assert len(examples) == num
    min_size, max_size = np.ceil(size / 3), np.floor(2 * size / 3)
    for example, label, side, center in zip(examples, params["labels"], params["sizes"], params["centers"]):
        image, prompt = example["images"], example["prompts"].decode()
        assert image.dtype == np.uint8 and image.shape == (size, size, 3)
        assert example["labels"] == label and prompt == all_prompts()[label]
        color, shape, background = parse_prompt(prompt)
        assert color != background
        # Pixels: exactly the two named colours; the background fills the whole border.
        fg, bg = colour_mask(image, color), colour_mask(image, background)
        assert np.all(fg ^ bg)
        assert bg[0].all() and bg[-1].all() and bg[:, 0].all() and bg[:, -1].all()
        # The shape lies inside the canvas, its bounding box as large as drawn, within the size range.
        top, bottom, left, right = bounding_box(fg)
        assert 1 <= top and bottom <= size - 1 and 1 <= left and right <= size - 1
        extent = max(bottom - top, right - left)
        assert extent == side if shape == "square" else side - 1 <= extent <= side
        assert min_size <= side <= max_size
        assert abs((top + bottom) / 2 - center[1]) <= 1 and abs((left + right) / 2 - center[0]) <= 1
        # The numpy renderer and the analyser agree with the dataset.
        np.testing.assert_array_equal(image, render_shape(color, shape, background, side, center, size))
        assert describe_image(image) == (color, shape, background)


def test_parameters_respect_the_size_range_and_the_canvas():
    params = shape_parameters(2000, image_size=48, seed=1, size_range=(0.25, 0.5), margin=2)
    sizes, centers = params["sizes"], params["centers"]
    assert sizes.min() == 12 and sizes.max() == 24  # both ends of the range are drawn
    assert np.all(centers - sizes[:, None] / 2 >= 2) and np.all(centers + sizes[:, None] / 2 <= 46)
    corners = centers - sizes[:, None] / 2
    assert np.all(corners == np.round(corners))  # box edges between pixels
    default = shape_parameters(2000, image_size=64, seed=1)["sizes"]
    assert default.min() == 22 and default.max() == 42


def test_all_90_prompts_are_reachable():
    labels = shape_parameters(2000, seed=0)["labels"]
    assert set(labels.tolist()) == set(range(90))
    prompts = {
        p.decode() for p in shapes_dataset(1000, 16, seed=0).map(lambda e: e["prompts"]).as_numpy_iterator()
    }
    assert prompts == set(all_prompts())


def test_arrays_hold_the_datasets_examples_without_tensorflow():
    arrays = shapes_arrays(50, image_size=32, seed=5, chunk=16)  # several chunks
    batch = next(iter(shapes_dataset(50, image_size=32, seed=5).batch(50)))
    np.testing.assert_array_equal(arrays["images"], batch["images"].numpy())
    np.testing.assert_array_equal(arrays["labels"], batch["labels"].numpy())
    assert list(arrays["prompts"]) == [p.decode() for p in batch["prompts"].numpy()]
    assert [describe_image(image) for image in arrays["images"][:5]] == [
        parse_prompt(p) for p in arrays["prompts"][:5]
    ]


def test_the_dataset_is_deterministic_given_the_seed():
    def batch(seed):
        return next(iter(shapes_dataset(16, image_size=32, seed=seed).batch(16)))

    first, again, other = batch(7), batch(7), batch(8)
    for key in ("images", "prompts", "labels"):
        np.testing.assert_array_equal(first[key].numpy(), again[key].numpy())
    assert not np.array_equal(first["images"].numpy(), other["images"].numpy())
    ds = shapes_dataset(4, image_size=32, seed=7)
    np.testing.assert_array_equal(  # every iteration (epoch) gives the same examples
        np.stack([e["images"] for e in ds.as_numpy_iterator()]),
        np.stack([e["images"] for e in ds.as_numpy_iterator()]),
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_examples": 0}, "num_examples"),
        ({"num_examples": 4, "image_size": 4}, "image_size"),
        ({"num_examples": 4, "size_range": (0.5, 0.2)}, "size_range"),
        ({"num_examples": 4, "image_size": 16, "size_range": (0.95, 1.0)}, "allows no shape size"),
        ({"num_examples": 4, "margin": -1}, "margin"),
    ],
)
def test_dataset_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        shapes_dataset(**kwargs)


def analyser_accuracy(noise_std, seed):
    """Fraction of renderings of all 90 combinations (3 random sizes/positions each) read back correctly."""
    rng = np.random.default_rng(seed)
    params = shape_parameters(270, image_size=64, seed=seed)
    correct = 0
    for combo, side, center in zip(
        itertools.chain(*[combinations()] * 3), params["sizes"], params["centers"]
    ):
        image = render_shape(*combo, side, center, 64)
        if noise_std:
            image = np.clip(np.round(image + rng.normal(0, noise_std, image.shape)), 0, 255).astype(np.uint8)
        correct += describe_image(image) == combo
    return correct / 270


def test_analyser_reads_every_clean_combination():
    assert analyser_accuracy(noise_std=0, seed=0) == 1.0


def test_analyser_is_robust_to_mild_noise():
    assert analyser_accuracy(noise_std=10, seed=1) >= 0.95


def test_analyser_rejects_a_wrong_description():
    image = render_shape("blue", "circle", "yellow", 30, (30, 30), 64)
    # The analyser distinguishes shapes drawn at the same place; a square is not read as a circle.
    assert describe_image(render_shape("blue", "square", "yellow", 30, (30, 30), 64))[1] == "square"
    assert describe_image(image) == ("blue", "circle", "yellow")
    assert describe_image(image[..., ::-1].copy()) == ("red", "circle", "blue")  # channels swapped


def test_analyser_handles_floats_plain_images_and_bad_input():
    image = render_shape("black", "triangle", "white", 36, (32, 30), 64)
    assert describe_image(image.astype("float32") / 127.5 - 1.0) == ("black", "triangle", "white")
    plain = np.full((32, 32, 3), COLOR_VALUES["green"], dtype=np.uint8)
    assert describe_image(plain) == (None, None, "green")
    with pytest.raises(ValueError, match="image"):
        describe_image(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        describe_image(np.zeros((32, 32, 3), np.int64))


def test_generated_like_images_with_speckles_are_read():
    """A blurred, noisy rendering with stray pixels of a third colour (as a model might make)."""
    rng = np.random.default_rng(3)
    image = render_shape("red", "triangle", "blue", 40, (30, 34), 64).astype("float32")
    image = (image + np.roll(image, 1, 0) + np.roll(image, 1, 1) + np.roll(image, -1, 1)) / 4
    speckles = rng.random((64, 64)) < 0.01
    image[speckles] = COLOR_VALUES["yellow"]
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    assert describe_image(image) == ("red", "triangle", "blue")


def test_palette_colours_are_far_apart():
    palette = shapes._PALETTE
    distances = np.linalg.norm(palette[:, None] - palette[None], axis=-1)
    assert distances[~np.eye(len(COLORS), dtype=bool)].min() > 100
