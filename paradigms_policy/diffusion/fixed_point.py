"""The one fixed-point loop behind every parallel sampler.

Sampling is the fixed point x_{j+1} = F_j(x_j), j = 0..S-1 (F_j: step j of a
:class:`StepRule` with its noise drawn up front). All S+1 states live in one
buffer. Each round evaluates a window of steps in ONE batched denoiser call,
asks an :class:`UpdateRule` (Picard, Anderson, Newton) for the window's next
iterate, and slides the window past its leading converged steps (criteria.py):
at least one, because the first output depends only on final states, so a
solve ends within S rounds and window 1 is the sequential sampler.

The loop owns everything the rules share: input checks, the deadline guard and
round-time estimates, the convergence test, inpainting (``TrajectoryState.project``
on every stored state and step output), statistics and the unconverged finish.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import Tensor

from .budget import Clock, DeadlineGuard, RoundTimeEstimator, validate_deadline
from .criteria import ConvergenceCriterion, StepErrors, check_tolerances, leading_converged
from .inpaint import Inpainting, bind_inpainting
from .types import Denoiser, SampleResult, SolveStats


# --------------------------------------------------------------------------- settings and rules
@dataclass(frozen=True)
class LoopSettings:
    """What every parallel solve needs: window width, tolerances (criteria.py), optional round cap.

    ``rounds_per_sync``: None runs this host loop; an integer K >= 1 runs the update rule's
    device-resident rounds (device_rounds.py: Picard and Anderson), the host reading the
    convergence flags after at most K rounds.
    """

    window: int = 16
    tolerance: float = 0.1
    abs_tolerance: float | None = None
    max_rounds: int | None = None
    max_abs_tolerance: float | None = None
    rounds_per_sync: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be an integer >= 1, got {self.window!r}")
        if self.max_rounds is not None and (not isinstance(self.max_rounds, int) or self.max_rounds < 0):
            raise ValueError(f"max_rounds must be None or an integer >= 0, got {self.max_rounds!r}")
        check_tolerances(self.tolerance, self.abs_tolerance, self.max_abs_tolerance)
        k = self.rounds_per_sync
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"rounds_per_sync must be None (host loop) or an integer >= 1, got {k!r}")

    def start(self, state: "TrajectoryState") -> "RoundUpdate":
        """Per-solve update object (keeps whatever the rule remembers between rounds)."""
        raise NotImplementedError

    def rows_per_round(self, window: int, event_numel: int) -> int:
        """Denoiser rows one round of ``window`` steps evaluates (the width of its batched call)."""
        return window


class RoundUpdate(Protocol):
    """One solve's update rule, called once per round in this order."""

    def probes(self, begin: int, w: int) -> "Probes | None":
        """Extra rows for this round's batched call, or None."""
        ...

    def change(self, begin: int, w: int, ev: "Evaluation") -> Tensor:
        """[w,B,*event]: what the convergence criterion judges for states begin+1..begin+w."""
        ...

    def new_states(self, begin: int, w: int, ev: "Evaluation", settled: int) -> Tensor:
        """[w,B,*event]: next iterate of states begin+1..begin+w; ``settled`` leading steps converged."""
        ...


@dataclass
class Probes:
    """Extra states evaluated in the same batched call as the window (e.g. finite differences)."""

    states: Tensor  # [P, B, *event]
    steps: Tensor  # Long[P]: step index of each probe row (inside the window, > begin)


@dataclass
class Evaluation:
    """One round's model evaluations: the window's steps and any probes."""

    stepped: Tensor  # [w, B, *event] F_j(x_j) (projected)
    x0: Tensor  # [w, B, *event] x0 predictions of the window's steps
    probe_stepped: Tensor | None = None  # [P, B, *event]
    probe_x0: Tensor | None = None  # [P, B, *event]


# --------------------------------------------------------------------------- input checks
def validate_solver_inputs(rule, x_init: Tensor, noise: Tensor, window: int,
                           init_trajectory: Tensor | None, max_rounds: int | None) -> None:
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


