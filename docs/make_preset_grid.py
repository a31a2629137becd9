"""Draws docs/images/presets.png: what the three shipped presets make, with their default settings.

Row 1, `shapes_t2i`: six prompts (DDIM 50, guidance 4: the preset's defaults), seed 1.
Row 2, `photo_sr4x`: for two held-out photos (scikit-image's `chelsea` and `coffee`, never seen in
training), the 16x16 input (antialiased bicubic downsampling, shown enlarged), the 4x result and the
64x64 original.
Row 3, `photo_inpaint`: the same photos with a box hole (grey), the filled result and the original.

Every tile is 64x64, drawn at 2x (nearest neighbour). Offline: the presets ship inside the package.

    KERAS_BACKEND=jax .venv/bin/python docs/make_preset_grid.py

(about half a minute on 2 CPU cores; `--out` to write elsewhere).
"""

import argparse
import os

import numpy as np
import skimage.data
from PIL import Image, ImageDraw

import keras_ldm

PROMPTS = [
    "a red circle on a blue background",
    "a yellow triangle on a black background",
    "a white square on a green background",
    "a green circle on a white background",
    "a blue square on a yellow background",
    "a black triangle on a red background",
]
PHOTOS = ("chelsea", "coffee")  # held out of the photo presets' training
TILE, ZOOM, LABEL = 64, 2, 18


def photo_thumbnail(name, size=TILE):
    """The photo scaled (antialiased) so that its short side is 1.5 x `size`, centre-cropped to `size`."""
    photo = Image.fromarray(getattr(skimage.data, name)()[..., :3])
    scale = 1.5 * size / min(photo.size)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)
    left, top = (photo.width - size) // 2, (photo.height - size) // 2
    return np.asarray(photo.crop((left, top, left + size, top + size)))


def downsample(image, factor=4):
    """Antialiased bicubic downsampling (PIL), as the super-resolution benchmark's inputs."""
    small = Image.fromarray(image).resize((image.shape[1] // factor, image.shape[0] // factor), Image.BICUBIC)
    return np.asarray(small)


def enlarge(image, size=TILE):
    return np.asarray(Image.fromarray(image).resize((size, size), Image.NEAREST))


def box_mask(size=TILE):
    mask = np.zeros((size, size), "uint8")
    mask[size // 4 : size // 4 + size // 2, size // 3 : size // 3 + size // 2] = 1  # 1 = fill
    return mask


def rows():
    shapes = keras_ldm.LatentDiffusion.from_preset("shapes_t2i")
    short = [p.replace(" background", "").replace("a ", "", 1).replace(" on a ", " on ") for p in PROMPTS]
    label = ", ".join(short)  # "red circle on blue, ..."
    yield f"shapes_t2i: {label}", list(shapes.generate(PROMPTS, seed=1))

    originals = np.stack([photo_thumbnail(name) for name in PHOTOS])
    low_res = np.stack([downsample(image) for image in originals])
    sr = keras_ldm.LatentDiffusion.from_preset("photo_sr4x")
    big = sr.generate({"images": low_res}, seed=1)
    yield "photo_sr4x: 16x16 input | 4x output | original (x2)", [
        tile for i in range(len(PHOTOS)) for tile in (enlarge(low_res[i]), big[i], originals[i])
    ]

    masks = np.stack([box_mask()] * len(PHOTOS))
    inpaint = keras_ldm.LatentDiffusion.from_preset("photo_inpaint")
    filled = inpaint.generate({"images": originals, "masks": masks}, seed=1)
    holes = np.where(masks[..., None] == 1, np.uint8(128), originals)
    yield "photo_inpaint: hole | filled | original (x2)", [
        tile for i in range(len(PHOTOS)) for tile in (holes[i], filled[i], originals[i])
    ]


def draw(labelled_rows):
    size = TILE * ZOOM
    labelled_rows = list(labelled_rows)
    columns = max(len(tiles) for _, tiles in labelled_rows)
    canvas = Image.new("RGB", (columns * size, len(labelled_rows) * (size + LABEL)), "white")
    pen = ImageDraw.Draw(canvas)
    for row, (label, tiles) in enumerate(labelled_rows):
        top = row * (size + LABEL)
        pen.text((4, top + 3), label, fill="black")
        for column, tile in enumerate(tiles):
            tile = Image.fromarray(np.asarray(tile)).resize((size, size), Image.NEAREST)
            canvas.paste(tile, (column * size, top + LABEL))
    return canvas


def main(args):
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    draw(rows()).save(args.out, optimize=True)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "images", "presets.png"))
    main(parser.parse_args())
