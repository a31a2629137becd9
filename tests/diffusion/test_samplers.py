"""Every sampler's trajectory against its diffusers scheduler, with the same denoiser and noise.

The denoiser is a fixed random linear map over channels, scaled by the timestep (so a wrong `t`
shows), applied to channels-last latents of shape (2, 8, 8, 4). Relative error = max|a-b| / max|b|
over the whole trajectory, in float32.
"""

import re

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)
from keras import ops

from keras_ldm.diffusion.guidance import classifier_free_guidance
from keras_ldm.diffusion.samplers import SAMPLERS, get_sampler, sample_ddim
from keras_ldm.diffusion.schedule import NoiseSchedule
from tests.diffusion.test_schedule import compvis_betas, compvis_register_schedule

T = 1000
SHAPE = (2, 8, 8, 4)
TOLERANCE = 1e-5
SCHEDULE = NoiseSchedule("linear", T, linear_start=0.00085, linear_end=0.012)
DIFFUSERS_SCHEDULE = {
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "num_train_timesteps": T,
}
DIFFUSERS_PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}

_rng = np.random.default_rng(0)
WEIGHTS = (0.8 * np.eye(4) + 0.2 * _rng.normal(size=(4, 4)) / 2).astype("float32")
X_T = _rng.normal(size=SHAPE).astype("float32")
X0_KNOWN = _rng.normal(size=SHAPE).astype("float32")
MASK = np.zeros(SHAPE[:-1] + (1,), "float32")
MASK[:, :, :4] = 1.0  # left half known


def keras_denoiser(x, t):
    scale = ops.reshape(0.5 + ops.cast(t, "float32") / T, (-1, 1, 1, 1))
    return ops.einsum("bhwc,cd->bhwd", x, ops.convert_to_tensor(WEIGHTS)) * scale


def torch_denoiser(x, t):
    return torch.einsum("bhwc,cd->bhwd", x, torch.from_numpy(WEIGHTS)) * (0.5 + float(t) / T)


def relative_error(ours, reference):
    ours, reference = np.asarray(ops.convert_to_numpy(ours)), np.asarray(reference)
    assert ours.shape == reference.shape
    return np.max(np.abs(ours - reference)) / np.max(np.abs(reference))


