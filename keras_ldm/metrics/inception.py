"""The FID Inception v3: the 2015 TensorFlow Inception network behind the FID, IS and KID of the literature.

It is the graph of `inception-2015-12-05.tgz` as ported to PyTorch by pytorch-fid (`FIDInceptionA/C/E_1/E_2`
in `pytorch_fid/inception.py`) and torch-fidelity (`FeatureExtractorInceptionV3`, the same weights). It
differs from `keras.applications.InceptionV3` in four places, all reproduced here:

- the average pooling branch of the A, C and first E blocks does not count the padding (TensorFlow's
  `SAME` average pooling, = Keras' `padding="same"` on every backend);
- the last E block (`Mixed_7c`) max-pools in that branch;
- the classifier has 1008 outputs (1000 ImageNet classes and 8 unused ones);
- BatchNorm uses epsilon 0.001 and there are no conv biases.

Two input conventions (`resize=`), both for NHWC images in [0, 255] of any size:

- `"tensorflow1"` (default; torch-fidelity, whose FID/KID/IS/PRC match the TensorFlow originals): TF1
  `resize_bilinear(align_corners=False)` to 299x299 (source pixel `i * in / out`, no half-pixel offset, as
  torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x`), then `(x - 128) / 128`;
- `"pytorch"` (pytorch-fid): `x / 255`, PyTorch's `interpolate(mode="bilinear", align_corners=False)` to
  299x299 (half-pixel centers, no antialias), then `2x - 1`.

Both resizes are the identity on 299x299 images, which are therefore used as they are. The resizes are
gathers and arithmetic in `keras.ops`, with the references' roundings: equal to them within 1e-6.
"""

import contextlib
import os

import keras
import numpy as np
from keras import ops

from keras_ldm.backend.fast_build import random_init_skipped

# pytorch-fid's release of the converted TensorFlow weights (torch-fidelity's file: the same state dict).
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
RESIZES = ("tensorflow1", "pytorch")
INPUT_SIZE = 299
NUM_CLASSES = 1008
# Our output names and torch-fidelity's feature names.
TORCH_FIDELITY_FEATURES = {"pool3": "2048", "logits_unbiased": "logits_unbiased", "logits": "logits"}


class _NumpyHeNormal(keras.initializers.VarianceScaling):
    """He-normal values drawn with numpy (seeded by `keras.utils.set_random_seed`): no backend program
    per kernel shape (on JAX each would compile), and a random start `random_init_skipped` recognizes."""

    def __init__(self):
        super().__init__(scale=2.0, mode="fan_in", distribution="untruncated_normal")

    def __call__(self, shape, dtype=None):
        rng = np.random.default_rng(np.random.randint(2**31))
        std = np.sqrt(2.0 / max(1, int(np.prod(shape[:-1]))))
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(dtype or "float32")


class _NumpyConstant(keras.initializers.Constant):
    """A constant made with numpy (no backend program per shape)."""

    def __call__(self, shape, dtype=None):
        return np.full(shape, self.value, dtype=dtype or "float32")


class _ConvBN(keras.layers.Layer):
    """torch-fidelity's `BasicConv2d`: a conv without bias, BatchNorm (epsilon 0.001) and ReLU."""

    def __init__(self, filters, kernel_size, strides=1, padding="same", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=False,
            kernel_initializer=_NumpyHeNormal(),
            name="conv",
        )
        zeros, ones = _NumpyConstant(0.0), _NumpyConstant(1.0)
        self.bn = keras.layers.BatchNormalization(
            epsilon=1e-3,
            beta_initializer=zeros,
            gamma_initializer=ones,
            moving_mean_initializer=zeros,
            moving_variance_initializer=ones,
            name="bn",
        )

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build((*input_shape[:-1], self.filters))

    def call(self, x):
        return ops.relu(self.bn(self.conv(x), training=False))


