"""The forward (noising) process of a DDPM: beta schedules, q(x_t | x_0) and parameterizations.

The constant tables are computed once in float64 numpy, exactly as CompVis' `ddpm.py`
`register_schedule` does, and exposed as float32. Everything that touches tensors uses
`keras.ops`, so the same code runs on JAX, TensorFlow and PyTorch.

Naming follows CompVis, which differs from diffusers:

| CompVis (here)  | diffusers            | betas                                         |
|-----------------|----------------------|-----------------------------------------------|
| `"linear"`      | `"scaled_linear"`    | `linspace(sqrt(linear_start), sqrt(linear_end), T) ** 2` |
| `"sqrt_linear"` | `"linear"`           | `linspace(linear_start, linear_end, T)`       |
| `"cosine"`      | (`squaredcos_cap_v2`, different discretisation) | Nichol & Dhariwal, s = 0.008 |
| `"sqrt"`        | -                    | `linspace(linear_start, linear_end, T) ** 0.5` |
"""

import keras
import numpy as np
from keras import ops

BETA_SCHEDULES = ("linear", "cosine", "sqrt_linear", "sqrt")
PARAMETERIZATIONS = ("eps", "x0", "v")
TIMESTEP_SPACINGS = ("leading", "trailing")


def make_beta_schedule(schedule, num_timesteps, linear_start=1e-4, linear_end=2e-2, cosine_s=8e-3):
    """Betas of a named schedule, in float64, as CompVis `make_beta_schedule`.

    Args:
        schedule: one of `"linear"`, `"cosine"`, `"sqrt_linear"`, `"sqrt"` (CompVis names).
        num_timesteps: number of diffusion steps `T`.
        linear_start: first beta of the (sqrt-)linear schedules.
        linear_end: last beta of the (sqrt-)linear schedules.
        cosine_s: offset `s` of the cosine schedule.

    Returns:
        A float64 numpy array of shape `(num_timesteps,)`.

    Example:
    >>> betas = make_beta_schedule("linear", 1000, 0.00085, 0.012)
    >>> betas.shape, round(float(betas[-1]), 6)
    ((1000,), 0.012)
    """
    check_choice("schedule", schedule, BETA_SCHEDULES)
    if not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
        raise ValueError(
            f"`num_timesteps` must be a positive integer; received num_timesteps={num_timesteps!r}."
        )
    if schedule == "linear":
        return np.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=np.float64) ** 2
    if schedule == "sqrt_linear":
        return np.linspace(linear_start, linear_end, num_timesteps, dtype=np.float64)
    if schedule == "sqrt":
        return np.linspace(linear_start, linear_end, num_timesteps, dtype=np.float64) ** 0.5
    # cosine (Nichol & Dhariwal 2021, eq. 17): alpha_bar(t) = cos((t/T + s) / (1 + s) * pi/2)^2
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps + cosine_s
    alphas_cumprod = np.cos(steps / (1 + cosine_s) * np.pi / 2) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return np.clip(betas, 0, 0.999)


def posterior_coefficients(alphas_cumprod, alphas_cumprod_prev, v_posterior=0.0):
    """Coefficients of the Gaussian posterior q(x_prev | x_t, x_0) between two noise levels.

    `mean = coef1 * x_0 + coef2 * x_t` (Ho et al. 2020, eq. 7). With `alphas_cumprod_prev` the
    next-lower level of a subsequence of timesteps this is the "respaced" posterior that
    DDPM sampling with fewer steps uses (the step's beta is `1 - alphas_cumprod / alphas_cumprod_prev`).

    Args:
        alphas_cumprod: ᾱ at the current levels (numpy, float64 recommended).
        alphas_cumprod_prev: ᾱ at the previous (less noisy) levels.
        v_posterior: CompVis' interpolation between the posterior variance (0) and beta (1).

    Returns:
        A dict of numpy arrays: `mean_coef1`, `mean_coef2`, `variance`, `log_variance_clipped`.

    Example:
    >>> c = posterior_coefficients(np.array([0.9, 0.5]), np.array([1.0, 0.9]))
    >>> [round(float(v), 4) for v in c["variance"]]
    [0.0, 0.0889]
    """
    alphas_cumprod = np.asarray(alphas_cumprod, np.float64)
    alphas_cumprod_prev = np.asarray(alphas_cumprod_prev, np.float64)
    alphas = alphas_cumprod / alphas_cumprod_prev
    betas = 1.0 - alphas
    variance = (1 - v_posterior) * betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    variance = variance + v_posterior * betas
    return {
        "mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
        "variance": variance,
        # the variance is 0 at the start of the chain, hence the clipping (CompVis)
        "log_variance_clipped": np.log(np.maximum(variance, 1e-20)),
    }


