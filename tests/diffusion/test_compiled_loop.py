"""The whole sampling loop as one compiled function: same results as the eager samplers, no retrace
when only values change, and a Keras model's weights read as arguments rather than baked constants."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_ldm.backend.compile import compile_function
from keras_ldm.backend.noise import make_noise_sampler
from keras_ldm.diffusion.guidance import classifier_free_guidance
from keras_ldm.diffusion.loop import make_sampling_fn
from keras_ldm.diffusion.samplers import get_sampler
from keras_ldm.diffusion.schedule import NoiseSchedule

BACKEND = keras.backend.backend()
SHAPE = (2, 8, 8, 4)
CONTEXT_SHAPE = (2, 3, 6)
SCHEDULE = NoiseSchedule("linear", linear_start=0.00085, linear_end=0.012)
TRACES_VALUES = pytest.mark.skipif(
    BACKEND == "torch", reason="PyTorch runs an eager no-grad loop: nothing is traced"
)


class TinyConditionalDenoiser(keras.layers.Layer):
    """`model(x, t, context)`: a channel mix scaled by t plus a projection of the mean context."""

    def __init__(self, channels=4, context_dim=6, **kwargs):
        super().__init__(**kwargs)
        self.context_dim = context_dim
        self.mix = keras.layers.Dense(channels, use_bias=False, kernel_initializer="orthogonal")
        self.context_projection = keras.layers.Dense(channels)

    def build(self, x_shape):
        self.mix.build(x_shape)
        self.context_projection.build((None, self.context_dim))

    def call(self, x, t, context=None):
        scale = ops.reshape(0.5 + ops.cast(t, x.dtype) / 1000.0, (-1, 1, 1, 1))
        shift = self.context_projection(ops.mean(context, axis=1))[:, None, None, :]
        return 0.8 * self.mix(x) * scale + 0.1 * shift


def make_model():
    keras.utils.set_random_seed(0)
    model = TinyConditionalDenoiser()
    model.build(SHAPE)
    return model


def random_inputs(seed, guidance_scale):
    rng = np.random.default_rng(seed)
    return rng.normal(size=SHAPE).astype("float32"), {
        "context": rng.normal(size=CONTEXT_SHAPE).astype("float32"),
        "unconditional_context": rng.normal(size=(1,) + CONTEXT_SHAPE[1:]).astype("float32"),
        "guidance_scale": guidance_scale,
    }


class CountingBuilder:
    """A denoise_builder for classifier-free guidance that counts how often it is traced/called."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model, inputs):
        self.calls += 1
        return classifier_free_guidance(
            model, inputs["context"], inputs["unconditional_context"], inputs["guidance_scale"]
        )


def eager_sample(sampler, model, x_T, inputs, num_steps, seed=0, **options):
    denoise = classifier_free_guidance(
        model, inputs["context"], inputs["unconditional_context"], inputs["guidance_scale"]
    )
    noise_sampler = make_noise_sampler(seed, SHAPE)
    return get_sampler(sampler)(denoise, x_T, SCHEDULE, num_steps, noise_sampler=noise_sampler, **options)


def assert_close(ours, reference, tolerance=1e-5):
    ours, reference = ops.convert_to_numpy(ours), ops.convert_to_numpy(reference)
    assert np.max(np.abs(ours - reference)) <= tolerance * np.max(np.abs(reference))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "plms"])
def test_compiled_loop_equals_eager_sampler(sampler):
    model = make_model()
    sample = make_sampling_fn(sampler, model, CountingBuilder(), SCHEDULE, num_steps=8)
    x_T, inputs = random_inputs(1, 5.0)
    assert_close(sample(x_T, inputs, seed=3), eager_sample(sampler, model, x_T, inputs, 8, seed=3))