class _InceptionBlock(keras.layers.Layer):
    """A mixed block: `branches` are sequences of `_ConvBN` names (applied in order, their outputs
    concatenated along channels); `pool` is the pooling branch, `("avg" | "max", stride, conv or None)`."""

    def __init__(self, convs, branches, pool, **kwargs):
        super().__init__(**kwargs)
        # {torch attribute name: layer}, in the order the torch block defines them.
        self.convs = {name: _ConvBN(*spec, name=name) for name, spec in convs.items()}
        self.branches = branches
        self.pool = pool

    def build(self, input_shape):
        channels = {None: input_shape[-1]}
        for branch in self.branches:
            for parents, name in _with_parents(branch):
                self.convs[name].build((None, None, None, channels[parents]))
                channels[name] = self.convs[name].filters
        if self.pool[2] is not None:
            self.convs[self.pool[2]].build(input_shape)

    def output_channels(self, in_channels):
        total = 0
        for branch in self.branches:
            last = branch[-1] if isinstance(branch[-1], tuple) else (branch[-1],)
            total += sum(self.convs[name].filters for name in last)
        return total + (self.convs[self.pool[2]].filters if self.pool[2] else in_channels)

    def call(self, x):
        outputs = []
        for branch in self.branches:
            y = x
            for step in branch:
                if isinstance(step, tuple):  # E blocks: two convs side by side, concatenated
                    y = ops.concatenate([self.convs[name](y) for name in step], axis=-1)
                else:
                    y = self.convs[step](y)
            outputs.append(y)
        kind, strides, pool_conv = self.pool
        padding = "same" if strides == 1 else "valid"
        pool = ops.average_pool if kind == "avg" else ops.max_pool
        y = pool(x, 3, strides=strides, padding=padding)
        outputs.append(self.convs[pool_conv](y) if pool_conv else y)
        return ops.concatenate(outputs, axis=-1)


def _with_parents(branch):
    """`(input name, conv name)` pairs along a branch; side-by-side pairs both read the previous conv."""
    parent = None
    for step in branch:
        for name in step if isinstance(step, tuple) else (step,):
            yield parent, name
        parent = step[0] if isinstance(step, tuple) else step


def _inception_a(pool_features, name):
    convs = {
        "branch1x1": (64, 1),
        "branch5x5_1": (48, 1),
        "branch5x5_2": (64, 5),
        "branch3x3dbl_1": (64, 1),
        "branch3x3dbl_2": (96, 3),
        "branch3x3dbl_3": (96, 3),
        "branch_pool": (pool_features, 1),
    }
    branches = [
        ["branch1x1"],
        ["branch5x5_1", "branch5x5_2"],
        ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
    ]
    return _InceptionBlock(convs, branches, ("avg", 1, "branch_pool"), name=name)


def _inception_b(name):
    convs = {
        "branch3x3": (384, 3, 2, "valid"),
        "branch3x3dbl_1": (64, 1),
        "branch3x3dbl_2": (96, 3),
        "branch3x3dbl_3": (96, 3, 2, "valid"),
    }
    branches = [["branch3x3"], ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]]
    return _InceptionBlock(convs, branches, ("max", 2, None), name=name)


def _inception_c(c7, name):
    convs = {
        "branch1x1": (192, 1),
        "branch7x7_1": (c7, 1),
        "branch7x7_2": (c7, (1, 7)),
        "branch7x7_3": (192, (7, 1)),
        "branch7x7dbl_1": (c7, 1),
        "branch7x7dbl_2": (c7, (7, 1)),
        "branch7x7dbl_3": (c7, (1, 7)),
        "branch7x7dbl_4": (c7, (7, 1)),
        "branch7x7dbl_5": (192, (1, 7)),
        "branch_pool": (192, 1),
    }
    branches = [
        ["branch1x1"],
        [f"branch7x7_{i}" for i in (1, 2, 3)],
        [f"branch7x7dbl_{i}" for i in (1, 2, 3, 4, 5)],
    ]
    return _InceptionBlock(convs, branches, ("avg", 1, "branch_pool"), name=name)