def sampling_timesteps(num_steps, num_timesteps=1000, spacing="leading"):
    """The descending training timesteps a sampler visits.

    `"leading"` is CompVis' DDIM discretisation `range(0, T, T // S) + 1` (diffusers
    `timestep_spacing="leading", steps_offset=1`); `"trailing"` is
    `round(arange(T, 0, -T / S)) - 1` (Lin et al. 2023), which starts at `T - 1`.

    Args:
        num_steps: number of sampling steps `S`, `1 <= S <= T` (`S < T` for `"leading"`).
        num_timesteps: number of training timesteps `T`.
        spacing: `"leading"` or `"trailing"`.

    Returns:
        An int64 numpy array of shape `(num_steps,)`, descending.

    Example:
    >>> sampling_timesteps(4, 1000).tolist()
    [751, 501, 251, 1]
    >>> sampling_timesteps(4, 1000, "trailing").tolist()
    [999, 749, 499, 249]
    """
    check_choice("spacing", spacing, TIMESTEP_SPACINGS)
    if not isinstance(num_steps, (int, np.integer)) or not 1 <= num_steps <= num_timesteps:
        raise ValueError(
            f"`num_steps` must be an integer between 1 and the number of training timesteps "
            f"({num_timesteps}); received num_steps={num_steps!r}."
        )
    if spacing == "trailing":
        return (np.round(np.arange(num_timesteps, 0, -num_timesteps / num_steps)) - 1).astype(np.int64)
    if num_steps == num_timesteps:
        raise ValueError(
            f"`num_steps`={num_steps} with spacing='leading' would visit timestep {num_timesteps}, past the "
            f"last training timestep {num_timesteps - 1}; use spacing='trailing' to visit every timestep."
        )
    return (np.arange(num_steps)[::-1] * (num_timesteps // num_steps) + 1).astype(np.int64)


def prediction_to_eps_and_x0(prediction, x_t, alpha_cumprod, prediction_type):
    """The noise ε and the clean sample x0 implied by a model prediction at noise level ᾱ.

    With `x_t = √ᾱ x0 + √(1-ᾱ) ε` and `v = √ᾱ ε - √(1-ᾱ) x0`.

    Args:
        prediction: the model output.
        x_t: the noisy input the model saw.
        alpha_cumprod: ᾱ, a scalar or a tensor broadcastable against `x_t`.
        prediction_type: what the model predicts: `"eps"`, `"x0"` or `"v"`.

    Returns:
        `(eps, x0)`.

    Example:
    >>> x0, eps, a = np.ones((1, 2), "float32"), np.zeros((1, 2), "float32"), 0.25
    >>> x_t = a**0.5 * x0 + (1 - a) ** 0.5 * eps
    >>> e, x = prediction_to_eps_and_x0(eps, x_t, a, "eps")
    >>> np.asarray(x).tolist()
    [[1.0, 1.0]]
    """
    check_choice("prediction_type", prediction_type, PARAMETERIZATIONS)
    prediction = ops.convert_to_tensor(prediction)
    x_t = ops.cast(x_t, prediction.dtype)
    alpha_cumprod = ops.cast(alpha_cumprod, x_t.dtype)
    sqrt_alpha = ops.sqrt(alpha_cumprod)
    sqrt_one_minus_alpha = ops.sqrt(1.0 - alpha_cumprod)
    if prediction_type == "eps":
        eps = prediction
        x0 = (x_t - sqrt_one_minus_alpha * eps) / sqrt_alpha
    elif prediction_type == "x0":
        x0 = prediction
        eps = (x_t - sqrt_alpha * x0) / sqrt_one_minus_alpha
    else:
        x0 = sqrt_alpha * x_t - sqrt_one_minus_alpha * prediction
        eps = sqrt_alpha * prediction + sqrt_one_minus_alpha * x_t
    return eps, x0


def convert_prediction(prediction, x_t, alpha_cumprod, source, target):
    """Re-express a prediction of one parameterization in another (`"eps"`, `"x0"`, `"v"`).

    Example:
    >>> x_t, eps = np.ones((1, 2), "float32"), np.full((1, 2), 0.5, "float32")
    >>> v = convert_prediction(eps, x_t, 0.5, "eps", "v")
    >>> back = convert_prediction(v, x_t, 0.5, "v", "eps")
    >>> bool(np.allclose(back, eps))
    True
    """
    check_choice("target", target, PARAMETERIZATIONS)
    eps, x0 = prediction_to_eps_and_x0(prediction, x_t, alpha_cumprod, source)
    alpha_cumprod = ops.cast(alpha_cumprod, x0.dtype)
    if target == "eps":
        return eps
    if target == "x0":
        return x0
    return ops.sqrt(alpha_cumprod) * eps - ops.sqrt(1.0 - alpha_cumprod) * x0


@keras.saving.register_keras_serializable(package="keras_ldm")
class NoiseSchedule:
    """The variance schedule of a DDPM and the quantities derived from it (CompVis `register_schedule`).

    Tables (float32 numpy arrays of length `num_timesteps`, computed in float64): `betas`, `alphas`,
    `alphas_cumprod`, `alphas_cumprod_prev`, `sqrt_alphas_cumprod`, `sqrt_one_minus_alphas_cumprod`,
    `log_one_minus_alphas_cumprod`, `sqrt_recip_alphas_cumprod`, `sqrt_recipm1_alphas_cumprod`,
    `posterior_variance`, `posterior_log_variance_clipped`, `posterior_mean_coef1`,
    `posterior_mean_coef2`, `sigmas` (`√((1-ᾱ)/ᾱ)`, the noise level in σ-space).

    Args:
        beta_schedule: `"linear"` (CompVis name; diffusers `"scaled_linear"`), `"cosine"`,
            `"sqrt_linear"` (diffusers `"linear"`) or `"sqrt"`.
        num_timesteps: number of training timesteps `T`.
        linear_start: first beta of the (sqrt-)linear schedules.
        linear_end: last beta of the (sqrt-)linear schedules.
        cosine_s: offset of the cosine schedule.
        v_posterior: weight of beta in the posterior variance (CompVis; 0 = true posterior).

    Example:
    >>> schedule = NoiseSchedule("linear", linear_start=0.00085, linear_end=0.012)
    >>> x0 = np.zeros((2, 8, 8, 4), "float32")
    >>> noise = np.ones((2, 8, 8, 4), "float32")
    >>> x_t = schedule.q_sample(x0, np.array([0, 999]), noise)
    >>> tuple(x_t.shape)
    (2, 8, 8, 4)
    >>> NoiseSchedule.from_config(schedule.get_config()).num_timesteps
    1000
    """

    def __init__(
        self,
        beta_schedule="linear",
        num_timesteps=1000,
        linear_start=1e-4,
        linear_end=2e-2,
        cosine_s=8e-3,
        v_posterior=0.0,
    ):
        self.beta_schedule = beta_schedule
        self.num_timesteps = num_timesteps
        self.linear_start = float(linear_start)
        self.linear_end = float(linear_end)
        self.cosine_s = float(cosine_s)
        self.v_posterior = float(v_posterior)
        betas = make_beta_schedule(beta_schedule, num_timesteps, linear_start, linear_end, cosine_s)
        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        posterior = posterior_coefficients(alphas_cumprod, alphas_cumprod_prev, v_posterior)
        tables = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
            "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
            "posterior_variance": posterior["variance"],
            "posterior_log_variance_clipped": posterior["log_variance_clipped"],
            "posterior_mean_coef1": posterior["mean_coef1"],
            "posterior_mean_coef2": posterior["mean_coef2"],
            "sigmas": np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod),
        }
        self._float64 = tables
        for name, table in tables.items():
            setattr(self, name, table.astype(np.float32))

    def table64(self, name):
        """A table in the float64 precision it was computed in (for precomputing sampler tables)."""
        return self._float64[name]

    def _at(self, name, t, x):
        """`table[t]` reshaped to broadcast against `x` (CompVis `extract_into_tensor`)."""
        values = ops.take(ops.convert_to_tensor(getattr(self, name)), ops.convert_to_tensor(t, "int32"))
        values = ops.cast(values, x.dtype)
        return ops.reshape(values, (-1,) + (1,) * (len(x.shape) - 1))

    def q_sample(self, x0, t, noise):
        """Sample `x_t ~ q(x_t | x_0) = N(√ᾱ_t x0, (1-ᾱ_t) I)` given the noise ε.

        Args:
            x0: clean samples, shape `(B, ...)`.
            t: integer timesteps, shape `(B,)`.
            noise: standard normal noise shaped like `x0`.
        """
        x0, noise = ops.convert_to_tensor(x0), ops.convert_to_tensor(noise)
        return (
            self._at("sqrt_alphas_cumprod", t, x0) * x0
            + self._at("sqrt_one_minus_alphas_cumprod", t, x0) * noise
        )

    def q_posterior(self, x0, x_t, t):
        """Mean, variance and clipped log variance of `q(x_{t-1} | x_t, x_0)`."""
        x0, x_t = ops.convert_to_tensor(x0), ops.convert_to_tensor(x_t)
        mean = self._at("posterior_mean_coef1", t, x_t) * x0 + self._at("posterior_mean_coef2", t, x_t) * x_t
        variance = self._at("posterior_variance", t, x_t)
        log_variance = self._at("posterior_log_variance_clipped", t, x_t)
        return mean, variance, log_variance

    def convert_prediction(self, prediction, x_t, t, source, target):
        """Convert a prediction at integer timesteps `t` between `"eps"`, `"x0"` and `"v"`."""
        x_t = ops.convert_to_tensor(x_t)
        return convert_prediction(prediction, x_t, self._at("alphas_cumprod", t, x_t), source, target)

    def training_target(self, x0, noise, t, parameterization="eps"):
        """What a denoiser with this parameterization should output for `q_sample(x0, t, noise)`.

        `"eps"`: the noise; `"x0"`: the clean sample; `"v"`: `√ᾱ_t ε - √(1-ᾱ_t) x0`.
        """
        check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        if parameterization == "eps":
            return noise
        if parameterization == "x0":
            return x0
        x0, noise = ops.convert_to_tensor(x0), ops.convert_to_tensor(noise)
        return (
            self._at("sqrt_alphas_cumprod", t, x0) * noise
            - self._at("sqrt_one_minus_alphas_cumprod", t, x0) * x0
        )

    def lvlb_weights(self, parameterization="eps"):
        """Per-timestep ELBO weights of the (mean squared) loss, exactly as CompVis `register_schedule`.

        Returns a float32 numpy array of length `num_timesteps`; entry 0 repeats entry 1 (CompVis).
        """
        check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        tables = self._float64
        if parameterization == "eps":
            with np.errstate(divide="ignore"):  # the posterior variance is 0 at t = 0
                weights = tables["betas"] ** 2 / (
                    2 * tables["posterior_variance"] * tables["alphas"] * (1 - tables["alphas_cumprod"])
                )
        elif parameterization == "x0":
            # CompVis writes `2. * 1 - alphas_cumprod`; kept as is so losses compare with CompVis runs.
            weights = 0.5 * np.sqrt(tables["alphas_cumprod"]) / (2.0 * 1 - tables["alphas_cumprod"])
        else:
            weights = np.ones(self.num_timesteps)
        weights[0] = weights[1]
        return weights.astype(np.float32)

    def loss_weights(self, t, parameterization="eps", l_simple_weight=1.0, original_elbo_weight=0.0):
        """Per-sample weights `w_t` with `loss = mean(w_t * ||target - prediction||²_mean)`.

        This is CompVis' `l_simple_weight * L_simple + original_elbo_weight * L_vlb` (with a fixed,
        zero log-variance), folded into one weight per timestep.

        Args:
            t: integer timesteps, shape `(B,)`.
            parameterization: `"eps"`, `"x0"` or `"v"` (selects the ELBO weights).
            l_simple_weight: weight of the unweighted ("simple") loss.
            original_elbo_weight: weight of the ELBO-weighted loss.

        Returns:
            A float32 tensor of shape `(B,)`.
        """
        simple = np.full(self.num_timesteps, l_simple_weight, np.float64)
        weights = simple + original_elbo_weight * self.lvlb_weights(parameterization).astype(np.float64)
        return ops.take(ops.convert_to_tensor(weights.astype(np.float32)), ops.convert_to_tensor(t, "int32"))

    def sampling_timesteps(self, num_steps, spacing="leading"):
        """The descending timesteps a sampler with `num_steps` steps visits (see `sampling_timesteps`)."""
        return sampling_timesteps(num_steps, self.num_timesteps, spacing)

    def get_config(self):
        return {
            "beta_schedule": self.beta_schedule,
            "num_timesteps": self.num_timesteps,
            "linear_start": self.linear_start,
            "linear_end": self.linear_end,
            "cosine_s": self.cosine_s,
            "v_posterior": self.v_posterior,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"NoiseSchedule({args})"


def check_choice(name, value, allowed):
    """Raise a ValueError naming the argument, the value and the allowed values."""
    if value not in allowed:
        raise ValueError(f"Unknown `{name}`: {value!r}. Allowed: {', '.join(map(repr, allowed))}.")
