"""LPIPS equals the `lpips` package (v0.1, VGG16) with its linear heads and the same random backbone."""

import numpy as np
import pytest

from keras_ldm.metrics.lpips import lpips_distance, lpips_vgg
from tests.metrics.reference_tools import reference_tools

VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def torchvision_vgg16_features(seed=0):
    """torchvision's `vgg16().features` layout (cfg "D"), randomly initialised."""
    import torch

    torch.manual_seed(seed)
    layers, channels = [], 3
    for item in VGG16_LAYERS:
        if item == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            conv = torch.nn.Conv2d(channels, item, 3, padding=1)
            torch.nn.init.normal_(conv.weight, std=(2.0 / (9 * channels)) ** 0.5)
            torch.nn.init.uniform_(conv.bias, -0.1, 0.1)
            layers += [conv, torch.nn.ReLU(inplace=True)]
            channels = item
    return torch.nn.Sequential(*layers)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    import torch

    features = torchvision_vgg16_features()
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return features, path


def reference_lpips(features):
    """`lpips.LPIPS(net="vgg")` with its v0.1 heads, its VGG16 trunk replaced by `features`."""
    reference_tools()  # torchvision placeholders
    import types

    import lpips.pretrained_networks as networks
    from lpips.lpips import LPIPS

    networks.tv.vgg16 = lambda pretrained=False, **kwargs: types.SimpleNamespace(features=features)
    return LPIPS(pretrained=True, net="vgg", version="0.1", verbose=False).eval()


def test_lpips_equals_the_lpips_package(backbone):
    import torch

    features, path = backbone
    rng = np.random.default_rng(0)
    x0 = rng.integers(0, 256, (2, 48, 40, 3), dtype="uint8")
    x1 = np.clip(x0.astype(int) + rng.integers(-40, 40, x0.shape), 0, 255).astype("uint8")
    ours = lpips_distance(lpips_vgg(backbone_weights=path), x0, x1, batch_size=1)

    def to_torch(x):
        return torch.from_numpy(x.transpose(0, 3, 1, 2).astype("float32") / 127.5 - 1.0)

    with torch.no_grad():
        expected = reference_lpips(features)(to_torch(x0), to_torch(x1)).numpy().reshape(-1)
    assert ours.shape == (2,) and np.all(expected > 0)
    np.testing.assert_allclose(ours, expected, rtol=1e-4)


def test_backbone_weights_of_another_network_are_named(tmp_path):
    import torch

    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match=r"other\.pth.*not a torchvision VGG16.*features\.0\.weight"):
        lpips_vgg(backbone_weights=path)


def test_mismatched_image_batches_are_rejected():
    metric = lpips_vgg(backbone_weights=False)
    with pytest.raises(ValueError, match="one shape"):
        lpips_distance(metric, np.zeros((2, 8, 8, 3)), np.zeros((1, 8, 8, 3)))
