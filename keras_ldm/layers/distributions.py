"""The diagonal Gaussian posterior of the KL-regularised autoencoder."""

import math

import keras
from keras import ops


class DiagonalGaussian:
    """`N(mean, exp(logvar))` from the encoder's moments, split along the channel axis.

    The log-variance is clipped to [-30, 20] as in CompVis. Sums in `kl` and `nll`
    run over every non-batch axis.

    Example:
    >>> moments = keras.ops.zeros((2, 4, 4, 8))
    >>> posterior = DiagonalGaussian(moments)
    >>> tuple(posterior.mode().shape), tuple(posterior.kl().shape)
    ((2, 4, 4, 4), (2,))
    """

    def __init__(self, moments, deterministic=False):
        moments = ops.cast(moments, "float32")
        self.mean, logvar = ops.split(moments, 2, axis=-1)
        self.logvar = ops.clip(logvar, -30.0, 20.0)
        self.deterministic = deterministic
        if deterministic:
            self.logvar = ops.zeros_like(self.mean)
        self.std = ops.exp(0.5 * self.logvar) * (0.0 if deterministic else 1.0)
        self.var = ops.exp(self.logvar) * (0.0 if deterministic else 1.0)

    def sample(self, seed=None):
        """A reparameterised draw `mean + std * eps`; `seed` is an int or a `SeedGenerator`."""
        noise = keras.random.normal(ops.shape(self.mean), seed=seed)
        return self.mean + self.std * noise

    def mode(self):
        return self.mean

    def kl(self, other=None):
        """KL(self || other), or against N(0, I) when `other` is None; one value per example."""
        if self.deterministic:
            return ops.zeros(ops.shape(self.mean)[:1])
        axes = tuple(range(1, len(self.mean.shape)))
        if other is None:
            terms = ops.square(self.mean) + self.var - 1.0 - self.logvar
        else:
            terms = (
                ops.square(self.mean - other.mean) / other.var
                + self.var / other.var
                - 1.0
                - self.logvar
                + other.logvar
            )
        return 0.5 * ops.sum(terms, axis=axes)

    def nll(self, sample):
        """Negative log-likelihood of `sample`, summed over non-batch axes."""
        if self.deterministic:
            return ops.zeros(ops.shape(self.mean)[:1])
        axes = tuple(range(1, len(self.mean.shape)))
        sample = ops.cast(ops.convert_to_tensor(sample), "float32")
        terms = math.log(2.0 * math.pi) + self.logvar + ops.square(sample - self.mean) / self.var
        return 0.5 * ops.sum(terms, axis=axes)
