"""Losses under multi-device training: what each replica's loss is scaled by.

Keras' TensorFlow trainer sums the replicas' gradients under a `tf.distribute` strategy (e.g.
`MirroredStrategy`) and expects each replica's loss divided by the number of replicas, as Keras' own
`Loss` objects do; a model's own `compute_loss` must do the same, or every update is `n` times too large
(and the logged loss `n` times too big). JAX's `keras.distribution.DataParallel` shards one global
batch: its losses are already global means and need nothing, and neither does PyTorch.

| backend    | `per_replica_loss(loss)`                                   |
|------------|------------------------------------------------------------|
| jax        | `loss`                                                     |
| tensorflow | `loss / tf.distribute.get_strategy().num_replicas_in_sync` |
| torch      | `loss`                                                     |
"""

import keras
from keras import ops


def per_replica_loss(loss):
    """`loss` (a replica's mean loss) scaled for the gradient sum of the current `tf.distribute` strategy.

    Example:
    >>> float(per_replica_loss(keras.ops.convert_to_tensor(2.0)))
    2.0
    """
    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else ops.multiply(loss, ops.cast(1.0 / replicas, loss.dtype))
