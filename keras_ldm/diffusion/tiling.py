"""Tiled denoising and decoding: CompVis' split-input scheme, for latents too large to process in one piece.

At every denoising step the latent canvas (with its concatenated condition channels) is cut into
overlapping tiles of `tile_size` latent pixels, `tile_stride` apart; the UNet denoises one tile at a time
(a loop, so peak memory is that of one tile, whatever the canvas) and the predictions are blended back
with CompVis' weights (`LatentDiffusion.get_weighting` in `ldm/models/diffusion/ddpm.py`): each tile
pixel's normalised distance to the tile border, clipped to [0.01, 0.5], the sum divided by the summed
weights (their `fold(o * w) / fold(w)`). Where the stride does not divide the canvas, a last tile is
placed flush with the far border (CompVis' `unfold` would leave that strip uncovered). The final latents
are decoded the same way (CompVis' `decode_first_stage` with `split_input_params`): each latent tile
decoded alone, the pixel tiles (`scale` = the first stage's factor larger) blended with the same weights
at their own size.
"""

import numpy as np
from keras import ops

CLIP_MIN_WEIGHT, CLIP_MAX_WEIGHT = 0.01, 0.5  # CompVis' split_input_params


def tile_origins(size, tile, stride):
    """Start offsets of the tiles along one axis of `size`: every `stride`, plus one flush with the end.

    Example:
    >>> tile_origins(10, 4, 3), tile_origins(8, 4, 2), tile_origins(4, 8, 2)
    ([0, 3, 6], [0, 2, 4], [0])
    """
    if tile >= size:
        return [0]
    origins = list(range(0, size - tile + 1, stride))
    if origins[-1] + tile < size:
        origins.append(size - tile)
    return origins


def border_weights(height, width):
    """CompVis' blending weights of one `(height, width)` tile: the normalised distance of each pixel to
    the tile's nearest border (0 at the border, 0.5 at the centre), clipped to [0.01, 0.5].

    Example:
    >>> border_weights(3, 3).astype("float64").round(2).tolist()
    [[0.01, 0.01, 0.01], [0.01, 0.5, 0.01], [0.01, 0.01, 0.01]]
    """
    rows = np.arange(height)[:, None] / max(height - 1, 1)
    columns = np.arange(width)[None, :] / max(width - 1, 1)
    distance = np.minimum(np.minimum(rows, columns), np.minimum(1 - rows, 1 - columns))
    return np.clip(distance, CLIP_MIN_WEIGHT, CLIP_MAX_WEIGHT).astype("float32")


def check_tiling(tile_size, tile_stride, multiple):
    """`(tile_size, tile_stride)` as ints, or `(None, None)` without tiling; a clear error otherwise.
    `multiple` is the UNet's down-sampling: a tile must be divisible by it.

    Example:
    >>> check_tiling(64, None, 4)
    (64, 32)
    """
    if tile_size is None:
        if tile_stride is not None:
            raise ValueError(f"tile_stride={tile_stride!r} needs a tile_size.")
        return None, None
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 1 or tile_size % multiple:
        raise ValueError(
            f"tile_size={tile_size!r}; expected a positive int of latent pixels, a multiple of {multiple} "
            f"(the UNet's down-sampling), or None for no tiling."
        )
    tile_stride = tile_size // 2 if tile_stride is None else tile_stride
    if isinstance(tile_stride, bool) or not isinstance(tile_stride, (int, np.integer)) or not 1 <= tile_stride <= tile_size:
        raise ValueError(f"tile_stride={tile_stride!r}; expected an int in [1, tile_size={tile_size}].")
    return int(tile_size), int(tile_stride)


def tiled(fn, tile_size, tile_stride, scale=1):
    """`fn(x, *args, **kwargs)` (a UNet, a decoder) applied tile by tile over `x`'s height and width and
    blended (see the module docstring); `x` needs a static height and width. `fn` maps a tile of `t x t` to
    one of `t·scale x t·scale` (1 for the UNet, the first stage's factor for a decoder).

    Example:
    >>> double = lambda x, timesteps, context=None: 2.0 * x
    >>> x = np.ones((1, 6, 6, 1), "float32")
    >>> float(ops.max(ops.abs(tiled(double, 4, 2)(x, None) - 2.0))) < 1e-6
    True
    """

    def call(x, *args, **kwargs):
        height, width = x.shape[1], x.shape[2]
        tile_h, tile_w = min(tile_size, height), min(tile_size, width)
        origins = [(y, z) for y in tile_origins(height, tile_h, tile_stride) for z in tile_origins(width, tile_w, tile_stride)]
        if len(origins) == 1:
            return fn(x, *args, **kwargs)
        out_h, out_w = tile_h * scale, tile_w * scale  # one output tile
        weights = border_weights(out_h, out_w)
        total = np.zeros((height * scale, width * scale), "float32")
        for y, z in origins:
            total[y * scale : y * scale + out_h, z * scale : z * scale + out_w] += weights
        table = ops.convert_to_tensor(np.array(origins, "int32"))
        batch = ops.shape(x)[0]

        def weighted_tile(y, z):
            tile = ops.slice(x, [0, y, z, 0], [batch, tile_h, tile_w, x.shape[-1]])
            prediction = ops.cast(fn(tile, *args, **kwargs), "float32")
            return prediction * ops.convert_to_tensor(weights)[None, :, :, None]

        def add_tile(index, blended):
            y, z = table[index][0], table[index][1]
            start = [0, y * scale, z * scale, 0]
            current = ops.slice(blended, start, [batch, out_h, out_w, blended.shape[-1]])
            return ops.slice_update(blended, start, current + weighted_tile(y, z))

        first = weighted_tile(*origins[0])  # outside the loop: it tells the output's channel count
        blended = ops.zeros((batch, height * scale, width * scale, first.shape[-1]), "float32")
        blended = ops.slice_update(blended, [0, 0, 0, 0], first)
        blended = ops.fori_loop(1, len(origins), add_tile, blended)
        return blended / ops.convert_to_tensor(total)[None, :, :, None]

    return call