# --------------------------------------------------------------------------- the buffers
def state_coefficients(rule, dtype: torch.dtype, device) -> Tensor:
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


class TrajectoryState:
    """The solver's buffers: trajectory [S+1,B,*event], x0 predictions [S,B,*event].

    With ``inpaint``, every stored state and every step output holds the known entries
    (``project``), so the solved map is M(F_j) and its fixed point the inpainted sample.
    Multistep DPM-Solver++ (2M) steps need the previous step's x0 prediction: the window's
    first step takes the stored one of step begin-1, so the fixed point is the sequential 2M
    sample (ParaDiGMS uses a first-order step there, which is not).
    """

    def __init__(self, rule, x_init: Tensor, noise: Tensor, init_trajectory: Tensor | None,
                 inpaint: Inpainting | None = None):
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

    def project(self, states: Tensor, first: int) -> Tensor:
        """States first..first+n-1 ([n, B, *event]) with the known entries set (identity without inpainting)."""
        return states if self.inpaint is None else self.inpaint.apply(states, first)

    def project_rows(self, rows: Tensor, states: Tensor) -> Tensor:
        """Rows [n, B, *event] that are the states with indices ``states`` (Long[n]), known entries set."""
        return rows if self.inpaint is None else self.inpaint.apply_at(rows, states)

    def evaluate(self, denoise: Denoiser, begin: int, w: int, probes: Probes | None = None) -> Evaluation:
        """F_j(x_j) for j in [begin, begin+w) (and the probe rows) in ONE batched denoiser call."""
        x = self.traj[begin:begin + w]
        steps = torch.arange(begin, begin + w, device=x.device)
        rows, idx = x, steps
        if probes is not None:
            rows = torch.cat([x, probes.states.to(x)], dim=0)
            idx = torch.cat([steps, probes.steps.to(x.device)])
        out = denoise(rows, self.timesteps[idx])
        if tuple(out.shape) != tuple(rows.shape):
            raise ValueError(f"denoiser returned shape {tuple(out.shape)}, expected {tuple(rows.shape)}")
        out = out.to(x.dtype)
        prev = None
        if self.needs_prev_x0:
            x0_raw = self.rule.predict_x0(x, out[:w], steps)
            first = self.x0[begin - 1:begin] if begin > 0 else torch.zeros_like(x0_raw[:1])
            prev = torch.cat([first, x0_raw[:-1]], dim=0)
            if probes is not None:  # a probe of step j uses the unperturbed x0 of step j-1
                prev = torch.cat([prev, prev[probes.steps.to(x.device) - begin]], dim=0)
        noise = self.noise[idx]
        x_next, x0 = self.rule.full_step_with_x0(rows, out, idx, noise, prev)
        x_next = self.project_rows(x_next, idx + 1)  # step j's output is state j+1
        self.x0[begin:begin + w] = x0[:w]
        if probes is None:
            return Evaluation(stepped=x_next, x0=x0)
        return Evaluation(stepped=x_next[:w], x0=x0[:w], probe_stepped=x_next[w:], probe_x0=x0[w:])


# --------------------------------------------------------------------------- statistics
@dataclass
class SolveLog:
    """Statistics accumulated during a solve."""

    num_steps: int
    rounds: int = 0
    nfe: int = 0
    rows: int = 0
    residual_history: list[float] = field(default_factory=list)
    step_errors: Tensor | None = None
    step_rms: Tensor | None = None

    def __post_init__(self):
        self.step_errors = torch.full((self.num_steps,), math.inf, dtype=torch.float64)
        self.step_rms = torch.full((self.num_steps,), math.inf, dtype=torch.float64)

    def record(self, begin: int, errors: StepErrors, rows: int | None = None) -> None:
        w = errors.ratio.shape[0]
        self.rounds += 1
        self.nfe += w
        self.rows += w if rows is None else rows
        self.step_errors[begin:begin + w] = errors.ratio.cpu()
        self.step_rms[begin:begin + w] = errors.rms.cpu()
        self.residual_history.append(float(errors.rms.max()))