def _inception_d(name):
    convs = {
        "branch3x3_1": (192, 1),
        "branch3x3_2": (320, 3, 2, "valid"),
        "branch7x7x3_1": (192, 1),
        "branch7x7x3_2": (192, (1, 7)),
        "branch7x7x3_3": (192, (7, 1)),
        "branch7x7x3_4": (192, 3, 2, "valid"),
    }
    branches = [["branch3x3_1", "branch3x3_2"], [f"branch7x7x3_{i}" for i in (1, 2, 3, 4)]]
    return _InceptionBlock(convs, branches, ("max", 2, None), name=name)


def _inception_e(pool, name):
    convs = {
        "branch1x1": (320, 1),
        "branch3x3_1": (384, 1),
        "branch3x3_2a": (384, (1, 3)),
        "branch3x3_2b": (384, (3, 1)),
        "branch3x3dbl_1": (448, 1),
        "branch3x3dbl_2": (384, 3),
        "branch3x3dbl_3a": (384, (1, 3)),
        "branch3x3dbl_3b": (384, (3, 1)),
        "branch_pool": (192, 1),
    }
    branches = [
        ["branch1x1"],
        ["branch3x3_1", ("branch3x3_2a", "branch3x3_2b")],
        ["branch3x3dbl_1", "branch3x3dbl_2", ("branch3x3dbl_3a", "branch3x3dbl_3b")],
    ]
    return _InceptionBlock(convs, branches, (pool, 1, "branch_pool"), name=name)


def _check_resize(resize, allowed=RESIZES):
    if resize not in allowed:
        raise ValueError(f"resize={resize!r}; expected one of {allowed}.")


