"""Shared result types and the denoiser signature used by every sampler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import Tensor

# denoise(x: [W, B, *event], t: Long[W]) -> model_output [W, B, *event].
# W different steps are evaluated in one call; conditioning is bound inside.
Denoiser = Callable[[Tensor, Tensor], Tensor]


@dataclass
class SolveStats:
    """How a sample was obtained: sequential rounds, model evaluations, convergence."""

    rounds: int  # sequential denoiser calls (parallel rounds)
    nfe: int  # step evaluations in total (sum of window sizes)
    converged: bool
    step_errors: Tensor | None = None  # [S] last per-step error, if the solver measures it
    residual_history: list[float] = field(default_factory=list)
    deadline_hit: bool = False
    wall_time_s: float = 0.0
    init: str = "cold"  # "cold" or "warm"
    rows: int = 0  # denoiser rows evaluated in all: nfe plus probe rows (Newton's finite differences)


@dataclass
class SampleResult:
    """A finished sample with the trajectory it came from (used for warm starts and errors)."""

    sample: Tensor  # [B, *event] = trajectory[-1]
    trajectory: Tensor  # [S+1, B, *event], trajectory[0] = x_init
    noise: Tensor  # [S, B, *event]
    x0_preds: Tensor | None  # [S, B, *event]
    stats: SolveStats
