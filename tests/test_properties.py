"""Property-based tests (hypothesis) of the public entry points: `generate`, `fit`, `save_to_preset` /
`from_preset` and the `keras-ldm` command line.

The property, for every drawn call: a valid result -- uint8 images of the expected shape, none of them flat
(a NaN image decodes flat), a finite loss, a preset that loads back as saved, exit code 0 with the image
written -- or a `ValueError`/`TypeError` whose message names a bad argument (the command line: exit code 2
and one line on stderr); never another exception. Each draw knows which of its values are bad, so a request
of good values must succeed and a request with a bad one must fail, naming it.

Compiling is the cost: the models are built once per module, and the values that select a compiled program
(sampler, steps, eta, guidance on/off, size, batch; uint8 training images) are drawn from small sets when
valid, so only a handful of programs compile (the command line reuses the generation tests' models and
programs); bad values are drawn widely, since they fail before compiling. Examples: about 200 per backend.
"""

import json
import os
import pathlib
import uuid
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from keras_ldm.backend.fast_build import random_init_skipped
from keras_ldm.cli import main
from keras_ldm.diffusion.samplers import SAMPLERS
from keras_ldm.models import ClassEmbedder, LatentDiffusion
from keras_ldm.presets import read_metadata
from tests import tiny_models
from tests.tiny_models import text_model, unet, vae

SIZE = 8  # the one valid image size: every model's default (`image_size`)
DEFAULTS = {"num_steps": 1, "image_size": SIZE}
OMIT = object()  # an argument left out of the call


def examples(count):
    return settings(
        max_examples=count,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# -- drawing requests: each value with the names a failure must mention (none: a good value) -------------


def good(*values):
    return st.sampled_from(values).map(lambda value: (value, ()))


def bad(strategy, *names):
    return strategy.map(lambda value: (value, names))


@st.composite
def requests(draw, options):
    """`(kwargs, bad names)`: `options` maps an argument to `(good draw, bad draw)`; up to two are bad."""
    chosen = draw(st.lists(st.sampled_from(sorted(options)), max_size=2, unique=True))
    kwargs, names = {}, set()
    for key, (good_draw, bad_draw) in options.items():
        value, mentions = draw(bad_draw if key in chosen else good_draw)
        if value is not OMIT:
            kwargs[key] = value
        names.update(mentions)
    return kwargs, names


def outcome(call, names):
    """`call()`'s result, or None after a `ValueError`/`TypeError` that names one of `names` (any other
    exception propagates: the test fails); good values (no `names`) must succeed, bad ones must fail."""
    try:
        result = call()
    except (ValueError, TypeError) as error:
        assert names, f"a good request failed: {type(error).__name__}: {error}"
        assert any(name in str(error) for name in names), f"{error!r} names none of {sorted(names)}"
        event("a named error")
        return None
    assert not names, f"bad values were accepted: {sorted(names)}"
    event("a valid result")
    return result


def assert_images(images, shape):
    assert images.dtype == np.uint8 and images.shape == shape, (images.dtype, images.shape, shape)
    for image in images.reshape(-1, *images.shape[-3:]):
        assert image.max() > image.min(), "a flat image (NaN latents decode to one colour)"


NOT_NUMBERS = st.sampled_from(["1", b"1", True, [1.0], 1 + 0j])  # None: the default, good
NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])
NEGATIVE = st.floats(max_value=-1e-6, allow_nan=False) | st.integers(max_value=-1)
HUGE_INTS = st.integers(min_value=2**16 + 1) | st.integers(min_value=2**63, max_value=2**200)
NOT_INTS = st.sampled_from([1.0, "1", True])


def size_option(name):
    bad_sizes = st.integers(max_value=0) | HUGE_INTS | st.sampled_from([8.0, "8", True, np.float32(8)])
    return good(OMIT, None, SIZE, np.int32(SIZE)), bad(bad_sizes | NON_FINITE, name)


