"""Sliding-window Picard iteration over the whole denoising trajectory (ParaDiGMS).

Sampling is the fixed point x_{j+1} = F_j(x_j), j = 0..S-1, where F_j is step j
of a :class:`StepRule` (noise pre-drawn, so F_j is deterministic). All S+1
states live in one buffer. A window of p steps starting at ``begin`` is
evaluated in ONE batched denoiser call and every window state is replaced by

    x_{j+1} = F_begin(x_begin) + sum_{i=begin+1..j} (F_i(x_i) - x_i)

(= x_begin + cumsum of drifts and scaled noise; the first term is written as
F_begin(x_begin) so the window's first output is bit-identical to a sequential
step). The window slides past its leading converged steps (criteria.py): at
least one, because the first output depends only on final states, so a solve
ends within S rounds and with window 1 it is the sequential sampler.

Multistep DPM-Solver++ (order 2) needs the previous step's x0 prediction: an
x0 buffer keeps the last prediction of every step, so the window's first
element uses the stored prediction of step begin-1 and the fixed point is the
sequential 2M sample (ParaDiGMS uses first order there instead, which is not).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
import torch

from .budget import Clock, DeadlineGuard, RoundTimeEstimator, validate_deadline
from .criteria import ConvergenceCriterion, StepErrors, leading_converged
from .inpaint import Inpainting, bind_inpainting
from .types import Denoiser, SampleResult, SolveStats

DEFAULT_WINDOW = 16
DEFAULT_TOLERANCE = 0.1


def validate_solver_inputs(rule, x_init: torch.Tensor, noise: torch.Tensor, window: int,
                           init_trajectory: torch.Tensor | None, max_rounds: int | None) -> None:
    """Raise ValueError naming the problem for bad solver input."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    if max_rounds is not None and max_rounds < 0:
        raise ValueError(f"max_rounds must be None or >= 0, got {max_rounds}")
    s = int(rule.num_steps)
    if x_init.dim() < 2:
        raise ValueError(f"x_init must be [B, *event], got shape {tuple(x_init.shape)}")
    if tuple(noise.shape) != (s, *x_init.shape):
        raise ValueError(
            f"noise must have shape [S={s}, *x_init.shape]={(s, *x_init.shape)}, got {tuple(noise.shape)}")
    if noise.dtype != x_init.dtype or noise.device != x_init.device:
        raise ValueError(f"noise ({noise.dtype}, {noise.device}) must match x_init ({x_init.dtype}, {x_init.device})")
    if not torch.isfinite(x_init).all():
        raise ValueError("x_init contains NaN or infinite values")
    if not torch.isfinite(noise).all():
        raise ValueError("noise contains NaN or infinite values")
    if init_trajectory is not None:
        if tuple(init_trajectory.shape) != (s + 1, *x_init.shape):
            raise ValueError(
                f"init_trajectory must have shape [S+1={s + 1}, *x_init.shape]={(s + 1, *x_init.shape)}, "
                f"got {tuple(init_trajectory.shape)}")
        if not torch.isfinite(init_trajectory).all():
            raise ValueError("init_trajectory contains NaN or infinite values")


