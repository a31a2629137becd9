"""The Fréchet distance between two Gaussians and the FID (Heusel et al. 2017), as pytorch-fid computes it."""

import os
import warnings

import numpy as np
import scipy.linalg

from keras_ldm.metrics.feature_metric import FeatureMetric
from keras_ldm.metrics.statistics import FeatureStatistics, check_statistics, load_statistics


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """`‖mu1 − mu2‖² + Tr(sigma1 + sigma2 − 2 (sigma1 sigma2)^½)`, the squared Fréchet (2-Wasserstein)
    distance between `N(mu1, sigma1)` and `N(mu2, sigma2)`, equal to pytorch-fid's
    `calculate_frechet_distance`: where the matrix square root of the product is not finite, `eps` is added to
    both diagonals (with a warning); an imaginary part larger than 1e-3 on its diagonal raises a `ValueError`.

    Example:
    >>> round(frechet_distance([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], [3.0, 4.0], [[4.0, 0.0], [0.0, 4.0]]), 6)
    27.0
    """
    mu1, sigma1 = check_statistics(np.atleast_1d(mu1), np.atleast_2d(sigma1), "`mu1` and `sigma1`")
    mu2, sigma2 = check_statistics(np.atleast_1d(mu2), np.atleast_2d(sigma2), "`mu2` and `sigma2`")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"The two Gaussians must have the same dim; got `mu1` of shape {mu1.shape} and `mu2` of shape "
            f"{mu2.shape}."
        )
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"The FID's product of covariances is singular; adding {eps} to their diagonals.")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"The square root of the product of covariances has an imaginary component of up to "
                f"{np.max(np.abs(covmean.imag))}; the covariances are too ill-conditioned (too few samples?)."
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


class FrechetInceptionDistance(FeatureMetric):
    """The Fréchet Inception Distance between real and generated images (lower is better).

    Streams float64 means and covariances of the extractor's "pool3" features (2048-dim for the FID
    Inception network) and compares them with `frechet_distance`. The real side can instead come from
    precomputed statistics, e.g. pytorch-fid's `.npz` files of the standard data sets.

    Args:
        feature_extractor: see `FeatureMetric`; `None` builds the FID Inception network on first use.
        reference_statistics: statistics of the real images in place of `update(images, real=True)`: a path
            to a pytorch-fid `.npz` file (keys `mu` and `sigma`) or a `(mu, sigma)` tuple.
        eps: see `frechet_distance`.

    Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> fid = FrechetInceptionDistance(reference_statistics=(np.zeros(4), np.eye(4)))
    >>> fid.update_features(rng.normal(size=(500, 4)), real=False)
    >>> fid.result() < 0.1
    True
    """

    def __init__(self, feature_extractor=None, reference_statistics=None, eps=1e-6):
        self.reference_statistics = _reference(reference_statistics)
        self.eps = eps
        super().__init__(feature_extractor)

    def reset(self):
        super().reset()
        if self.reference_statistics is not None:
            self.dim = self.reference_statistics[0].shape[0]

    def statistics(self, real=True):
        """`(mu, sigma)` of the real or generated features (e.g. to `save_statistics` them)."""
        if FeatureMetric._side(self, real) and self.reference_statistics is not None:
            return self.reference_statistics
        return self._accumulated(real).result()

    def result(self):
        """The FID, a float."""
        return frechet_distance(*self.statistics(real=False), *self.statistics(real=True), eps=self.eps)

    def _accumulator(self):
        return FeatureStatistics()

    def _side(self, real):
        if super()._side(real) and self.reference_statistics is not None:
            raise ValueError(
                "This FrechetInceptionDistance compares with `reference_statistics`; it takes no real images "
                "(`real=True`). Add generated images with `real=False`."
            )
        return super()._side(real)


def _reference(statistics):
    if statistics is None:
        return None
    if isinstance(statistics, (str, os.PathLike)):
        return load_statistics(statistics)
    if isinstance(statistics, (tuple, list)) and len(statistics) == 2:
        return check_statistics(*statistics, name="`reference_statistics`")
    raise TypeError(
        f"`reference_statistics` must be a path to a pytorch-fid .npz file or a (mu, sigma) tuple; got "
        f"{type(statistics).__name__}."
    )