SAMPLING = {
    "num_steps": (
        good(OMIT, None, 1, np.int64(1)),
        bad(st.integers(max_value=0) | st.integers(min_value=1000) | NOT_INTS, "num_steps"),
    ),
    "sampler": (
        good(OMIT, None, "ddim", "DDIM", " Ddim "),
        bad(st.text(max_size=6).filter(lambda s: s.strip().lower() not in SAMPLERS) | NOT_NUMBERS, "sampler"),
    ),
    "eta": (  # in the compiled program's key: one good value
        good(OMIT, None, 0, 0.0),
        bad(NEGATIVE | NON_FINITE | NOT_NUMBERS | st.floats(min_value=1.0, exclude_min=True), "eta"),
    ),
    "temperature": (  # an argument of the program: any good value
        st.one_of(good(OMIT, None), st.floats(0, 10).map(lambda t: (t, ()))),
        bad(NEGATIVE | NON_FINITE | NOT_NUMBERS | st.floats(min_value=10, exclude_min=True), "temperature"),
    ),
    "seed": (
        st.one_of(good(OMIT, None, np.int64(3), np.uint64(2**64 - 1)), st.integers().map(lambda s: (s, ()))),
        bad(st.floats() | st.sampled_from(["1", True, [1]]), "seed"),
    ),
    "height": size_option("height"),
    "width": size_option("width"),
    "upscale": (
        good(OMIT, 1, 4, 2**16),
        bad(st.integers(max_value=0) | HUGE_INTS | st.sampled_from([4.0, "4", False]), "upscale"),
    ),
    "batch_size": (  # checked for every model; the batch of unconditional ones
        good(OMIT, 1),
        bad(st.integers(max_value=0) | HUGE_INTS | st.sampled_from([1.5, "2", True, None]), "batch_size"),
    ),
}


def guidance_option(guided):
    values = (OMIT, None, 1, 1.0, np.float32(1.0)) + ((2.5, 3, np.float64(7.5)) if guided else ())
    bad_values = NEGATIVE | NON_FINITE | NOT_NUMBERS | st.floats(min_value=1000, exclude_min=True)
    return good(*values), bad(bad_values, "guidance_scale")


def latents_option(batches):
    """Good: standard-normal-like float latents `(B, 8, 8, 4)`, B in `batches`; bad: other shapes, NaN/inf,
    values beyond +-1e4, strings, ragged lists."""
    good_latents = st.sampled_from(batches).flatmap(
        lambda b: hnp.arrays(
            st.sampled_from(["float32", "float64", "float16"]),
            (b, SIZE, SIZE, 4),
            elements=st.floats(-4, 4, width=16),
        )
    )
    bad_latents = st.one_of(
        hnp.arrays("float32", hnp.array_shapes(min_dims=0, max_dims=5, max_side=3)),  # wrong shapes
        hnp.arrays("float64", (1, SIZE, SIZE, 4), elements=st.sampled_from([np.nan, np.inf, 1e5, -1e300])),
        st.sampled_from(["noise", [[1.0], [1.0, 2.0]], {"latents": 1}]),
    )
    return st.one_of(good(OMIT), good_latents.map(lambda a: (a, ()))), bad(bad_latents, "latents")


# -- the models: built once -------------------------------------------------------------------------------


def quickly_built(make):
    """`make()`'s tiny model, built without the backend's initializers (on JAX each compiles a program:
    15 s for these models), then given random weights with numpy: every kernel and embedding N(0, 1/fan_in)
    (the UNet's zero output layers too, so that every input matters), norms and biases as initialized."""
    with random_init_skipped(), mock.patch.object(tiny_models, "randomized", lambda model, scale=0.1: model):
        model = make()
    rng = np.random.default_rng(0)
    for part in (model.unet, model.first_stage, model.text_encoder, model.class_embedder):
        for variable in part.variables if part is not None else ():
            if len(variable.shape) >= 2:
                scale = 1.0 / np.sqrt(np.prod(variable.shape[:-1]))
                variable.assign(rng.normal(scale=scale, size=variable.shape).astype(variable.dtype))
    return model


def text_ldm():
    model = text_model()
    model.generation_defaults = dict(DEFAULTS)
    return model


@pytest.fixture(scope="module")
def text():
    return quickly_built(text_ldm)


@pytest.fixture(scope="module")
def plain():
    return quickly_built(lambda: LatentDiffusion(unet(), vae(), generation_defaults=DEFAULTS))


@pytest.fixture(scope="module")
def classes():
    return quickly_built(
        lambda: LatentDiffusion(
            unet(context_dim=16),
            vae(),
            cross_attention="class",
            class_embedder=ClassEmbedder(num_classes=5, embed_dim=16),
            generation_defaults=DEFAULTS,
        )
    )


@pytest.fixture(scope="module")
def inpaint():
    return quickly_built(
        lambda: LatentDiffusion(unet(in_channels=9), vae(), concat="masks", generation_defaults=DEFAULTS)
    )


# -- generate() ---------------------------------------------------------------------------------------------