def noise_stack(count, seed=1234):
    """`count` draws of torch.randn in the order diffusers' schedulers draw them from a Generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(SHAPE, generator=generator) for _ in range(count)])


def stack_sampler(stack):
    """A noise_sampler that returns draw i of a precomputed stack."""
    tensor = ops.convert_to_tensor(stack.numpy())
    return lambda i: ops.take(tensor, i, axis=0)


def make_scheduler(sampler, num_steps, prediction_type="eps", spacing="leading"):
    """The diffusers scheduler that `sampler` reproduces, with timesteps set."""
    prediction = DIFFUSERS_PREDICTION[prediction_type]
    offset = 1 if spacing == "leading" else 0
    if sampler in ("ddim", "ddpm"):
        cls = DDIMScheduler if sampler == "ddim" else DDPMScheduler
        extra = {"set_alpha_to_one": False} if sampler == "ddim" else {}
        scheduler = cls(
            steps_offset=offset,
            clip_sample=False,
            prediction_type=prediction,
            timestep_spacing=spacing,
            **extra,
            **DIFFUSERS_SCHEDULE,
        )
    elif sampler == "plms":
        scheduler = PNDMScheduler(
            skip_prk_steps=True,
            steps_offset=offset,
            set_alpha_to_one=False,
            prediction_type=prediction,
            timestep_spacing=spacing,
            **DIFFUSERS_SCHEDULE,
        )
    elif sampler == "dpmpp_2m":
        scheduler = DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++", solver_order=2, prediction_type=prediction, **DIFFUSERS_SCHEDULE
        )
        # DPM-Solver's own "leading" differs from DDIM's; hand it the timesteps we visit.
        scheduler.set_timesteps(timesteps=SCHEDULE.sampling_timesteps(num_steps, spacing).tolist())
        return scheduler
    else:
        scheduler = EulerDiscreteScheduler(
            timestep_spacing=spacing, steps_offset=offset, prediction_type=prediction, **DIFFUSERS_SCHEDULE
        )
    scheduler.set_timesteps(num_steps)
    return scheduler


def diffusers_trajectory(scheduler, x_T, *, eta=None, noise=None, mask=None, blend_noise=None):
    """The diffusers sampling loop; with `mask`, CompVis' blend before each model call.

    Returns the variance-preserving latent after each model call (Euler's σ-space samples are
    divided by √(σ²+1)).
    """
    euler = isinstance(scheduler, EulerDiscreteScheduler)
    x = torch.from_numpy(x_T)
    if euler:
        x = x * (scheduler.sigmas[0] ** 2 + 1) ** 0.5
    plms_correction = isinstance(scheduler, PNDMScheduler)
    trajectory = []
    for call, t in enumerate(scheduler.timesteps):
        step = call - 1 if plms_correction and call > 0 else call  # PLMS: call 1 redoes step 0
        if mask is not None and not (plms_correction and call == 1):
            known = scheduler.add_noise(torch.from_numpy(X0_KNOWN), blend_noise[step], t[None])
            x = torch.from_numpy(mask) * known + (1 - torch.from_numpy(mask)) * x
        prediction = torch_denoiser(scheduler.scale_model_input(x, t), t)
        kwargs = {}
        if eta is not None:
            kwargs = {"eta": eta, "variance_noise": noise[step]}
        elif noise is not None:  # DDPM: reproduce its generator's draws
            kwargs = {"generator": noise}
        x = scheduler.step(prediction, t, x, **kwargs).prev_sample
        latent = x / (scheduler.sigmas[call + 1] ** 2 + 1) ** 0.5 if euler else x
        trajectory.append(latent.numpy())
    if plms_correction:
        trajectory = trajectory[1:]  # the provisional first step is not a step of the sampler
    return np.stack(trajectory)


def check_against_diffusers(sampler, num_steps, prediction_type="eps", spacing="leading", **options):
    scheduler = make_scheduler(sampler, num_steps, prediction_type, spacing)
    reference_options, our_options = {}, {}
    if sampler == "ddpm":
        reference_options["noise"] = torch.Generator().manual_seed(1234)
        our_options["noise_sampler"] = stack_sampler(noise_stack(num_steps))
    if "eta" in options:
        stack = noise_stack(num_steps)
        reference_options.update(eta=options["eta"], noise=stack)
        our_options.update(eta=options["eta"], noise_sampler=stack_sampler(stack))
    if options.get("inpaint"):
        stack = noise_stack(2 * num_steps, seed=99)
        reference_options.update(mask=MASK, blend_noise=stack[num_steps:])
        our_options.update(mask=MASK, x0=X0_KNOWN, noise_sampler=stack_sampler(stack))
        if sampler == "ddpm":
            reference_options["noise"] = torch.Generator().manual_seed(99)  # draws 0..S-1 of the stack
    reference = diffusers_trajectory(scheduler, X_T, **reference_options)
    sample, trajectory = get_sampler(sampler)(
        keras_denoiser,
        X_T,
        SCHEDULE,
        num_steps,
        prediction_type=prediction_type,
        spacing=spacing,
        return_trajectory=True,
        **our_options,
    )
    assert relative_error(trajectory, reference) <= TOLERANCE
    assert relative_error(sample, reference[-1]) <= TOLERANCE


@pytest.mark.parametrize("num_steps", [10, 50])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_matches_diffusers(sampler, num_steps):
    check_against_diffusers(sampler, num_steps)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_matches_diffusers_250_steps(sampler):
    check_against_diffusers(sampler, 250)


@pytest.mark.parametrize("prediction_type", ["x0", "v"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp_2m", "euler"])
def test_prediction_types_match_diffusers(sampler, prediction_type):
    check_against_diffusers(sampler, 10, prediction_type)


def test_ddpm_full_chain_matches_compvis_p_sample_loop():
    """All T steps against CompVis `p_sample_loop` written out in float64 numpy (diffusers' float32
    `1 - ᾱ_t / ᾱ_{t-1}` loses ~1e-4 of each beta over the full chain, so it is not the reference here)."""
    tables = compvis_register_schedule(compvis_betas("linear", T, 0.00085, 0.012))
    noise = np.random.default_rng(11).normal(size=(T,) + SHAPE).astype("float32")
    x, expected = X_T.astype(np.float64), []
    for i, t in enumerate(range(T - 1, -1, -1)):
        eps = (x @ WEIGHTS.astype(np.float64)) * (0.5 + t / T)
        x0 = (
            np.sqrt(1.0 / tables["alphas_cumprod"][t]) * x
            - np.sqrt(1.0 / tables["alphas_cumprod"][t] - 1) * eps
        )
        mean = tables["posterior_mean_coef1"][t] * x0 + tables["posterior_mean_coef2"][t] * x
        x = mean + (t > 0) * np.exp(0.5 * tables["posterior_log_variance_clipped"][t]) * noise[i]
        expected.append(x)
    sample, trajectory = get_sampler("ddpm")(
        keras_denoiser,
        X_T,
        SCHEDULE,
        T,
        spacing="trailing",
        noise_sampler=stack_sampler(torch.from_numpy(noise)),
        return_trajectory=True,
    )
    assert relative_error(trajectory, np.stack(expected)) <= TOLERANCE
    assert relative_error(sample, expected[-1]) <= TOLERANCE


def test_v_prediction_250_steps():
    check_against_diffusers("ddim", 250, "v")


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_trailing_spacing_matches_diffusers(sampler):
    check_against_diffusers(sampler, 10, spacing="trailing")


@pytest.mark.parametrize("num_steps", [10, 50])
def test_ddim_with_eta_matches_diffusers(num_steps):
    check_against_diffusers("ddim", num_steps, eta=0.7)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_inpainting_blend_follows_compvis(sampler):
    check_against_diffusers(sampler, 10, inpaint=True)


def test_mask_one_keeps_x0_noised_to_the_current_level():
    # Known region everywhere: the model sees q_sample(x0, t) instead of x_T. With ε̂ = 0 one
    # deterministic DDIM step maps its input x to √(ᾱ_prev/ᾱ) x.
    stack = noise_stack(2)
    sample = sample_ddim(
        lambda x, t: ops.zeros_like(x),
        X_T,
        SCHEDULE,
        1,
        mask=np.ones(SHAPE, "float32"),
        x0=X0_KNOWN,
        noise_sampler=stack_sampler(stack),
    )
    t = SCHEDULE.sampling_timesteps(1)
    alpha, alpha_prev = SCHEDULE.table64("alphas_cumprod")[[t[0], 0]]
    noised_x0 = np.sqrt(alpha) * X0_KNOWN + np.sqrt(1 - alpha) * stack[1].numpy()  # draw num_steps + 0
    np.testing.assert_allclose(
        ops.convert_to_numpy(sample), np.sqrt(alpha_prev / alpha) * noised_x0, rtol=1e-5, atol=1e-5
    )


def test_guidance_runs_one_model_call_of_twice_the_batch():
    calls = []
    rng = np.random.default_rng(5)
    context = rng.normal(size=(2, 3, 4)).astype("float32")
    unconditional = rng.normal(size=(1, 3, 4)).astype("float32")
    negative = rng.normal(size=(2, 3, 4)).astype("float32")

    def model(x, t, context):
        calls.append((tuple(x.shape), tuple(t.shape), tuple(context.shape)))
        return keras_denoiser(x, t) + ops.mean(context, axis=(1, 2))[:, None, None, None]

    x, t = X_T, ops.convert_to_tensor(np.array([10.0, 10.0], "float32"))
    guided = classifier_free_guidance(model, context, unconditional, 7.5)(x, t)
    assert calls == [((4, 8, 8, 4), (4,), (4, 3, 4))]
    cond = ops.convert_to_numpy(model(x, t, context))
    uncond = ops.convert_to_numpy(model(x, t, np.repeat(unconditional, 2, axis=0)))
    np.testing.assert_allclose(
        ops.convert_to_numpy(guided), uncond + 7.5 * (cond - uncond), rtol=1e-5, atol=1e-5
    )

    with_negative = classifier_free_guidance(model, context, unconditional, 7.5, negative_context=negative)(
        x, t
    )
    negative_out = ops.convert_to_numpy(model(x, t, negative))
    expected = negative_out + 7.5 * (cond - negative_out)
    np.testing.assert_allclose(ops.convert_to_numpy(with_negative), expected, rtol=1e-5, atol=1e-5)
    scale_one = classifier_free_guidance(model, context, unconditional, 1.0)(x, t)
    np.testing.assert_allclose(ops.convert_to_numpy(scale_one), cond, rtol=1e-5, atol=1e-5)


def test_guidance_without_unconditional_context():
    with pytest.raises(
        ValueError, match=r"unconditional_context.*negative_context.*received unconditional_context=None"
    ):
        classifier_free_guidance(lambda x, t, context: x, np.zeros((2, 3, 4)), None, 7.5)
    with pytest.raises(ValueError, match=r"batch size 1 or 2.*\(3, 3, 4\)"):
        classifier_free_guidance(lambda x, t, context: x, np.zeros((2, 3, 4)), np.zeros((3, 3, 4)), 7.5)


def test_stochastic_samplers_depend_on_the_noise():
    first = sample_ddim(
        keras_denoiser, X_T, SCHEDULE, 5, eta=1.0, noise_sampler=stack_sampler(noise_stack(5, 1))
    )
    second = sample_ddim(
        keras_denoiser, X_T, SCHEDULE, 5, eta=1.0, noise_sampler=stack_sampler(noise_stack(5, 2))
    )
    assert relative_error(first, ops.convert_to_numpy(second)) > 1e-3


@pytest.mark.parametrize("num_steps", [0, T + 1])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_bad_num_steps(sampler, num_steps):
    with pytest.raises(ValueError, match=rf"num_steps.*between 1 and .*{T}.*num_steps={num_steps}"):
        get_sampler(sampler)(keras_denoiser, X_T, SCHEDULE, num_steps)


def test_bad_eta():
    with pytest.raises(ValueError, match=r"eta.*>= 0.*eta=-0.5"):
        sample_ddim(keras_denoiser, X_T, SCHEDULE, 10, eta=-0.5)


def test_unknown_sampler():
    with pytest.raises(ValueError, match=r"sampler.*'heun'.*'ddpm', 'ddim', 'plms', 'dpmpp_2m', 'euler'"):
        get_sampler("heun")


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_unknown_prediction_type(sampler):
    with pytest.raises(ValueError, match=r"prediction_type.*'epsilon'.*'eps', 'x0', 'v'"):
        get_sampler(sampler)(keras_denoiser, X_T, SCHEDULE, 10, prediction_type="epsilon")


def test_unknown_spacing():
    with pytest.raises(ValueError, match=r"spacing.*'linspace'.*'leading', 'trailing'"):
        sample_ddim(keras_denoiser, X_T, SCHEDULE, 10, spacing="linspace")


@pytest.mark.parametrize("mask_shape", [(2, 8, 4, 1), (2, 8, 8), (3, 8, 8, 4), (2, 16, 16, 1)])
def test_mask_shape_must_match_latents(mask_shape):
    with pytest.raises(
        ValueError, match=rf"mask.*\(2, 8, 8, 4\).*received mask of shape {re.escape(str(mask_shape))}"
    ):
        sample_ddim(keras_denoiser, X_T, SCHEDULE, 10, mask=np.ones(mask_shape, "float32"), x0=X0_KNOWN)


def test_inpainting_needs_mask_and_x0():
    with pytest.raises(ValueError, match=r"mask.*x0.*received mask=a tensor, x0=None"):
        sample_ddim(keras_denoiser, X_T, SCHEDULE, 10, mask=MASK)
    with pytest.raises(ValueError, match=r"x0.*\(2, 8, 8, 4\).*\(2, 8, 8, 3\)"):
        sample_ddim(keras_denoiser, X_T, SCHEDULE, 10, mask=MASK, x0=X0_KNOWN[..., :3])


def test_small_unet_with_guidance_matches_diffusers(tmp_path):
    """The real path: a diffusers UNet2DConditionModel converted with `from_diffusers`, classifier-free
    guidance in one 2B call, the compiled loop — against the diffusers pipeline loop."""
    import diffusers

    from keras_ldm.convert import from_diffusers
    from keras_ldm.diffusion.loop import make_sampling_fn

    torch.manual_seed(0)
    reference = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
    ).eval()
    reference.save_pretrained(tmp_path, safe_serialization=True)
    unet = from_diffusers(str(tmp_path))
    rng = np.random.default_rng(3)
    context = rng.normal(size=(2, 5, 32)).astype("float32")
    unconditional = rng.normal(size=(1, 5, 32)).astype("float32")
    scale, num_steps = 5.0, 10

    def build(model, inputs):
        return classifier_free_guidance(
            model, inputs["context"], inputs["unconditional_context"], inputs["guidance_scale"]
        )

    sample = make_sampling_fn("ddim", unet, build, SCHEDULE, num_steps, return_trajectory=True)
    inputs = {"context": context, "unconditional_context": unconditional, "guidance_scale": scale}
    final, trajectory = sample(X_T, inputs)

    scheduler = make_scheduler("ddim", num_steps)
    x = torch.from_numpy(X_T).permute(0, 3, 1, 2)
    both_contexts = torch.cat([torch.from_numpy(unconditional).repeat(2, 1, 1), torch.from_numpy(context)])
    expected = []
    with torch.no_grad():
        for t in scheduler.timesteps:
            uncond, cond = reference(torch.cat([x, x]), t, encoder_hidden_states=both_contexts).sample.chunk(
                2
            )
            x = scheduler.step(uncond + scale * (cond - uncond), t, x).prev_sample
            expected.append(x.permute(0, 2, 3, 1).numpy())
    assert relative_error(trajectory, np.stack(expected)) <= TOLERANCE
    assert relative_error(final, expected[-1]) <= TOLERANCE
