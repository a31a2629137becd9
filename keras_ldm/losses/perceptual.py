"""LPIPS-style perceptual distance over VGG16 features (Zhang et al., 2018), as in CompVis' `LPIPS`.

`d(x0, x1) = sum_l mean_hw( w_l . (n(f_l(x0)) - n(f_l(x1)))^2 )`, where `f_l` are the five VGG16
feature maps LPIPS uses, `n` unit-normalises every feature vector over the channel axis and `w_l` are
non-negative linear heads (a 1x1 conv to one channel).
"""

import keras
import numpy as np
from keras import ops

# The VGG16 layers LPIPS reads (`relu1_2`, `relu2_2`, `relu3_3`, `relu4_3`, `relu5_3`).
LPIPS_VGG16_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
# LPIPS' `ScalingLayer`: torchvision's ImageNet mean/std expressed for inputs in [-1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# Keras' VGG16 ImageNet weights are the original Caffe ones: BGR, [0, 255], mean-subtracted.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
PREPROCESSINGS = ("lpips", "caffe")


def normalize_channels(features, epsilon=1e-10):
    """Unit-normalises every feature vector over the last axis (LPIPS `normalize_tensor`)."""
    norm = ops.sqrt(ops.sum(ops.square(features), axis=-1, keepdims=True))
    return features / (norm + epsilon)


@keras.saving.register_keras_serializable(package="keras_ldm")
class LPIPS(keras.layers.Layer):
    """Perceptual distance between two image batches in [-1, 1]: `lpips(x0, x1)` -> `(B,)`.

    The feature extractor is `keras.applications.VGG16(include_top=False, weights=weights)` cut at
    `block5_conv3`. The linear heads start at one (LPIPS' un-learned "baseline" variant, the channel
    sum); `set_linear_weights` loads the learned LPIPS heads (`lin0..lin4` of the official `vgg.pth`).
    The layer is frozen (`trainable=False`) by default: a training loss, not a trained model.

    Args:
        weights: VGG16 weights: `"imagenet"` (Keras' download, cached in `~/.keras/models`), `None`
            (random, for tests) or a path to a weights file.
        preprocessing: `"caffe"` (BGR, [0, 255], mean-subtracted: what Keras' ImageNet VGG16 was
            trained with) or `"lpips"` (LPIPS' shift/scale, for torchvision-trained VGG weights).
            Default: `"caffe"` with `weights="imagenet"`, else `"lpips"`.
        backbone: optional Keras model to use instead of VGG16 (channels-last images in, any layers
            named in `layer_names`); `weights` is then ignored.
        layer_names: the backbone layers whose outputs are compared.

    Example:
    >>> lpips = LPIPS(weights=None)
    >>> x = keras.random.uniform((2, 16, 16, 3), minval=-1.0, maxval=1.0, seed=0)
    >>> tuple(lpips(x, x).shape), float(keras.ops.max(lpips(x, x)))
    ((2,), 0.0)
    """

    def __init__(
        self,
        weights="imagenet",
        preprocessing=None,
        backbone=None,
        layer_names=LPIPS_VGG16_LAYERS,
        trainable=False,
        **kwargs,
    ):
        super().__init__(trainable=trainable, **kwargs)
        if preprocessing is None:
            preprocessing = "caffe" if weights == "imagenet" and backbone is None else "lpips"
        if preprocessing not in PREPROCESSINGS:
            raise ValueError(f"preprocessing={preprocessing!r}; expected one of {PREPROCESSINGS}.")
        self.weights_source = weights if backbone is None else None
        self.preprocessing = preprocessing
        self.layer_names = tuple(layer_names)
        self.backbone_config = None if backbone is None else keras.saving.serialize_keras_object(backbone)
        if backbone is None:
            backbone = keras.applications.VGG16(
                include_top=False, weights=weights, input_shape=(None, None, 3)
            )
        missing = [n for n in self.layer_names if n not in {layer.name for layer in backbone.layers}]
        if missing:
            raise ValueError(f"layer_names {missing} are not layers of the backbone {backbone.name!r}.")
        self.features = keras.Model(
            backbone.inputs,
            [backbone.get_layer(n).output for n in self.layer_names],
            name="features",
        )
        self.channels = [int(backbone.get_layer(n).output.shape[-1]) for n in self.layer_names]
        self.linear = [
            self.add_weight(
                shape=(c,),
                initializer="ones",
                constraint=keras.constraints.NonNeg(),
                name=f"lin{i}",
            )
            for i, c in enumerate(self.channels)
        ]
        self.trainable = trainable  # propagates to the backbone and the heads
        self.build()

    def build(self, x0_shape=None, x1_shape=None):
        self.built = True

    def preprocess(self, images):
        """Images in [-1, 1] -> the backbone's input scaling."""
        images = ops.cast(images, "float32")
        if self.preprocessing == "lpips":
            shift = ops.convert_to_tensor(np.array(LPIPS_SHIFT, "float32"))
            scale = ops.convert_to_tensor(np.array(LPIPS_SCALE, "float32"))
            return (images - shift) / scale
        bgr = ops.flip((images + 1.0) * 127.5, axis=-1)
        return bgr - ops.convert_to_tensor(np.array(CAFFE_BGR_MEAN, "float32"))

    def call(self, x0, x1):
        batch = ops.shape(x0)[0]
        features = self.features(self.preprocess(ops.concatenate([x0, x1], axis=0)))
        distance = 0.0
        for feature, weight in zip(features, self.linear):
            normalized = normalize_channels(ops.cast(feature, "float32"))
            squared = ops.square(normalized[:batch] - normalized[batch:])
            per_pixel = ops.tensordot(squared, ops.cast(weight, "float32"), axes=[[3], [0]])
            distance = distance + ops.mean(per_pixel, axis=(1, 2))
        return distance

    def set_linear_weights(self, weights):
        """Loads LPIPS' learned heads: five arrays of `C_l` values (any shape, e.g. `(1, C, 1, 1)`)."""
        if len(weights) != len(self.linear):
            raise ValueError(f"`weights` has {len(weights)} arrays; expected {len(self.linear)}.")
        for variable, value in zip(self.linear, weights):
            value = np.asarray(value, "float32").reshape(-1)
            if value.shape != tuple(variable.shape):
                raise ValueError(
                    f"`weights` entry for {variable.name} has {value.size} values; expected {variable.shape[0]}."
                )
            variable.assign(value)

    def compute_output_shape(self, x0_shape, x1_shape=None):
        return (x0_shape[0],)

    def get_config(self):
        return {
            **super().get_config(),
            "weights": self.weights_source,
            "preprocessing": self.preprocessing,
            "backbone": self.backbone_config,
            "layer_names": list(self.layer_names),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("backbone") is not None:
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
