"""FIDInceptionV3 against torch-fidelity's FeatureExtractorInceptionV3 (= pytorch-fid's FID Inception), with
random weights saved as a `.pth` in the releases' key layout."""

import json
import sys
from unittest import mock

import keras
import numpy as np
import pytest

from keras_ldm.metrics.inception import (
    RESIZES,
    TORCH_FIDELITY_FEATURES,
    FIDInceptionV3,
    fid_inception_v3,
)
from tests.conftest import nchw_to_nhwc, nhwc_to_nchw, to_numpy

torch = pytest.importorskip("torch")

FEATURES = list(TORCH_FIDELITY_FEATURES.values())  # "2048", "logits_unbiased", "logits"


def random_feature_extractor(FE):
    """torch-fidelity's network with random weights (no download): He-normal convs, BatchNorm with random
    affine parameters and running statistics (running_var in [0.5, 1.5]), a random classifier."""
    module = sys.modules[FE.__module__]
    with (
        mock.patch.object(module, "load_state_dict_from_url", return_value={}),
        mock.patch.object(FE, "load_state_dict"),
    ):
        network = FE(name="inception-v3-compat", features_list=FEATURES)
    generator = torch.Generator().manual_seed(0)

    def uniform(tensor, low, high):
        tensor.copy_(low + (high - low) * torch.rand(tensor.shape, generator=generator))

    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                std = (2.0 / fan_in) ** 0.5
                module.weight.copy_(std * torch.randn(module.weight.shape, generator=generator))
            elif isinstance(module, torch.nn.BatchNorm2d):
                uniform(module.weight, 0.5, 1.5)
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
                module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=generator))
                uniform(module.running_var, 0.5, 1.5)
            elif isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / 2048**0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
    return network


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tests.metrics.reference_tools import reference_tools

    FE = reference_tools().FeatureExtractorInceptionV3
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    torch.save(random_feature_extractor(FE).state_dict(), path)
    reference = FE(
        name="inception-v3-compat", features_list=FEATURES, feature_extractor_weights_path=str(path)
    )
    model = fid_inception_v3(weights=str(path))
    return reference, model, path


def assert_features_close(features, expected, what):
    """Each feature within 1e-4 of the reference, relative to the feature's scale (its largest |value|)."""
    for name, reference_name in TORCH_FIDELITY_FEATURES.items():
        want = np.asarray(expected[reference_name])
        scale = max(1.0, float(np.abs(want).max()))
        difference = float(np.abs(to_numpy(features[name]) - want).max())
        print(f"{keras.backend.backend()} {what} {name}: max |diff| {difference:.2e}, scale {scale:.1f}")
        assert difference <= 1e-4 * scale, (name, difference, scale)


@pytest.mark.parametrize("size", [(64, 64), (299, 299)])
def test_matches_torch_fidelity(setup, size):
    reference, model, _ = setup
    images = np.random.default_rng(1).integers(0, 256, (2, *size, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = dict(zip(FEATURES, reference(torch.from_numpy(nhwc_to_nchw(images).copy()))))
    assert_features_close(model(images), {k: v.numpy() for k, v in expected.items()}, f"tensorflow1 {size}")


def test_pytorch_resize_matches_pytorch_fid(setup, tmp_path):
    """resize="pytorch": x / 255, F.interpolate(bilinear, align_corners=False), 2x - 1, then the network;
    the weights saved as pytorch-fid's file (its Inception3 state dict, here without num_batches_tracked)."""
    reference, _, path = setup
    state = {k: v for k, v in torch.load(path).items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "pt_inception-random.pth")
    pytorch_model = fid_inception_v3(weights=str(tmp_path / "pt_inception-random.pth"), resize="pytorch")
    images = np.random.default_rng(2).integers(0, 256, (2, 48, 80, 3), dtype=np.uint8)
    x = torch.from_numpy(nhwc_to_nchw(images).astype("float32")) / 255
    x = 2 * torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    with torch.no_grad():
        for name, layer in reference.named_children():  # the layers in forward order, up to the classifier
            if name == "fc":
                break
            x = layer(x)
        pool3 = torch.flatten(x, 1)
        unbiased = pool3 @ reference.fc.weight.T
    expected = {"2048": pool3, "logits_unbiased": unbiased, "logits": unbiased + reference.fc.bias}
    assert_features_close(pytorch_model(images), {k: v.numpy() for k, v in expected.items()}, "pytorch")


@pytest.mark.parametrize("size", [(64, 64), (48, 80), (331, 360), (17, 400)])
def test_resizes_match_references(size):
    """Both input conventions against their references, up- and down-sampling, non-square."""
    from tests.metrics.reference_tools import reference_tools

    reference_tools()
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    images = np.random.default_rng(3).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    x = torch.from_numpy(nhwc_to_nchw(images).astype("float32"))
    resized = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    tensorflow1 = (resized - 128) / 128
    resized = torch.nn.functional.interpolate(x / 255, size=(299, 299), mode="bilinear", align_corners=False)
    pytorch = 2 * resized - 1
    for resize, expected in [("tensorflow1", tensorflow1), ("pytorch", pytorch)]:
        got = to_numpy(FIDInceptionV3(resize=resize).preprocess(images))  # no weights needed
        np.testing.assert_allclose(got, nchw_to_nhwc(expected.numpy()), atol=1e-6, err_msg=resize)


def test_wrong_network_weights_raise(setup, tmp_path):
    _, _, path = setup
    other = tmp_path / "other_network.pth"
    torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), other)
    with pytest.raises(ValueError, match=r"other_network\.pth is not .*missing.*Conv2d_1a_3x3\.conv\.weight"):
        fid_inception_v3(weights=str(other))

    state = torch.load(path)
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)  # torchvision's head
    imagenet_head = tmp_path / "imagenet_head.pth"
    torch.save(state, imagenet_head)
    with pytest.raises(ValueError, match=r"imagenet_head\.pth .*wrong shape.*fc\.weight \(2048, 1000\)"):
        fid_inception_v3(weights=str(imagenet_head))

    with pytest.raises(ValueError, match="is not a file"):
        fid_inception_v3(weights=str(tmp_path / "missing.pth"))


def test_bad_resize_lists_the_allowed_values():
    with pytest.raises(ValueError, match=r"resize='bicubic'.*'tensorflow1', 'pytorch'"):
        FIDInceptionV3(resize="bicubic")
    with pytest.raises(ValueError, match="resize="):
        fid_inception_v3(weights=False, resize="tf1")
    assert RESIZES == ("tensorflow1", "pytorch")


def test_config_round_trip():
    model = FIDInceptionV3(resize="pytorch", name="fid_inception")
    config = json.loads(json.dumps(model.get_config()))
    assert config == {"name": "fid_inception", "trainable": False, "resize": "pytorch"}
    assert FIDInceptionV3.from_config(config).get_config() == config
    assert keras.saving.get_registered_object("keras_ldm>FIDInceptionV3") is FIDInceptionV3


def test_clean_resize_matches_clean_fid():
    from keras_ldm.metrics.inception import CleanResized, clean_resize
    from tests.metrics.reference_tools import reference_tools

    images = np.random.default_rng(3).integers(0, 256, (2, 40, 56, 3), dtype="uint8")
    expected = np.stack([reference_tools().clean_fid_resizer(image) for image in images])
    np.testing.assert_array_equal(clean_resize(images), expected)
    extractor = fid_inception_v3(weights=False, resize="clean")
    assert isinstance(extractor, CleanResized) and extractor.network.get_config()["resize"] == "tensorflow1"
