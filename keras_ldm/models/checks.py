"""Input checks shared by the models: clear `ValueError`s instead of failures deep inside a layer."""


def _static(dim):
    return dim if isinstance(dim, int) else None


def check_feature_map(x, name, channels, multiple=1):
    """Require `x` to be `(B, H, W, channels)` with H and W divisible by `multiple`."""
    shape = tuple(x.shape)
    if len(shape) != 4:
        raise ValueError(f"`{name}` must have rank 4 (batch, height, width, channels); got shape {shape}.")
    if _static(shape[-1]) is not None and shape[-1] != channels:
        raise ValueError(f"`{name}` has {shape[-1]} channels (shape {shape}); expected {channels}.")
    for axis, label in ((1, "height"), (2, "width")):
        size = _static(shape[axis])
        if size is not None and size % multiple:
            raise ValueError(
                f"`{name}` has {label} {size} (shape {shape}); it must be a multiple of {multiple} "
                f"so that every down-sampling step divides it."
            )


def check_sequence(x, name, width, batch_size=None):
    """Require `x` to be `(B, L, width)`, with B equal to `batch_size` when both are known."""
    shape = tuple(x.shape)
    if len(shape) != 3:
        raise ValueError(f"`{name}` must have rank 3 (batch, length, {width}); got shape {shape}.")
    if _static(shape[-1]) is not None and shape[-1] != width:
        raise ValueError(f"`{name}` has width {shape[-1]} (shape {shape}); expected {width}.")
    check_batch(shape, name, batch_size)


def check_batch(shape, name, batch_size):
    """Require the leading dimension of `shape` to equal `batch_size` when both are known."""
    given = _static(shape[0]) if len(shape) else None
    if given is not None and _static(batch_size) is not None and given != batch_size:
        raise ValueError(f"`{name}` has batch size {given} (shape {tuple(shape)}); expected {batch_size}.")
