"""Draws docs/images/scenes.png: what the scene presets make from held-out conditions.

Rows: `shapes_semantic` — held-out label maps (false colours: the map is class ids, not an image), the
32x32 images generated from them, then 64x64 maps (2x the training size) and their images; and, when the
`shapes_layout` preset is installed, held-out layouts (each box outlined in its object's colour) and the
images generated from them. Offline, with the presets' default settings but for the seed:

    KERAS_BACKEND=jax .venv/bin/python docs/make_scene_grid.py
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from keras_ldm import LatentDiffusion  # noqa: E402
from keras_ldm.data.scenes import OBJECT_CLASSES, PALETTE, scenes_arrays  # noqa: E402
from keras_ldm.data.shapes import COLORS  # noqa: E402
from keras_ldm.presets import SHIPPED  # noqa: E402

COUNT = 4
FALSE_COLOURS = (plt.get_cmap("tab10")(np.arange(len(COLORS)))[:, :3] * 255).astype("uint8")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "images", "scenes.png")


def semantic_rows():
    model = LatentDiffusion.from_preset("shapes_semantic")
    rows = []
    for size in (32, 64):
        maps = scenes_arrays(COUNT, image_size=size, split="held_out", start=size)["segmentation"]
        rows.append((f"map {size}x{size}", FALSE_COLOURS[maps]))
        rows.append(("shapes_semantic", model.generate({"segmentation": maps}, seed=1)))
    return rows


def layout_rows():
    model = LatentDiffusion.from_preset("shapes_layout")
    scenes = scenes_arrays(COUNT, image_size=32, split="held_out", start=100)
    layout = {key: scenes[key] for key in ("boxes", "box_labels", "num_boxes")}
    canvases = np.full((COUNT, 32, 32, 3), 255, "uint8")
    for i in range(COUNT):
        for box, label in zip(scenes["boxes"][i, : scenes["num_boxes"][i]], scenes["box_labels"][i]):
            x0, y0, x1, y1 = np.clip(np.round(box * 32).astype(int), 0, 31)
            colour = PALETTE[COLORS.index(OBJECT_CLASSES[label][0])]
            canvases[i, y0 : y1 + 1, [x0, x1]] = colour
            canvases[i, [y0, y1], x0 : x1 + 1] = colour
    return [("layout", canvases), ("shapes_layout", model.generate(layout, seed=1))]


def main():
    rows = semantic_rows() + (layout_rows() if "shapes_layout" in SHIPPED else [])
    figure, axes = plt.subplots(len(rows), COUNT, figsize=(COUNT * 1.3, len(rows) * 1.4))
    for (title, images), row in zip(rows, axes):
        for image, axis in zip(images, row):
            axis.imshow(image, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
        row[0].set_ylabel(title, fontsize=7)
    figure.tight_layout(pad=0.3)
    figure.savefig(OUT, dpi=90)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
