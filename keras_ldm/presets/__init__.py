"""Presets: shipped trained models, architecture presets of the released checkpoints, and preset folders.

Example:
>>> from keras_ldm.presets import all_presets
>>> "shapes_t2i" in all_presets() and "ldm_text2im_large_256" in all_presets()
True
"""

from keras_ldm.presets.files import is_preset_dir, load_preset, read_metadata, save_preset
from keras_ldm.presets.loading import all_presets, from_preset, hub_snapshot
from keras_ldm.presets.shipped import SHIPPED

__all__ = [
    "SHIPPED",
    "all_presets",
    "from_preset",
    "hub_snapshot",
    "is_preset_dir",
    "load_preset",
    "read_metadata",
    "save_preset",
]
