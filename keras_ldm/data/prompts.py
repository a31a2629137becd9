"""Preparing `tf.data` batches for `LatentDiffusion.fit`: tokenized prompts or layouts, and only the keys it uses."""

import numpy as np
from keras import ops

from keras_ldm.backend.lazy_tensorflow import tf


def tokenize_prompts(dataset, tokenizer):
    """Replaces each batch's `prompts` strings by `token_ids` from any Python `tokenizer(list_of_str)`.

    Example:
    >>> ds = tf.data.Dataset.from_tensor_slices({"prompts": ["a b", "c"]}).batch(2)
    >>> ids = next(iter(tokenize_prompts(ds, lambda texts: [[len(t), 0] for t in texts])))["token_ids"]
    >>> ids.numpy().tolist()
    [[3, 0], [1, 0]]
    """

    def tokenize(prompts):
        texts = [p.decode("utf-8") for p in prompts.numpy().reshape(-1)]
        return np.asarray(ops.convert_to_numpy(tokenizer(texts)), dtype="int32")

    def replace(batch):
        batch = dict(batch)
        token_ids = tf.py_function(tokenize, [batch.pop("prompts")], tf.int32)
        batch["token_ids"] = tf.ensure_shape(token_ids, (None, None))
        return batch

    return dataset.map(replace)


def tokenize_layouts(dataset, tokenize):
    """Replaces each batch's padded layout (`boxes` `(B, N, 4)`, `box_labels` `(B, N)` and optional
    `num_boxes` `(B,)`, the real boxes of each row; all N without it) by `token_ids` from
    `tokenize({"boxes": ..., "box_labels": ..., "num_boxes": ...})` (numpy in, int32 `(B, L)` out; e.g.
    `LatentDiffusion.layout_token_ids`).

    Example:
    >>> from keras_ldm.models.layout_tokenizer import LayoutTokenizer
    >>> tokenizer = LayoutTokenizer(num_classes=3, max_objects=2, encode_crop=False)
    >>> ds = tf.data.Dataset.from_tensor_slices(
    ...     {"boxes": [[[0.0, 0.0, 1.0, 1.0]]], "box_labels": [[2]], "num_boxes": [1]}).batch(1)
    >>> tokenize = lambda layout: tokenizer(layout["boxes"], layout["box_labels"], layout["num_boxes"])
    >>> next(iter(tokenize_layouts(ds, tokenize)))["token_ids"].numpy().tolist()
    [[2, 0, 8099, 8191, 8191, 8191]]
    """
    names = [key for key in ("boxes", "box_labels", "num_boxes") if key in dataset.element_spec]

    def tokens(*values):
        layout = {name: value.numpy() for name, value in zip(names, values)}
        return np.asarray(ops.convert_to_numpy(tokenize(layout)), dtype="int32")

    def replace(batch):
        batch = dict(batch)
        token_ids = tf.py_function(tokens, [batch.pop(name) for name in names], tf.int32)
        batch["token_ids"] = tf.ensure_shape(token_ids, (None, None))
        return batch

    return dataset.map(replace)


def keep_keys(dataset, keys):
    """The dataset with each dict batch reduced to `keys`."""
    return dataset.map(lambda batch: {k: v for k, v in batch.items() if k in keys})
