"""Newton update: each step's Jacobian by finite differences, evaluated in the same batched call.

A round evaluates F_j at the window's states and at every state perturbed along each
free event coordinate (one extra row per coordinate), so J_j = dF_j/dx_j costs no extra
sequential call. The next iterate solves the linearized chain exactly, step by step
inside the window (a Gauss-Seidel sweep of the linear model, no model calls):

    x_{j+1} <- F_j(x_j) + J_j (x_j(new) - x_j)   [+ K_j (x_{j-1}(new) - x_{j-1}) for 2M steps]

Converges quadratically near the solution, which is what keeps a warm start useful;
the price is ``event_numel + 1`` denoiser rows per step and round. The criterion judges
the Newton step (new - current), the best error estimate of the current iterate.
``jacobian_every`` > 1 reuses Jacobians between refreshes (chord rounds cost w rows).
Defaults: benchmarks/README.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from .budget import Clock, RoundTimeEstimator
from .fixed_point import Evaluation, LoopSettings, Probes, TrajectoryState, solve_fixed_point
from .inpaint import Inpainting
from .types import Denoiser, SampleResult


@dataclass(frozen=True)
class Newton(LoopSettings):
    """fd_step: finite-difference step (normalized units); jacobian_every: rounds between Jacobian refreshes."""

    window: int = 100
    tolerance: float = 0.1
    abs_tolerance: float | None = 1e-2
    max_abs_tolerance: float | None = 5e-2
    fd_step: float = 1e-3
    jacobian_every: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rounds_per_sync is not None:
            raise ValueError("newton has no device-resident rounds (its probes need the host): rounds_per_sync must be None")
        if not (isinstance(self.fd_step, (int, float)) and self.fd_step > 0):
            raise ValueError(f"fd_step must be a number > 0, got {self.fd_step!r}")
        if isinstance(self.jacobian_every, bool) or not isinstance(self.jacobian_every, int) or self.jacobian_every < 1:
            raise ValueError(f"jacobian_every must be an integer >= 1, got {self.jacobian_every!r}")

    def rows_per_round(self, window: int, event_numel: int) -> int:
        return window + (window - 1) * event_numel

    def start(self, state: TrajectoryState) -> "NewtonRound":
        return NewtonRound(state, self)


class NewtonRound:
    """Keeps the Jacobians of every step (for chord rounds) and this round's Newton iterate."""

    def __init__(self, state: TrajectoryState, settings: Newton):
        self.state = state
        self.settings = settings
        traj = state.traj
        self.batch = traj.shape[1]
        self.event_shape = tuple(traj.shape[2:])
        self.dim = traj[0, 0].numel()
        free = torch.ones(self.dim, dtype=torch.bool, device=traj.device)
        if state.inpaint is not None:  # coordinates known in every batch element need no probe
            free = ~state.inpaint.mask.to(traj.device).reshape(self.batch, -1).all(dim=0)
        self.free = free.nonzero().flatten()  # Long[F]
        s = state.num_steps
        self.jac: Tensor | None = None  # [S, B, D, F] dF_j/dx_j on the free coordinates
        self.jac_x0: Tensor | None = None  # [S, B, D, F] dx0_j/dx_j (2M steps only)
        self.fresh = torch.zeros(s, dtype=torch.bool)
        self.rounds = 0
        self._new: Tensor | None = None

    def probes(self, begin: int, w: int) -> Probes | None:
        self.rounds += 1
        refresh = (self.rounds - 1) % self.settings.jacobian_every == 0
        missing = not bool(self.fresh[begin + 1:begin + w].all())
        self._probing = w > 1 and (refresh or missing)
        if not self._probing:
            return None
        x = self.state.traj[begin + 1:begin + w]  # states of steps begin+1..begin+w-1
        n_free = self.free.numel()
        basis = torch.zeros(n_free, self.dim, dtype=x.dtype, device=x.device)
        basis[torch.arange(n_free, device=x.device), self.free] = self.settings.fd_step
        basis = basis.reshape(n_free, 1, *self.event_shape)  # same direction for every batch element
        states = (x.unsqueeze(1) + basis.unsqueeze(0)).reshape(-1, *x.shape[1:])
        steps = torch.arange(begin + 1, begin + w, device=x.device).repeat_interleave(n_free)
        return Probes(states=states, steps=steps)

    def _store_jacobians(self, begin: int, w: int, ev: Evaluation) -> None:
        s, b, d, f = self.state.num_steps, self.batch, self.dim, self.free.numel()
        dtype, device = ev.stepped.dtype, ev.stepped.device
        if self.jac is None:
            self.jac = torch.zeros(s, b, d, f, dtype=dtype, device=device)
            if self.state.needs_prev_x0:
                self.jac_x0 = torch.zeros_like(self.jac)
        h = self.settings.fd_step
        base = ev.stepped[1:].reshape(w - 1, 1, b, d)
        probed = ev.probe_stepped.reshape(w - 1, f, b, d)
        self.jac[begin + 1:begin + w] = ((probed - base) / h).permute(0, 2, 3, 1)
        if self.jac_x0 is not None:
            base0 = ev.x0[1:].reshape(w - 1, 1, b, d)
            probed0 = ev.probe_x0.reshape(w - 1, f, b, d)
            self.jac_x0[begin + 1:begin + w] = ((probed0 - base0) / h).permute(0, 2, 3, 1)
        self.fresh[begin + 1:begin + w] = True

    def change(self, begin: int, w: int, ev: Evaluation) -> Tensor:
        if self._probing:
            self._store_jacobians(begin, w, ev)
        state, b, d = self.state, self.batch, self.dim
        x = state.traj[begin:begin + w].reshape(w, b, d)  # inputs of the window's steps
        stepped = ev.stepped.reshape(w, b, d)
        c_d1 = None
        if self.jac_x0 is not None:
            like = torch.zeros(w, 1, dtype=stepped.dtype, device=stepped.device)
            c_d1 = state.rule.coef("c_d1", torch.arange(begin, begin + w, device=stepped.device), like)
        new = torch.empty_like(stepped)
        new[0] = stepped[0]
        dx_prev = torch.zeros_like(stepped[0])
        for i in range(1, w):
            dx = new[i - 1] - x[i]  # [B, D]; zero on known coordinates (both projected)
            step = stepped[i] + torch.einsum("bdf,bf->bd", self.jac[begin + i], dx[:, self.free])
            if c_d1 is not None and i >= 2:  # 2M: F_j also depends on x_{j-1} through x0_{j-1}
                dx0 = torch.einsum("bdf,bf->bd", self.jac_x0[begin + i - 1], dx_prev[:, self.free])
                step = step - c_d1[i] * dx0
            new[i] = state.project(step.reshape(1, b, *self.event_shape), begin + 1 + i).reshape(b, d)
            dx_prev = dx
        new = new.reshape(ev.stepped.shape)
        self._new = new
        return new - state.traj[begin + 1:begin + w + 1]

    def new_states(self, begin: int, w: int, ev: Evaluation, settled: int) -> Tensor:
        return self._new


def solve_newton(denoise: Denoiser, rule, x_init: Tensor, noise: Tensor, *,
                 window: int = Newton.window, tolerance: float = Newton.tolerance,
                 abs_tolerance: float | None = Newton.abs_tolerance, max_rounds: int | None = None,
                 max_abs_tolerance: float | None = Newton.max_abs_tolerance, fd_step: float = Newton.fd_step,
                 jacobian_every: int = Newton.jacobian_every,
                 init_trajectory: Tensor | None = None, deadline: float | None = None,
                 clock: Clock = time.perf_counter, round_time_estimator: RoundTimeEstimator | None = None,
                 inpaint: Inpainting | None = None, observer=None) -> SampleResult:
    """Solve all S steps with sliding-window Newton iteration (finite-difference Jacobians)."""
    method = Newton(window=window, tolerance=tolerance, abs_tolerance=abs_tolerance, max_rounds=max_rounds,
                    max_abs_tolerance=max_abs_tolerance, fd_step=fd_step, jacobian_every=jacobian_every)
    return solve_fixed_point(denoise, rule, x_init, noise, method, init_trajectory=init_trajectory,
                             deadline=deadline, clock=clock, round_time_estimator=round_time_estimator,
                             inpaint=inpaint, observer=observer)
