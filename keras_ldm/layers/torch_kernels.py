"""PyTorch-only: the two layers where Keras' torch backend copies channels-last activations.

Keras runs channels-last (`(B, H, W, C)`) data through PyTorch's channels-first kernels by copying: its
`Conv2D` copies each input to NCHW and then back to channels-last memory (two full copies per conv, and
two more in the backward pass), and its `GroupNormalization` is a dozen elementwise ops. Here the
NCHW *view* of a channels-last tensor (already in PyTorch's `channels_last` memory format) goes straight to
`torch.nn.functional.conv2d` (bias fused) and `group_norm`, and the result is viewed back as
channels-last: no copies, one kernel each. Same weights and the same numbers as the Keras ops.

Measured on the `--small` LDM of `benchmarks/ldm_vs_diffusers.py` (CPU, one thread): a training step
about 100 -> 70 ms. Only `keras_ldm.layers.conv` and `keras_ldm.layers.normalization` call these, and
only on the torch backend.
"""

import torch.nn.functional as F


def conv2d_channels_last(inputs, kernel, bias, strides, padding):
    """A 2D convolution of channels-last `inputs` with a Keras `(kh, kw, in, out)` kernel.

    Args:
        inputs: `(B, H, W, C)` tensor.
        kernel: `(kh, kw, C, out)` tensor (Keras' layout).
        bias: `(out,)` tensor or `None`.
        strides: `(sh, sw)`.
        padding: `(ph, pw)` zero rows/columns on each side.

    Returns:
        `(B, H', W', out)`, a view of PyTorch's `channels_last` result.

    Example:
    >>> import torch
    >>> y = conv2d_channels_last(torch.ones(1, 4, 4, 2), torch.ones(3, 3, 2, 5), None, (1, 1), (1, 1))
    >>> tuple(y.shape), float(y[0, 1, 1, 0])
    ((1, 4, 4, 5), 18.0)
    """
    outputs = F.conv2d(
        inputs.permute(0, 3, 1, 2), kernel.permute(3, 2, 0, 1), bias, stride=strides, padding=padding
    )
    return outputs.permute(0, 2, 3, 1)


def group_norm_channels_last(inputs, groups, gamma, beta, epsilon):
    """GroupNorm over the last (channel) axis of `inputs` with PyTorch's kernel, centred first.

    PyTorch's kernel for channels-last memory takes the variance as E[x^2] - E[x]^2 (measured: an error
    of 3.3 where the two-pass variance gives 6e-3, on a group of mean 1000 and spread 0.01), so the group
    means are subtracted first; the kernel then normalizes centred data.

    Example:
    >>> import torch
    >>> y = group_norm_channels_last(torch.arange(8.0).reshape(1, 2, 4), 2, None, None, 1e-6)
    >>> [round(v, 3) for v in y[0, :, 0].tolist()]
    [-1.213, 0.728]
    """
    shape = inputs.shape
    grouped = inputs.reshape(*shape[:-1], groups, shape[-1] // groups)
    reduced = [axis for axis in range(1, grouped.dim()) if axis != grouped.dim() - 2]
    centred = (grouped - grouped.mean(dim=reduced, keepdim=True)).reshape(shape)
    return F.group_norm(centred.movedim(-1, 1), groups, gamma, beta, epsilon).movedim(1, -1)
