"""Picard rounds kept on the device: fixed shapes, no host sync inside a round.

The host loop (fixed_point.py) decides in Python after every round: it reads the convergence
flags, slides the window and refreshes slots, and on a GPU every such read waits for the device.
Here one round is a fixed sequence of tensor operations on static buffers:

- the window's position ``begin`` is a device tensor; the window always has
  W = min(window, S) rows, ending no later than step S-1, so near the end of the chain its
  leading rows are steps that already converged: they are evaluated (a padded row costs
  nothing extra on a GPU) and masked out of every update;
- convergence flags, the slide, the cold-start refresh and the statistics are computed
  with masks, never with Python branches on tensor values;
- once the window has slid past the last step (or ``max_rounds`` is reached) every further
  round changes nothing, so K rounds can run back to back and the host reads the flags once
  per K rounds. ``runtime/round_graph.py`` captures K rounds as one CUDA graph; on the CPU
  the same ``round()`` runs eagerly.

With the host reading after every round this is the host loop's Picard solve: the masked rows
add exact zeros, so the rounds, states and statistics are the same (the exact-linear form sums
its zero terms in a matmul, equal to float rounding).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import Tensor

from .budget import Clock, DeadlineGuard, RoundTimeEstimator, validate_deadline
from .criteria import ConvergenceCriterion
from .fixed_point import SolveLog, finish_unconverged, make_result, make_stats, state_coefficients, \
    validate_solver_inputs
from .inpaint import Inpainting
from .linear_forms import apply_transfer, transfer_matrix
from .picard import Picard
from .types import Denoiser, SampleResult

RoundRunner = Callable[[int], None]  # run n rounds (eagerly, or by replaying captured graphs)


class PicardDeviceRounds:
    """Static buffers and the fixed-shape round of one Picard solver, for samples shaped like ``like``.

    ``load`` writes a problem into the buffers (no allocation), ``round`` advances it by one
    round, ``solve`` runs the host side: deadline checks and one flag read per block of rounds.
    """

    def __init__(self, rule, settings: Picard, denoise: Denoiser, like: Tensor):
        if settings.rounds_per_sync is None:
            raise ValueError("device-resident rounds need settings.rounds_per_sync (an integer >= 1)")
        s = int(rule.num_steps)
        device, dtype = like.device, like.dtype
        self.rule = rule
        self.settings = settings
        self.denoise = denoise
        self.shape = tuple(like.shape)  # [B, *event]
        self.width = min(int(settings.window), s)
        self.num_steps = s
        self._ones = (1,) * len(self.shape)
        opts = dict(device=device, dtype=dtype)
        self.traj = torch.zeros(s + 1, *self.shape, **opts)
        self.x0 = torch.zeros(s, *self.shape, **opts)
        self.noise = torch.zeros(s, *self.shape, **opts)
        self.known = torch.zeros(self.shape, device=device, dtype=torch.bool)
        self.known_values = torch.zeros(s + 1, *self.shape, **opts)
        self.fill = torch.zeros((), device=device, dtype=torch.bool)  # cold start: refresh slots entering the window
        self.begin = torch.zeros((), device=device, dtype=torch.long)
        self.rounds = torch.zeros((), device=device, dtype=torch.long)
        self.nfe = torch.zeros((), device=device, dtype=torch.long)
        self.furthest = torch.zeros((), device=device, dtype=torch.long)
        self.round_cap = torch.zeros((), device=device, dtype=torch.long)
        self.step_ratio = torch.zeros(s, device=device, dtype=torch.float64)
        self.step_rms = torch.zeros(s, device=device, dtype=torch.float64)
        self.history = torch.zeros(s, device=device, dtype=torch.float64)  # max RMS change per round (<= S rounds)
        self.timesteps = rule.timesteps.to(device=device, dtype=torch.long)
        self.a = state_coefficients(rule, dtype, device)
        self.offsets = torch.arange(self.width, device=device)
        self.state_index = torch.arange(s + 1, device=device)
        self.needs_prev_x0 = int(getattr(rule, "order", 1)) >= 2
        self.criterion = ConvergenceCriterion(rule.error_var.to(device), settings.tolerance, settings.abs_tolerance,
                                              settings.max_abs_tolerance)
        self.fill_new_slots = True  # host copy of ``fill`` for finish_unconverged
        self._round_cap = s + 1

    # ------------------------------------------------------------------ problem in, result out
    def load(self, x_init: Tensor, noise: Tensor, init_trajectory: Tensor | None = None,
             inpaint: Inpainting | None = None, max_rounds: int | None = None) -> None:
        """Write one problem into the static buffers (shapes as ``solve`` checks them)."""
        s = self.num_steps
        if init_trajectory is None:
            self.traj.copy_(x_init.unsqueeze(0).expand_as(self.traj))
        else:
            self.traj.copy_(init_trajectory)
        self.traj[0] = x_init
        self.noise.copy_(noise)
        if inpaint is None:
            self.known.zero_()
        else:
            bound = inpaint.bind(self.rule, x_init)
            self.known.copy_(bound.mask)
            self.known_values.copy_(bound.values.expand_as(self.known_values))
        self.traj.copy_(torch.where(self.known, self.known_values, self.traj))
        self.fill_new_slots = init_trajectory is None
        self.fill.fill_(self.fill_new_slots)
        self.x0.zero_()
        for counter in (self.begin, self.rounds, self.nfe, self.furthest):
            counter.zero_()
        self._round_cap = s + 1 if max_rounds is None else int(max_rounds)  # a solve ends within S rounds
        self.round_cap.fill_(self._round_cap)
        self.step_ratio.fill_(math.inf)
        self.step_rms.fill_(math.inf)
        self.history.zero_()

    def project(self, states: Tensor, first: int) -> Tensor:
        """States first..first+n-1 with the known entries set (finish_unconverged uses it)."""
        return torch.where(self.known, self.known_values[first:first + states.shape[0]], states)

    def _project_at(self, rows: Tensor, states: Tensor) -> Tensor:
        return torch.where(self.known, self.known_values.index_select(0, states), rows)

    def read(self) -> tuple[int, int]:
        """(begin, rounds): the host's one read per block of rounds."""
        begin, rounds = torch.stack([self.begin, self.rounds]).tolist()
        return int(begin), int(rounds)

    def finished(self, begin: int, rounds: int) -> bool:
        return begin >= self.num_steps or rounds >= self._round_cap

    # ------------------------------------------------------------------ one round, on the device
    def round(self) -> None:
        """Advance the loaded problem by one Picard round (a no-op once it is finished)."""
        s, w = self.num_steps, self.width
        begin = self.begin
        running = (begin < s) & (self.rounds < self.round_cap)
        first_row = torch.clamp(begin, max=s - w)
        steps = first_row + self.offsets                    # Long[W]: the window's steps
        active = (steps >= begin) & running                 # Bool[W]: steps not yet converged
        act = active.view(w, *self._ones)
        first = (steps == begin).view(w, *self._ones)       # the first unconverged step (none once finished)
        x = self.traj.index_select(0, steps)
        out = self.denoise(x, self.timesteps.index_select(0, steps))
        prev = None
        if self.needs_prev_x0:  # 2M: step j uses the x0 of step j-1; the first one the stored x0 of step begin-1
            x0_raw = self.rule.predict_x0(x, out, steps)
            stored = self.x0.index_select(0, (begin - 1).clamp(min=0).reshape(1))
            stored = torch.where(begin > 0, stored, torch.zeros_like(stored))
            prev = torch.where(first, stored, torch.cat([stored, x0_raw[:-1]], dim=0))
        stepped, x0 = self.rule.full_step_with_x0(x, out, steps, self.noise.index_select(0, steps), prev)
        stepped = self._project_at(stepped, steps + 1)
        self.x0.index_copy_(0, steps, torch.where(act, x0, self.x0.index_select(0, steps)))
        nxt = self.traj.index_select(0, steps + 1)
        zero = torch.zeros_like(stepped)
        errors = self.criterion.evaluate_rows(torch.cumsum(torch.where(act, stepped - nxt, zero), dim=0), steps)
        converged = errors.converged | ~active              # finished rows count as converged
        settled = torch.cumprod(converged.long(), dim=0).sum() - (begin - first_row)
        new = self._new_states(stepped, x, steps, act, first)
        new = self._project_at(new.to(self.traj.dtype), steps + 1)
        self.traj.index_copy_(0, steps + 1, torch.where(act, new, nxt))
        self._record(steps, active, running, errors)
        width_now = active.sum()
        old_end = begin + width_now                         # last state written this round
        self.furthest.copy_(torch.where(running, torch.maximum(self.furthest, old_end), self.furthest))
        new_begin = torch.where(running, begin + settled.clamp(min=1), begin)
        new_end = torch.clamp(new_begin + w, max=s)
        refresh = (self.state_index > old_end) & (self.state_index <= new_end) & running & self.fill
        source = self.traj.index_select(0, old_end.clamp(max=s).reshape(1))
        self.traj.copy_(torch.where(refresh.view(s + 1, *self._ones), source, self.traj))
        self.begin.copy_(new_begin)

    def _new_states(self, stepped: Tensor, x: Tensor, steps: Tensor, act: Tensor, first: Tensor) -> Tensor:
        """linear_forms.picard_states over the unconverged rows only (the others contribute zeros)."""
        zero = torch.zeros_like(stepped)
        if self.settings.exact_linear:
            a = self.a.index_select(0, steps)
            g = torch.where(first, stepped, torch.where(act, stepped - a.view(-1, *self._ones) * x, zero))
            return torch.where(first, stepped, apply_transfer(transfer_matrix(a), g))
        base = torch.where(first, stepped, zero).sum(dim=0, keepdim=True)  # the first unconverged output, exactly
        return base + torch.cumsum(torch.where(act & ~first, stepped - x, zero), dim=0)

    def _record(self, steps: Tensor, active: Tensor, running: Tensor, errors) -> None:
        self.step_ratio.index_copy_(0, steps, torch.where(active, errors.ratio, self.step_ratio.index_select(0, steps)))
        self.step_rms.index_copy_(0, steps, torch.where(active, errors.rms, self.step_rms.index_select(0, steps)))
        slot = self.rounds.clamp(max=self.num_steps - 1).reshape(1)
        largest = torch.where(active, errors.rms, torch.zeros_like(errors.rms)).amax().reshape(1)
        self.history.index_copy_(0, slot, torch.where(running, largest, self.history.index_select(0, slot)))
        self.nfe.add_(active.sum())
        self.rounds.add_(running.long())

    # ------------------------------------------------------------------ the host side
    def solve(self, x_init: Tensor, noise: Tensor, *, init_trajectory: Tensor | None = None,
              deadline: float | None = None, clock: Clock = time.perf_counter,
              round_time_estimator: RoundTimeEstimator | None = None, inpaint: Inpainting | None = None,
              run_rounds: RoundRunner | None = None, rounds_hint: float | None = None) -> SampleResult:
        """Solve one chunk; the host reads the flags once per block of rounds (see ``block_size``).

        ``run_rounds(n)``: how n rounds run (default: ``round()`` n times; a RoundGraph replays
        captured graphs). ``rounds_hint``: rounds a solve is expected to take (e.g. the last
        solve's), so a block does not run far past convergence.
        """
        settings = self.settings
        validate_solver_inputs(self.rule, x_init, noise, settings.window, init_trajectory, settings.max_rounds)
        validate_deadline(deadline)
        if tuple(x_init.shape) != self.shape or x_init.device != self.traj.device or x_init.dtype != self.traj.dtype:
            raise ValueError(f"these device rounds serve samples of shape {self.shape} ({self.traj.dtype}, "
                             f"{self.traj.device}), got {tuple(x_init.shape)} ({x_init.dtype}, {x_init.device})")
        run = run_rounds if run_rounds is not None else self.run_eagerly
        start = clock()
        guard = DeadlineGuard(deadline, clock, round_time_estimator)
        with torch.no_grad():
            self.load(x_init, noise, init_trajectory, inpaint, settings.max_rounds)
            begin = rounds = 0
            while not self.finished(begin, rounds):
                if not guard.allows(self.width):
                    break
                k = block_size(settings.rounds_per_sync, guard.rounds_that_fit(self.width), rounds, rounds_hint)
                t0 = guard.start_round()
                run(k)
                begin, rounds_after = self.read()
                guard.end_round(self.width, t0, k)
                rounds = rounds_after
        return self._result(begin, rounds, guard, start, clock, init_trajectory is not None)

    def run_eagerly(self, n: int) -> None:
        for _ in range(n):
            self.round()

    def _result(self, begin: int, rounds: int, guard: DeadlineGuard, start: float, clock: Clock,
                warm: bool) -> SampleResult:
        s = self.num_steps
        converged = begin >= s
        if not converged:
            finish_unconverged(self, int(self.furthest))
        log = SolveLog(s)
        log.rounds = rounds
        log.nfe = log.rows = int(self.nfe)
        log.step_errors = self.step_ratio.cpu()
        log.step_rms = self.step_rms.cpu()
        log.residual_history = self.history[:rounds].tolist()
        stats = make_stats(log, converged, guard.hit and not converged, clock() - start, warm)
        result = make_result(self, stats)
        result.trajectory = self.traj.clone()  # the buffers are reused by the next solve
        result.x0_preds = self.x0.clone()
        result.noise = self.noise.clone()
        return result


def block_size(max_rounds_per_sync: int, rounds_that_fit: float, rounds_done: int,
               rounds_hint: float | None) -> int:
    """Rounds to run before the next flag read: a power of two, at most ``max_rounds_per_sync``.

    Never more than fit before the deadline (the host cannot stop inside a block), and never
    far past the expected end: with a hint (the last solve's rounds) a block reaches at most
    the expected remaining rounds, so a converged solve wastes few no-op rounds. At least 1
    (the caller checked that one round fits).
    """
    k = min(max_rounds_per_sync, rounds_that_fit)
    if rounds_hint is not None:
        k = min(k, max(1.0, rounds_hint - rounds_done))
    k = max(1, int(k))
    return 1 << (k.bit_length() - 1)