class TrajectoryState:
    """The solver's buffers: trajectory [S+1,B,*event], x0 predictions [S,B,*event].

    With ``inpaint``, every stored state and every step output holds the known entries
    (``project``), so the solved map is M(F_j) and its fixed point the inpainted sample.
    """

    def __init__(self, rule, x_init: torch.Tensor, noise: torch.Tensor,
                 init_trajectory: torch.Tensor | None, inpaint: Inpainting | None = None):
        s = int(rule.num_steps)
        self.rule = rule
        self.noise = noise
        self.inpaint = bind_inpainting(inpaint, rule, x_init)
        if init_trajectory is None:
            # cold start: every state starts as x_init; slots entering the window
            # are refreshed from the last known state (ParaDiGMS).
            self.traj = x_init.unsqueeze(0).repeat(s + 1, *([1] * x_init.dim())).clone()
            self.fill_new_slots = True
        else:
            self.traj = init_trajectory.to(dtype=x_init.dtype, device=x_init.device).clone()
            self.fill_new_slots = False  # keep the given guesses
        self.traj[0] = x_init
        self.traj = self.project(self.traj, 0)
        self.needs_prev_x0 = int(getattr(rule, "order", 1)) >= 2
        self.x0 = torch.zeros_like(noise)  # last x0 prediction of every step
        self.timesteps = rule.timesteps.to(device=x_init.device, dtype=torch.long)
        self.a = state_coefficients(rule, x_init.dtype, x_init.device)  # [S]

    @property
    def num_steps(self) -> int:
        return self.traj.shape[0] - 1

    def project(self, states: torch.Tensor, first: int) -> torch.Tensor:
        """States first..first+n-1 ([n, B, *event]) with the known entries set (identity without inpainting)."""
        return states if self.inpaint is None else self.inpaint.apply(states, first)

    def evaluate(self, denoise: Denoiser, begin: int, w: int) -> torch.Tensor:
        """F_j(x_j) for j in [begin, begin+w) in one batched denoiser call -> [w,B,*event]."""
        x = self.traj[begin:begin + w]
        idx = torch.arange(begin, begin + w, device=x.device)
        out = denoise(x, self.timesteps[begin:begin + w])
        if tuple(out.shape) != tuple(x.shape):
            raise ValueError(f"denoiser returned shape {tuple(out.shape)}, expected {tuple(x.shape)}")
        out = out.to(x.dtype)
        prev = None
        if self.needs_prev_x0:
            x0 = self.rule.predict_x0(x, out, idx)
            first = self.x0[begin - 1:begin] if begin > 0 else torch.zeros_like(x0[:1])
            prev = torch.cat([first, x0[:-1]], dim=0)
        x_next, x0 = self.rule.full_step_with_x0(x, out, idx, self.noise[begin:begin + w], prev)
        self.x0[begin:begin + w] = x0
        return self.project(x_next, begin + 1)


def state_coefficients(rule, dtype: torch.dtype, device) -> torch.Tensor:
    """a_j [S]: coefficient of the state in step j for a fixed x0 prediction and noise.

    Every supported rule is affine in x_j once x0_j is given (DDPM: the posterior
    mean's c_x; DDIM / DPM-Solver++: sigma_{j+1}/sigma_j), so two batched calls of
    ``rule.step`` read it off without knowing the rule's internals.
    """
    s = int(rule.num_steps)
    idx = torch.arange(s, device=device)
    one = torch.ones(s, 1, dtype=torch.float64, device=device)
    zero = torch.zeros_like(one)
    a = rule.step(one, zero, idx, zero, prev_x0=zero) - rule.step(zero, zero, idx, zero, prev_x0=zero)
    return a[:, 0].to(dtype)


def picard_states(stepped: torch.Tensor, window_states: torch.Tensor,
                  a: torch.Tensor | None = None) -> torch.Tensor:
    """New states x_{begin+1..begin+w} from F_j(x_j) and the window's states x_j.

    a is None: ParaDiGMS's cumulative drift form, x_begin + cumsum(F_j(x_j) - x_j).
    a: [w] state coefficients: the state-proportional part of each step is applied
    exactly and only the rest, g_j = F_j(x_j) - a_j x_j, is lagged:
    x_{j+1} = a_j x_j(new) + g_j(x_j(old)) (ParaTAA's formulation). Both keep the
    first output bit-identical to a sequential step and have the same fixed point.
    """
    new = stepped.clone()
    if stepped.shape[0] <= 1:
        return new
    if a is None:
        new[1:] = stepped[:1] + torch.cumsum(stepped[1:] - window_states[1:], dim=0)
        return new
    shape = (-1,) + (1,) * (stepped.dim() - 1)
    g = stepped - a.reshape(shape) * window_states
    g[0] = stepped[0]
    out = apply_transfer(transfer_matrix(a), g)
    out[0] = stepped[0]  # bit-identical to a sequential step
    return out


