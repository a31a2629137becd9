"""Samplers: short pure functions that turn noise into samples with a denoiser.

Every sampler has the signature

    sample_xxx(denoise, x, schedule, num_steps, *, prediction_type="eps", spacing="leading",
               noise_sampler=None, mask=None, x0=None, return_trajectory=False, **options)

- `denoise(x, t) -> prediction`: the model (with guidance folded in, see `guidance.py`). `x` is a
  latent in the usual variance-preserving scale (`x_t = √ᾱ x0 + √(1-ᾱ) ε`), `t` a float32 vector of
  training timesteps, one per batch row. The prediction is `"eps"`, `"x0"` or `"v"`
  (`prediction_type`); each sampler converts it to what its update rule needs.
- `x`: the starting noise `x_T ~ N(0, I)` (all samplers take unit-variance noise; Euler rescales it).
- `num_steps`, `spacing`: which timesteps to visit (`schedule.sampling_timesteps`).
- `noise_sampler(index) -> tensor like x`: the Gaussian noise source for stochastic steps and the
  inpainting blend; draw `i` feeds the update of step `i`, draw `num_steps + i` the blend of step `i`.
  Defaults to `keras_ldm.backend.noise.make_noise_sampler(seed=0, ...)`.
- `mask`, `x0`: inpainting as CompVis `DDIMSampler`: before the model call of every step,
  `x = mask * q_sample(x0, t) + (1 - mask) * x`; `mask == 1` marks the known region kept from `x0`.
- `return_trajectory`: also return every intermediate latent, shape `(num_steps, *x.shape)`;
  entry `i` is the latent after step `i` (the last one is the sample).

The loop is one `keras.ops.fori_loop`; per-step constants are numpy tables indexed by the loop
counter, so the whole sampler compiles into a single program (see `loop.py`).
"""

from types import SimpleNamespace

import keras
import numpy as np
from keras import ops

from keras_ldm.backend.noise import make_noise_sampler
from keras_ldm.diffusion.schedule import (
    PARAMETERIZATIONS,
    check_choice,
    posterior_coefficients,
    prediction_to_eps_and_x0,
)