PROMPT = st.text(max_size=12)
BAD_PROMPTS = st.one_of(
    st.sampled_from([None, 7, [], [1], ["a", None], b"bytes", {"negative_prompts": "a"}, np.array([1, 2])]),
    st.sampled_from([{"prompts": "a", "labels": [1]}, {"prompts": "a", "images": np.zeros((8, 8, 3))}]),
)
BAD_NEGATIVES = st.sampled_from([3, [1], ["a", "b", "c"], [b"x"], np.array([1.0])])


@st.composite
def text_inputs(draw):
    """`((inputs, squeeze, batch), names)`: prompts as a str, a list/tuple/array of str or a dict."""
    batch = draw(st.sampled_from([1, 2]))
    prompts = draw(st.lists(PROMPT, min_size=batch, max_size=batch))
    forms = ["str", "list", "tuple", "array", "dict", "dict-negatives", "bad", "bad-negatives"]
    form = draw(st.sampled_from(forms))
    if form == "str":
        return ("" if not prompts else prompts[0], True, 1), ()
    if form == "bad":
        return (draw(BAD_PROMPTS), False, batch), ("prompts", "labels", "images")
    forms = {"list": list(prompts), "tuple": tuple(prompts), "array": np.array(prompts, dtype=str)}
    if form in forms:
        return (forms[form], False, batch), ()
    if form == "dict":
        return ({"prompts": prompts}, False, batch), ()
    negatives = draw(BAD_NEGATIVES) if form == "bad-negatives" else draw(
        st.sampled_from([None, "blue", list(reversed(prompts)), np.array(prompts, dtype=str)])
    )
    return ({"prompts": prompts, "negative_prompts": negatives}, False, batch), (
        ("negative_prompts",) if form == "bad-negatives" else ()
    )


@examples(40)
@given(
    data=st.data(),
    request=requests(
        dict(SAMPLING, guidance_scale=guidance_option(guided=True), latents=latents_option([1, 2]))
    ),
)
def test_text_generation_gives_varied_images_or_names_the_bad_argument(text, data, request):
    kwargs, names = request
    (inputs, squeeze, batch), input_names = data.draw(text_inputs())
    names = names | set(input_names)
    latents = kwargs.get("latents")
    if isinstance(latents, np.ndarray) and latents.ndim == 4 and latents.shape[0] != batch:
        names = names | {"latents"}  # good latents, but of another batch than the prompts'
    images = outcome(lambda: text.generate(inputs, **kwargs), names)
    if images is not None:
        assert_images(images, (SIZE, SIZE, 3) if squeeze else (batch, SIZE, SIZE, 3))


@examples(30)
@given(
    request=requests(
        dict(
            SAMPLING,
            batch_size=(good(OMIT, 1, 2), SAMPLING["batch_size"][1]),
            inputs=(good(OMIT, None), bad(st.sampled_from(["a", {"labels": [1]}, np.zeros(3)]), "inputs")),
            latents=latents_option([1, 2]),
        )
    )
)
def test_unconditional_generation_gives_varied_images_or_names_the_bad_argument(plain, request):
    kwargs, names = request
    latents = kwargs.get("latents")
    batch = kwargs.get("batch_size", 1)
    if isinstance(latents, np.ndarray) and latents.ndim == 4:
        batch = len(latents)  # the latents give the batch
    images = outcome(lambda: plain.generate(**kwargs), names)
    if images is not None:
        assert_images(images, (batch, SIZE, SIZE, 3))


GOOD_LABELS = st.integers(0, 4).flatmap(
    lambda k: st.sampled_from([[k], (k,), np.array([k], "uint8"), np.array([[k]]), np.int64([k])])
)
BAD_LABELS = st.one_of(
    st.integers(min_value=5).map(lambda k: [k]),
    st.integers(max_value=-1).map(lambda k: [k]),
    st.sampled_from([[], [1.0], ["1"], [[1], [1, 2]], None, [True], [2**70], np.zeros((0,), "int32")]),
)


@examples(20)
@given(
    data=st.data(),
    request=requests(dict(SAMPLING, guidance_scale=guidance_option(guided=False))),
)
def test_class_generation_gives_varied_images_or_names_the_bad_labels(classes, data, request):
    kwargs, names = request
    labels, label_names = data.draw(
        st.sampled_from([True, True, False]).flatmap(
            lambda ok: good(OMIT) | GOOD_LABELS.map(lambda v: (v, ())) if ok else bad(BAD_LABELS, "labels")
        )
    )
    form = data.draw(st.sampled_from(["dict"] * 4 + ["extra key", "not a dict"]))
    inputs = {"labels": [1] if labels is OMIT else labels}
    if form == "extra key":
        inputs["prompts"], label_names = "a", ("prompts",)
    elif form == "not a dict":
        inputs, label_names = inputs["labels"], ("labels",)
    names = names | set(label_names)
    images = outcome(lambda: classes.generate(inputs, **kwargs), names)
    if images is not None:
        assert_images(images, (1, SIZE, SIZE, 3))