@keras.saving.register_keras_serializable(package="keras_ldm")
class FIDInceptionV3(keras.Model):
    """The FID Inception v3 (TensorFlow's 2015 graph): images in [0, 255] -> pool3 features and logits.

    Layer names follow the PyTorch ports (`Conv2d_1a_3x3`, `Mixed_5b.branch1x1.conv`, ..., `fc`), so the
    converted weights of pytorch-fid and torch-fidelity map one to one (`fid_inception_v3` loads them).
    The network runs in inference mode (BatchNorm on its moving statistics) and is frozen by default.

    Args:
        resize: how images become the network's 299x299 input: `"tensorflow1"` (torch-fidelity: TF1
            bilinear resize, then `(x - 128) / 128`) or `"pytorch"` (pytorch-fid: `x / 255`, PyTorch's
            half-pixel bilinear resize, then `2x - 1`). Images of 299x299 are used as they are.
        trainable: whether the weights are trainable (default False: a metric network).

    Call: `model(images)` with NHWC images (uint8, or float in [0, 255]) of any size returns
    `{"pool3": (N, 2048), "logits_unbiased": (N, 1008), "logits": (N, 1008)}` — torch-fidelity's features
    `"2048"` (FID, KID, PRC), `"logits_unbiased"` (IS) and `"logits"`.

    Example (random weights, `fid_inception_v3()` loads the real ones; a `keras.KerasTensor` input traces
    the shapes through every layer without computing, `model(uint8_images)` computes):
    >>> model = FIDInceptionV3()
    >>> features = model(keras.KerasTensor((1, 32, 32, 3), dtype="uint8"))
    >>> [(name, features[name].shape) for name in ("pool3", "logits_unbiased", "logits")]
    [('pool3', (1, 2048)), ('logits_unbiased', (1, 1008)), ('logits', (1, 1008))]
    """

    def __init__(self, resize="tensorflow1", trainable=False, **kwargs):
        _check_resize(resize)
        super().__init__(trainable=trainable, **kwargs)
        self.resize = resize
        self.stages = [
            _ConvBN(32, 3, 2, "valid", name="Conv2d_1a_3x3"),
            _ConvBN(32, 3, 1, "valid", name="Conv2d_2a_3x3"),
            _ConvBN(64, 3, 1, "same", name="Conv2d_2b_3x3"),
            keras.layers.MaxPooling2D(3, 2, name="MaxPool_1"),
            _ConvBN(80, 1, name="Conv2d_3b_1x1"),
            _ConvBN(192, 3, 1, "valid", name="Conv2d_4a_3x3"),
            keras.layers.MaxPooling2D(3, 2, name="MaxPool_2"),
            _inception_a(32, "Mixed_5b"),
            _inception_a(64, "Mixed_5c"),
            _inception_a(64, "Mixed_5d"),
            _inception_b("Mixed_6a"),
            _inception_c(128, "Mixed_6b"),
            _inception_c(160, "Mixed_6c"),
            _inception_c(160, "Mixed_6d"),
            _inception_c(192, "Mixed_6e"),
            _inception_d("Mixed_7a"),
            _inception_e("avg", "Mixed_7b"),
            _inception_e("max", "Mixed_7c"),
        ]
        self.fc = keras.layers.Dense(
            NUM_CLASSES, kernel_initializer=_NumpyHeNormal(), bias_initializer=_NumpyConstant(0.0), name="fc"
        )

    def build(self, input_shape=(None, None, None, 3)):
        channels = 3
        for stage in self.stages:
            if isinstance(stage, keras.layers.MaxPooling2D):
                continue
            stage.build((None, None, None, channels))
            is_block = isinstance(stage, _InceptionBlock)
            channels = stage.output_channels(channels) if is_block else stage.filters
        self.fc.build((None, channels))
        self.trainable = (
            self.trainable
        )  # the sublayers' new variables follow (no autograd on torch if frozen)
        self.built = True

    def preprocess(self, images):
        """NHWC images in [0, 255] -> the network's 299x299 input in [-1, 1], per `resize`."""
        if len(images.shape) != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"images must be NHWC with 3 channels, values in [0, 255]; got shape {images.shape}."
            )
        x = ops.cast(images, "float32")
        if self.resize == "pytorch":
            x = x / 255.0
        if tuple(x.shape[1:3]) != (INPUT_SIZE, INPUT_SIZE):
            coordinates = _tf1_coordinates if self.resize == "tensorflow1" else _half_pixel_coordinates
            x = _resize_bilinear(x, coordinates)
        if self.resize == "pytorch":
            return 2.0 * x - 1.0
        return (x - 128.0) / 128.0

    def call(self, images):
        x = self.preprocess(images)
        for stage in self.stages:
            x = stage(x)
        pool3 = ops.mean(x, axis=(1, 2))
        logits_unbiased = ops.matmul(pool3, self.fc.kernel)
        return {"pool3": pool3, "logits_unbiased": logits_unbiased, "logits": logits_unbiased + self.fc.bias}

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "resize": self.resize}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _tf1_coordinates(in_size, out_size):
    """TF1 `resize_bilinear(align_corners=False)`, as torch-fidelity's `interpolate_bilinear_2d_like_
    tensorflow1x`: source `i * (in / out)` in float32, neighbours `floor` and `floor + 1` (clamped)."""
    if isinstance(in_size, int):  # static shape: numpy float32, the same roundings as the reference
        source = np.arange(out_size, dtype=np.float32) * np.float32(in_size / out_size)
        low = source.astype(np.int32)
        return low, np.minimum(low + 1, in_size - 1), source - low.astype(np.float32)
    source = ops.arange(out_size, dtype="float32") * (ops.cast(in_size, "float32") / out_size)
    low = ops.cast(source, "int32")
    return low, ops.minimum(low + 1, in_size - 1), source - ops.cast(low, "float32")


