"""keras_ldm.metrics equals the reference tools on the same inputs: pytorch-fid and torch-fidelity (FID, KID,
IS, precision/recall) on random features, scikit-image (PSNR, SSIM) on random images; streaming equals one
batch; bad input gets a clear error."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from keras_ldm import metrics
from tests.conftest import to_numpy
from tests.metrics.reference_tools import reference_tools

DIM = 64
WANG_ET_AL = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "channel_axis": -1}


@pytest.fixture(scope="module")
def ref():
    return reference_tools()


@pytest.fixture
def features(rng):
    """`(generated, real)`: 200 × 64 features of two different, correlated distributions."""
    mixing = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    real = np.abs(rng.normal(size=(200, DIM)) @ mixing)
    generated = np.abs(rng.normal(0.2, 1.1, size=(200, DIM)) @ mixing)
    return generated, real


def fid_of(generated, real, **kwargs):
    fid = metrics.FrechetInceptionDistance(feature_extractor=_no_extractor, **kwargs)
    fid.update_features(generated, real=False)
    if "reference_statistics" not in kwargs:
        fid.update_features(real, real=True)
    return fid


def _no_extractor(images):
    raise AssertionError("the extractor must not run")


def test_fid_equals_pytorch_fid_and_torch_fidelity(ref, features):
    generated, real = features
    stats = [{"mu": f.mean(0), "sigma": np.cov(f, rowvar=False)} for f in (generated, real)]
    value = fid_of(generated, real).result()
    assert value == pytest.approx(
        ref.calculate_frechet_distance(stats[0]["mu"], stats[0]["sigma"], stats[1]["mu"], stats[1]["sigma"]),
        rel=1e-6,
    )
    expected = ref.fid_statistics_to_metric(stats[0], stats[1], verbose=False)["frechet_inception_distance"]
    assert value == pytest.approx(expected, rel=1e-6)
    assert value == pytest.approx(
        metrics.frechet_distance(stats[0]["mu"], stats[0]["sigma"], stats[1]["mu"], stats[1]["sigma"]),
        rel=1e-12,
    )


def test_kid_equals_torch_fidelity(ref, features):
    generated, real = features
    kid = metrics.KernelInceptionDistance(subsets=7, subset_size=50, seed=3)
    kid.update_features(generated, real=False)
    kid.update_features(real, real=True)
    expected = ref.kid_features_to_metric(
        torch.from_numpy(generated),
        torch.from_numpy(real),
        kid_subsets=7,
        kid_subset_size=50,
        rng_seed=3,
        verbose=False,
    )
    mean, std = kid.result()
    assert mean == pytest.approx(expected["kernel_inception_distance_mean"], rel=1e-6)
    assert std == pytest.approx(expected["kernel_inception_distance_std"], rel=1e-6)
    assert mean > 2 * std > 0  # the two distributions differ


@pytest.mark.parametrize("shuffle", [True, False])
def test_inception_score_equals_torch_fidelity(ref, rng, shuffle):
    logits = rng.normal(scale=3.0, size=(200, 20))
    score = metrics.InceptionScore(splits=10, shuffle=shuffle, seed=7)
    score.update_features(logits)
    expected = ref.isc_featuresdict_to_metric(
        {"logits_unbiased": torch.from_numpy(logits)},
        "logits_unbiased",
        isc_splits=10,
        samples_shuffle=shuffle,
        rng_seed=7,
        verbose=False,
    )
    mean, std = score.result()
    assert mean == pytest.approx(expected["inception_score_mean"], rel=1e-6)
    assert std == pytest.approx(expected["inception_score_std"], rel=1e-6)


def test_precision_recall_equals_torch_fidelity(ref, features):
    generated, real = features
    metric = metrics.PrecisionRecall(neighbourhood=3, batch_size=64)
    metric.update_features(generated, real=False)
    metric.update_features(real, real=True)
    expected = ref.calculate_precision_recall_part(
        torch.from_numpy(generated), torch.from_numpy(real), neighborhood=3, batch_size=64
    )
    result = metric.result()
    # The same samples inside (torch-fidelity returns the fractions in float32).
    assert [round(value * 200) for value in result] == [round(value * 200) for value in expected]
    assert tuple(result) == pytest.approx(expected, abs=1e-7)
    assert 0 < result.precision < 1 and 0 < result.recall < 1  # a non-trivial case


def test_ssim_and_psnr_equal_scikit_image(rng):
    a = rng.integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, size=a.shape), 0, 255).astype(np.uint8)
    b[1] = rng.integers(0, 256, size=b[1].shape)  # an unrelated pair too
    expected_ssim = [structural_similarity(x, y, data_range=255, **WANG_ET_AL) for x, y in zip(a, b)]
    np.testing.assert_allclose(to_numpy(metrics.ssim(a, b)), expected_ssim, rtol=0, atol=1e-5)
    expected_psnr = [peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a, b)]
    np.testing.assert_allclose(to_numpy(metrics.psnr(a, b)), expected_psnr, rtol=1e-5)


def test_ssim_and_psnr_of_float_images_in_0_1(rng):
    a = rng.uniform(size=(1, 24, 20, 3)).astype("float32")
    b = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1).astype("float32")
    expected = structural_similarity(a[0], b[0], data_range=1.0, **WANG_ET_AL)
    np.testing.assert_allclose(to_numpy(metrics.ssim(a, b, data_range=1.0)), [expected], atol=1e-5)
    expected = peak_signal_noise_ratio(a[0], b[0], data_range=1.0)
    np.testing.assert_allclose(to_numpy(metrics.psnr(a, b, data_range=1.0)), [expected], rtol=1e-5)


def test_streaming_equals_one_batch(features):
    generated, real = features
    streamed = metrics.FeatureStatistics()
    for start, stop in [(0, 1), (1, 8), (8, 8), (8, 58), (58, 200)]:
        streamed.update(real[start:stop])
    mu, sigma = streamed.result()
    np.testing.assert_allclose(mu, real.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(real, rowvar=False), rtol=1e-10, atol=1e-14)
    fid = metrics.FrechetInceptionDistance(feature_extractor=_no_extractor)
    for start in range(0, 200, 30):
        fid.update_features(generated[start : start + 30], real=False)
        fid.update_features(real[start : start + 30], real=True)
    assert fid.result() == pytest.approx(fid_of(generated, real).result(), rel=1e-9)


class DatasetOfUnknownLength:
    """What `update_dataset` uses of a `tf.data.Dataset` (without importing TensorFlow here)."""

    def __init__(self, batches):
        self.batches = batches

    def as_numpy_iterator(self):
        return iter(self.batches)

    def __len__(self):
        raise TypeError("The dataset length is unknown.")


def test_images_go_through_the_extractor_from_any_batch_iterable(rng):
    """`update`, `update_dataset` (arrays, dicts, tuples, a tf.data.Dataset) equal `update_features`."""
    images = rng.integers(0, 256, size=(40, 4, 4, 3), dtype=np.uint8)

    def extractor(batch):  # the FID Inception network returns a dict of features
        flat = np.reshape(np.asarray(batch, np.float64), (len(batch), -1))
        return {"pool3": flat[:, :20], "logits_unbiased": flat[:, 20:30] / 50}

    features = extractor(images)["pool3"]
    batches = [images[:5], {"images": images[5:12], "prompts": ["x"] * 7}, (images[12:30], None)]
    for make in [
        lambda extractor: metrics.KernelInceptionDistance(extractor, subsets=3, subset_size=20),
        lambda extractor: metrics.PrecisionRecall(extractor),
        lambda extractor: metrics.FrechetInceptionDistance(extractor),
    ]:
        metric, reference = make(extractor), make(_no_extractor)
        metric.update_dataset(batches, real=True, progress=False)
        metric.update_dataset(DatasetOfUnknownLength([images[30:34], images[34:]]), real=True)
        metric.update(images[::-1] ** 1.1, real=False)
        reference.update_features(features, real=True)
        reference.update_features(features[::-1] ** 1.1, real=False)
        assert np.allclose(metric.result(), reference.result(), rtol=1e-9, atol=0)
    score = metrics.InceptionScore(extractor, splits=4)
    score.update_dataset(iter([images[:13], images[13:]]), progress=True)
    reference = metrics.InceptionScore(splits=4)
    reference.update_features(extractor(images)["logits_unbiased"])
    assert tuple(score.result()) == pytest.approx(tuple(reference.result()), rel=1e-12)


def test_statistics_npz_round_trip_and_reference_statistics(tmp_path, features):
    generated, real = features
    fid = fid_of(generated, real)
    path = tmp_path / "real.npz"
    metrics.save_statistics(path, *fid.statistics(real=True))
    with np.load(path) as data:  # pytorch-fid's format
        assert sorted(data.files) == ["mu", "sigma"]
        np.testing.assert_array_equal(data["mu"], fid.statistics(real=True)[0])
    mu, sigma = metrics.load_statistics(path)
    np.testing.assert_array_equal(sigma, fid.statistics(real=True)[1])
    from_file = fid_of(generated, None, reference_statistics=str(path))
    from_tuple = fid_of(generated, None, reference_statistics=(mu, sigma))
    assert from_file.result() == from_tuple.result() == fid.result()
    from_file.reset()
    assert from_file.dim == DIM
    with pytest.raises(ValueError, match="has no generated features"):
        from_file.result()


def test_bad_statistics_files_and_arguments(tmp_path, features):
    path = tmp_path / "other.npz"
    np.savez(path, mean=np.zeros(3), cov=np.eye(3))
    with pytest.raises(ValueError, match=r"other\.npz.*'mu' and 'sigma'.*\['cov', 'mean'\]"):
        metrics.load_statistics(path)
    with pytest.raises(TypeError, match="reference_statistics"):
        metrics.FrechetInceptionDistance(reference_statistics=np.zeros(3))
    with pytest.raises(ValueError, match=r"reference_statistics.*\(3,\) and \(2, 2\)"):
        metrics.FrechetInceptionDistance(reference_statistics=(np.zeros(3), np.eye(2)))
    fid = metrics.FrechetInceptionDistance(reference_statistics=(np.zeros(3), np.eye(3)))
    with pytest.raises(ValueError, match="takes no real images"):
        fid.update(np.zeros((1, 4, 4, 3)), real=True)
    with pytest.raises(ValueError, match="must have dim 3"):
        fid.update_features(np.zeros((5, 4)), real=False)
    with pytest.raises(ValueError, match="same dim"):
        metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_bad_input_errors(features):
    generated, _ = features
    kid = metrics.KernelInceptionDistance(feature_extractor=lambda images: {"logits": images})
    with pytest.raises(ValueError, match="has no generated features"):
        kid.result()
    kid.update_features(generated, real=False)
    with pytest.raises(ValueError, match=r"must have dim 64 .*got shape \(3, 32\)"):
        kid.update_features(generated[:3, :32], real=True)
    with pytest.raises(ValueError, match=r"shape \(batch, dim\).*\(64,\)"):
        kid.update_features(generated[0], real=True)
    with pytest.raises(ValueError, match=r"rank 4.*\(32, 32, 3\)"):
        kid.update(np.zeros((32, 32, 3)), real=True)
    with pytest.raises(ValueError, match=r"without the key 'pool3'.*\['logits'\]"):
        kid.update(np.zeros((1, 32, 32, 3)), real=True)
    with pytest.raises(ValueError, match="`real` must be True .* or False .*got 'yes'"):
        kid.update_features(generated, real="yes")
    with pytest.raises(ValueError, match="has no real features"):
        kid.result()
    kid.update_features(generated, real=True)
    with pytest.raises(ValueError, match="subset_size=1000 with 200 generated and 200 real"):
        kid.result()
    with pytest.raises(ValueError, match="key 'images'.*\\['pixels'\\]"):
        kid.update_dataset([{"pixels": np.zeros((1, 4, 4, 3))}], progress=False)
    with pytest.raises(TypeError, match="`batches` must be an iterable.*int"):
        kid.update_dataset(3)
    with pytest.raises(ValueError, match="splits=10"):
        metrics.inception_score(np.zeros((5, 3)), splits=10)
    with pytest.raises(ValueError, match=r"same shape; got shapes \(1, 16, 16, 3\) and \(1, 16, 15, 3\)"):
        metrics.ssim(np.zeros((1, 16, 16, 3)), np.zeros((1, 16, 15, 3)))
    with pytest.raises(ValueError, match="rank 4"):
        metrics.psnr(np.zeros((16, 16, 3)), np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="at least 11×11 pixels"):
        metrics.ssim(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)))


def test_too_few_samples_warn_or_raise(features):
    generated, real = features
    with pytest.warns(UserWarning, match=r"rank-deficient.*at least 65 images"):
        fid_of(generated[:10], real).result()
    statistics = metrics.FeatureStatistics()
    statistics.update(real[:1])
    with pytest.raises(ValueError, match="at least 2 feature vectors; got 1"):
        statistics.result()
