"""Preparing `tf.data` batches for `LatentDiffusion.fit`: tokenized prompts and only the keys it uses."""

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


def keep_keys(dataset, keys):
    """The dataset with each dict batch reduced to `keys`."""
    return dataset.map(lambda batch: {k: v for k, v in batch.items() if k in keys})
