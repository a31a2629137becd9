"""Evaluation metrics, numerically equal to the reference tools: FID (pytorch-fid), KID, Inception Score and
precision/recall (torch-fidelity), PSNR and SSIM (scikit-image), LPIPS (the `lpips` package, v0.1 VGG16);
the FID Inception network as Keras layers; `SceneClassifier`, a small classifier of the procedural shapes
scenes whose features make these metrics meaningful on that data; whole evaluations of generators and first
stages (`evaluation`, behind `keras-ldm evaluate` and `keras-ldm evaluate-autoencoder`).

The feature-based metrics share one API (`keras_ldm.metrics.feature_metric.FeatureMetric`): `update(images,
real=True)`, `update_features(features, real=True)`, `update_dataset(batches, real=True)`, `result()`,
`reset()`.
"""

from keras_ldm.metrics.evaluation import evaluate_autoencoder, evaluate_images, generated_batches
from keras_ldm.metrics.feature_metric import FeatureMetric
from keras_ldm.metrics.frechet import FrechetInceptionDistance, frechet_distance
from keras_ldm.metrics.image_quality import psnr, ssim
from keras_ldm.metrics.inception import FIDInceptionV3, fid_inception_v3
from keras_ldm.metrics.inception_score import InceptionScore, inception_score
from keras_ldm.metrics.kid import KernelInceptionDistance, kernel_inception_distance
from keras_ldm.metrics.lpips import lpips_distance, lpips_vgg
from keras_ldm.metrics.precision_recall import PrecisionRecall, precision_recall
from keras_ldm.metrics.scene_classifier import SceneClassifier, scene_classifier
from keras_ldm.metrics.statistics import FeatureStatistics, load_statistics, save_statistics

__all__ = [
    "FIDInceptionV3",
    "FeatureMetric",
    "FeatureStatistics",
    "FrechetInceptionDistance",
    "InceptionScore",
    "KernelInceptionDistance",
    "PrecisionRecall",
    "SceneClassifier",
    "evaluate_autoencoder",
    "evaluate_images",
    "fid_inception_v3",
    "frechet_distance",
    "generated_batches",
    "inception_score",
    "kernel_inception_distance",
    "load_statistics",
    "lpips_distance",
    "lpips_vgg",
    "precision_recall",
    "psnr",
    "save_statistics",
    "scene_classifier",
    "ssim",
]