def uint8_images(shape):
    return hnp.arrays("uint8", shape)


@st.composite
def inpainting_images(draw):
    """`((images, original uint8 (1, 8, 8, 3), squeeze), names)`: uint8 or [-1, 1] float images of 1-4
    channels, batched or not; bad: NaN/inf, beyond [-1, 1], other dtypes, channels, ranks, size 0, ragged."""
    shapes = [(SIZE, SIZE, 3), (1, SIZE, SIZE, 3), (SIZE, SIZE, 4), (SIZE, SIZE), (SIZE, SIZE, 1)]
    shape = draw(st.sampled_from(shapes))
    if draw(st.booleans()):
        images = draw(uint8_images(shape))
        rgb = images.astype("uint8")
    else:
        dtype = draw(st.sampled_from(["float32", "float64", "float16"]))
        images = draw(hnp.arrays(dtype, shape, elements=st.floats(-1, 1, width=16)))
        rgb = np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype("uint8")
    rgb = rgb.reshape(1, SIZE, SIZE, -1)
    rgb = np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb[..., :3]
    kind = draw(st.sampled_from(["good", "good", "good", "bad"]))
    if kind == "good":
        return (images, rgb, len(shape) < 4), ()
    bad_images = draw(
        st.one_of(
            hnp.arrays("float32", (SIZE, SIZE, 3), elements=st.sampled_from([np.nan, np.inf, 2, -1e30, 255])),
            hnp.arrays(st.sampled_from(["int64", "bool", "complex64", "U1"]), (SIZE, SIZE, 3)),
            uint8_images(st.sampled_from([(SIZE, SIZE, 2), (0, SIZE, 3), (1, 1, SIZE, SIZE, 3), (SIZE,)])),
            st.sampled_from([None, "photo.png", [[1], [1, 2]]]),
        )
    )
    return (bad_images, rgb, False), ("images",)


@st.composite
def inpainting_masks(draw):
    """`((masks, hole (8, 8) bool), names)`: 0/1 in any dtype or 0/255 uint8, (H, W), (1, H, W) or with
    a trailing axis; bad: other values, NaN, another size, strings, ragged."""
    hole = draw(hnp.arrays("bool", (SIZE, SIZE)))
    kind = draw(st.sampled_from(["good", "good", "good", "bad"]))
    if kind == "good":
        dtype = draw(st.sampled_from(["bool", "uint8", "float32", "int64", "0/255"]))
        masks = (hole * 255).astype("uint8") if dtype == "0/255" else hole.astype(dtype)
        shape = draw(st.sampled_from([(SIZE, SIZE), (1, SIZE, SIZE), (SIZE, SIZE, 1), (1, SIZE, SIZE, 1)]))
        return (masks.reshape(shape), hole), ()
    bad_masks = draw(
        st.one_of(
            hnp.arrays("float32", (SIZE, SIZE), elements=st.sampled_from([0.5, np.nan, 2.0, -1.0])).filter(
                lambda m: not np.isin(m, (0, 1, 255)).all()
            ),
            st.sampled_from([(4, 4), (SIZE, SIZE, 2), (2, SIZE, SIZE), (0, SIZE)]).map(np.ones),
            st.sampled_from([None, "mask.png", [[1], [1, 0]], np.full((SIZE, SIZE), "1")]),
        )
    )
    return (bad_masks, hole), ("masks",)


@examples(25)
@given(
    data=st.data(),
    request=requests({key: SAMPLING[key] for key in ("num_steps", "seed", "temperature", "sampler")}),
)
def test_inpainting_keeps_the_known_pixels_and_fills_the_hole_or_names_the_bad_input(inpaint, data, request):
    kwargs, names = request
    (images, original, squeeze), image_names = data.draw(inpainting_images())
    (masks, hole), mask_names = data.draw(inpainting_masks())
    names = names | set(image_names) | set(mask_names)
    result = outcome(lambda: inpaint.generate({"images": images, "masks": masks}, **kwargs), names)
    if result is None:
        return
    assert result.dtype == np.uint8 and result.shape == ((SIZE, SIZE, 3) if squeeze else (1, SIZE, SIZE, 3))
    result = result.reshape(SIZE, SIZE, 3)
    np.testing.assert_array_equal(result[~hole], original[0][~hole])  # composited into the original
    if hole.sum() >= 4:
        assert result[hole].max() > result[hole].min(), "a flat fill (NaN latents decode to one colour)"


