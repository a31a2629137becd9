"""LPIPS as the metric the field reports (Zhang et al. 2018, the `lpips` package's v0.1 VGG16 variant).

The network is `keras_ldm.losses.LPIPS` (VGG16 features, unit-normalised, learned non-negative linear heads)
with the `lpips` package's two sets of weights:
- the linear heads, shipped here (`assets/lpips_vgg_v0.1.npz`, copied from the package's `weights/v0.1/vgg.pth`
  by `scripts/extract_lpips_heads.py`);
- the backbone: torchvision's ImageNet VGG16 (`vgg16-397923af.pth`), which `lpips` loads. Keras' own ImageNet
  VGG16 is the original Caffe model (BGR, other weights) and gives other distances, so the torchvision file is
  read here: from a local path, or downloaded once into `~/.keras/models` when online.

Images are NHWC uint8 (or floats in [0, 255]), as `generate()` returns them; `lpips_distance` gives one value
per pair, like `lpips.LPIPS(net="vgg")(x0, x1)` on the same images scaled to [-1, 1].

Example (random backbone weights, for the shapes):
>>> metric = lpips_vgg(backbone_weights=False)
>>> a = np.zeros((2, 32, 32, 3), "uint8")
>>> lpips_distance(metric, a, a).tolist()
[0.0, 0.0]
"""

import os

import keras
import numpy as np

from keras_ldm.losses.perceptual import LPIPS

HEADS_PATH = os.path.join(os.path.dirname(__file__), "assets", "lpips_vgg_v0.1.npz")
TORCHVISION_VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# torchvision's `vgg16().features` indices of the 13 convolutions, in the order of Keras' VGG16 layers.
_TORCHVISION_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_KERAS_CONVS = (
    "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2", "block3_conv1", "block3_conv2",
    "block3_conv3", "block4_conv1", "block4_conv2", "block4_conv3", "block5_conv1", "block5_conv2",
    "block5_conv3",
)  # fmt: skip


def lpips_vgg(backbone_weights=None):
    """`keras_ldm.losses.LPIPS` with the `lpips` package's v0.1 VGG16 heads and torchvision's VGG16 backbone.

    Args:
        backbone_weights: a local torchvision VGG16 state dict (`vgg16-397923af.pth`, or any `.pth` with its
            `features.{i}.weight/bias` keys); None downloads it (528 MB, once); False keeps random
            weights (tests, shapes).
    """
    metric = LPIPS(weights=None, preprocessing="lpips")
    with np.load(HEADS_PATH) as heads:
        metric.set_linear_weights([heads[f"lin{i}"] for i in range(5)])
    if backbone_weights is False:
        return metric
    if backbone_weights is None:
        backbone_weights = keras.utils.get_file(origin=TORCHVISION_VGG16_URL)
    load_torchvision_vgg16(metric.features, backbone_weights)
    return metric


def load_torchvision_vgg16(features, path):
    """Assigns a torchvision VGG16 state dict (OIHW convolutions) to Keras' VGG16 layers in `features`."""
    from keras_ldm.backend.torch_checkpoint import read_torch_state_dict

    state = read_torch_state_dict(path)
    wanted = [f"features.{i}.{part}" for i in _TORCHVISION_CONVS for part in ("weight", "bias")]
    missing = [key for key in wanted if key not in state]
    if missing:
        raise ValueError(
            f"backbone_weights {os.fspath(path)!r} is not a torchvision VGG16 state dict: missing "
            f"{missing[:4]}{' ...' if len(missing) > 4 else ''} (found e.g. {sorted(state)[:4]})."
        )
    for index, name in zip(_TORCHVISION_CONVS, _KERAS_CONVS):
        layer = features.get_layer(name)
        kernel = np.transpose(np.asarray(state[f"features.{index}.weight"]), (2, 3, 1, 0))
        bias = np.asarray(state[f"features.{index}.bias"])
        if kernel.shape != tuple(layer.kernel.shape) or bias.shape != tuple(layer.bias.shape):
            raise ValueError(
                f"backbone_weights {os.fspath(path)!r}: features.{index} has shape {kernel.shape[::-1]}; "
                f"VGG16's {name} needs {tuple(layer.kernel.shape)[::-1]} (O, I, H, W)."
            )
        layer.kernel.assign(kernel.astype("float32"))
        layer.bias.assign(bias.astype("float32"))


def lpips_distance(metric, images0, images1, batch_size=16):
    """LPIPS of each pair of uint8 NHWC images (`(N,)` float64), in batches of `batch_size`."""
    images0, images1 = np.asarray(images0), np.asarray(images1)
    if images0.shape != images1.shape or images0.ndim != 4:
        raise ValueError(
            "`images0` and `images1` must be NHWC batches of one shape; got "
            f"{images0.shape} and {images1.shape}."
        )
    distances = []
    for start in range(0, len(images0), batch_size):
        x0 = images0[start : start + batch_size].astype("float32") / 127.5 - 1.0
        x1 = images1[start : start + batch_size].astype("float32") / 127.5 - 1.0
        distances.append(keras.ops.convert_to_numpy(metric(x0, x1)).astype("float64"))
    return np.concatenate(distances)