@TRACES_VALUES
def test_new_values_do_not_retrace():
    model = make_model()
    builder = CountingBuilder()
    sample = make_sampling_fn("ddpm", model, builder, SCHEDULE, num_steps=6)
    first_noise, first_inputs = random_inputs(1, 3.0)
    second_noise, second_inputs = random_inputs(2, 7.5)
    first = sample(first_noise, first_inputs, seed=1)
    second = sample(second_noise, second_inputs, seed=2)
    assert builder.calls == 1
    assert_close(second, eager_sample("ddpm", model, second_noise, second_inputs, 6, seed=2))
    # the seed alone changes the sample, still without a retrace
    other_seed = sample(first_noise, first_inputs, seed=5)
    assert builder.calls == 1
    assert not np.allclose(ops.convert_to_numpy(other_seed), ops.convert_to_numpy(first), atol=1e-3)
    assert_close(sample(first_noise, first_inputs, seed=1), first, tolerance=0)


def test_weights_are_read_at_call_time_not_baked_in():
    model = make_model()
    builder = CountingBuilder()
    sample = make_sampling_fn("ddim", model, builder, SCHEDULE, num_steps=5)
    x_T, inputs = random_inputs(4, 2.0)
    before = sample(x_T, inputs)
    model.mix.kernel.assign(model.mix.kernel * 0.5)
    after = sample(x_T, inputs)
    assert not np.allclose(ops.convert_to_numpy(after), ops.convert_to_numpy(before), atol=1e-3)
    assert_close(after, eager_sample("ddim", model, x_T, inputs, 5))
    if BACKEND != "torch":
        assert builder.calls == 1


def test_inpainting_through_the_compiled_loop():
    model = make_model()
    sample = make_sampling_fn("ddim", model, CountingBuilder(), SCHEDULE, num_steps=5)
    x_T, inputs = random_inputs(6, 4.0)
    x0 = np.random.default_rng(7).normal(size=SHAPE).astype("float32")
    mask = np.zeros(SHAPE[:-1] + (1,), "float32")
    mask[:, 2:6, 2:6] = 1.0
    compiled = sample(x_T, inputs, seed=9, mask=mask, x0=x0)
    assert_close(compiled, eager_sample("ddim", model, x_T, inputs, 5, seed=9, mask=mask, x0=x0))


def test_trajectory_through_the_compiled_loop():
    model = make_model()
    sample = make_sampling_fn(
        "dpmpp_2m", model, CountingBuilder(), SCHEDULE, num_steps=4, return_trajectory=True
    )
    x_T, inputs = random_inputs(8, 4.0)
    final, trajectory = sample(x_T, inputs)
    assert tuple(trajectory.shape) == (4,) + SHAPE
    assert_close(trajectory[-1], final, tolerance=0)
    assert_close(trajectory, eager_sample("dpmpp_2m", model, x_T, inputs, 4, return_trajectory=True)[1])


@pytest.mark.skipif(BACKEND != "torch", reason="the no-grad loop is the PyTorch path")
def test_torch_loop_builds_no_autograd_graph():
    model = make_model()
    sample = make_sampling_fn("euler", model, CountingBuilder(), SCHEDULE, num_steps=3)
    x_T, inputs = random_inputs(9, 4.0)
    assert not sample(x_T, inputs).requires_grad


def test_noise_sampler_is_a_function_of_seed_and_index():
    noise = make_noise_sampler(11, (3, 5))
    again = make_noise_sampler(11, (3, 5))
    other = make_noise_sampler(12, (3, 5))
    assert_close(noise(4), again(4), tolerance=0)
    draws = [ops.convert_to_numpy(n(4)) for n in (noise, other)] + [ops.convert_to_numpy(noise(5))]
    assert not np.allclose(draws[0], draws[1]) and not np.allclose(draws[0], draws[2])
    assert abs(float(np.std(ops.convert_to_numpy(make_noise_sampler(0, (4096,))(0)))) - 1.0) < 0.05


def test_bad_arguments_fail_before_compiling():
    model = make_model()
    with pytest.raises(ValueError, match=r"num_steps.*between 1 and .*1000.*num_steps=1001"):
        make_sampling_fn("ddim", model, CountingBuilder(), SCHEDULE, num_steps=1001)
    with pytest.raises(ValueError, match=r"sampler.*'lms'"):
        make_sampling_fn("lms", model, CountingBuilder(), SCHEDULE, num_steps=10)
    with pytest.raises(ValueError, match=r"must be built.*not built"):
        compile_function(lambda x: x, TinyConditionalDenoiser())