def _half_pixel_coordinates(in_size, out_size):
    """PyTorch `interpolate(mode="bilinear", align_corners=False)` without antialias: source
    `(i + 0.5) * (in / out) - 0.5` clamped at 0; PyTorch's CPU kernel rounds it once (a fused multiply-add
    on the float32 scale), reproduced in float64 when the shape is static."""
    if isinstance(in_size, int):
        scale = np.float64(np.float32(in_size) / np.float32(out_size))
        source = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0).astype(np.float32)
        low = np.minimum(source.astype(np.int32), in_size - 1)
        return low, np.minimum(low + 1, in_size - 1), np.clip(source - low.astype(np.float32), 0.0, 1.0)
    scale = ops.cast(in_size, "float32") / out_size
    source = ops.maximum((ops.arange(out_size, dtype="float32") + 0.5) * scale - 0.5, 0.0)
    low = ops.minimum(ops.cast(source, "int32"), in_size - 1)
    return low, ops.minimum(low + 1, in_size - 1), ops.clip(source - ops.cast(low, "float32"), 0.0, 1.0)


def _resize_bilinear(x, coordinates):
    """Bilinear resize of NHWC `x` to 299x299: along the width, then along the height, each as
    `a + (b - a) * t` (torch-fidelity's order of operations)."""
    dynamic_shape = ops.shape(x)
    for axis in (2, 1):
        size = x.shape[axis] if x.shape[axis] is not None else dynamic_shape[axis]
        low, high, t = coordinates(size, INPUT_SIZE)
        a, b = ops.take(x, low, axis=axis), ops.take(x, high, axis=axis)
        t = ops.reshape(t, (1, 1, INPUT_SIZE, 1) if axis == 2 else (1, INPUT_SIZE, 1, 1))
        x = a + (b - a) * t
    return x


def weight_entries(model):
    """`(keras variable, torch key, layout)` for every weight, in the PyTorch ports' key layout."""
    from keras_ldm.convert.tensors import conv, dense  # imported here: convert/ sits above metrics/

    def conv_bn(layer, key):
        yield from conv(layer.conv, f"{key}.conv")
        yield layer.bn.gamma, f"{key}.bn.weight", "vector"
        yield layer.bn.beta, f"{key}.bn.bias", "vector"
        yield layer.bn.moving_mean, f"{key}.bn.running_mean", "vector"
        yield layer.bn.moving_variance, f"{key}.bn.running_var", "vector"

    for stage in model.stages:
        if isinstance(stage, _ConvBN):
            yield from conv_bn(stage, stage.name)
        elif isinstance(stage, _InceptionBlock):
            for name, layer in stage.convs.items():
                yield from conv_bn(layer, f"{stage.name}.{name}")
    yield from dense(model.fc, "fc")


def load_torch_weights(model, path):
    """Loads a `.pth` state dict of pytorch-fid (`pt_inception-2015-12-05-6726825d.pth`) or torch-fidelity
    (`weights-inception-2015-12-05-6726825d.pth`; the same keys) into a built `FIDInceptionV3`."""
    from keras_ldm.backend.torch_checkpoint import read_torch_state_dict
    from keras_ldm.convert.tensors import assign_weights, to_keras_layout

    tensors = {k: v for k, v in read_torch_state_dict(path).items() if not k.endswith(".num_batches_tracked")}
    entries = list(weight_entries(model))
    expected = {key: tuple(variable.shape) for variable, key, _ in entries}
    missing = [key for key in expected if key not in tensors]
    unexpected = sorted(key for key in tensors if key not in expected)
    misshapen = [
        f"{key} {tuple(to_keras_layout(tensors[key], layout).shape)} (expected {tuple(variable.shape)})"
        for variable, key, layout in entries
        if key in tensors and to_keras_layout(tensors[key], layout).shape != tuple(variable.shape)
    ]
    if missing or unexpected or misshapen:
        problems = [
            missing and f"{len(missing)} of its {len(expected)} tensors are missing, e.g. {missing[:5]}",
            unexpected and f"{len(unexpected)} keys are unexpected, e.g. {unexpected[:5]}",
            misshapen and f"{len(misshapen)} have the wrong shape (Keras layout), e.g. {misshapen[:3]}",
        ]
        raise ValueError(
            f"{path} is not a state dict of the FID Inception v3 (pytorch-fid's {FID_WEIGHTS_NAME} or "
            f"torch-fidelity's copy): " + "; ".join(p for p in problems if p) + "."
        )
    assign_weights(entries, tensors, source=f"{path} (FID Inception v3 weights)")
    return model


