"""Writes keras_ldm/metrics/assets/lpips_vgg_v0.1.npz: LPIPS' learned linear heads for VGG16 (v0.1).

The heads (lin0..lin4: 64+128+256+512+512 non-negative weights, 1,472 values) ship inside the `lpips` pip
package (BSD-2-Clause, Zhang et al. 2018) as `lpips/weights/v0.1/vgg.pth`; this copies them as plain arrays so
keras_ldm reads them without PyTorch. Command (from the repository root, after
`pip install --no-deps -r tests/reference-tools.txt`):

    .venv/bin/python scripts/extract_lpips_heads.py
"""

import importlib.util
import os

import numpy as np
import torch

# The package folder, without importing it (its __init__ imports torchvision).
package = importlib.util.find_spec("lpips").submodule_search_locations[0]
source = os.path.join(package, "weights", "v0.1", "vgg.pth")
state = torch.load(source, map_location="cpu", weights_only=True)
heads = {f"lin{i}": state[f"lin{i}.model.1.weight"].numpy().reshape(-1).astype("float32") for i in range(5)}
target = os.path.join(os.path.dirname(__file__), "..", "keras_ldm", "metrics", "assets", "lpips_vgg_v0.1.npz")
np.savez(target, **heads)
print(f"wrote {os.path.normpath(target)}: {', '.join(f'{k} {v.shape}' for k, v in heads.items())}")