# -- fit() ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trainee():
    model = quickly_built(text_ldm)
    model.compile()
    return model


@st.composite
def training_images(draw):
    """`(images, names)`: two 8x8 uint8 RGB images (one compiled training step: good float images, a
    second, are left to tests/models/test_latent_diffusion.py); bad: floats with NaN/inf or beyond
    [-1, 1], wrong rank/channels/length, other dtypes, lists, nothing."""
    if draw(st.sampled_from([True, True, False])):
        return draw(uint8_images((2, SIZE, SIZE, 3))), ()
    float_dtypes = st.sampled_from(["float32", "float64"])
    float_images = hnp.arrays(float_dtypes, (2, SIZE, SIZE, 3), elements=st.floats(-1, 1))
    bad_values = st.sampled_from([np.nan, np.inf, -np.inf, 1.5, 255.0])
    bad_image = hnp.arrays("float32", (SIZE, SIZE, 3), elements=bad_values)

    def one_bad(drawn):  # good float images, one of them replaced by a bad one
        images, image, index = drawn
        return np.concatenate([images[:index], image[None], images[index + 1 :]])

    wrong_shapes = [(SIZE, SIZE, 3), (2, SIZE, SIZE), (2, SIZE, SIZE, 1), (2, SIZE, SIZE, 4)]
    bad_images = draw(
        st.one_of(
            st.tuples(float_images, bad_image, st.integers(0, 1)).map(one_bad),
            uint8_images((0, SIZE, SIZE, 3)) | uint8_images((3, SIZE, SIZE, 3)),
            uint8_images(st.sampled_from(wrong_shapes)),
            hnp.arrays(st.sampled_from(["int64", "bool", "U1"]), (2, SIZE, SIZE, 3)),
            st.sampled_from([None, "images", [[1, 2], [3]], [[[[0] * 3] * SIZE] * SIZE] * 2]),
        )
    )
    return bad_images, ("images",)


@st.composite
def training_prompts(draw):
    """`(prompts, names)`: two prompts as a list, tuple or array of str (or bytes); bad: other types and
    counts."""
    prompts = draw(st.lists(PROMPT, min_size=2, max_size=2))
    form = draw(st.sampled_from(["list", "tuple", "array", "bytes", "bad"]))
    if form == "bad":
        bad_prompts = draw(
            st.one_of(
                st.lists(PROMPT, max_size=4).filter(lambda p: len(p) != 2),
                st.sampled_from([[1, 2], ["a", None], np.array([1.0, 2.0]), 3, None, np.array([["a"]])]),
            )
        )
        return bad_prompts, ("prompts",)
    encoded = [p.encode("utf-8") for p in prompts]
    forms = {"list": prompts, "tuple": tuple(prompts), "array": np.array(prompts), "bytes": np.array(encoded)}
    return forms[form], ()


@examples(20)
@given(data=st.data())
def test_fit_trains_one_step_or_names_the_bad_key(trainee, data):
    images, names = data.draw(training_images())
    prompts, prompt_names = data.draw(training_prompts())
    batch = {"images": images, "prompts": prompts}
    extras = [None, None, "labels", "missing images", "missing prompts", "not a dict"]
    extra = data.draw(st.sampled_from(extras))
    names = set(names) | set(prompt_names)
    if extra == "labels":  # a key this text model does not use: dropped
        batch["labels"] = np.array([1, 2])
    elif extra == "missing images":
        batch["pixels"] = batch.pop("images")
        names = {"images"}
    elif extra == "missing prompts":
        del batch["prompts"]
        names = names | {"prompts"}
    elif extra == "not a dict":
        batch, names = images, {"`x`"}
    history = outcome(lambda: trainee.fit(batch, batch_size=2, epochs=1, verbose=0), names)
    if history is not None:
        assert np.isfinite(history.history["loss"]).all(), history.history
    # a failed fit leaves the model whole: its weights are still there and finite
    assert all(np.isfinite(w).all() for w in trainee.get_weights()[:4])


# -- save_to_preset / from_preset ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("properties")
    (root / "a_file.txt").write_text("not a preset")
    (root / "not_a_preset").mkdir()
    (root / "not_a_preset" / "notes.txt").write_text("keep me")
    return root