def fid_inception_v3(weights=None, resize="tensorflow1"):
    """Builds `FIDInceptionV3` and loads the converted TensorFlow 2015 weights.

    Args:
        weights: `None` (download pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` once with
            `keras.utils.get_file`, 91 MB), a local path to that file or to torch-fidelity's
            `weights-inception-2015-12-05-6726825d.pth` (same state dict), or `False` (random weights,
            for tests). Reading a `.pth` needs PyTorch installed (on any Keras backend).
        resize: the input convention, `"tensorflow1"` (torch-fidelity) or `"pytorch"` (pytorch-fid);
            see `FIDInceptionV3`. `"clean"` (clean-fid): images are resized on the host with Pillow's
            antialiased bicubic filter, per channel in float (`clean_resize`), then read as 299x299 by the
            `"tensorflow1"` network; the result is then a `CleanResized` callable, not a Keras model.

    Example (random weights, no download):
    >>> model = fid_inception_v3(weights=False, resize="pytorch")
    >>> model.get_config()["resize"], model.count_params()
    ('pytorch', 23885392)
    """
    if resize == "clean":
        return CleanResized(fid_inception_v3(weights, resize="tensorflow1"))
    _check_resize(resize, RESIZES + ("clean",))
    if weights is not None and weights is not False and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"weights={weights!r}; expected None (download), a local .pth path or False (random weights)."
        )
    if isinstance(weights, (str, os.PathLike)) and not os.path.isfile(weights):
        raise ValueError(
            f"weights={os.fspath(weights)!r} is not a file; expected a local path to pytorch-fid's "
            f"{FID_WEIGHTS_NAME} (or torch-fidelity's copy), None to download it, or False (random)."
        )
    # With weights to load, skip the random initialization: every weight is assigned next.
    with contextlib.nullcontext() if weights is False else random_init_skipped():
        model = FIDInceptionV3(resize=resize)
        model.build((None, INPUT_SIZE, INPUT_SIZE, 3))
    if weights is False:
        return model
    if weights is None:
        weights = keras.utils.get_file(FID_WEIGHTS_NAME, origin=FID_WEIGHTS_URL)
    return load_torch_weights(model, os.fspath(weights))


def clean_resize(images, size=INPUT_SIZE):
    """clean-fid's resize: each channel as a float32 Pillow image, bicubic (antialiased) to `size`, clipped
    to [0, 255]. NHWC numpy in, float32 NHWC out.

    Example:
    >>> clean_resize(np.full((1, 8, 6, 3), 200, "uint8"), size=4)[0, :, :, 0].tolist()[0]
    [200.0, 200.0, 200.0, 200.0]
    """
    from PIL import Image

    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"`images` must be NHWC; got shape {images.shape}.")
    out = np.empty((len(images), size, size, images.shape[-1]), np.float32)
    for index, image in enumerate(images):
        for channel in range(images.shape[-1]):
            resized = Image.fromarray(image[..., channel], mode="F").resize((size, size), Image.BICUBIC)
            out[index, ..., channel] = np.clip(np.asarray(resized), 0, 255)
    return out


class CleanResized:
    """An FID Inception network behind clean-fid's host-side resize (`clean_resize`): images -> features.

    Args:
        network: an `FIDInceptionV3` with `resize="tensorflow1"` (it reads 299x299 input as is).
    """

    def __init__(self, network):
        self.network = network

    def __call__(self, images):
        return self.network.predict_on_batch(clean_resize(images))
