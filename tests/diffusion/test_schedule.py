"""NoiseSchedule against CompVis' formulas (written out here independently in numpy) and diffusers."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from keras import ops

from keras_ldm.diffusion.schedule import NoiseSchedule, convert_prediction, sampling_timesteps

T = 1000


def compvis_betas(schedule, n, linear_start=1e-4, linear_end=2e-2, cosine_s=8e-3):
    """`ldm.modules.diffusionmodules.util.make_beta_schedule`, torch replaced by numpy."""
    if schedule == "linear":
        return np.linspace(linear_start**0.5, linear_end**0.5, n, dtype=np.float64) ** 2
    if schedule == "cosine":
        timesteps = np.arange(n + 1, dtype=np.float64) / n + cosine_s
        alphas = np.cos(timesteps / (1 + cosine_s) * np.pi / 2) ** 2
        alphas = alphas / alphas[0]
        return np.clip(1 - alphas[1:] / alphas[:-1], a_min=0, a_max=0.999)
    if schedule == "sqrt_linear":
        return np.linspace(linear_start, linear_end, n, dtype=np.float64)
    if schedule == "sqrt":
        return np.linspace(linear_start, linear_end, n, dtype=np.float64) ** 0.5
    raise AssertionError(schedule)


def compvis_register_schedule(betas, v_posterior=0.0):
    """`ldm.models.diffusion.ddpm.DDPM.register_schedule`, the arrays it registers."""
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas, axis=0)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = (1 - v_posterior) * betas * (1.0 - alphas_cumprod_prev) / (
        1.0 - alphas_cumprod
    ) + v_posterior * betas
    with np.errstate(divide="ignore"):
        lvlb = {
            "eps": betas**2 / (2 * posterior_variance * alphas * (1 - alphas_cumprod)),
            "x0": 0.5 * np.sqrt(alphas_cumprod) / (2.0 * 1 - alphas_cumprod),
            "v": np.ones_like(betas),
        }
    for weights in lvlb.values():
        weights[0] = weights[1]
    return {
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
        "lvlb_weights": lvlb,
    }


@pytest.mark.parametrize("name", ["linear", "cosine", "sqrt_linear", "sqrt"])
@pytest.mark.parametrize("start_end", [(1e-4, 2e-2), (0.00085, 0.012)])
def test_betas_equal_compvis(name, start_end):
    schedule = NoiseSchedule(name, T, *start_end)
    expected = compvis_betas(name, T, *start_end)
    np.testing.assert_array_equal(schedule.table64("betas"), expected)
    np.testing.assert_array_equal(schedule.betas, expected.astype(np.float32))
    assert schedule.betas.dtype == np.float32


def test_cosine_schedule_is_clipped_to_0999():
    betas = NoiseSchedule("cosine", T).table64("betas")
    assert betas[-1] == 0.999 and np.all(betas[:-1] < 0.999) and np.all(betas >= 0)


@pytest.mark.parametrize(
    "ours, theirs", [("linear", "scaled_linear"), ("sqrt_linear", "linear")], ids=["linear", "sqrt_linear"]
)
def test_compvis_names_are_diffusers_names(ours, theirs):
    schedule = NoiseSchedule(ours, T, 0.00085, 0.012)
    reference = DDPMScheduler(beta_schedule=theirs, beta_start=0.00085, beta_end=0.012)
    np.testing.assert_allclose(schedule.betas, reference.betas.numpy(), rtol=1e-6)
    np.testing.assert_allclose(schedule.alphas_cumprod, reference.alphas_cumprod.numpy(), rtol=2e-6)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("v_posterior", [0.0, 0.1])
def test_derived_tables_equal_compvis_register_schedule(name, v_posterior):
    schedule = NoiseSchedule(name, T, v_posterior=v_posterior)
    expected = compvis_register_schedule(compvis_betas(name, T), v_posterior)
    for key, value in expected.items():
        if key == "lvlb_weights":
            continue
        np.testing.assert_allclose(schedule.table64(key), value, rtol=1e-12, err_msg=key)
        np.testing.assert_allclose(getattr(schedule, key), value.astype(np.float32), rtol=0, err_msg=key)
    np.testing.assert_allclose(
        schedule.sigmas, np.sqrt((1 - expected["alphas_cumprod"]) / expected["alphas_cumprod"]), rtol=1e-6
    )


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_lvlb_weights_equal_compvis(parameterization):
    schedule = NoiseSchedule("linear", T, 0.00085, 0.012)
    expected = compvis_register_schedule(compvis_betas("linear", T, 0.00085, 0.012))["lvlb_weights"][
        parameterization
    ]
    weights = schedule.lvlb_weights(parameterization)
    assert weights.dtype == np.float32 and np.all(np.isfinite(weights))
    np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_loss_weights_combine_simple_and_elbo():
    schedule = NoiseSchedule()
    t = np.array([0, 10, 999])
    np.testing.assert_allclose(ops.convert_to_numpy(schedule.loss_weights(t)), [1.0, 1.0, 1.0])
    weights = schedule.loss_weights(t, "eps", l_simple_weight=0.5, original_elbo_weight=2.0)
    np.testing.assert_allclose(
        ops.convert_to_numpy(weights), 0.5 + 2.0 * schedule.lvlb_weights("eps")[t], rtol=1e-6
    )


def _sample_tensors(seed=0, shape=(3, 8, 8, 4)):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=shape).astype("float32"),
        rng.normal(size=shape).astype("float32"),
        np.array([0, 421, 999]),
    )


def test_q_sample_and_training_targets():
    schedule = NoiseSchedule("linear", T, 0.00085, 0.012)
    x0, noise, t = _sample_tensors()
    a = schedule.table64("alphas_cumprod")[t][:, None, None, None]
    x_t = ops.convert_to_numpy(schedule.q_sample(x0, t, noise))
    np.testing.assert_allclose(x_t, np.sqrt(a) * x0 + np.sqrt(1 - a) * noise, rtol=1e-5, atol=1e-6)

    reference = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0_pt, noise_pt, t_pt = torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)
    np.testing.assert_allclose(x_t, reference.add_noise(x0_pt, noise_pt, t_pt).numpy(), rtol=1e-5, atol=1e-5)
    v = ops.convert_to_numpy(schedule.training_target(x0, noise, t, "v"))
    np.testing.assert_allclose(v, np.sqrt(a) * noise - np.sqrt(1 - a) * x0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v, reference.get_velocity(x0_pt, noise_pt, t_pt).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ops.convert_to_numpy(schedule.training_target(x0, noise, t, "eps")), noise)
    np.testing.assert_array_equal(ops.convert_to_numpy(schedule.training_target(x0, noise, t, "x0")), x0)


def test_prediction_conversions_round_trip():
    schedule = NoiseSchedule()
    x0, noise, t = _sample_tensors(1)
    x_t = schedule.q_sample(x0, t, noise)
    truth = {"eps": noise, "x0": x0, "v": ops.convert_to_numpy(schedule.training_target(x0, noise, t, "v"))}
    for source, source_value in truth.items():
        for target, target_value in truth.items():
            converted = schedule.convert_prediction(source_value, x_t, t, source, target)
            np.testing.assert_allclose(ops.convert_to_numpy(converted), target_value, rtol=1e-4, atol=2e-4)
            back = schedule.convert_prediction(converted, x_t, t, target, source)
            np.testing.assert_allclose(ops.convert_to_numpy(back), source_value, rtol=1e-4, atol=2e-4)


def test_conversion_with_scalar_alpha_matches_definition_of_v():
    rng = np.random.default_rng(2)
    x0, eps, a = rng.normal(size=(2, 5)).astype("float32"), rng.normal(size=(2, 5)).astype("float32"), 0.3
    x_t = (np.sqrt(a) * x0 + np.sqrt(1 - a) * eps).astype("float32")
    v = ops.convert_to_numpy(convert_prediction(eps, x_t, a, "eps", "v"))
    np.testing.assert_allclose(v, np.sqrt(a) * eps - np.sqrt(1 - a) * x0, rtol=1e-5, atol=1e-6)


def test_q_posterior_equals_formula():
    schedule = NoiseSchedule("cosine")
    x0, x_t, t = _sample_tensors(3)
    mean, variance, log_variance = schedule.q_posterior(x0, x_t, t)
    expected = compvis_register_schedule(compvis_betas("cosine", T))
    coef1 = expected["posterior_mean_coef1"][t][:, None, None, None]
    coef2 = expected["posterior_mean_coef2"][t][:, None, None, None]
    np.testing.assert_allclose(ops.convert_to_numpy(mean), coef1 * x0 + coef2 * x_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        ops.convert_to_numpy(variance)[:, 0, 0, 0], expected["posterior_variance"][t], rtol=1e-6
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(log_variance)[:, 0, 0, 0],
        expected["posterior_log_variance_clipped"][t],
        rtol=1e-6,
    )
    assert ops.convert_to_numpy(variance)[0, 0, 0, 0] == 0.0  # t = 0: the chain's start


def test_config_round_trips_through_json():
    schedule = NoiseSchedule("cosine", 500, 1e-3, 3e-2, cosine_s=0.01, v_posterior=0.2)
    config = json.loads(json.dumps(schedule.get_config()))
    rebuilt = NoiseSchedule.from_config(config)
    assert rebuilt.get_config() == schedule.get_config()
    np.testing.assert_array_equal(rebuilt.posterior_variance, schedule.posterior_variance)


@pytest.mark.parametrize("num_steps", [1, 10, 50, 250, 999])
def test_leading_timesteps_equal_compvis_ddim(num_steps):
    c = T // num_steps
    expected = (np.asarray(list(range(0, T, c))) + 1)[:num_steps][::-1]  # CompVis make_ddim_timesteps
    np.testing.assert_array_equal(sampling_timesteps(num_steps, T, "leading"), expected)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("num_steps", [7, 50])
def test_timesteps_equal_diffusers(spacing, num_steps):
    reference = DDIMScheduler(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
    reference.set_timesteps(num_steps)
    np.testing.assert_array_equal(sampling_timesteps(num_steps, T, spacing), reference.timesteps.numpy())


def test_trailing_visits_every_timestep_with_t_steps():
    np.testing.assert_array_equal(sampling_timesteps(T, T, "trailing"), np.arange(T)[::-1])


@pytest.mark.parametrize("num_steps", [0, -3, T + 1, 2.5])
def test_bad_num_steps(num_steps):
    with pytest.raises(ValueError, match=rf"num_steps.*between 1 and .*1000.*num_steps={num_steps}"):
        sampling_timesteps(num_steps, T)


def test_leading_with_all_timesteps_points_to_trailing():
    with pytest.raises(ValueError, match="num_steps.*1000.*trailing"):
        sampling_timesteps(T, T, "leading")


def test_bad_names():
    with pytest.raises(ValueError, match=r"schedule.*'quadratic'.*'linear', 'cosine', 'sqrt_linear', 'sqrt'"):
        NoiseSchedule("quadratic")
    with pytest.raises(ValueError, match=r"spacing.*'linspace'.*'leading', 'trailing'"):
        sampling_timesteps(10, T, "linspace")
    schedule = NoiseSchedule()
    x0, noise, t = _sample_tensors()
    with pytest.raises(ValueError, match=r"parameterization.*'epsilon'.*'eps', 'x0', 'v'"):
        schedule.training_target(x0, noise, t, "epsilon")
    with pytest.raises(ValueError, match=r"parameterization.*'sample'.*'eps', 'x0', 'v'"):
        schedule.lvlb_weights("sample")
    with pytest.raises(ValueError, match=r"prediction_type.*'v_prediction'.*'eps', 'x0', 'v'"):
        schedule.convert_prediction(x0, x0, t, "v_prediction", "eps")
    with pytest.raises(ValueError, match=r"target.*'noise'.*'eps', 'x0', 'v'"):
        schedule.convert_prediction(x0, x0, t, "eps", "noise")
    with pytest.raises(ValueError, match=r"num_timesteps.*0"):
        NoiseSchedule(num_timesteps=0)
