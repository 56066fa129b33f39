"""Denoising step rules as precomputed per-step coefficient tables.

Convention: x_0 is the initial noise, x_S the sample; step i (0 <= i < S) uses
model timestep ``timesteps[i]`` and maps x_i -> x_{i+1}. Every step has the form

    x_{i+1} = c_x[i] x_i + c_x0[i] x0_i + c_eps[i] eps_i + c_d1[i] (x0_i - x0_{i-1}) + noise_std[i] z_i

so a step is a small pure function of the state, the model's prediction and the
pre-drawn noise z_i. Parallel solvers evaluate many DIFFERENT steps at once: every
method takes ``idx: Long[N]`` (one step index per leading element of x) and
gathers the coefficients row by row. Tables are float64 and cast (and cached)
to the dtype/device of x on use, so the arithmetic stays in x's dtype.

Numbers follow diffusers' DDPMScheduler (fixed_small), DDIMScheduler
(set_alpha_to_one=True, steps_offset=0) and DPMSolverMultistepScheduler
(dpmsolver++, midpoint, solver_order=2, lower_order_final, final_sigmas_type="zero").
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .schedules import NoiseSchedule, make_schedule

KINDS = ("ddpm", "ddim", "dpmsolver++")
PREDICTION_TYPES = ("epsilon", "sample")

# Column order of the stacked coefficient table.
_COLUMNS = (
    "sqrt_alpha_bar",  # sqrt(abar_t): x0 <-> eps conversions
    "sqrt_one_minus_alpha_bar",  # sqrt(1 - abar_t)
    "c_x",
    "c_x0",
    "c_eps",
    "c_d1",  # 2M correction weight on (x0_i - x0_{i-1}); 0 on first-order steps
    "noise_std",
    "needs_prev",  # 1.0 where the step uses prev_x0 (2M second-order steps)
)


def leading_timesteps(num_inference_steps: int, num_train_timesteps: int, steps_offset: int = 0) -> np.ndarray:
    """diffusers' "leading" spacing (DDPM/DDIM default), descending."""
    ratio = num_train_timesteps // num_inference_steps
    ts = (np.arange(0, num_inference_steps) * ratio).round()[::-1].copy().astype(np.int64)
    return ts + steps_offset


def dpm_linspace_timesteps(num_inference_steps: int, num_train_timesteps: int) -> np.ndarray:
    """DPMSolverMultistepScheduler's default "linspace" spacing (S+1 points, last dropped)."""
    ts = np.linspace(0, num_train_timesteps - 1, num_inference_steps + 1).round()[::-1][:-1]
    return ts.copy().astype(np.int64)


def _posterior_variance(abar_t: Tensor, abar_next: Tensor) -> Tensor:
    """DDPM posterior variance between timestep t and the next (less noisy) one."""
    return (1 - abar_next) / (1 - abar_t) * (1 - abar_t / abar_next)


