"""Feature statistics for the FID: a streaming float64 mean/covariance and pytorch-fid's `.npz` files."""

import os
import warnings

import numpy as np


class FeatureStatistics:
    """The running mean and covariance of feature vectors, in float64, over any number of batches.

    Batches are merged with Chan et al.'s parallel update of the mean and the centred scatter matrix, so the
    result equals `np.mean(f, 0)` and `np.cov(f, rowvar=False)` on all rows at once (to rounding), however the
    rows were split.

    Example:
    >>> import numpy as np
    >>> features = np.arange(12.0).reshape(4, 3) ** 2
    >>> statistics = FeatureStatistics()
    >>> statistics.update(features[:1]); statistics.update(features[1:])
    >>> mu, sigma = statistics.result()
    >>> bool(np.allclose(mu, features.mean(0)) and np.allclose(sigma, np.cov(features, rowvar=False)))
    True
    """

    def __init__(self):
        self.count = 0
        self.mean = None
        self.scatter = None  # sum over rows of (x - mean)(x - mean)^T

    def update(self, features):
        """Adds a `(batch, dim)` array of feature vectors."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise ValueError(f"`features` must have shape (batch, dim); got shape {features.shape}.")
        if self.mean is not None and features.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"`features` must have dim {self.mean.shape[0]} like the earlier batches; got shape "
                f"{features.shape}."
            )
        n = features.shape[0]
        if n == 0:
            return
        batch_mean = features.mean(axis=0)
        centred = features - batch_mean
        batch_scatter = centred.T @ centred
        if self.count == 0:
            self.count, self.mean, self.scatter = n, batch_mean, batch_scatter
            return
        total = self.count + n
        delta = batch_mean - self.mean
        self.scatter = self.scatter + batch_scatter + np.outer(delta, delta) * (self.count * n / total)
        self.mean = self.mean + delta * (n / total)
        self.count = total

    def result(self):
        """`(mu, sigma)`: the mean `(dim,)` and the sample covariance `(dim, dim)` (divided by `count - 1`).

        Raises a `ValueError` with fewer than 2 vectors and warns (`UserWarning`) when there are fewer vectors
        than `dim + 1`: the covariance is then rank-deficient and the FID is biased and unstable.
        """
        check_sample_count(self.count, None if self.mean is None else self.mean.shape[0])
        return self.mean.copy(), self.scatter / (self.count - 1)


def check_sample_count(count, dim):
    """Raises for fewer than 2 samples; warns when `count < dim + 1` (a rank-deficient covariance).

    Example:
    >>> check_sample_count(10, 4)
    """
    if count < 2:
        raise ValueError(f"A covariance needs at least 2 feature vectors; got {count}.")
    if dim is not None and count < dim + 1:
        warnings.warn(
            f"The covariance of {count} feature vectors of dim {dim} is rank-deficient (rank < {dim}); use at "
            f"least {dim + 1} images (10,000 or more for a meaningful FID).",
            UserWarning,
            stacklevel=3,
        )


def save_statistics(path, mu, sigma):
    """Saves `mu` and `sigma` to a pytorch-fid `.npz` file (keys `mu` and `sigma`; `.npz` is appended to a path
    without it, as `numpy.savez_compressed` does).

    Example:
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "stats.npz")
    >>> save_statistics(path, np.zeros(2), np.eye(2))
    >>> load_statistics(path)[1].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    mu, sigma = check_statistics(mu, sigma, "`mu` and `sigma`")
    np.savez_compressed(path, mu=mu, sigma=sigma)


def load_statistics(path):
    """`(mu, sigma)` as float64 arrays from a pytorch-fid `.npz` file (keys `mu` and `sigma`).

    Example:
    >>> import os, tempfile, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "stats.npz")
    >>> np.savez(path, mu=np.ones(3), sigma=np.eye(3))
    >>> load_statistics(path)[0].tolist()
    [1.0, 1.0, 1.0]
    """
    with np.load(os.fspath(path)) as data:
        if "mu" not in data.files or "sigma" not in data.files:
            raise ValueError(
                f"{os.fspath(path)!r} is not a pytorch-fid statistics file: it must hold the keys 'mu' and "
                f"'sigma'; found {sorted(data.files)}."
            )
        mu, sigma = data["mu"], data["sigma"]
    return check_statistics(mu, sigma, repr(os.fspath(path)))


def check_statistics(mu, sigma, name="statistics"):
    """`(mu, sigma)` as float64 arrays after checking their shapes are `(dim,)` and `(dim, dim)`; `name` says
    where they came from in the error.

    Example:
    >>> check_statistics([0, 0], [[1, 0], [0, 1]])[0].dtype
    dtype('float64')
    """
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"{name} must be a mean of shape (dim,) and a covariance of shape (dim, dim); got shapes {mu.shape} "
            f"and {sigma.shape}."
        )
    return mu, sigma
