"""A small CNN that classifies the procedural shapes scenes: the features of a meaningful FID on them.

The Inception features behind the usual FID were learnt on photographs and say little about the scenes of
`keras_ldm.data.shapes` (one filled circle, square or triangle in one of six colours on a plain background of
another colour). `SceneClassifier` is trained to tell the 90 `(color, shape, background)` combinations
apart (`keras_ldm.data.shapes.combinations()`, labels as `label_of`); its penultimate layer plays the part
of Inception's pool3. `scene_classifier()` loads the shipped weights, trained by
`scripts/train_scene_classifier.py` (the accuracy and the command are in that script's docstring).

Its output dict uses the Inception network's key names, so the feature metrics take it as it is:
`FrechetInceptionDistance(feature_extractor=scene_classifier())` (likewise KID, precision/recall and the
Inception Score). The features mean something only on such scenes, so these numbers compare models trained
on the shapes data with each other, never with the literature's Inception-based ones.

What the features see is the scene's content: on 512 + 512 scenes, two real sets are at a FID of about 170
(mostly the finite-sample bias of 64-dim statistics over 90 modes; about 40 with 2048 + 2048), scenes of
circles only at 6.6 times that, colour-inverted scenes at 12 times, noise images at 70 times. A classifier
trained on flawless renderings is nearly blind to blur or pixel noise that leaves the content readable (a
2x2 box blur or +-30 grey levels of noise move the FID by a few percent): measure that fidelity with PSNR,
SSIM or LPIPS.
"""

import contextlib
import os

import keras
from keras import ops

from keras_ldm.backend.fast_build import random_init_skipped

NUM_CLASSES = 90  # len(keras_ldm.data.shapes.combinations())
WEIGHTS_PATH = os.path.join(os.path.dirname(__file__), "assets", "shapes_scene_classifier.weights.h5")
IMAGE_SIZE = 64  # the shipped weights were trained on 64x64 scenes


@keras.saving.register_keras_serializable(package="keras_ldm")
class SceneClassifier(keras.Model):
    """Classifies the 90 shapes scenes: NHWC images in [0, 255] -> 64 features and 90 logits.

    Four 3x3 convolutions with ReLU (`widths` filters; strides 2, 2, 2, 1: a 64x64 image becomes 8x8),
    global average and global max pooling (concatenated, so the network sees any image size), a dense layer
    with ReLU (the `feature_dim` features, the "pool3" of the FID) and a dense classifier without bias.
    About 70k parameters.

    Args:
        num_classes: the number of scene labels (90: `keras_ldm.data.shapes.combinations()`).
        widths: the filters of the four convolutions.
        feature_dim: the size of the penultimate layer (the features of the FID, KID and precision/recall).

    Call: `model(images)` with NHWC images (uint8, or float in [0, 255]) returns `{"pool3": (N, feature_dim),
    "logits_unbiased": (N, num_classes), "logits": (N, num_classes)}` — the keys the FID/KID/precision-recall
    (`"pool3"`) and the Inception Score (`"logits_unbiased"`) read; the classifier has no bias, so the two
    logits are the same tensor.

    Example (random weights; `scene_classifier()` loads the trained ones):
    >>> model = SceneClassifier()
    >>> outputs = model(keras.ops.zeros((2, 64, 64, 3), dtype="uint8"))
    >>> [(name, tuple(outputs[name].shape)) for name in ("pool3", "logits_unbiased")]
    [('pool3', (2, 64)), ('logits_unbiased', (2, 90))]
    >>> model.count_params()
    74528
    """

    def __init__(self, num_classes=NUM_CLASSES, widths=(16, 32, 64, 64), feature_dim=64, **kwargs):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int; got {num_classes!r}.")
        widths = tuple(widths)
        if len(widths) != 4 or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f"`widths` must be four positive ints; got {widths!r}.")
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1:
            raise ValueError(f"`feature_dim` must be a positive int; got {feature_dim!r}.")
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.widths = widths
        self.feature_dim = feature_dim
        self.convs = [
            keras.layers.Conv2D(width, 3, strides=stride, padding="same", activation="relu", name=f"conv{i}")
            for i, (width, stride) in enumerate(zip(widths, (2, 2, 2, 1)), start=1)
        ]
        self.features = keras.layers.Dense(feature_dim, activation="relu", name="features")
        self.classifier = keras.layers.Dense(num_classes, use_bias=False, name="classifier")

    def build(self, input_shape=(None, None, None, 3)):
        channels = 3
        for conv in self.convs:
            conv.build((None, None, None, channels))
            channels = conv.filters
        self.features.build((None, 2 * channels))
        self.classifier.build((None, self.feature_dim))
        self.built = True

    def call(self, images):
        if len(images.shape) != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"`images` must be NHWC with 3 channels, values in [0, 255]; got shape {images.shape}."
            )
        x = ops.cast(images, "float32") / 127.5 - 1.0
        for conv in self.convs:
            x = conv(x)
        pooled = ops.concatenate([ops.mean(x, axis=(1, 2)), ops.max(x, axis=(1, 2))], axis=-1)
        features = self.features(pooled)
        logits = self.classifier(features)
        return {"pool3": features, "logits_unbiased": logits, "logits": logits}

    def compute_output_spec(self, images):
        batch = images.shape[0]
        return {
            "pool3": keras.KerasTensor((batch, self.feature_dim), dtype="float32"),
            "logits_unbiased": keras.KerasTensor((batch, self.num_classes), dtype="float32"),
            "logits": keras.KerasTensor((batch, self.num_classes), dtype="float32"),
        }

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, widths=list(self.widths), feature_dim=self.feature_dim)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def scene_classifier(weights="shipped"):
    """Builds `SceneClassifier` with the shipped weights (trained on 64x64 scenes), in inference use.

    Args:
        weights: `"shipped"` (the package's `metrics/assets/shapes_scene_classifier.weights.h5`, written by
            `scripts/train_scene_classifier.py`), a path to a `.weights.h5` file of the same architecture, or
            `None` (random initialization).

    Example (a rendered scene is classified as its label):
    >>> import numpy as np
    >>> from keras_ldm.data.shapes import label_of, render_shape
    >>> model = scene_classifier()
    >>> image = render_shape("red", "triangle", "blue", size=30, center=(30, 34), image_size=64)
    >>> logits = model.predict_on_batch(image[None])["logits_unbiased"]
    >>> int(np.argmax(logits)) == label_of("red", "triangle", "blue")
    True
    """
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"`weights` must be 'shipped', a path to a .weights.h5 file or None (random); got {weights!r}."
        )
    if weights == "shipped":
        weights = WEIGHTS_PATH
    if weights is not None and not os.path.isfile(weights):
        raise ValueError(
            f"`weights`={os.fspath(weights)!r} is not a file; expected 'shipped', a path to a .weights.h5 "
            "file or None (random weights)."
        )
    # With weights to load, skip the random initialization: every weight is assigned next.
    with contextlib.nullcontext() if weights is None else random_init_skipped():
        model = SceneClassifier(name="scene_classifier")
        model.build((None, IMAGE_SIZE, IMAGE_SIZE, 3))
    if weights is not None:
        model.load_weights(os.fspath(weights))
    return model
