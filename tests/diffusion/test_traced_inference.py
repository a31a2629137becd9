"""`traced_inference`: on PyTorch a recorded UNet forward that equals the eager one for any values of the
recorded shapes, follows new weights, records once per signature and falls back to eager calls where it
must; on JAX and TensorFlow the layer itself."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_ldm.diffusion.compile import compile_function, traced_inference
from tests import tiny_models

BACKEND = keras.backend.backend()
TORCH_ONLY = pytest.mark.skipif(BACKEND != "torch", reason="only PyTorch records the forward pass")


def unet_and_inputs(batch=2, seed=0):
    unet = tiny_models.unet(context_dim=6)
    return unet, random_inputs(batch, seed)


def random_inputs(batch, seed):
    rng = np.random.default_rng(seed)
    x = ops.convert_to_tensor(rng.normal(size=(batch, 8, 8, 4)).astype("float32"))
    t = ops.convert_to_tensor(rng.integers(0, 1000, size=(batch,)).astype("int32"))
    context = ops.convert_to_tensor(rng.normal(size=(batch, 3, 6)).astype("float32"))
    return x, t, context


def no_grad(fn):
    """Run `fn` as the sampling loop does (on PyTorch: without autograd)."""
    return compile_function(fn)()


def eager(unet, x, t, context):
    return ops.convert_to_numpy(no_grad(lambda: unet(x, timesteps=t, context=context)))


def traced(forward, x, t, context):
    return ops.convert_to_numpy(no_grad(lambda: forward(x, timesteps=t, context=context)))


@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch records; the other backends compile the loop")
def test_other_backends_call_the_layer_itself():
    unet, _ = unet_and_inputs()
    assert traced_inference(unet) is unet


@TORCH_ONLY
def test_recording_equals_eager_for_new_values_and_records_once_per_shape():
    unet, inputs = unet_and_inputs()
    forward = traced_inference(unet)
    for seed in range(3):  # other timesteps, latents and contexts of the recorded shapes
        inputs = random_inputs(2, seed)
        np.testing.assert_allclose(traced(forward, *inputs), eager(unet, *inputs), atol=1e-5)
    assert len(forward.recordings) == 1
    inputs = random_inputs(3, 0)
    np.testing.assert_allclose(traced(forward, *inputs), eager(unet, *inputs), atol=1e-5)
    assert len(forward.recordings) == 2


@TORCH_ONLY
def test_recording_reads_the_current_weights():
    unet, inputs = unet_and_inputs()
    forward = traced_inference(unet)
    before = traced(forward, *inputs)
    tiny_models.randomized(unet, scale=0.2)  # e.g. EMA weights swapped in, or load_weights()
    after = traced(forward, *inputs)
    assert np.abs(after - before).max() > 1e-2
    np.testing.assert_allclose(after, eager(unet, *inputs), atol=1e-5)


@TORCH_ONLY
def test_a_python_constant_argument_is_part_of_the_signature():
    unet = tiny_models.unet()  # no cross-attention: context=None
    forward = traced_inference(unet)
    x, t, _ = random_inputs(2, 0)
    np.testing.assert_allclose(
        traced(forward, x, t, None), ops.convert_to_numpy(no_grad(lambda: unet(x, timesteps=t))), atol=1e-5
    )
    assert len(forward.recordings) == 1


@TORCH_ONLY
def test_with_gradients_or_numpy_inputs_the_layer_is_called_as_usual():
    unet, (x, t, context) = unet_and_inputs()
    forward = traced_inference(unet)
    out = forward(x, timesteps=t, context=context)  # autograd on: training must differentiate
    assert out.requires_grad
    x, t, context = [ops.convert_to_numpy(v) for v in (x, t, context)]
    numpy_out = no_grad(lambda: forward(x, timesteps=t, context=context))
    assert tuple(numpy_out.shape) == tuple(x.shape)
    assert forward.recordings == {}


@TORCH_ONLY
def test_a_failed_recording_warns_and_falls_back_to_eager(monkeypatch):
    import torch

    def refuse(*args, **kwargs):
        raise RuntimeError("tracing is unavailable")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    unet, inputs = unet_and_inputs()
    forward = traced_inference(unet)
    with pytest.warns(UserWarning, match="tracing is unavailable.*calling it eagerly"):
        out = traced(forward, *inputs)
    np.testing.assert_allclose(out, eager(unet, *inputs), atol=1e-6)
    traced(forward, *inputs)  # no second attempt, no second warning
    assert list(forward.recordings.values()) == [None]


@TORCH_ONLY
def test_generate_records_its_models_and_matches_eager_generation(monkeypatch):
    from keras_ldm.models import generation

    options = dict(num_steps=3, guidance_scale=3.0, seed=1, height=16, width=16)
    prompts = [["a red circle", "a blue circle"], ["a blue circle", "a red circle"], ["a red circle", "a"]]
    keras.utils.set_random_seed(0)
    model = tiny_models.text_model()
    images = [model.generate(p, **options) for p in prompts]
    recordings = {name: len(call.recordings) for name, call in model._recorded_calls.items()}
    # The UNet from the first step on; the text encoder and decoder once generate() repeats.
    assert recordings == {"unet": 1, "text_encoder": 1, "decode": 1}
    monkeypatch.setattr(generation, "traced_inference", lambda layer, call=None, eager_calls=0: call or layer)
    keras.utils.set_random_seed(0)
    eager_model = tiny_models.text_model()
    for p, recorded in zip(prompts, images):
        np.testing.assert_array_equal(recorded, eager_model.generate(p, **options))
