"""Convergence test shared by the Picard and Anderson solvers.

A step j (mapping x_j -> x_{j+1}) has converged when the change (Picard) or the
residual (Anderson) of its output state x_{j+1}, per batch element, satisfies

    mean_event(delta^2) / error_var_j <= tolerance^2        (ParaDiGMS, relative)
 or sqrt(mean_event(delta^2))          <= abs_tolerance      (absolute floor)

and a step fails if any batch element fails. The relative test alone is the
ParaDiGMS criterion; near the data end its noise variance goes to zero (it is
exactly zero at the last DDPM step), so those steps need a change of ~0 to pass
and dominate the round count (DESIGN.md: 23-31 rounds for DDPM-100 whatever the
tolerance). The absolute floor (ParaTAA's tol1) stops that: a change far below
what matters in normalized action units counts as converged. An optional ``max_abs_tolerance``
also requires max_event |delta| <= max_abs_tolerance (Newton: an RMS test lets one far-off
coordinate through).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_MIN_VAR = 1e-20  # same floor diffusers uses for the DDPM posterior variance


def check_tolerances(tolerance: float, abs_tolerance: float | None, max_abs_tolerance: float | None = None) -> None:
    if tolerance is None or not isinstance(tolerance, (int, float)) or math.isnan(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    if abs_tolerance is not None and (math.isnan(abs_tolerance) or abs_tolerance < 0):
        raise ValueError(f"abs_tolerance must be None or a number >= 0, got {abs_tolerance!r}")
    if max_abs_tolerance is not None and (math.isnan(max_abs_tolerance) or max_abs_tolerance < 0):
        raise ValueError(f"max_abs_tolerance must be None or a number >= 0, got {max_abs_tolerance!r}")


@dataclass
class StepErrors:
    """Errors of a block of W consecutive steps."""

    ratio: torch.Tensor      # [W] max over batch of mean(delta^2)/error_var (compare to tol^2)
    rms: torch.Tensor        # [W] max over batch of RMS(delta)
    converged: torch.Tensor  # Bool[W]


class ConvergenceCriterion:
    def __init__(self, error_var: torch.Tensor, tolerance: float, abs_tolerance: float | None,
                 max_abs_tolerance: float | None = None):
        check_tolerances(tolerance, abs_tolerance, max_abs_tolerance)
        self.error_var = error_var.clamp_min(_MIN_VAR)
        self.tol_sq = float(tolerance) ** 2
        self.abs_tolerance = abs_tolerance
        self.max_abs_tolerance = max_abs_tolerance

    def evaluate(self, delta: torch.Tensor, first_step: int) -> StepErrors:
        """delta: [W, B, *event] change of states x_{first_step+1 .. first_step+W}."""
        return self._evaluate(delta, self.error_var[first_step:first_step + delta.shape[0]])

    def evaluate_rows(self, delta: torch.Tensor, steps: torch.Tensor) -> StepErrors:
        """delta: [W, B, *event] change of the output states of steps ``steps`` (Long[W], on delta's device).

        The same test without reading a position on the host (device-resident rounds).
        """
        return self._evaluate(delta, self.error_var.index_select(0, steps))

    def _evaluate(self, delta: torch.Tensor, error_var: torch.Tensor) -> StepErrors:
        w, b = delta.shape[:2]
        msq = delta.reshape(w, b, -1).double().pow(2).mean(dim=2)  # [W, B]
        var = error_var.to(msq).unsqueeze(1)
        ratio = msq / var
        ok = ratio <= self.tol_sq
        rms = msq.sqrt()
        if self.abs_tolerance is not None:
            ok = ok | (rms <= self.abs_tolerance)
        if self.max_abs_tolerance is not None:
            ok = ok & (delta.reshape(w, b, -1).abs().amax(dim=2).to(msq) <= self.max_abs_tolerance)
        return StepErrors(ratio=ratio.amax(dim=1), rms=rms.amax(dim=1), converged=ok.all(dim=1))


def leading_converged(converged: torch.Tensor) -> int:
    """Number of leading True entries of a Bool[W] vector."""
    failed = (~converged).nonzero()
    return int(converged.numel()) if failed.numel() == 0 else int(failed[0, 0])
