"""What the feature-based metrics (FID, KID, IS, precision/recall) share: images -> features -> accumulators.

A metric keeps one accumulator per side (real and generated images), feeds it float64 numpy features from a
feature extractor (any callable mapping an NHWC image batch to features, by default the FID Inception network)
and turns the accumulators into a number in `result()`.
"""

import keras
import numpy as np


class FeatureBank:
    """Keeps every feature vector, for metrics that need them all (KID, IS, precision/recall).

    Example:
    >>> bank = FeatureBank()
    >>> bank.update(np.zeros((2, 3))); bank.update(np.ones((1, 3)))
    >>> bank.count, bank.result().shape
    (3, (3, 3))
    """

    def __init__(self):
        self.batches = []
        self.count = 0

    def update(self, features):
        self.batches.append(features)
        self.count += len(features)

    def result(self):
        """All the feature vectors added, `(count, dim)`."""
        return np.concatenate(self.batches, axis=0)


class FeatureMetric:
    """The base of the feature-based metrics: `update`, `update_features`, `update_dataset`, `reset`.

    Subclasses set `feature_key` (the entry taken when the extractor returns a dict) and `sides` (the image
    sets: real and generated, or one), may override `_accumulator()` (default: a `FeatureBank`) and implement
    `result()`.

    Args:
        feature_extractor: a callable or Keras model mapping an NHWC image batch (uint8 or float in [0, 255])
            to features `(batch, dim)` (or a dict holding them under `feature_key`). `None`: the FID
            Inception network `keras_ldm.metrics.inception.fid_inception_v3()`, built on first use.

    Example:
    >>> class Count(FeatureMetric):
    ...     def result(self):
    ...         return self._accumulated(True).count
    >>> metric = Count(feature_extractor=lambda images: np.reshape(images, (len(images), -1)))
    >>> metric.update_dataset([np.zeros((2, 1, 1, 3)), {"images": np.ones((3, 1, 1, 3))}], progress=False)
    >>> metric.result()
    5
    """

    feature_key = "pool3"
    sides = (True, False)

    def __init__(self, feature_extractor=None):
        self._feature_extractor = feature_extractor
        self.reset()

    @property
    def feature_extractor(self):
        if self._feature_extractor is None:
            from keras_ldm.metrics.inception import fid_inception_v3

            self._feature_extractor = fid_inception_v3()
        return self._feature_extractor

    def reset(self):
        """Forgets every feature added."""
        self.dim = None
        self._accumulators = {side: self._accumulator() for side in self.sides}

    def update(self, images, real=True):
        """Adds the features of an NHWC image batch (uint8 or float in [0, 255]) to the real or generated set."""
        self._side(real)  # before the extractor runs
        self._add(self.features_of(images), real)

    def update_features(self, features, real=True):
        """Adds feature vectors `(batch, dim)` computed elsewhere to the real or generated set."""
        self._add(features, real)

    def update_dataset(self, batches, real=True, progress=True):
        """Adds the features of every image batch of `batches` (numpy arrays or tensors, dicts with "images",
        `(images, ...)` tuples, or a `tf.data.Dataset` of those), with a progress bar if `progress`."""
        self._side(real)
        for images in iterate_images(batches, progress):
            self._add(self.features_of(images), real)

    def features_of(self, images):
        """The extractor's features of an NHWC image batch as a float64 numpy array `(batch, dim)`."""
        if not hasattr(images, "shape"):
            images = np.asarray(images)
        shape = tuple(keras.ops.shape(images))
        if len(shape) != 4:
            raise ValueError(
                f"`images` must be a batch of NHWC images of rank 4 (batch, height, width, channels); got shape "
                f"{shape}."
            )
        features = run_extractor(self.feature_extractor, images)
        if isinstance(features, dict):
            if self.feature_key not in features:
                raise ValueError(
                    f"The feature extractor returned a dict without the key {self.feature_key!r} that "
                    f"{type(self).__name__} uses; found {sorted(features)}."
                )
            features = features[self.feature_key]
        features = np.asarray(keras.ops.convert_to_numpy(features), dtype=np.float64)
        return features.reshape(shape[0], -1)

    def result(self):
        """The metric's value from the features added so far."""
        raise NotImplementedError

    def _add(self, features, real):
        features = np.asarray(keras.ops.convert_to_numpy(features), dtype=np.float64)
        if features.ndim != 2:
            raise ValueError(f"`features` must have shape (batch, dim); got shape {features.shape}.")
        if self.dim is not None and features.shape[1] != self.dim:
            raise ValueError(
                f"`features` must have dim {self.dim} like the earlier features and statistics; got shape {features.shape}."
            )
        accumulator = self._accumulators[self._side(real)]
        self.dim = features.shape[1]
        accumulator.update(features)

    def _accumulator(self):
        return FeatureBank()

    def _side(self, real):
        """`real` as a bool, after checking it names one of `sides`."""
        if not isinstance(real, (bool, np.bool_)) or bool(real) not in self.sides:
            allowed = " or ".join(f"{side} ({'real' if side else 'generated'} images)" for side in self.sides)
            raise ValueError(f"`real` must be {allowed}; got {real!r}.")
        return bool(real)

    def _accumulated(self, real):
        """The accumulator of one side, after checking it holds features."""
        accumulator = self._accumulators[real]
        if accumulator.count == 0:
            side = "" if len(self.sides) == 1 else ("real " if real else "generated ")
            raise ValueError(
                f"{type(self).__name__} has no {side}features: add some with `update`, `update_features` or "
                "`update_dataset` first."
            )
        return accumulator


