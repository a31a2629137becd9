"""Mixed precision: `generate()` under `mixed_float16` and `mixed_bfloat16` runs on the current backend and
device (JAX's float16 attention on CPU used to fail to compile) and gives finite images close to float32."""

import keras
import numpy as np
import pytest

from keras_ldm.layers.attention import multi_head_attention
from tests.conftest import to_numpy
from tests.tiny_models import text_model

MIXED = ["mixed_float16", "mixed_bfloat16"]


def _under_policy(policy, build):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return build()
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_attention_runs_compiled_and_keeps_its_dtype(dtype, rng):
    q, k, v = (keras.ops.convert_to_tensor(rng.normal(size=(2, 6, 16)), dtype) for _ in range(3))
    expected = to_numpy(multi_head_attention(*(keras.ops.cast(t, "float32") for t in (q, k, v)), num_heads=2))
    if keras.backend.backend() == "jax":  # the failure was in XLA's compilation, not in eager dispatch
        import jax

        out = jax.jit(lambda q, k, v: multi_head_attention(q, k, v, num_heads=2))(q, k, v)
    else:
        out = multi_head_attention(q, k, v, num_heads=2)
    assert keras.backend.standardize_dtype(out.dtype) == dtype
    np.testing.assert_allclose(to_numpy(keras.ops.cast(out, "float32")), expected, atol=5e-2)


GENERATE = dict(num_steps=3, height=8, width=8, seed=0)
PROMPTS = ["a red circle", "blue"]


@pytest.fixture(scope="module")
def float32_run():
    """The tiny text-to-image model's weights and its float32 images (one compilation for both policies)."""
    model = text_model()
    return model.get_weights(), model.generate(PROMPTS, **GENERATE).astype(np.float32)


@pytest.mark.parametrize("policy", MIXED)
def test_mixed_precision_generation_is_finite_and_close_to_float32(policy, float32_run):
    weights, expected = float32_run
    mixed = _under_policy(policy, text_model)
    assert mixed.unet.dtype_policy.name == policy
    mixed.set_weights(weights)
    images = mixed.generate(PROMPTS, **GENERATE)
    assert images.dtype == np.uint8 and images.shape == expected.shape
    assert images.astype(np.float32).std() > 5  # not a flat (NaN) image
    difference = np.abs(images.astype(np.float32) - expected)
    assert difference.mean() < 4, (policy, difference.mean(), difference.max())
