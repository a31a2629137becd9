"""The reference metric implementations (torch-fidelity, pytorch-fid, lpips, clean-fid), without torchvision.

They import torchvision at module level for dataset and model helpers that the metric tests never call; the
PyPI torchvision wheel does not load with the CPU PyTorch of the test extra. `reference_tools()` puts inert
placeholder modules under the torchvision names (only if torchvision is missing) and imports the references.

>>> tools = reference_tools()
>>> callable(tools.calculate_frechet_distance)
True
"""

import importlib
import sys
import types

_TORCHVISION_MODULES = (
    "torchvision",
    "torchvision.datasets",
    "torchvision.io",
    "torchvision.models",
    "torchvision.models.inception",
    "torchvision.transforms",
    "torchvision.transforms.functional",
    "torchvision.utils",
)


class _Placeholder(types.ModuleType):
    """A module whose every public attribute is an empty class: importable, subclassable, never used."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})


def _install_torchvision_placeholders():
    try:
        importlib.import_module("torchvision")
        return
    except Exception:  # missing, or a wheel built for another PyTorch
        pass
    for name in _TORCHVISION_MODULES:
        module = _Placeholder(name)
        module.__path__ = []
        sys.modules[name] = module
    for name in _TORCHVISION_MODULES[1:]:
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, sys.modules[name])


def reference_tools():
    """A namespace of the reference functions and networks the metric tests compare against."""
    _install_torchvision_placeholders()
    from cleanfid.resize import build_resizer
    from pytorch_fid.fid_score import calculate_frechet_distance
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_featuresdict_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import calculate_precision_recall_part

    return types.SimpleNamespace(
        clean_fid_resizer=build_resizer("clean"),
        calculate_frechet_distance=calculate_frechet_distance,
        FeatureExtractorInceptionV3=FeatureExtractorInceptionV3,
        fid_statistics_to_metric=fid_statistics_to_metric,
        isc_featuresdict_to_metric=isc_featuresdict_to_metric,
        kid_features_to_metric=kid_features_to_metric,
        calculate_precision_recall_part=calculate_precision_recall_part,
    )
