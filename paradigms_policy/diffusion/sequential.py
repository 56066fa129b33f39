"""Reference sequential sampler and up-front noise drawing.

All randomness is drawn before sampling (x_init and one noise tensor per step) so
that sequential and parallel solvers target exactly the same trajectory.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from .inpaint import Inpainting, bind_inpainting
from .step_rules import StepRule
from .types import Denoiser, SampleResult, SolveStats


def draw_noise(
    rule: StepRule,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """(x_init [*shape], noise [S, *shape]); shape is (B, *event).

    Draws x_init first, then one randn(shape) per step in step order, which is the
    same sequence diffusers' DDPM loop consumes from the same generator (its final
    t=0 step draws nothing, so only that last noise slice differs, and it is unused).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive sizes (B, *event), got {shape}")
    x_init = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    noise = torch.empty((rule.num_steps,) + shape, dtype=dtype, device=device)
    for i in range(rule.num_steps):
        noise[i] = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return x_init, noise


def validate_inputs(rule: StepRule, x_init: Tensor, noise: Tensor) -> None:
    """Shape/finite checks shared by all samplers."""
    if not isinstance(x_init, Tensor) or x_init.dim() < 1:
        raise ValueError(f"x_init must be a tensor [B, *event], got {type(x_init).__name__}")
    expected = (rule.num_steps,) + tuple(x_init.shape)
    if not isinstance(noise, Tensor) or tuple(noise.shape) != expected:
        got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
        raise ValueError(f"noise must have shape [S, *x_init.shape] = {expected}, got {got}")
    if noise.dtype != x_init.dtype or noise.device != x_init.device:
        raise ValueError(
            f"noise ({noise.dtype}, {noise.device}) must match x_init ({x_init.dtype}, {x_init.device})"
        )
    if not bool(torch.isfinite(x_init).all()):
        raise ValueError("x_init contains NaN or inf")
    if rule.stochastic and not bool(torch.isfinite(noise).all()):
        raise ValueError("noise contains NaN or inf")


@torch.no_grad()
def sample_sequential(denoise: Denoiser, rule: StepRule, x_init: Tensor, noise: Tensor,
                      inpaint: Inpainting | None = None) -> SampleResult:
    """Run the S steps one after another (W=1 per denoiser call); keeps every state.

    ``inpaint``: known entries held in every state (see inpaint.py), as DiffusionPolicy's
    ``conditional_sample`` does with its condition mask.
    """
    validate_inputs(rule, x_init, noise)
    known = bind_inpainting(inpaint, rule, x_init)
    start = time.perf_counter()
    S = rule.num_steps
    trajectory = torch.empty((S + 1,) + tuple(x_init.shape), dtype=x_init.dtype, device=x_init.device)
    x0_preds = torch.empty((S,) + tuple(x_init.shape), dtype=x_init.dtype, device=x_init.device)
    trajectory[0] = x_init if known is None else known.apply(x_init.unsqueeze(0), 0)[0]
    timesteps = rule.timesteps.to(x_init.device)
    prev_x0: Tensor | None = None
    for i in range(S):
        x = trajectory[i : i + 1]  # [1, B, *event]
        idx = torch.full((1,), i, dtype=torch.long, device=x_init.device)
        out = denoise(x, timesteps[i : i + 1])
        if tuple(out.shape) != tuple(x.shape):
            raise ValueError(f"denoiser returned shape {tuple(out.shape)}, expected {tuple(x.shape)}")
        x_next, x0 = rule.full_step_with_x0(x, out.to(x.dtype), idx, noise[i : i + 1], prev_x0)
        trajectory[i + 1] = x_next[0] if known is None else known.apply(x_next, i + 1)[0]
        x0_preds[i] = x0[0]
        prev_x0 = x0
    stats = SolveStats(
        rounds=S,
        nfe=S,
        converged=True,
        step_errors=None,
        residual_history=[],
        wall_time_s=time.perf_counter() - start,
        init="cold",
        rows=S,
    )
    return SampleResult(
        sample=trajectory[S].clone(), trajectory=trajectory, noise=noise, x0_preds=x0_preds, stats=stats
    )