def cumulative_residual(stepped: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """sum_{i <= j} (F_i(x_i) - x_{i+1}) over the window, [w,B,*event]: the convergence measure.

    It is exactly the state change of the cumulative (ParaDiGMS) update, and the
    more conservative measure for the exact-linear form, whose own change
    discounts every upstream residual by a_j < 1. Neither makes the exact-linear
    form safe at tolerance 0.1 on the trained Lift checkpoint
    (benchmarks/lift_solver_study.py, max abs error 0.18-0.44 with its own
    change, 0.15-0.29 with this one): use a tight tolerance there.
    """
    return torch.cumsum(stepped - states, dim=0)


def transfer_matrix(a: torch.Tensor) -> torch.Tensor:
    """L [w,w] with L[i,k] = prod_{l=k+1..i} a_l for k <= i, else 0 (L[i,i] = 1).

    The recursion y_0 = g_0, y_i = a_i y_{i-1} + g_i is y = L g: one matmul instead
    of a Python loop over the window (the loop cost ~10 ms per round at w=100).
    Built with a cumulative product (no division, so a_l = 0 is fine).
    """
    w = a.shape[0]
    rows = torch.arange(w, device=a.device)
    below = rows.unsqueeze(1) > rows.unsqueeze(0)  # [i, k]: i > k
    factors = torch.where(below, a.unsqueeze(1).expand(w, w), torch.ones((), dtype=a.dtype, device=a.device))
    return torch.cumprod(factors, dim=0) * (rows.unsqueeze(1) >= rows.unsqueeze(0)).to(a.dtype)


def apply_transfer(matrix: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """matrix [w,w] @ g [w,*rest] along dim 0 (in g's dtype)."""
    w = g.shape[0]
    return (matrix.to(g.dtype) @ g.reshape(w, -1)).reshape(g.shape)


@dataclass
class SolveLog:
    """Statistics accumulated during a solve."""

    num_steps: int
    rounds: int = 0
    nfe: int = 0
    residual_history: list[float] = field(default_factory=list)
    step_errors: torch.Tensor | None = None
    step_rms: torch.Tensor | None = None

    def __post_init__(self):
        self.step_errors = torch.full((self.num_steps,), math.inf, dtype=torch.float64)
        self.step_rms = torch.full((self.num_steps,), math.inf, dtype=torch.float64)

    def record(self, begin: int, errors: StepErrors) -> None:
        w = errors.ratio.shape[0]
        self.rounds += 1
        self.nfe += w
        self.step_errors[begin:begin + w] = errors.ratio.cpu()
        self.step_rms[begin:begin + w] = errors.rms.cpu()
        self.residual_history.append(float(errors.rms.max()))


def make_stats(log: SolveLog, converged: bool, deadline_hit: bool, wall: float, warm: bool) -> SolveStats:
    return SolveStats(rounds=log.rounds, nfe=log.nfe, converged=converged,
                      step_errors=log.step_errors, residual_history=list(log.residual_history),
                      deadline_hit=deadline_hit, wall_time_s=wall, init="warm" if warm else "cold")


def make_result(state: "TrajectoryState", stats: SolveStats) -> SampleResult:
    s = state.num_steps
    return SampleResult(sample=state.traj[s].clone(), trajectory=state.traj, noise=state.noise,
                        x0_preds=state.x0, stats=stats)


def next_window(state: TrajectoryState, begin: int, old_w: int, slide: int, window: int) -> int:
    """Slide the window; refresh slots that newly enter it (cold start). Returns new begin."""
    s = state.num_steps
    new_begin = begin + slide
    old_end = begin + old_w            # last state written this round
    new_end = min(new_begin + window, s)
    if state.fill_new_slots and new_end > old_end:
        state.traj[old_end + 1:new_end + 1] = state.traj[old_end]
    return new_begin


def finish_unconverged(state: TrajectoryState, furthest: int) -> None:
    """Best estimate when a solve stops before its window reached the last step.

    States beyond ``furthest`` (the last state ever computed) were never touched
    by this solve. The final state becomes the model's latest clean-sample
    prediction (x0 of step furthest-1) instead of the initial noise (cold) or
    the previous cycle's chunk (warm; ``keep_previous`` publishes that one).
    Cold: untouched intermediate states take the last known one (ParaDiGMS's
    fill rule); warm: they keep their guesses.
    """
    s = state.num_steps
    if furthest >= s or furthest == 0:
        return
    if state.fill_new_slots:
        state.traj[furthest + 1:] = state.traj[furthest]
    state.traj[s] = state.project(state.x0[furthest - 1:furthest], s)[0]


def solve_picard(
    denoise: Denoiser,
    rule,
    x_init: torch.Tensor,
    noise: torch.Tensor,
    *,
    window: int = DEFAULT_WINDOW,
    tolerance: float = DEFAULT_TOLERANCE,
    abs_tolerance: float | None = None,
    init_trajectory: torch.Tensor | None = None,
    max_rounds: int | None = None,
    deadline: float | None = None,
    clock: Clock = time.perf_counter,
    round_time_estimator: RoundTimeEstimator | None = None,
    exact_linear: bool = False,
    inpaint: Inpainting | None = None,
) -> SampleResult:
    """Solve all S steps of ``rule`` by sliding-window Picard iteration.

    ``exact_linear=False`` (default): ParaDiGMS's cumulative drift form.
    True: apply each step's state-proportional part exactly inside the window
    (ParaTAA's formulation, see :func:`picard_states`). Same fixed point either
    way; the exact form needs far fewer rounds on long windows, where the
    cumulative form first amplifies errors (measured: DDPM-100, window 100,
    23 -> 12 rounds on the mixture test problem).

    x_init: [B,*event] (state 0), noise: [S,B,*event] (pre-drawn, as sequential).
    Stops when the window has slid past the last step (converged), after
    ``max_rounds`` rounds, or before a round that would overrun ``deadline``
    (read through ``clock``); then the current trajectory's final state is the
    sample (see :func:`finish_unconverged`) and ``stats.deadline_hit`` says why.
    ``inpaint``: known entries of the sample (inpaint.py); the solve then targets the
    inpainted sequential sample.
    """
    validate_solver_inputs(rule, x_init, noise, window, init_trajectory, max_rounds)
    validate_deadline(deadline)
    criterion = ConvergenceCriterion(rule.error_var.to(x_init.device), tolerance, abs_tolerance)
    start = clock()
    guard = DeadlineGuard(deadline, clock, round_time_estimator)
    state = TrajectoryState(rule, x_init, noise, init_trajectory, inpaint)
    s = state.num_steps
    log = SolveLog(s)
    begin = furthest = 0
    with torch.no_grad():
        while begin < s:
            w = min(window, s - begin)
            if max_rounds is not None and log.rounds >= max_rounds:
                break
            if not guard.allows(w):
                break
            t0 = guard.start_round()
            stepped = state.evaluate(denoise, begin, w)
            furthest = max(furthest, begin + w)
            new = picard_states(stepped, state.traj[begin:begin + w],
                                state.a[begin:begin + w] if exact_linear else None)
            # cumulative one-step residual (= the change in the cumulative form); in the
            # exact-linear form the change is discounted by a_j and underestimates the error
            errors = criterion.evaluate(cumulative_residual(stepped, state.traj[begin + 1:begin + w + 1]), begin)
            state.traj[begin + 1:begin + w + 1] = state.project(new, begin + 1)
            guard.end_round(w, t0)
            log.record(begin, errors)
            slide = max(1, leading_converged(errors.converged))
            begin = next_window(state, begin, w, slide, window)
    converged = begin >= s
    if not converged:
        finish_unconverged(state, furthest)
    stats = make_stats(log, converged, guard.hit and not converged, clock() - start, init_trajectory is not None)
    return make_result(state, stats)
