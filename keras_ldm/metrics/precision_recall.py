"""Improved precision and recall (Kynkäänniemi et al. 2019), as torch-fidelity computes them."""

import collections

import numpy as np
import scipy.spatial.distance

from keras_ldm.metrics.feature_metric import FeatureMetric

PrecisionAndRecall = collections.namedtuple("PrecisionAndRecall", ["precision", "recall"])


def neighbourhood_radii(features, neighbourhood=3, batch_size=10000):
    """The distance of each feature vector to its `neighbourhood`-th nearest neighbour in `features` (itself
    excluded, as the vector's own zero distance is the first), in batches of `batch_size` rows.

    Example:
    >>> neighbourhood_radii(np.array([[0.0], [1.0], [3.0]]), neighbourhood=1).tolist()
    [1.0, 1.0, 2.0]
    """
    radii = []
    for rows in _batches(features, batch_size):
        distances = scipy.spatial.distance.cdist(rows, features)
        radii.append(np.partition(distances, neighbourhood, axis=1)[:, neighbourhood])
    return np.concatenate(radii)


def fraction_inside(queries, features, radii, batch_size=10000):
    """The fraction of `queries` within the ball (`distance <= radius`) of at least one of `features`.

    Example:
    >>> fraction_inside(np.array([[0.5], [5.0]]), np.array([[0.0]]), np.array([1.0]))
    0.5
    """
    inside = [
        (scipy.spatial.distance.cdist(rows, features) <= radii).any(axis=1)
        for rows in _batches(queries, batch_size)
    ]
    return float(np.concatenate(inside).mean())


def precision_recall(generated, real, neighbourhood=3, batch_size=10000):
    """`(precision, recall)`: the fraction of generated samples inside the real manifold (the union of balls
    reaching each real sample's `neighbourhood`-th nearest real neighbour) and of real samples inside the
    generated manifold; equal to torch-fidelity's `calculate_precision_recall_part`.

    Example:
    >>> real = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> precision_recall(np.array([[1.5], [9.0]]), real, neighbourhood=1)
    PrecisionAndRecall(precision=0.5, recall=1.0)
    """
    generated, real = np.asarray(generated, np.float64), np.asarray(real, np.float64)
    if min(len(generated), len(real)) <= neighbourhood:
        raise ValueError(
            f"Each side needs more than `neighbourhood`={neighbourhood} samples; got {len(generated)} generated "
            f"and {len(real)} real."
        )
    real_radii = neighbourhood_radii(real, neighbourhood, batch_size)
    generated_radii = neighbourhood_radii(generated, neighbourhood, batch_size)
    precision = fraction_inside(generated, real, real_radii, batch_size)
    recall = fraction_inside(real, generated, generated_radii, batch_size)
    return PrecisionAndRecall(precision, recall)


def _batches(array, batch_size):
    return (array[start : start + batch_size] for start in range(0, len(array), batch_size))


class PrecisionRecall(FeatureMetric):
    """Improved precision (fidelity) and recall (coverage) of generated images against real ones, both in
    [0, 1], higher is better: see `precision_recall`. Keeps every "pool3" feature.

    Args:
        feature_extractor: see `FeatureMetric`; `None` builds the FID Inception network on first use.
        neighbourhood: k, the nearest neighbour whose distance is a sample's radius (3 in the paper).
        batch_size: rows per block of the pairwise distances (memory: `batch_size` × samples float64).

    Example:
    >>> metric = PrecisionRecall(neighbourhood=1)
    >>> metric.update_features(np.array([[0.0], [1.0], [2.0], [3.0]]), real=True)
    >>> metric.update_features(np.array([[1.5], [9.0]]), real=False)
    >>> metric.result()
    PrecisionAndRecall(precision=0.5, recall=1.0)
    """

    def __init__(self, feature_extractor=None, neighbourhood=3, batch_size=10000):
        super().__init__(feature_extractor)
        self.neighbourhood, self.batch_size = neighbourhood, batch_size

    def result(self):
        """`(precision, recall)` (a namedtuple)."""
        generated, real = self._accumulated(False).result(), self._accumulated(True).result()
        return precision_recall(generated, real, self.neighbourhood, self.batch_size)