@pytest.fixture(scope="module")
def to_save():
    return quickly_built(lambda: LatentDiffusion(unet(), vae(), generation_defaults=DEFAULTS))


@pytest.fixture(scope="module")
def saved(to_save, folders):
    """A preset saved once, that failed saves must leave loadable."""
    path = folders / "preset"
    to_save.save_to_preset(path, description="the first")
    return path


DEFAULT_VALUES = {
    "num_steps": (st.sampled_from([1, 25, 999]), st.sampled_from([0, -1, 1000, 2.5, "25", None])),
    "guidance_scale": (st.sampled_from([1, 4.0, np.float32(7.5)]), st.sampled_from([-1.0, np.nan, "4", 1e9])),
    "sampler": (st.sampled_from(["ddim", "PLMS", "euler"]), st.sampled_from(["heun", 3, None, ""])),
    "eta": (st.sampled_from([0, 1.0, np.float64(0.5)]), st.sampled_from([-0.1, 2.0, np.inf, "0"])),
    "temperature": (st.sampled_from([0.25, 1, 10]), st.sampled_from([11, -1, np.nan, object()])),
    "image_size": (st.sampled_from([8, 256, np.int64(64)]), st.sampled_from([0, -8, 8.5, "256", 2**40])),
}


@st.composite
def generation_defaults(draw):
    """`(defaults, names)`: None (keep the model's), or a dict of known keys with good or bad values, or
    unknown keys, or not a dict."""
    kind = draw(st.sampled_from(["none"] * 2 + ["good"] * 3 + ["bad value", "unknown key", "not a dict"]))
    if kind == "none":
        return OMIT, ()
    if kind == "not a dict":
        return draw(st.sampled_from(["abc", 3, [1, 2], ["num_steps"]])), ("generation_defaults",)
    keys = draw(st.lists(st.sampled_from(sorted(DEFAULT_VALUES)), max_size=4, unique=True))
    defaults = {key: draw(DEFAULT_VALUES[key][0]) for key in keys}
    if kind == "bad value":
        key = draw(st.sampled_from(sorted(DEFAULT_VALUES)))
        defaults[key] = draw(DEFAULT_VALUES[key][1])
        return defaults, ("generation_defaults",)
    if kind == "unknown key":
        unknown = st.text(min_size=1, max_size=8).filter(lambda k: k not in DEFAULT_VALUES)
        defaults[draw(unknown | st.sampled_from([3, None]))] = 1
        return defaults, ("generation_defaults",)
    return defaults, ()


NOT_TEXT = st.sampled_from([None, 3, b"x"])