def make_stats(log: SolveLog, converged: bool, deadline_hit: bool, wall: float, warm: bool) -> SolveStats:
    return SolveStats(rounds=log.rounds, nfe=log.nfe, converged=converged,
                      step_errors=log.step_errors, residual_history=list(log.residual_history),
                      deadline_hit=deadline_hit, wall_time_s=wall, init="warm" if warm else "cold",
                      rows=log.rows)


def make_result(state: TrajectoryState, stats: SolveStats) -> SampleResult:
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

    States beyond ``furthest`` (the last state ever computed) were never touched.
    The final state becomes the model's latest clean-sample prediction (x0 of step
    furthest-1) instead of the initial noise (cold) or the previous chunk (warm).
    Cold: untouched intermediate states take the last known one (ParaDiGMS's fill
    rule); warm: they keep their guesses.
    """
    s = state.num_steps
    if furthest >= s or furthest == 0:
        return
    if state.fill_new_slots:
        state.traj[furthest + 1:] = state.traj[furthest]
    state.traj[s] = state.project(state.x0[furthest - 1:furthest], s)[0]


# --------------------------------------------------------------------------- the loop
Observer = Callable[[int, TrajectoryState], None]  # (round number from 1, state) after each round


def solve_fixed_point(
    denoise: Denoiser,
    rule,
    x_init: Tensor,
    noise: Tensor,
    method: LoopSettings,
    *,
    init_trajectory: Tensor | None = None,
    deadline: float | None = None,
    clock: Clock = time.perf_counter,
    round_time_estimator: RoundTimeEstimator | None = None,
    inpaint: Inpainting | None = None,
    observer: Observer | None = None,
) -> SampleResult:
    """Solve all S steps of ``rule`` with the update rule and settings ``method``.

    x_init: [B,*event] (state 0), noise: [S,B,*event] (pre-drawn, as sequential).
    Stops when the window has slid past the last step (converged), after
    ``method.max_rounds`` rounds, or before a round that would overrun ``deadline``
    (read through ``clock``); then the final state is the best estimate
    (:func:`finish_unconverged`) and ``stats.deadline_hit`` says why. ``inpaint``:
    known entries of the sample; the solve then targets the inpainted sequential
    sample. ``observer`` sees the state after every round (studies; no effect).
    """
    validate_solver_inputs(rule, x_init, noise, method.window, init_trajectory, method.max_rounds)
    validate_deadline(deadline)
    criterion = ConvergenceCriterion(rule.error_var.to(x_init.device), method.tolerance, method.abs_tolerance,
                                     method.max_abs_tolerance)
    start = clock()
    guard = DeadlineGuard(deadline, clock, round_time_estimator)
    state = TrajectoryState(rule, x_init, noise, init_trajectory, inpaint)
    update = method.start(state)
    s = state.num_steps
    log = SolveLog(s)
    begin = furthest = 0
    window = method.window
    with torch.no_grad():
        while begin < s:
            w = min(window, s - begin)
            if method.max_rounds is not None and log.rounds >= method.max_rounds:
                break
            if not guard.allows(w):
                break
            t0 = guard.start_round()
            probes = update.probes(begin, w)
            ev = state.evaluate(denoise, begin, w, probes)
            furthest = max(furthest, begin + w)
            errors = criterion.evaluate(update.change(begin, w, ev), begin)
            settled = leading_converged(errors.converged)
            new = update.new_states(begin, w, ev, settled)
            state.traj[begin + 1:begin + w + 1] = state.project(new.to(state.traj.dtype), begin + 1)
            guard.end_round(w, t0)
            log.record(begin, errors, w + (0 if probes is None else int(probes.steps.shape[0])))
            if observer is not None:
                observer(log.rounds, state)
            slide = max(1, settled)
            begin = next_window(state, begin, w, slide, window)
    converged = begin >= s
    if not converged:
        finish_unconverged(state, furthest)
    stats = make_stats(log, converged, guard.hit and not converged, clock() - start, init_trajectory is not None)
    return make_result(state, stats)