class StepRule:
    """One denoising rule: timesteps, coefficient tables and the batched step function."""

    def __init__(
        self,
        kind: str,
        timesteps: Tensor,
        tables: dict[str, Tensor],
        error_var: Tensor,
        order: int,
        prediction_type: str,
        clip_sample: bool,
        clip_sample_range: float,
        schedule: NoiseSchedule,
    ) -> None:
        self.kind = kind
        self.timesteps = timesteps  # Long[S]
        self.tables = tables  # name -> float64 [S]
        self.noise_std = tables["noise_std"]  # float64 [S]
        self.error_var = error_var  # float64 [S]
        self.order = order
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.clip_sample_range = float(clip_sample_range)
        self.schedule = schedule
        self.needs_prev = tables["c_d1"] != 0  # Bool[S]
        tables["needs_prev"] = self.needs_prev.to(torch.float64)
        self._stacked = torch.stack([tables[c] for c in _COLUMNS], dim=1)  # [S, K] float64
        self._cast: dict[tuple[torch.dtype, torch.device], Tensor] = {}
        self._stochastic = bool((self.noise_std > 0).any())

    # ------------------------------------------------------------------ info
    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def stochastic(self) -> bool:
        """True when some step adds fresh noise (DDPM, DDIM with eta > 0)."""
        return self._stochastic

    def __repr__(self) -> str:
        return (
            f"StepRule(kind={self.kind!r}, num_steps={self.num_steps}, order={self.order}, "
            f"prediction_type={self.prediction_type!r}, clip_sample={self.clip_sample})"
        )

    # --------------------------------------------------------------- helpers
    def _table(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        key = (dtype, device)
        tab = self._cast.get(key)
        if tab is None:
            tab = self._stacked.to(device=device, dtype=dtype)
            self._cast[key] = tab
        return tab

    def _check(self, x: Tensor, idx: Tensor, **others: Tensor | None) -> None:
        if not isinstance(idx, Tensor) or idx.dtype != torch.long or idx.dim() != 1:
            raise ValueError(
                "idx must be a 1-D Long tensor of step indices, got "
                f"{getattr(idx, 'dtype', type(idx))} with shape {tuple(getattr(idx, 'shape', ()))}"
            )
        if x.dim() < 1 or x.shape[0] != idx.shape[0]:
            raise ValueError(f"x has leading dim {tuple(x.shape)[:1]} but idx has {idx.shape[0]} step indices")
        for name, t in others.items():
            if t is not None and t.shape != x.shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected x's shape {tuple(x.shape)}")
        if idx.device.type == "cpu" and idx.numel() > 0:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.num_steps:
                raise ValueError(f"step index out of range [0, {self.num_steps}): min {lo}, max {hi}")

    def _coeffs(self, x: Tensor, idx: Tensor) -> dict[str, Tensor]:
        rows = self._table(x.dtype, x.device).index_select(0, idx.to(x.device))  # [N, K]
        rows = rows.reshape(rows.shape + (1,) * (x.dim() - 1))  # [N, K, 1, ...]
        return dict(zip(_COLUMNS, rows.unbind(1)))

    def coef(self, name: str, idx: Tensor, like: Tensor) -> Tensor:
        """Coefficient column `name` gathered at idx, shaped [N, 1, ...] in like's dtype/device.

        E.g. coef("noise_std", idx, x) * noise is the noise term a solver adds by itself.
        """
        if name not in _COLUMNS:
            raise ValueError(f"unknown coefficient {name!r}; expected one of {_COLUMNS}")
        return self._coeffs(like, idx)[name]

    # ------------------------------------------------------------ the rule
    def predict_x0(self, x: Tensor, model_output: Tensor, idx: Tensor) -> Tensor:
        """Clean-sample prediction at step idx (clipped for DDPM/DDIM when clip_sample)."""
        self._check(x, idx, model_output=model_output)
        return self._predict_x0(x, model_output, self._coeffs(x, idx))

    def eps_from_output(self, x: Tensor, model_output: Tensor, idx: Tensor) -> Tensor:
        """Noise prediction implied by the raw (unclipped) model output."""
        self._check(x, idx, model_output=model_output)
        return self._eps(x, model_output, self._coeffs(x, idx))

    def step(
        self,
        x: Tensor,
        x0: Tensor,
        idx: Tensor,
        noise: Tensor | None = None,
        prev_x0: Tensor | None = None,
        eps: Tensor | None = None,
        *,
        deterministic: bool = False,
    ) -> Tensor:
        """x_{i+1} from x_i and the x0 prediction of step i, for a batch of step indices.

        noise: the pre-drawn z_i (may be None for rules that add no noise).
        deterministic: return the noise-free part only (noise must then be None);
            the full step is that plus coef("noise_std", idx, x) * noise.
        prev_x0: (2M only) the x0 prediction of step i-1; ignored on first-order steps.
            Passing prev_x0 = x0 on a row forces a first-order update there.
        eps: (DDIM only) the unclipped noise prediction; diffusers' DDIM uses it for the
            direction term. When None it is derived from x0 (equal unless x0 was clipped),
            so prefer `full_step`, which passes it.
        """
        self._check(x, idx, x0=x0, noise=noise, prev_x0=prev_x0, eps=eps)
        return self._step(x, x0, idx, self._coeffs(x, idx), noise, prev_x0, eps, deterministic)

    def full_step(
        self,
        x: Tensor,
        model_output: Tensor,
        idx: Tensor,
        noise: Tensor | None = None,
        prev_x0: Tensor | None = None,
        *,
        deterministic: bool = False,
    ) -> Tensor:
        """x_{i+1} from x_i and the raw model output (= step(x, predict_x0(...)))."""
        return self.full_step_with_x0(x, model_output, idx, noise, prev_x0, deterministic=deterministic)[0]

    def full_step_with_x0(
        self,
        x: Tensor,
        model_output: Tensor,
        idx: Tensor,
        noise: Tensor | None = None,
        prev_x0: Tensor | None = None,
        *,
        deterministic: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """(x_{i+1}, x0_i): the x0 prediction is what the next 2M step needs as prev_x0.

        Use this (or full_step) rather than step(x, predict_x0(...)): for DDIM with clipping
        diffusers moves along the UNclipped noise prediction, which only the raw output gives.
        """
        self._check(x, idx, model_output=model_output, noise=noise, prev_x0=prev_x0)
        c = self._coeffs(x, idx)
        x0 = self._predict_x0(x, model_output, c)
        eps = self._eps(x, model_output, c) if self.kind == "ddim" else None
        return self._step(x, x0, idx, c, noise, prev_x0, eps, deterministic), x0

    # -------------------------------------------------- unchecked internals
    def _predict_x0(self, x: Tensor, model_output: Tensor, c: dict[str, Tensor]) -> Tensor:
        if self.prediction_type == "epsilon":
            x0 = (x - c["sqrt_one_minus_alpha_bar"] * model_output) / c["sqrt_alpha_bar"]
        else:
            x0 = model_output
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0

    def _eps(self, x: Tensor, model_output: Tensor, c: dict[str, Tensor]) -> Tensor:
        if self.prediction_type == "epsilon":
            return model_output
        return (x - c["sqrt_alpha_bar"] * model_output) / c["sqrt_one_minus_alpha_bar"]

    def _step(
        self,
        x: Tensor,
        x0: Tensor,
        idx: Tensor,
        c: dict[str, Tensor],
        noise: Tensor | None,
        prev_x0: Tensor | None,
        eps: Tensor | None,
        deterministic: bool,
    ) -> Tensor:
        if self.kind == "ddpm":
            out = c["c_x0"] * x0 + c["c_x"] * x
        elif self.kind == "ddim":
            if eps is None:
                eps = (x - c["sqrt_alpha_bar"] * x0) / c["sqrt_one_minus_alpha_bar"]
            out = c["c_x0"] * x0 + c["c_eps"] * eps
        else:  # dpmsolver++
            out = c["c_x"] * x + c["c_x0"] * x0
            if prev_x0 is None:
                if bool(self.needs_prev[idx.cpu()].any()):
                    raise ValueError("prev_x0 is required: some steps in idx use the second-order (2M) update")
            else:
                # where() so that garbage (even NaN) in rows that do not need prev_x0 is ignored
                diff = torch.where(c["needs_prev"] > 0, x0 - prev_x0, torch.zeros_like(x0))
                out = out + c["c_d1"] * diff
        if deterministic:
            if noise is not None:
                raise ValueError("deterministic=True takes no noise")
        elif noise is not None:
            out = out + c["noise_std"] * noise
        elif self.stochastic and bool((self.noise_std[idx.cpu()] > 0).any()):
            raise ValueError(
                f"noise is required: {self.kind} adds fresh noise at some steps in idx "
                "(or pass deterministic=True for the noise-free part)"
            )
        return out


# ---------------------------------------------------------------- factory
def _ddpm_tables(abar_t: Tensor, abar_next: Tensor, timesteps: Tensor) -> dict[str, Tensor]:
    beta_t = 1 - abar_t / abar_next  # effective beta between the two timesteps
    var = _posterior_variance(abar_t, abar_next).clamp(min=1e-20)
    return {
        "c_x": (abar_t / abar_next).sqrt() * (1 - abar_next) / (1 - abar_t),
        "c_x0": abar_next.sqrt() * beta_t / (1 - abar_t),
        "c_eps": torch.zeros_like(abar_t),
        "c_d1": torch.zeros_like(abar_t),
        "noise_std": torch.where(timesteps > 0, var.sqrt(), torch.zeros_like(var)),
    }


def _ddim_tables(abar_t: Tensor, abar_next: Tensor, eta: float) -> dict[str, Tensor]:
    std = eta * _posterior_variance(abar_t, abar_next).sqrt()
    return {
        "c_x": torch.zeros_like(abar_t),
        "c_x0": abar_next.sqrt(),
        "c_eps": (1 - abar_next - std**2).clamp(min=0).sqrt(),
        "c_d1": torch.zeros_like(abar_t),
        "noise_std": std,
    }


def _dpmpp_2m_tables(abar_t: Tensor, abar_next: Tensor) -> dict[str, Tensor]:
    # VP parameterisation: alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma).
    alpha_s, sigma_s = abar_t.sqrt(), (1 - abar_t).sqrt()
    alpha_t, sigma_t = abar_next.sqrt(), (1 - abar_next).sqrt()
    # exp(-h) = exp(lambda_s - lambda_t) = (sigma_t/alpha_t) / (sigma_s/alpha_s); 0 at the final (sigma=0) step.
    exp_neg_h = (sigma_t / alpha_t) / (sigma_s / alpha_s)
    c_x0 = alpha_t * (1 - exp_neg_h)
    lam = 0.5 * (abar_t.log() - (1 - abar_t).log())  # lambda at step i's timestep [S]
    S = abar_t.shape[0]
    c_d1 = torch.zeros_like(abar_t)
    # Second order on 1 <= i <= S-2 (first step has no history; final step is first order
    # because final_sigmas_type="zero"). r0 = h_0 / h, D1 = (x0_i - x0_{i-1}) / r0.
    for i in range(1, S - 1):
        h = lam[i + 1] - lam[i]
        h0 = lam[i] - lam[i - 1]
        c_d1[i] = 0.5 * c_x0[i] * h / h0
    return {
        "c_x": sigma_t / sigma_s,
        "c_x0": c_x0,
        "c_eps": torch.zeros_like(abar_t),
        "c_d1": c_d1,
        "noise_std": torch.zeros_like(abar_t),
    }


def make_step_rule(
    kind: str,
    num_inference_steps: int,
    num_train_timesteps: int = 100,
    beta_schedule: str = "squaredcos_cap_v2",
    prediction_type: str = "epsilon",
    clip_sample: bool = True,
    clip_sample_range: float = 1.0,
    eta: float = 0.0,
) -> StepRule:
    """Build a StepRule. clip_sample applies to DDPM/DDIM only (diffusers' DPM-Solver has none)."""
    if kind not in KINDS:
        raise ValueError(f"unknown step rule kind {kind!r}; expected one of {KINDS}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")
    if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(
            f"num_inference_steps must be an int in [1, num_train_timesteps={num_train_timesteps}], "
            f"got {num_inference_steps!r}"
        )
    if clip_sample and not clip_sample_range > 0:
        raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if eta != 0 and kind != "ddim":
        raise ValueError(f"eta={eta} only applies to kind='ddim', not {kind!r}")

    schedule = make_schedule(beta_schedule, num_train_timesteps)
    if kind == "dpmsolver++":
        ts_np = dpm_linspace_timesteps(num_inference_steps, num_train_timesteps)
    else:
        ts_np = leading_timesteps(num_inference_steps, num_train_timesteps)
    if len(np.unique(ts_np)) != len(ts_np):
        raise ValueError(f"{num_inference_steps} steps give repeated timesteps for T={num_train_timesteps}")
    timesteps = torch.from_numpy(ts_np)
    next_ts = torch.cat([timesteps[1:], torch.tensor([-1])])  # -1: clean data (abar = 1)
    abar_t = schedule.alpha_bar(timesteps)
    abar_next = schedule.alpha_bar(next_ts)

    if kind == "ddpm":
        tables = _ddpm_tables(abar_t, abar_next, timesteps)
    elif kind == "ddim":
        tables = _ddim_tables(abar_t, abar_next, eta)
    else:
        tables = _dpmpp_2m_tables(abar_t, abar_next)
    tables["sqrt_alpha_bar"] = abar_t.sqrt()
    tables["sqrt_one_minus_alpha_bar"] = (1 - abar_t).sqrt()
    tables["alpha_bar"] = abar_t
    tables["alpha_bar_next"] = abar_next
    error_var = _posterior_variance(abar_t, abar_next).clamp(min=1e-20)
    return StepRule(
        kind=kind,
        timesteps=timesteps,
        tables=tables,
        error_var=error_var,
        order=2 if kind == "dpmsolver++" else 1,
        prediction_type=prediction_type,
        clip_sample=bool(clip_sample) and kind != "dpmsolver++",
        clip_sample_range=clip_sample_range,
        schedule=schedule,
    )
