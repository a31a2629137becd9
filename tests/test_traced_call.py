"""`traced_call`: on PyTorch a recorded UNet forward that equals the eager one for any values of the
recorded shapes, follows new weights, records once per signature and falls back to eager calls where it
must; on JAX and TensorFlow the layer itself."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_ldm.backend.compile import compile_function
from keras_ldm.backend.traced_call import kept_traced_call, traced_call
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
    assert traced_call(unet) is unet


@TORCH_ONLY
def test_recording_equals_eager_for_new_values_and_records_once_per_shape():
    unet, inputs = unet_and_inputs()
    forward = traced_call(unet)
    for seed in range(3):  # other timesteps, latents and contexts of the recorded shapes
        inputs = random_inputs(2, seed)
        np.testing.assert_allclose(traced(forward, *inputs), eager(unet, *inputs), atol=1e-5)
    assert len(forward.recordings) == 1
    assert forward.context_dim == unet.context_dim  # the layer's attributes read through
    inputs = random_inputs(3, 0)
    np.testing.assert_allclose(traced(forward, *inputs), eager(unet, *inputs), atol=1e-5)
    assert len(forward.recordings) == 2


@TORCH_ONLY
def test_recording_reads_the_current_weights():
    unet, inputs = unet_and_inputs()
    forward = traced_call(unet)
    before = traced(forward, *inputs)
    tiny_models.randomized(unet, scale=0.2)  # e.g. EMA weights swapped in, or load_weights()
    after = traced(forward, *inputs)
    assert np.abs(after - before).max() > 1e-2
    np.testing.assert_allclose(after, eager(unet, *inputs), atol=1e-5)


@TORCH_ONLY
def test_a_python_constant_argument_is_part_of_the_signature():
    unet = tiny_models.unet()  # no cross-attention: context=None
    forward = traced_call(unet)
    x, t, _ = random_inputs(2, 0)
    np.testing.assert_allclose(
        traced(forward, x, t, None), ops.convert_to_numpy(no_grad(lambda: unet(x, timesteps=t))), atol=1e-5
    )
    assert len(forward.recordings) == 1


@TORCH_ONLY
def test_with_gradients_the_recording_gives_the_eager_gradients():
    import torch

    unet, (x, t, context) = unet_and_inputs()
    forward = traced_call(unet)
    values = [v.value for v in unet.trainable_variables]

    def loss_and_grads(call):
        with torch.enable_grad():
            loss = ops.mean(ops.square(call(x, timesteps=t, context=context)))
            return loss, torch.autograd.grad(loss, values)

    loss, grads = loss_and_grads(forward)
    eager_loss, eager_grads = loss_and_grads(unet)
    assert len(forward.recordings) == 1 and None not in forward.recordings.values()
    np.testing.assert_allclose(float(loss.detach()), float(eager_loss.detach()), rtol=1e-6)
    for grad, eager_grad in zip(grads, eager_grads):
        np.testing.assert_allclose(ops.convert_to_numpy(grad), ops.convert_to_numpy(eager_grad), atol=1e-6)


@TORCH_ONLY
def test_random_draws_numpy_inputs_and_gradient_checkpointing_are_not_recorded():
    import torch

    keras.utils.set_random_seed(0)
    seeded = keras.layers.Dropout(0.5, seed=1)  # draws advance its SeedGenerator
    drawn = keras.layers.Lambda(lambda x: x + keras.random.normal(ops.shape(x)))  # the global generator
    for layer in (seeded, drawn):
        forward = traced_call(layer)

        def draw(forward=forward):
            return ops.convert_to_numpy(no_grad(lambda: forward(ops.ones((2, 64)), training=True)))

        first, second = draw(), draw()
        assert not np.array_equal(first, second)  # a new draw each call, not one recorded draw
        assert list(forward.recordings.values()) == [None]

    unet, (x, t, context) = unet_and_inputs()
    forward = traced_call(unet)
    numpy_inputs = [ops.convert_to_numpy(v) for v in (x, t, context)]
    out = no_grad(lambda: forward(numpy_inputs[0], timesteps=numpy_inputs[1], context=numpy_inputs[2]))
    assert tuple(out.shape) == tuple(x.shape)
    unet.gradient_checkpointing = True
    with torch.enable_grad():
        forward(x, timesteps=t, context=context, training=True)
    assert forward.recordings == {}


@TORCH_ONLY
def test_a_failed_recording_warns_and_falls_back_to_eager(monkeypatch):
    import torch

    def refuse(*args, **kwargs):
        raise RuntimeError("tracing is unavailable")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    unet, inputs = unet_and_inputs()
    forward = traced_call(unet)
    with pytest.warns(UserWarning, match="tracing is unavailable.*calling it eagerly"):
        out = traced(forward, *inputs)
    np.testing.assert_allclose(out, eager(unet, *inputs), atol=1e-6)
    traced(forward, *inputs)  # no second attempt, no second warning
    assert list(forward.recordings.values()) == [None]


def without_recordings(monkeypatch):
    from keras_ldm.backend import traced_call as module

    monkeypatch.setattr(module, "traced_call", lambda layer, call=None, eager_calls=0: call or layer)


def recording_counts(*owners):
    return {
        name: len(call.recordings)
        for owner in owners
        for name, call in owner.__dict__["_traced_calls"].items()
    }


@TORCH_ONLY
def test_generate_records_its_models_and_matches_eager_generation(monkeypatch):
    options = dict(num_steps=3, guidance_scale=3.0, seed=1, height=16, width=16)
    prompts = [["a red circle", "a blue circle"], ["a blue circle", "a red circle"], ["a red circle", "a"]]
    keras.utils.set_random_seed(0)
    model = tiny_models.text_model()
    images = [model.generate(p, **options) for p in prompts]
    # The UNet from the first step on; the text encoder and decoder once generate() repeats.
    assert recording_counts(model, model.first_stage) == {"unet": 1, "text_encoder": 1, "decoder": 1}
    without_recordings(monkeypatch)
    keras.utils.set_random_seed(0)
    eager_model = tiny_models.text_model()
    for p, recorded in zip(prompts, images):
        np.testing.assert_array_equal(recorded, eager_model.generate(p, **options))


@TORCH_ONLY
def test_training_records_its_models_and_matches_eager_training(monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(2, 16, 16, 3)).astype("float32")

    def train(steps=4):
        keras.utils.set_random_seed(0)
        model = tiny_models.text_model()
        model.compile(optimizer=keras.optimizers.SGD(0.1))  # Adam would magnify rounding in tiny gradients
        batch = {"images": images, "token_ids": model.tokenizer(["a red circle", "a blue circle"])}
        losses = [float(model.train_on_batch(batch)) for _ in range(steps)]
        return model, losses

    model, losses = train()
    # The UNet from the first step on, the text encoder from the third, the first-stage encoder from the second.
    assert recording_counts(model, model.first_stage) == {"unet": 1, "text_encoder": 1, "encoder": 1}
    without_recordings(monkeypatch)
    eager_model, eager_losses = train()
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-5)
    for weight, eager_weight in zip(model.get_weights(), eager_model.get_weights()):
        np.testing.assert_allclose(weight, eager_weight, atol=1e-6)


@TORCH_ONLY
def test_a_kept_recording_follows_a_replaced_layer():
    class Owner:
        pass

    owner, (x, t, context) = Owner(), random_inputs(2, 0)
    first, second = tiny_models.unet(context_dim=6), tiny_models.unet(context_dim=6, scale=0.2)
    assert kept_traced_call(owner, "unet", first) is kept_traced_call(owner, "unet", first)
    replaced = kept_traced_call(owner, "unet", second)  # e.g. `model.unet = other_unet`
    assert replaced.layer is second
    np.testing.assert_allclose(traced(replaced, x, t, context), eager(second, x, t, context), atol=1e-5)


@TORCH_ONLY
def test_a_recording_inside_a_mixed_precision_call_reads_the_stored_weights():
    # Inside an enclosing mixed-precision layer call Keras hands out bfloat16 copies of the variables;
    # a float32 layer must still compute with its float32 weights, as it does eagerly.
    keras.utils.set_random_seed(0)
    unet = tiny_models.unet(context_dim=6)
    forward = traced_call(unet)

    class Parent(keras.layers.Layer):
        def __init__(self, call, **kwargs):
            super().__init__(dtype="mixed_bfloat16", **kwargs)
            self.inner, self.unet = call, unet

        def call(self, x, t, context):
            return self.inner(x, timesteps=t, context=context)

    x, t, context = random_inputs(2, 0)
    inside = ops.convert_to_numpy(no_grad(lambda: Parent(forward)(x, t, context)))
    outside = traced(forward, x, t, context)
    np.testing.assert_allclose(
        inside, ops.convert_to_numpy(no_grad(lambda: Parent(unet)(x, t, context))), atol=1e-5
    )
    np.testing.assert_allclose(outside, eager(unet, x, t, context), atol=1e-5)