def run_extractor(extractor, images):
    """`extractor(images)`; a Keras model runs compiled (`predict_on_batch`: one XLA/graph program per shape).

    Example:
    >>> run_extractor(lambda images: images.sum(axis=(1, 2)), np.ones((2, 3, 3, 1))).tolist()
    [[9.0], [9.0]]
    """
    if isinstance(extractor, keras.Model):
        return extractor.predict_on_batch(images)
    return extractor(images)


def iterate_images(batches, progress=True):
    """Yields the image batches of `batches` (see `FeatureMetric.update_dataset`), with a `keras.utils.Progbar`.

    Example:
    >>> [b.shape for b in iterate_images([{"images": np.zeros((2, 4, 4, 3))}, (np.zeros((1, 4, 4, 3)), 0)], False)]
    [(2, 4, 4, 3), (1, 4, 4, 3)]
    """
    if hasattr(batches, "as_numpy_iterator"):
        iterator = batches.as_numpy_iterator()
    else:
        try:
            iterator = iter(batches)
        except TypeError:
            raise TypeError(
                f"`batches` must be an iterable of image batches (e.g. a list or a tf.data.Dataset); got "
                f"{type(batches).__name__}."
            ) from None
    try:
        target = len(batches)
    except TypeError:  # a generator, or a tf.data.Dataset of unknown length
        target = None
    bar = keras.utils.Progbar(target, unit_name="batch") if progress else None
    step = 0
    for step, batch in enumerate(iterator, start=1):
        yield images_of(batch)
        if bar is not None:
            bar.update(step)
    if bar is not None and target is None:
        bar.update(step, finalize=True)


def images_of(batch):
    """The images of one batch: the array itself, `batch["images"]` of a dict, or `batch[0]` of a tuple.

    Example:
    >>> images_of({"images": np.zeros((1, 2, 2, 3)), "prompts": ["a"]}).shape
    (1, 2, 2, 3)
    """
    if isinstance(batch, dict):
        if "images" not in batch:
            raise ValueError(
                f"A dict batch must hold the images under the key 'images'; found {sorted(batch)}."
            )
        return batch["images"]
    if isinstance(batch, tuple):
        return batch[0]
    return batch
