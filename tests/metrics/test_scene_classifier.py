"""SceneClassifier: the shipped weights classify fresh shapes scenes, and its features make a FID that tells
real scenes from corrupted ones."""

import json

import keras
import numpy as np
import pytest

from keras_ldm.data.shapes import combinations, shapes_arrays
from keras_ldm.metrics import FrechetInceptionDistance, InceptionScore, SceneClassifier, scene_classifier
from tests.conftest import to_numpy


@pytest.fixture(scope="module")
def classifier():
    return scene_classifier()


@pytest.fixture(scope="module")
def real_sets():
    """Two independent sets of real scenes, neither drawn with the training (0) or held-out (1) seeds."""
    return shapes_arrays(512, seed=3)["images"], shapes_arrays(512, seed=4)["images"]


def test_shipped_weights_classify_fresh_scenes(classifier):
    scenes = shapes_arrays(64, seed=2)
    outputs = classifier.predict_on_batch(scenes["images"])
    assert to_numpy(outputs["pool3"]).shape == (64, 64)
    assert to_numpy(outputs["logits_unbiased"]).shape == (64, 90)
    accuracy = (to_numpy(outputs["logits_unbiased"]).argmax(axis=-1) == scenes["labels"]).mean()
    assert accuracy >= 0.95


def test_float_images_and_other_sizes(classifier):
    images = shapes_arrays(4, image_size=64, seed=5)["images"]
    from_uint8 = to_numpy(classifier(images)["pool3"])
    from_float = to_numpy(classifier(images.astype("float32"))["pool3"])
    np.testing.assert_allclose(from_float, from_uint8, rtol=1e-5, atol=1e-5)
    # Global pooling: any image size goes through (the weights were trained at 64x64).
    assert to_numpy(classifier(shapes_arrays(2, image_size=48, seed=5)["images"])["pool3"]).shape == (2, 64)


# Some ReLU features are zero on every scene: the covariances are singular, which the FID handles.
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_fid_separates_real_from_corrupted_scenes(classifier, real_sets):
    """Two real sets of 512 scenes are at a FID of about 170 (mostly the finite-sample bias over 90 modes);
    noise images are at about 70 times that, colour-inverted scenes 12 times, circles only 6.6 times."""
    first, second = real_sets

    def fid(generated):
        metric = FrechetInceptionDistance(feature_extractor=classifier)
        metric.update(first, real=True)
        metric.update(generated, real=False)
        return metric.result()

    rng = np.random.default_rng(0)
    scenes = shapes_arrays(2048, seed=6)  # a generator that dropped modes: circles only
    only_circles = scenes["images"][np.array(combinations())[scenes["labels"], 1] == "circle"][:512]
    assert len(only_circles) == 512
    real = fid(second)
    corrupted = {
        "noise": fid(rng.integers(0, 256, first.shape, dtype=np.uint8)),
        "inverted colours": fid(255 - second),
        "circles only": fid(only_circles),
    }
    for name, value in corrupted.items():
        assert value > 4 * real, (name, value, real)


def test_inception_score_of_real_scenes_is_near_the_number_of_labels(classifier, real_sets):
    score = InceptionScore(feature_extractor=classifier, splits=1)
    score.update(np.concatenate(real_sets))
    assert 60 < score.result()[0] <= 90


def test_config_round_trip():
    model = SceneClassifier(widths=(8, 8, 16, 16), feature_dim=16, name="small")
    config = json.loads(json.dumps(model.get_config()))
    assert SceneClassifier.from_config(config).get_config() == model.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert isinstance(restored, SceneClassifier) and restored.get_config() == model.get_config()


def test_random_weights(classifier):
    model = scene_classifier(weights=None)
    assert model.count_params() == classifier.count_params() == 74528
    assert not np.allclose(to_numpy(model.convs[0].kernel), to_numpy(classifier.convs[0].kernel))


def test_bad_arguments():
    with pytest.raises(TypeError, match="weights"):
        scene_classifier(weights=3)
    with pytest.raises(ValueError, match="weights"):
        scene_classifier(weights="/no/such/file.weights.h5")
    with pytest.raises(ValueError, match="widths"):
        SceneClassifier(widths=(16, 32))
    with pytest.raises(ValueError, match="images"):
        SceneClassifier()(np.zeros((2, 8, 8), "uint8"))
