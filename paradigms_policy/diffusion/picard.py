"""Picard update (ParaDiGMS): every window state takes the next iterate of a linear form.

Defaults (window 32, tolerance 0.1, abs floor 3e-3, cumulative form) are the measured
DDPM-100 settings on the shipped checkpoint (benchmarks/README.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from torch import Tensor

from .budget import Clock, RoundTimeEstimator
from .fixed_point import Evaluation, LoopSettings, TrajectoryState, solve_fixed_point
from .inpaint import Inpainting
from .linear_forms import cumulative_residual, picard_states
from .types import Denoiser, SampleResult


@dataclass(frozen=True)
class Picard(LoopSettings):
    """Sliding-window Picard iteration. ``exact_linear``: ParaTAA's form instead of the cumulative one."""

    window: int = 32
    tolerance: float = 0.1
    abs_tolerance: float | None = 3e-3
    exact_linear: bool = False

    def start(self, state: TrajectoryState) -> "PicardRound":
        return PicardRound(state, self.exact_linear)


class PicardRound:
    """Stateless between rounds: new states from this round's outputs only."""

    def __init__(self, state: TrajectoryState, exact_linear: bool):
        self.state = state
        self.exact_linear = exact_linear

    def probes(self, begin: int, w: int) -> None:
        return None

    def change(self, begin: int, w: int, ev: Evaluation) -> Tensor:
        return cumulative_residual(ev.stepped, self.state.traj[begin + 1:begin + w + 1])

    def new_states(self, begin: int, w: int, ev: Evaluation, settled: int) -> Tensor:
        a = self.state.a[begin:begin + w] if self.exact_linear else None
        return picard_states(ev.stepped, self.state.traj[begin:begin + w], a)


def solve_picard(denoise: Denoiser, rule, x_init: Tensor, noise: Tensor, *,
                 window: int = Picard.window, tolerance: float = Picard.tolerance,
                 abs_tolerance: float | None = Picard.abs_tolerance, max_rounds: int | None = None,
                 exact_linear: bool = Picard.exact_linear, init_trajectory: Tensor | None = None,
                 deadline: float | None = None, clock: Clock = time.perf_counter,
                 round_time_estimator: RoundTimeEstimator | None = None,
                 inpaint: Inpainting | None = None, observer=None) -> SampleResult:
    """Solve all S steps of ``rule`` by sliding-window Picard iteration (see fixed_point.solve_fixed_point)."""
    method = Picard(window=window, tolerance=tolerance, abs_tolerance=abs_tolerance, max_rounds=max_rounds,
                    exact_linear=exact_linear)
    return solve_fixed_point(denoise, rule, x_init, noise, method, init_trajectory=init_trajectory,
                             deadline=deadline, clock=clock, round_time_estimator=round_time_estimator,
                             inpaint=inpaint, observer=observer)
