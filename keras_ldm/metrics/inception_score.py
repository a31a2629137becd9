"""The Inception Score (Salimans et al. 2016), as torch-fidelity computes it."""

import numpy as np
import scipy.special

from keras_ldm.metrics.feature_metric import FeatureMetric
from keras_ldm.metrics.kid import MeanAndStd


def inception_score(logits, splits=10, shuffle=True, seed=2020):
    """`(mean, std)` over `splits` chunks of `exp(E_x KL(p(y|x) ‖ p(y)))`, from classifier logits
    `(samples, classes)`, equal to torch-fidelity's `isc_features_to_metric` (rows shuffled with
    `numpy.random.RandomState(seed).permutation` first if `shuffle`).

    Example:
    >>> logits = 100 * np.eye(4)[[0, 1, 2, 3] * 5]  # confident and evenly spread over 4 classes
    >>> [round(value, 6) for value in inception_score(logits, splits=1)]
    [4.0, 0.0]
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or not 1 <= splits <= len(logits):
        raise ValueError(
            f"`logits` must have shape (samples, classes) with at least `splits` samples; got shape "
            f"{logits.shape} with splits={splits}."
        )
    n = len(logits)
    if shuffle:
        logits = logits[np.random.RandomState(seed).permutation(n)]
    log_p = scipy.special.log_softmax(logits, axis=1)
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        chunk = slice(i * n // splits, (i + 1) * n // splits)
        log_q = np.log(p[chunk].mean(axis=0, keepdims=True))
        kl = (p[chunk] * (log_p[chunk] - log_q)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return MeanAndStd(float(np.mean(scores)), float(np.std(scores)))


class InceptionScore(FeatureMetric):
    """The Inception Score of one set of images (higher is better): see `inception_score`. Takes the
    extractor's "logits_unbiased" (the FID Inception network's 1008 class logits without the bias).

    Args:
        feature_extractor: see `FeatureMetric`; `None` builds the FID Inception network on first use.
        splits: the number of chunks the score is averaged over.
        shuffle: whether to shuffle the samples (with `seed`) before splitting, as torch-fidelity does.
        seed: the shuffling seed (torch-fidelity's default is 2020).

    Example:
    >>> score = InceptionScore(splits=1)
    >>> score.update_features(100 * np.eye(3)[[0, 1, 2] * 4])
    >>> round(score.result().mean, 6)
    3.0
    """

    feature_key = "logits_unbiased"
    sides = (True,)

    def __init__(self, feature_extractor=None, splits=10, shuffle=True, seed=2020):
        super().__init__(feature_extractor)
        self.splits, self.shuffle, self.seed = splits, shuffle, seed

    def update(self, images):
        """Adds the logits of an NHWC image batch (uint8 or float in [0, 255])."""
        super().update(images)

    def update_features(self, features):
        """Adds logits `(batch, classes)` computed elsewhere."""
        super().update_features(features)

    def update_dataset(self, batches, progress=True):
        """Adds the logits of every image batch of `batches` (see `FeatureMetric.update_dataset`)."""
        super().update_dataset(batches, progress=progress)

    def result(self):
        """`(mean, std)` over the splits (a namedtuple)."""
        return inception_score(self._accumulated(True).result(), self.splits, self.shuffle, self.seed)