# Adams–Bashforth coefficients of the linear multistep method behind PLMS, by number of eps used.
ADAMS_BASHFORTH = {
    2: (3 / 2, -1 / 2, 0.0, 0.0),
    3: (23 / 12, -16 / 12, 5 / 12, 0.0),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def sample_ddpm(denoise, x, schedule, num_steps, **kwargs):
    """Ancestral sampling of DDPM (Ho et al. 2020, Algorithm 2) on a subsequence of timesteps.

    `x_prev = μ̃(x_t, x̂0) + σ̃ z` with the posterior of eq. 7 between consecutive visited levels
    (diffusers `DDPMScheduler`, `variance_type="fixed_small"`); the last step lands on ᾱ = 1 and
    adds no noise (CompVis `p_sample` at t = 0).

    Args:
        denoise, x, schedule, num_steps, **options: see the module docstring (`prediction_type`,
            `spacing`, `noise_sampler`, `mask`, `x0`, `return_trajectory`).

    Example:
    >>> from keras_ldm.diffusion.schedule import NoiseSchedule
    >>> denoise = lambda x, t: 0.5 * x
    >>> x_T = np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype("float32")
    >>> sample = sample_ddpm(denoise, x_T, NoiseSchedule(), num_steps=10)
    >>> tuple(sample.shape)
    (1, 4, 4, 2)
    """
    run = _SamplerRun(x, schedule, num_steps, **kwargs)
    a = run.alphas_cumprod
    a_prev = np.append(a[1:], 1.0)
    posterior = posterior_coefficients(a, a_prev)
    std = np.exp(0.5 * posterior["log_variance_clipped"])
    std[-1] = 0.0
    steps = _StepTable(
        t=run.timesteps,
        alpha=a,
        coef1=posterior["mean_coef1"],
        coef2=posterior["mean_coef2"],
        std=std,
    )

    def step(i, x):
        s = steps[i]
        x = run.blend_known(x, i, ops.sqrt(s.alpha), ops.sqrt(1.0 - s.alpha))
        _, pred_x0 = run.eps_and_x0(denoise(x, run.model_t(s.t)), x, s.alpha)
        mean = s.coef1 * pred_x0 + s.coef2 * x
        return mean + s.std * run.noise(i)

    return run.loop(step, run.x)


def sample_ddim(denoise, x, schedule, num_steps, *, eta=0.0, **kwargs):
    """DDIM (Song et al. 2021, eq. 12), as CompVis `DDIMSampler` / diffusers `DDIMScheduler`.

    `x_prev = √ᾱ_prev x̂0 + √(1 - ᾱ_prev - σ²) ε̂ + σ z`, `σ = η √((1-ᾱ_prev)/(1-ᾱ) (1 - ᾱ/ᾱ_prev))`.
    After the last visited timestep the chain lands on ᾱ_0 (`set_alpha_to_one=False`).

    Args:
        eta: η ≥ 0 (a Python float); 0 is deterministic DDIM, 1 has DDPM's variance.
        denoise, x, schedule, num_steps, **options: see the module docstring (`prediction_type`,
            `spacing`, `noise_sampler`, `mask`, `x0`, `return_trajectory`).

    Example:
    >>> from keras_ldm.diffusion.schedule import NoiseSchedule
    >>> denoise = lambda x, t: 0.5 * x
    >>> x_T = np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype("float32")
    >>> sample = sample_ddim(denoise, x_T, NoiseSchedule(), num_steps=10)
    >>> tuple(sample.shape)
    (1, 4, 4, 2)
    """
    if not eta >= 0:
        raise ValueError(
            f"`eta` must be >= 0 (0 = deterministic DDIM, 1 = DDPM variance); received eta={eta!r}."
        )
    run = _SamplerRun(x, schedule, num_steps, **kwargs)
    a = run.alphas_cumprod
    a_prev = np.append(a[1:], schedule.table64("alphas_cumprod")[0])
    sigma = eta * np.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    steps = _StepTable(t=run.timesteps, alpha=a, alpha_prev=a_prev, sigma=sigma)

    def step(i, x):
        s = steps[i]
        x = run.blend_known(x, i, ops.sqrt(s.alpha), ops.sqrt(1.0 - s.alpha))
        eps, pred_x0 = run.eps_and_x0(denoise(x, run.model_t(s.t)), x, s.alpha)
        dir_xt = ops.sqrt(1.0 - s.alpha_prev - s.sigma**2) * eps
        x = ops.sqrt(s.alpha_prev) * pred_x0 + dir_xt
        if eta > 0:
            x = x + s.sigma * run.noise(i)
        return x

    return run.loop(step, run.x)


def sample_plms(denoise, x, schedule, num_steps, **kwargs):
    """PLMS (Liu et al. 2022): DDIM steps driven by an Adams–Bashforth combination of past ε.

    As CompVis `PLMSSampler` (= diffusers `PNDMScheduler(skip_prk_steps=True)`): the first step
    is a pseudo improved Euler step (two model calls, ε' = (ε_t + ε_next) / 2), then
    ε' = (3ε_t - ε_{t+1})/2, (23ε_t - 16ε_{t+1} + 5ε_{t+2})/12 and from the fourth step
    (55ε_t - 59ε_{t+1} + 37ε_{t+2} - 9ε_{t+3})/24. x0 and v predictions are converted to ε first.

    Args:
        denoise, x, schedule, num_steps, **options: see the module docstring (`prediction_type`,
            `spacing`, `noise_sampler`, `mask`, `x0`, `return_trajectory`).

    Example:
    >>> from keras_ldm.diffusion.schedule import NoiseSchedule
    >>> denoise = lambda x, t: 0.5 * x
    >>> x_T = np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype("float32")
    >>> sample = sample_plms(denoise, x_T, NoiseSchedule(), num_steps=10)
    >>> tuple(sample.shape)
    (1, 4, 4, 2)
    """
    run = _SamplerRun(x, schedule, num_steps, **kwargs)
    t, a = run.timesteps, run.alphas_cumprod
    a_prev = np.append(a[1:], schedule.table64("alphas_cumprod")[0])
    order = np.minimum(np.arange(num_steps) + 1, 4)
    coefficients = np.array([ADAMS_BASHFORTH.get(k, (1.0, 0.0, 0.0, 0.0)) for k in order])
    steps = _StepTable(
        t=t,
        t_next=np.append(t[1:], t[-1]),
        alpha=a,
        alpha_next=np.append(a[1:], a[-1]),
        alpha_prev=a_prev,
        c0=coefficients[:, 0],
        c1=coefficients[:, 1],
        c2=coefficients[:, 2],
        c3=coefficients[:, 3],
    )

    def eps_at(x, t, alpha):
        return run.eps_and_x0(denoise(x, run.model_t(t)), x, alpha)[0]

    def ddim_step(x, eps, s):
        pred_x0 = (x - ops.sqrt(1.0 - s.alpha) * eps) / ops.sqrt(s.alpha)
        return ops.sqrt(s.alpha_prev) * pred_x0 + ops.sqrt(1.0 - s.alpha_prev) * eps

    # Step 0: pseudo improved Euler (2nd order), which needs a second model call.
    s = steps[0]
    x = run.blend_known(run.x, 0, ops.sqrt(s.alpha), ops.sqrt(1.0 - s.alpha))
    eps = eps_at(x, s.t, s.alpha)
    eps_next = eps_at(ddim_step(x, eps, s), s.t_next, s.alpha_next)
    x = ddim_step(x, (eps + eps_next) / 2, s)
    zeros = ops.zeros_like(x)

    def step(i, state):
        x, eps_1, eps_2, eps_3 = state  # ε of the last three steps, most recent first
        s = steps[i]
        x = run.blend_known(x, i, ops.sqrt(s.alpha), ops.sqrt(1.0 - s.alpha))
        eps = eps_at(x, s.t, s.alpha)
        eps_prime = s.c0 * eps + s.c1 * eps_1 + s.c2 * eps_2 + s.c3 * eps_3
        return ddim_step(x, eps_prime, s), eps, eps_1, eps_2

    return run.loop(step, (x, eps, zeros, zeros), start=1)


def sample_dpmpp_2m(denoise, x, schedule, num_steps, **kwargs):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), as diffusers `DPMSolverMultistepScheduler`.

    With `α = √ᾱ`, `σ = √(1-ᾱ)`, `λ = log(α/σ)`, `h = λ_next - λ`, `r = h_last / h`:
    `D = (1 + 1/(2r)) x̂0 - 1/(2r) x̂0_last` and `x_next = (σ_next/σ) x - α_next (e^{-h} - 1) D`.
    The first and the last step are first order (`D = x̂0`); the last lands on σ = 0
    (`final_sigmas_type="zero"`). Note: with `spacing="leading"` this visits CompVis' DDIM
    timesteps, not diffusers' DPM-Solver "leading" ones (pass those as `timesteps=` there).

    Args:
        denoise, x, schedule, num_steps, **options: see the module docstring (`prediction_type`,
            `spacing`, `noise_sampler`, `mask`, `x0`, `return_trajectory`).

    Example:
    >>> from keras_ldm.diffusion.schedule import NoiseSchedule
    >>> denoise = lambda x, t: 0.5 * x
    >>> x_T = np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype("float32")
    >>> sample = sample_dpmpp_2m(denoise, x_T, NoiseSchedule(), num_steps=10)
    >>> tuple(sample.shape)
    (1, 4, 4, 2)
    """
    run = _SamplerRun(x, schedule, num_steps, **kwargs)
    a = run.alphas_cumprod
    alpha, sigma = np.sqrt(a), np.sqrt(1.0 - a)
    alpha_next, sigma_next = np.append(alpha[1:], 1.0), np.append(sigma[1:], 0.0)
    with np.errstate(divide="ignore"):
        lam, lam_next = np.log(alpha / sigma), np.log(alpha_next / sigma_next)  # λ_next = ∞ at the end
    h = lam_next - lam
    r = np.append(np.nan, h[:-1]) / h  # h_last / h
    second_order = np.arange(num_steps) > 0
    second_order[-1] = False
    steps = _StepTable(
        t=run.timesteps,
        alpha_cumprod=a,
        sigma_ratio=sigma_next / sigma,
        exp_term=-alpha_next * np.expm1(-h),  # -α_next (e^{-h} - 1); α_next at the end, where h = ∞
        half_inv_r=np.where(second_order, 0.5 / np.where(second_order, r, 1.0), 0.0),
    )

    def step(i, state):
        x, last_x0 = state
        s = steps[i]
        x = run.blend_known(x, i, ops.sqrt(s.alpha_cumprod), ops.sqrt(1.0 - s.alpha_cumprod))
        _, pred_x0 = run.eps_and_x0(denoise(x, run.model_t(s.t)), x, s.alpha_cumprod)
        d = (1.0 + s.half_inv_r) * pred_x0 - s.half_inv_r * last_x0
        return s.sigma_ratio * x + s.exp_term * d, pred_x0

    return run.loop(step, (run.x, ops.zeros_like(run.x)))


def sample_euler(denoise, x, schedule, num_steps, **kwargs):
    """Euler's method on the probability-flow ODE `dx/dσ = (x - D(x, σ)) / σ` in σ-space.

    Karras et al. 2022 (Algorithm 2 without churn; k-diffusion `sample_euler`), as diffusers
    `EulerDiscreteScheduler`: `x_σ = x / √ᾱ` with `σ = √((1-ᾱ)/ᾱ)`, the model sees `x_σ / √(σ²+1)`
    and `D = c_skip x_σ + c_out · prediction` (eps: 1, -σ; v: 1/(σ²+1), -σ/√(σ²+1); x0: 0, 1).

    Args:
        denoise, x, schedule, num_steps, **options: see the module docstring (`prediction_type`,
            `spacing`, `noise_sampler`, `mask`, `x0`, `return_trajectory`).

    Example:
    >>> from keras_ldm.diffusion.schedule import NoiseSchedule
    >>> denoise = lambda x, t: 0.5 * x
    >>> x_T = np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype("float32")
    >>> sample = sample_euler(denoise, x_T, NoiseSchedule(), num_steps=10)
    >>> tuple(sample.shape)
    (1, 4, 4, 2)
    """
    run = _SamplerRun(x, schedule, num_steps, **kwargs)
    sigma = np.sqrt((1.0 - run.alphas_cumprod) / run.alphas_cumprod)
    sigma_next = np.append(sigma[1:], 0.0)
    c_skip, c_out = _sigma_space_scalings(sigma, run.prediction_type)
    steps = _StepTable(
        t=run.timesteps,
        sigma=sigma,
        sigma_next=sigma_next,
        c_in=1.0 / np.sqrt(sigma**2 + 1.0),
        c_in_next=1.0 / np.sqrt(sigma_next**2 + 1.0),
        c_skip=c_skip,
        c_out=c_out,
    )

    def step(i, x):
        s = steps[i]
        x = run.blend_known(x, i, 1.0, s.sigma)  # q_sample in σ-space: x0 + σ z
        denoised = s.c_skip * x + s.c_out * denoise(x * s.c_in, run.model_t(s.t))
        d = (x - denoised) / s.sigma
        return x + d * (s.sigma_next - s.sigma)

    x_sigma = run.x * float(np.sqrt(sigma[0] ** 2 + 1.0))
    return run.loop(step, x_sigma, latent=lambda i, x: x * steps[i].c_in_next)


SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "plms": sample_plms,
    "dpmpp_2m": sample_dpmpp_2m,
    "euler": sample_euler,
}


def get_sampler(name):
    """The sampler function registered under `name` (`"ddpm"`, `"ddim"`, `"plms"`, `"dpmpp_2m"`, `"euler"`).

    Example:
    >>> get_sampler("ddim").__name__
    'sample_ddim'
    """
    check_choice("sampler", name, tuple(SAMPLERS))
    return SAMPLERS[name]


def _sigma_space_scalings(sigma, prediction_type):
    """`(c_skip, c_out)` with `D(x_σ) = c_skip x_σ + c_out · prediction` (k-diffusion's denoisers)."""
    if prediction_type == "eps":
        return np.ones_like(sigma), -sigma
    if prediction_type == "v":
        return 1.0 / (sigma**2 + 1.0), -sigma / np.sqrt(sigma**2 + 1.0)
    return np.zeros_like(sigma), np.ones_like(sigma)


class _StepTable:
    """Per-step constants, computed in float64 numpy and read inside the loop with one gather.

    `table[i].name` is the float32 scalar of column `name` at step `i` (`i` may be traced).
    """

    def __init__(self, **columns):
        self._names = tuple(columns)
        self._table = np.stack([np.asarray(c, np.float64) for c in columns.values()], axis=1).astype(
            np.float32
        )

    def __getitem__(self, i):
        row = ops.take(ops.convert_to_tensor(self._table), i, axis=0)
        return SimpleNamespace(**{name: row[k] for k, name in enumerate(self._names)})


class _SamplerRun:
    """What every sampler shares: argument checks, the visited timesteps, the inpainting blend,
    the noise source and the (optionally recording) `fori_loop`."""

    def __init__(
        self,
        x,
        schedule,
        num_steps,
        *,
        prediction_type="eps",
        spacing="leading",
        noise_sampler=None,
        mask=None,
        x0=None,
        return_trajectory=False,
    ):
        check_choice("prediction_type", prediction_type, PARAMETERIZATIONS)
        self.timesteps = schedule.sampling_timesteps(num_steps, spacing)
        self.alphas_cumprod = schedule.table64("alphas_cumprod")[self.timesteps]
        self.num_steps = num_steps
        self.prediction_type = prediction_type
        self.x = ops.convert_to_tensor(x)
        self.mask, self.x0 = _check_inpainting(mask, x0, self.x)
        if noise_sampler is None:
            noise_sampler = make_noise_sampler(
                0, tuple(self.x.shape), keras.backend.standardize_dtype(self.x.dtype)
            )
        self.noise = noise_sampler
        self.return_trajectory = return_trajectory

    def model_t(self, t):
        """The timestep as the model gets it: a float32 vector with one entry per batch row."""
        return ops.broadcast_to(t, ops.shape(self.x)[:1])  # the batch may be dynamic (export)

    def eps_and_x0(self, prediction, x, alpha_cumprod):
        return prediction_to_eps_and_x0(prediction, x, alpha_cumprod, self.prediction_type)

    def blend_known(self, x, i, signal_scale, noise_scale):
        """CompVis inpainting: `mask * (signal_scale x0 + noise_scale z) + (1 - mask) * x`."""
        if self.mask is None:
            return x
        noised_x0 = signal_scale * self.x0 + noise_scale * self.noise(self.num_steps + i)
        return self.mask * noised_x0 + (1.0 - self.mask) * x

    def loop(self, step, state, start=0, latent=None):
        """`fori_loop(start, num_steps, step, state)`; returns the latent (and the trajectory).

        `latent(i, state)` reads the variance-preserving latent after step `i` from the loop state
        (default: the state itself, or its first entry when the state is a tuple).
        """
        if latent is None:
            latent = lambda i, state: state[0] if isinstance(state, tuple) else state
        if not self.return_trajectory:
            return latent(self.num_steps - 1, ops.fori_loop(start, self.num_steps, step, state))

        def write(trajectory, i, state):
            corner = [i] + [0] * len(self.x.shape)
            return ops.slice_update(trajectory, corner, ops.expand_dims(latent(i, state), 0))

        def recording_step(i, carry):
            state = step(i, carry[0])
            return state, write(carry[1], i, state)

        trajectory = ops.zeros((self.num_steps,) + tuple(self.x.shape), self.x.dtype)
        if start > 0:  # a peeled first step has already produced the latent of step start - 1
            trajectory = write(trajectory, start - 1, state)
        state, trajectory = ops.fori_loop(start, self.num_steps, recording_step, (state, trajectory))
        return latent(self.num_steps - 1, state), trajectory


def _check_inpainting(mask, x0, x):
    if mask is None and x0 is None:
        return None, None
    if mask is None or x0 is None:
        raise ValueError(
            "Inpainting needs both `mask` (1 = keep) and `x0` (the latents to keep); "
            f"received mask={_describe(mask)}, x0={_describe(x0)}."
        )
    mask = ops.cast(ops.convert_to_tensor(mask), x.dtype)
    x0 = ops.cast(ops.convert_to_tensor(x0), x.dtype)
    shape = tuple(x.shape)
    if len(mask.shape) != len(shape) or any(m not in (1, s) for m, s in zip(mask.shape, shape)):
        raise ValueError(
            f"`mask` must have the latents' shape {shape}, or 1 in some axes to broadcast "
            f"(e.g. {shape[:-1] + (1,)}); received mask of shape {tuple(mask.shape)}."
        )
    if tuple(x0.shape) != shape:
        raise ValueError(
            f"`x0` must have the latents' shape {shape}; received x0 of shape {tuple(x0.shape)}."
        )
    return mask, x0


def _describe(value):
    return None if value is None else "a tensor"
