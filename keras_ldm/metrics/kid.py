"""The Kernel Inception Distance (Bińkowski et al. 2018), as torch-fidelity computes it."""

import collections

import numpy as np

from keras_ldm.metrics.feature_metric import FeatureMetric

MeanAndStd = collections.namedtuple("MeanAndStd", ["mean", "std"])


def polynomial_kernel(x, y, degree=3, gamma=None, coef0=1.0):
    """`(gamma x yᵀ + coef0) ** degree`, with `gamma = 1 / dim` by default.

    Example:
    >>> polynomial_kernel(np.ones((1, 2)), np.ones((1, 2))).tolist()
    [[8.0]]
    """
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(k_xx, k_xy, k_yy):
    """The unbiased estimate of the squared maximum mean discrepancy from the three kernel matrices `(m, m)`:
    the off-diagonal means of `k_xx` and `k_yy` minus twice the mean of `k_xy`.

    Example:
    >>> float(mmd2_unbiased(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2))))
    0.0
    """
    m = k_xx.shape[0]
    off_diagonal = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
    return off_diagonal / (m * (m - 1)) - 2 * k_xy.sum() / (m * m)


def kernel_inception_distance(generated, real, subsets=100, subset_size=1000, seed=2020, **kernel_args):
    """`(mean, std)` of the unbiased MMD² with a polynomial kernel over `subsets` random subsets of
    `subset_size` features of each side, drawn as torch-fidelity's `kid_features_to_metric` draws them
    (`numpy.random.RandomState(seed)`, generated subset first), so that the numbers equal its numbers.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> kid = kernel_inception_distance(rng.normal(size=(20, 4)), rng.normal(size=(20, 4)), 5, 10)
    >>> abs(kid.mean) < 0.5
    True
    """
    generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
    if min(len(generated), len(real)) < subset_size or subset_size < 2:
        raise ValueError(
            f"`subset_size` must be at least 2 and at most the number of samples of each side; got "
            f"subset_size={subset_size} with {len(generated)} generated and {len(real)} real samples."
        )
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        x = generated[rng.choice(len(generated), subset_size, replace=False)]
        y = real[rng.choice(len(real), subset_size, replace=False)]
        k_xx, k_yy, k_xy = (polynomial_kernel(a, b, **kernel_args) for a, b in ((x, x), (y, y), (x, y)))
        mmds[i] = mmd2_unbiased(k_xx, k_xy, k_yy)
    return MeanAndStd(float(np.mean(mmds)), float(np.std(mmds)))


class KernelInceptionDistance(FeatureMetric):
    """The Kernel Inception Distance between real and generated images (lower is better; values slightly
    below 0 mean the two sets are alike): see `kernel_inception_distance`. Keeps every "pool3" feature.

    Args:
        feature_extractor: see `FeatureMetric`; `None` builds the FID Inception network on first use.
        subsets: the number of random subsets averaged.
        subset_size: the samples per subset; each side needs at least this many. `None`: 1000 (torch-fidelity's
            default) or the size of the smaller side if that is less.
        seed: the seed of the subset selection (torch-fidelity's default is 2020).
        degree, gamma, coef0: the polynomial kernel `(gamma x yᵀ + coef0) ** degree`; `gamma=None` is 1 / dim.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> kid = KernelInceptionDistance(subsets=10, subset_size=50)
    >>> kid.update_features(rng.normal(size=(100, 8)), real=True)
    >>> kid.update_features(rng.normal(size=(100, 8)), real=False)
    >>> mean, std = kid.result()
    >>> abs(mean) < 0.1
    True
    """

    def __init__(
        self,
        feature_extractor=None,
        subsets=100,
        subset_size=1000,
        seed=2020,
        degree=3,
        gamma=None,
        coef0=1.0,
    ):
        super().__init__(feature_extractor)
        self.subsets, self.subset_size, self.seed = subsets, subset_size, seed
        self.kernel_args = {"degree": degree, "gamma": gamma, "coef0": coef0}

    def result(self):
        """`(mean, std)` over the subsets (a namedtuple)."""
        generated, real = self._accumulated(False).result(), self._accumulated(True).result()
        subset_size = self.subset_size or min(1000, len(generated), len(real))
        return kernel_inception_distance(
            generated, real, self.subsets, subset_size, self.seed, **self.kernel_args
        )
