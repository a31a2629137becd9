"""The trained tiny presets that ship inside the package, so that everything works offline.

Each lives in a folder beside this file (written by `save_to_preset`); the script and command that trained
it are in `examples/` and in the folder's `README.md`.
"""

import os

SHIPPED = {
    "shapes_t2i": {
        "description": "Text-to-image, 64x64: 'a {color} {shape} on a {background} background' "
        "(procedural shapes; KL-f4 + 2-layer LDMBert).",
        "script": "examples/train_shapes_t2i.py",
    },
    "shapes_semantic": {
        "description": "Semantic synthesis, 32x32 and larger: a 6-class colour map -> procedural shapes "
        "(the shapes_t2i KL-f4 + a SpatialRescaler).",
        "script": "examples/train_shapes_semantic.py",
    },
    "photo_sr4x": {
        "description": "4x super-resolution of photographs (trained on crops of the bundled photos; KL-f2).",
        "script": "examples/train_photo_presets.py --task sr",
    },
    "photo_inpaint": {
        "description": "Inpainting of photographs, mask 1 = fill (trained on crops of the bundled photos; KL-f2).",
        "script": "examples/train_photo_presets.py --task inpaint",
    },
}


def shipped_path(name):
    """The folder of a shipped preset; a clear error if this installation lacks its files."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(
            f"The shipped preset {name!r} is missing from this installation ({path}); re-install keras_ldm, "
            f"or train it with `python {SHIPPED[name]['script']}`."
        )
    return path
