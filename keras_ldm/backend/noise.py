"""`make_noise_sampler`: stateless Gaussian noise, `noise(i)` a function of `(seed, i)` only.

| backend    | the draw `i`                                                                          |
|------------|---------------------------------------------------------------------------------------|
| jax        | `jax.random.normal(fold_in(PRNGKey(seed), i))`                                         |
| tensorflow | Philox bits (`StatelessRandomUniformFullIntV2`) + Box–Muller, equal eagerly and in XLA |
| torch      | `torch.randn` from a `torch.Generator` seeded with `(seed, i)` (eager only)            |

Draws are reproducible per backend, not equal across backends. The samplers draw their stochastic steps and
their inpainting blends from it, inside the compiled loop (`keras_ldm.backend.compile`).
"""

import math

from keras import ops

from keras_ldm.backend import for_backend


def make_noise_sampler(seed, shape, dtype="float32"):
    """A stateless Gaussian noise source: `noise(i)` depends only on `(seed, i)`.

    Works with traced `seed` and `i` (inside `jax.jit`, `tf.function` and `fori_loop`). Draws are
    reproducible per backend, not equal across backends.

    Args:
        seed: an integer (Python int or int32 tensor).
        shape: shape of each draw.
        dtype: float dtype of each draw.

    Returns:
        `noise(i) -> tensor` of `shape`.

    Example:
    >>> noise = make_noise_sampler(seed=1, shape=(2, 3))
    >>> bool(ops.all(noise(0) == noise(0))) and not bool(ops.all(noise(0) == noise(1)))
    True
    """
    sampler = for_backend(
        "sampling", jax=_jax_noise_sampler, tensorflow=_tensorflow_noise_sampler, torch=_torch_noise_sampler
    )
    return sampler(seed, tuple(shape), dtype)


def _jax_noise_sampler(seed, shape, dtype):
    import jax

    key = jax.random.PRNGKey(seed)
    return lambda i: jax.random.normal(jax.random.fold_in(key, i), shape, dtype)


def _tensorflow_noise_sampler(seed, shape, dtype):
    """Philox bits + Box–Muller: `tf.random.stateless_normal` gives other numbers under XLA than
    eagerly, while the raw Philox bits agree, so the compiled loop and an eager run share noise."""
    import tensorflow as tf

    key = tf.reshape(tf.cast(seed, tf.uint64), [1])
    size = math.prod(shape)

    def noise(i):
        counter = tf.stack([tf.cast(i, tf.uint64), tf.constant(0, tf.uint64)])
        bits = tf.raw_ops.StatelessRandomUniformFullIntV2(
            shape=[2, size], key=key, counter=counter, alg=1, dtype=tf.uint32
        )
        uniform = (tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) + 0.5) * 2.0**-24  # in (0, 1)
        normal = tf.sqrt(-2.0 * tf.math.log(uniform[0])) * tf.cos(2.0 * math.pi * uniform[1])
        return tf.cast(tf.reshape(normal, shape), dtype)

    return noise


def _torch_noise_sampler(seed, shape, dtype):
    import torch

    def noise(i):
        generator = torch.Generator().manual_seed((int(seed) % 2**32) * 2**31 + int(i))
        draw = torch.randn(shape, generator=generator, dtype=getattr(torch, dtype))
        return ops.convert_to_tensor(draw)

    return noise
