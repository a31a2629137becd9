"""Normalization layers kept in float32 under mixed precision."""

import keras


def group_norm(epsilon, groups=32, name=None):
    """A 32-group GroupNorm over the channel axis that always computes in float32.

    Example:
    >>> tuple(group_norm(1e-6, name="norm")(keras.ops.ones((1, 4, 4, 64))).shape)
    (1, 4, 4, 64)
    """
    return keras.layers.GroupNormalization(groups=groups, epsilon=epsilon, dtype="float32", name=name)


def layer_norm(epsilon=1e-5, name=None):
    """LayerNorm over the last axis that always computes in float32."""
    return keras.layers.LayerNormalization(epsilon=epsilon, dtype="float32", name=name)
