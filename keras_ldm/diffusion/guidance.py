"""Classifier-free guidance (Ho & Salimans 2021): one conditional model call per step, batch 2B."""

from keras import ops, tree


def classifier_free_guidance(
    model, context, unconditional_context=None, guidance_scale=1.0, negative_context=None
):
    """Wrap a conditional model into a guided denoiser `denoise(x, t)` for the samplers.

    Each call runs `model(x, t, context=...)` ONCE on a batch of 2B: the first half with the
    unconditional (or negative) context, the second half with the conditional one, and returns
    `uncond + guidance_scale * (cond - uncond)`.

    Other conditionings adapt the model with a lambda, e.g. class labels:
    `classifier_free_guidance(lambda x, t, context: unet(x, t, labels=context), labels, null_labels, s)`.

    Args:
        model: a callable `model(x, t, context=context) -> prediction` (e.g. the UNet).
        context: the conditioning for each batch row, a tensor `(B, ...)` (or a nested structure
            of them, concatenated leaf by leaf).
        unconditional_context: the "empty prompt" conditioning, `(B, ...)` or `(1, ...)`.
        guidance_scale: `s`; a tensor or a float (a tensor inside a compiled loop, so changing it
            does not recompile). 1 gives the conditional prediction.
        negative_context: replaces `unconditional_context` when given (negative prompts).

    Returns:
        `denoise(x, t)`.

    Example:
    >>> import numpy as np
    >>> model = lambda x, t, context: x * context[:, :1, None, :1]
    >>> x = np.ones((2, 4, 4, 1), "float32")
    >>> t = np.zeros((2,), "float32")
    >>> denoise = classifier_free_guidance(model, np.full((2, 3, 1), 2.0, "float32"),
    ...                                    np.zeros((1, 3, 1), "float32"), guidance_scale=3.0)
    >>> float(denoise(x, t)[0, 0, 0, 0])
    6.0
    """
    uncond = negative_context if negative_context is not None else unconditional_context
    if uncond is None:
        raise ValueError(
            "Classifier-free guidance needs an unconditional context: pass `unconditional_context` "
            "(the empty prompt's conditioning) or `negative_context`; received unconditional_context=None "
            "and negative_context=None."
        )
    batch = tree.flatten(context)[0].shape[0]
    both_contexts = tree.map_structure(
        lambda u, c: ops.concatenate([_repeat_to_batch(u, batch), ops.convert_to_tensor(c)], axis=0),
        uncond,
        context,
    )

    def denoise(x, t):
        prediction = model(
            ops.concatenate([x, x], axis=0), ops.concatenate([t, t], axis=0), context=both_contexts
        )
        uncond_prediction, cond_prediction = ops.split(prediction, 2, axis=0)
        scale = ops.cast(guidance_scale, prediction.dtype)
        return uncond_prediction + scale * (cond_prediction - uncond_prediction)

    return denoise


def _repeat_to_batch(x, batch):
    x = ops.convert_to_tensor(x)
    if x.shape[0] == 1 and batch != 1:
        return ops.repeat(x, batch, axis=0)
    if x.shape[0] != batch:
        raise ValueError(
            f"`unconditional_context` / `negative_context` must have batch size 1 or {batch} (the "
            f"context's); received shape {tuple(x.shape)}."
        )
    return x