def preset_state(path):
    """What a preset folder holds (its description and generation defaults), or None for no preset."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            defaults = json.load(f)["config"]["generation_defaults"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return read_metadata(path).get("description"), defaults


@examples(20)
@given(data=st.data())
def test_save_to_preset_round_trips_or_names_the_bad_argument_and_keeps_the_old_preset(
    to_save, saved, folders, data
):
    wheres = ["new nested", "existing preset", "empty"] * 2 + ["file", "non-preset", "under a file", "bad"]
    where = data.draw(st.sampled_from(wheres))
    fresh = folders / "new" / uuid.uuid4().hex[:8]
    paths = {
        "new nested": (fresh / "a" / "b", ()),
        "existing preset": (saved, ()),
        "empty": (fresh, ()),
        "file": (folders / "a_file.txt", ("path",)),
        "non-preset": (folders / "not_a_preset", ("path",)),
        "under a file": (folders / "a_file.txt" / "preset", ("path",)),
    }
    if where == "empty":
        fresh.mkdir(parents=True)
    path, names = paths.get(where, (None, ("path",)))
    if where == "bad":
        path = data.draw(st.sampled_from([None, 3, b"bytes/preset", ["preset"]]))
    elif data.draw(st.booleans()):
        path = str(path)
    description, description_names = data.draw(
        st.sampled_from([True, True, False]).flatmap(
            lambda ok: good("") | st.text().map(lambda d: (d, ())) if ok else bad(NOT_TEXT, "description")
        )
    )
    defaults, default_names = data.draw(generation_defaults())
    refused = good(False) if where != "existing preset" else bad(st.just(False), "overwrite", "path")
    overwrite, overwrite_names = data.draw(
        st.one_of(good(OMIT, OMIT, True), refused, bad(st.sampled_from(["no", None, 1]), "overwrite"))
    )
    names = set(names) | set(description_names) | set(default_names) | set(overwrite_names)
    kwargs = {"description": description}
    if defaults is not OMIT:
        kwargs["generation_defaults"] = defaults
    if overwrite is not OMIT:
        kwargs["overwrite"] = overwrite
    before_model = dict(to_save.generation_defaults)
    before_disk = preset_state(path) if isinstance(path, (str, pathlib.Path)) else None
    result = outcome(lambda: to_save.save_to_preset(path, **kwargs) or True, names)
    if result is None:  # nothing changed: the model's defaults, the folder (a preset still loads as it was)
        assert to_save.generation_defaults == before_model
        assert preset_state(path) == before_disk if isinstance(path, (str, pathlib.Path)) else True
        if where == "existing preset":
            assert LatentDiffusion.from_preset(path).generation_defaults == before_disk[1]
        if where == "new nested":
            assert not os.path.exists(path)
        if where == "empty":
            assert not os.listdir(path)
        return
    loaded = LatentDiffusion.from_preset(path)
    assert loaded.generation_defaults == to_save.generation_defaults
    assert read_metadata(path)["description"] == description
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), to_save.get_weights()))
    assert not [name for name in os.listdir(os.path.dirname(os.path.abspath(path))) if ".tmp-" in name]


# -- the command line ---------------------------------------------------------------------------------------

# flag: (good values, bad values) for the text preset; a bad value makes the command exit with code 2
TEXT_FLAGS = {
    "--prompt": (["a red circle", "blue", "", "ü ✓ 猫"], ["--prompt"]),
    "--negative-prompt": (["", "blue"], ["-x"]),
    "--num-images": (["1", "+1"], ["0", "-1", "x", "1.5", "²"]),
    "--num-steps": (["1", "١"], ["0", "2000", "x", ""]),
    "--guidance-scale": (["1", "3", "2.5"], ["nan", "inf", "-1", "x", "1e400", "1001"]),
    "--sampler": (["ddim", "DDIM"], ["bogus", ""]),
    "--eta": (["0", "0.0"], ["1.5", "-1", "nan", "x"]),
    "--temperature": (["1", "0", "0.5", "10"], ["11", "nan", "-0.1", "x"]),
    "--height": (["8"], ["0", "x", "70000", "8.0"]),
    "--width": (["8"], ["0", "-8", "70000"]),
    "--seed": (["0", "7", "-1", "99999999999999999999"], ["x", "1.5"]),
    "--columns": (["1", "2", "3"], ["0", "x"]),
    "--label": ([], ["3", "x"]),  # the text preset takes no labels, images or masks
    "--image": ([], ["IMAGE", "MISSING", "TEXT"]),
    "--mask": ([], ["MASK"]),
    "--no-such-flag": ([], ["1"]),
}
# the inpainting preset: an image and a mask file (both needed), no prompt; the image sets the size
INPAINT_FLAGS = dict(
    TEXT_FLAGS,
    **{
        "--prompt": ([], ["a red circle"]),
        "--image": (["IMAGE", "RGBA", "MASK"], ["MISSING", "TEXT"]),  # MASK: a grey image
        "--mask": (["MASK"], ["MISSING", "TEXT", "SMALL"]),
        "--height": (["8", "70000"], ["0", "x", "8.0"]),
        "--width": (["8", "70000"], ["0", "-8"]),
    },
)
APPENDED = ("--prompt", "--label")


@pytest.fixture(scope="module")
def cli_files(text, inpaint, folders):
    """The text and inpainting models saved as presets, and the files the command line is pointed at."""
    files = {"root": folders, "MISSING": str(folders / "missing.png"), "TEXT": str(folders / "a_file.txt")}
    for name, model in (("text", text), ("inpaint", inpaint)):
        files[name] = str(folders / f"{name}_preset")
        model.save_to_preset(files[name])
        assert LatentDiffusion.from_preset(files[name]).generation_defaults == DEFAULTS
    rng = np.random.default_rng(0)
    hole = np.zeros((SIZE, SIZE), "uint8")
    hole[2:6, 2:6] = 255
    images = {
        "IMAGE": rng.integers(0, 256, (SIZE, SIZE, 3), dtype="uint8"),
        "RGBA": rng.integers(0, 256, (SIZE, SIZE, 4), dtype="uint8"),
        "MASK": hole,
        "SMALL": hole[:4, :4],
    }
    for name, pixels in images.items():
        files[name] = str(folders / f"{name.lower()}.png")
        Image.fromarray(pixels).save(files[name])
    return files


@pytest.fixture(scope="module")
def shared_models(text, inpaint, cli_files):
    """`from_preset` of the two presets returns `text` and `inpaint` (each loaded once above), so the
    command line reuses their compiled programs; every other preset is loaded as usual."""
    original = LatentDiffusion.from_preset.__func__
    models = {cli_files["text"]: text, cli_files["inpaint"]: inpaint}

    def from_preset(cls, preset, *args, **kwargs):
        if isinstance(preset, str) and preset in models:
            return models[preset]
        return original(cls, preset, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LatentDiffusion, "from_preset", classmethod(from_preset))
        yield


@st.composite
def command_lines(draw, files):
    """`(argv, good, expected grid shape)`: a flag list, each flag at most once (`--prompt` at most
    twice: batches of 1 and 2, as in the generation tests); good: the command must succeed."""
    command = draw(st.sampled_from(["generate"] * 8 + ["presets", "bogus"]))
    if command != "generate":
        extra = draw(st.sampled_from([[], [], ["--prompt", "a"]]))
        return [command, *extra], command == "presets" and not extra, None
    all_good = draw(st.sampled_from([True, False, False]))  # else a random mix: mostly bad
    kind = draw(st.sampled_from(["text", "text", "inpaint"]))
    flags = TEXT_FLAGS if kind == "text" else INPAINT_FLAGS
    presets = [(files[kind], True)] * 6 + [
        ("no_such_preset", False),
        (files["TEXT"], False),
        (str(files["root"] / "not_a_preset"), False),
        ("hf://not-a-repo", False),
        ("kl_f8", False),
        ("", False),
    ]
    outs = [("new/sub/grid.png", True), ("grid.jpg", True), ("grid.png", True), ("grid.txt", False)]
    outs += [("new", False), ("a_file.txt/grid.png", False)]
    if all_good:
        presets, outs = [p for p in presets if p[1]], [o for o in outs if o[1]]
    preset, ok = draw(st.sampled_from(presets))
    out, out_ok = draw(st.sampled_from(outs))
    out_path = files["root"] / ("" if out.startswith("a_file") else "cli") / out
    if out == "new":
        os.makedirs(out_path, exist_ok=True)
    argv, ok = ["generate", "--preset", preset, "--out", str(out_path)], ok and out_ok

    def value(flag):
        good_values, bad_values = flags[flag]
        draws = [] if all_good else [st.sampled_from(bad_values).map(lambda v: (v, False))]
        if good_values:
            draws.append(st.sampled_from(good_values).map(lambda v: (v, True)))
        return draw(st.one_of(*draws))

    needed = ["--prompt"] if kind == "text" else ["--image", "--mask"]
    prompts = []
    if kind == "text" or not all_good:
        prompts = [value("--prompt") for _ in range(draw(st.integers(int(all_good), 2)))]
    names = sorted(flag for flag in set(flags) - {"--prompt"} if flags[flag][0] or not all_good)
    chosen = draw(st.lists(st.sampled_from(names), max_size=5, unique=True))
    if all_good:
        chosen = sorted(set(chosen) | set(needed) - {"--prompt"})
    values = {flag: value(flag) for flag in chosen}
    for flag, (text, _) in [("--prompt", p) for p in prompts] + list(values.items()):
        argv += [flag, files.get(text, text)]
    ok = ok and all(g for _, g in prompts) and all(g for _, g in values.values())
    ok = ok and (bool(prompts) if kind == "text" else {"--image", "--mask"} <= set(values))
    count = len(prompts) if kind == "text" else 1
    columns = int(values["--columns"][0]) if "--columns" in values and ok else min(count, 8)
    shape = (-(-count // columns) * SIZE, columns * SIZE, 3) if ok else None
    return argv, ok, shape


@examples(50)
@given(data=st.data())
def test_command_line_writes_the_image_or_exits_2_with_one_line(shared_models, cli_files, capsys, data):
    argv, ok, shape = data.draw(command_lines(cli_files))
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    if out and os.path.isfile(out):
        os.remove(out)
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse
        code = exit.code
    stdout, stderr = capsys.readouterr()
    event(f"exit code {code}")
    if code == 2:
        assert not ok, f"good flags failed: {stderr}"
        lines = stderr.strip("\n").split("\n")
        assert len(lines) == 1 and lines[0] and "Traceback" not in stderr, stderr
        return
    assert code == 0 and ok, (code, stderr)
    if argv[0] == "generate":
        assert os.path.isfile(out), stdout
        with Image.open(out) as image:
            grid = np.asarray(image.convert("RGB"))
        assert grid.shape == shape and grid.max() > grid.min()
