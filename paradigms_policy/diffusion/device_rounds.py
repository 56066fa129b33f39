"""Solver rounds kept on the device (Picard, Anderson): fixed shapes, no host sync inside a round.

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

With the host reading after every round this is the host loop's solve: the masked rows add
exact zeros, so the rounds, states and statistics are the same (to float rounding: a padded
window is a differently shaped batch). The update rules are small subclasses: Picard's
linear form, and Anderson's, whose history (iterates of every state, the range each round
stored, which states took an accelerated step) lives in device buffers too, with a fixed
number of history columns masked by depth instead of a depth read on the host.
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
from .anderson import Anderson, anderson_update
from .fixed_point import LoopSettings
from .linear_forms import apply_transfer, discounted_sum_matrix, transfer_matrix, windowed_sum
from .picard import Picard
from .types import Denoiser, SampleResult

RoundRunner = Callable[[int], None]  # run n rounds (eagerly, or by replaying captured graphs)


class DeviceRounds:
    """Static buffers and the fixed-shape round of one solver, for samples shaped like ``like``.

    ``load`` writes a problem into the buffers (no allocation), ``round`` advances it by one
    round, ``solve`` runs the host side: deadline checks and one flag read per block of rounds.
    Subclasses give the update rule: ``_change`` (what the criterion judges) and ``_new_states``.
    """

    def __init__(self, rule, settings: LoopSettings, denoise: Denoiser, like: Tensor):
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
        """Advance the loaded problem by one round (a no-op once it is finished)."""
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
        errors = self.criterion.evaluate_rows(self._change(stepped, nxt, act), steps)
        converged = errors.converged | ~active              # finished rows count as converged
        settled = torch.cumprod(converged.long(), dim=0).sum() - (begin - first_row)
        window = Window(steps, active, act, first, begin, running, settled)
        new = self._new_states(stepped, x, nxt, window)
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

    def _change(self, stepped: Tensor, nxt: Tensor, act: Tensor) -> Tensor:
        """What the criterion judges for the window's output states (zero on converged rows)."""
        raise NotImplementedError

    def _new_states(self, stepped: Tensor, x: Tensor, nxt: Tensor, window: "Window") -> Tensor:
        """Next iterate of the window's output states (rows of converged steps are discarded)."""
        raise NotImplementedError

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


class Window:
    """One round's window on the device: step indices and masks, all tensors (nothing read on the host)."""

    def __init__(self, steps: Tensor, active: Tensor, act: Tensor, first: Tensor, begin: Tensor, running: Tensor,
                 settled: Tensor):
        self.steps = steps          # Long[W]: the window's steps
        self.active = active        # Bool[W]: steps not yet converged (all False once finished)
        self.act = act              # active, shaped to broadcast over [W, B, *event]
        self.first = first          # the first unconverged step, shaped like act
        self.begin = begin          # Long[]: that step's index
        self.running = running      # Bool[]: the solve is not finished
        self.settled = settled      # Long[]: leading unconverged steps that converged this round


class PicardDeviceRounds(DeviceRounds):
    """Picard's update (linear_forms.picard_states) over the unconverged rows only."""

    def _change(self, stepped: Tensor, nxt: Tensor, act: Tensor) -> Tensor:
        return torch.cumsum(torch.where(act, stepped - nxt, torch.zeros_like(stepped)), dim=0)

    def _new_states(self, stepped: Tensor, x: Tensor, nxt: Tensor, window: Window) -> Tensor:
        zero = torch.zeros_like(stepped)
        act, first = window.act, window.first
        if self.settings.exact_linear:
            a = self.a.index_select(0, window.steps)
            g = torch.where(first, stepped, torch.where(act, stepped - a.view(-1, *self._ones) * x, zero))
            return torch.where(first, stepped, apply_transfer(transfer_matrix(a), g))
        base = torch.where(first, stepped, zero).sum(dim=0, keepdim=True)  # the first unconverged output, exactly
        return base + torch.cumsum(torch.where(act & ~first, stepped - x, zero), dim=0)


class AndersonDeviceRounds(DeviceRounds):
    """Triangular Anderson (anderson.py) with its history in device buffers.

    The host version reads the deepest history column in use before building the least
    squares; here all m columns are always built and the unusable ones masked by depth
    (``anderson_update`` gives them zero weight), and the rows of converged steps are zeroed
    so they add nothing to the triangular sums.
    """

    def __init__(self, rule, settings: Anderson, denoise: Denoiser, like: Tensor):
        super().__init__(rule, settings, denoise, like)
        s, b = self.num_steps, self.shape[0]
        dim = math.prod(self.shape[1:])
        device = self.traj.device
        self.m = int(settings.history)
        self.slots = self.m + 1
        self.hist_x = torch.zeros(self.slots * (s + 1), b, dim, dtype=torch.float64, device=device)
        self.hist_r = torch.zeros_like(self.hist_x)
        self.hist_ranges = torch.zeros(self.slots, 2, dtype=torch.long, device=device)
        self.hist_round = torch.zeros((), dtype=torch.long, device=device)
        self.accelerated = torch.zeros(s + 1, b, dtype=torch.bool, device=device)
        self.lags = torch.arange(self.m + 1, device=device)
        self._r: Tensor | None = None

    def load(self, *args, **kwargs) -> None:
        super().load(*args, **kwargs)
        self.hist_x.zero_()
        self.hist_r.zero_()
        self.hist_ranges[:, 0] = 1  # empty ranges (first > last)
        self.hist_ranges[:, 1] = 0
        self.hist_round.zero_()
        self.accelerated.zero_()

    def _change(self, stepped: Tensor, nxt: Tensor, act: Tensor) -> Tensor:
        w, b = stepped.shape[:2]
        r = stepped.reshape(w, b, -1).double() - nxt.reshape(w, b, -1).double()  # one-step residuals
        self._r = torch.where(act.reshape(w, 1, 1), r, torch.zeros_like(r))
        return torch.cumsum(self._r, dim=0).reshape(stepped.shape)

    def _new_states(self, stepped: Tensor, x: Tensor, nxt: Tensor, window: Window) -> Tensor:
        cfg = self.settings
        w, b = stepped.shape[:2]
        r = self._r
        x64 = nxt.reshape(w, b, -1).double()
        stepped64 = stepped.reshape(w, b, -1).double()
        active = window.active
        rows = active.view(w, 1, 1)
        k = cfg.window if cfg.order_k is None else cfg.order_k
        sum_matrix = None
        if cfg.exact_linear:
            sum_matrix = discounted_sum_matrix(self.a.index_select(0, window.steps).double(), k)
            big_r = apply_transfer(sum_matrix, r)
        else:
            big_r = windowed_sum(r, k)
        new = x64 + big_r
        width_now = active.sum()
        first = window.first.view(w, 1, 1) & (width_now <= k)  # exactly the Picard form: first state exact
        new = torch.where(first, stepped64, new)
        if self.m > 0:
            states = window.steps + 1
            depth = self._push_and_depth(states, x64, r, window)
            current = self.hist_round - 1
            slots = torch.remainder(current - self.lags, self.slots)              # [m+1], newest first
            xs = self._gather_history(self.hist_x, slots, states)                  # [m+1, W, B, D]
            rs = self._gather_history(self.hist_r, slots, states)
            dx = torch.where(rows, xs[:-1] - xs[1:], torch.zeros_like(xs[1:]))
            dr = torch.where(rows, rs[:-1] - rs[1:], torch.zeros_like(rs[1:]))
            if sum_matrix is None:
                d_big_r = torch.stack([windowed_sum(dr[i], k) for i in range(self.m)])
            else:
                d_big_r = apply_transfer(sum_matrix, dr.transpose(0, 1)).transpose(0, 1)
            x_acc, gain = anderson_update(x64, big_r, dx, d_big_r, depth, cfg.lam)
            prev_big_r = big_r - d_big_r[0]
            grew = torch.cumsum(big_r.pow(2).sum(-1), 0) > torch.cumsum(prev_big_r.pow(2).sum(-1), 0)
            has_history = (depth > 0).unsqueeze(1)
            was_acc = self.accelerated.index_select(0, states)
            use = gain & has_history & ~(was_acc & grew & has_history)
            # the first unconverged state and the states the window slides past take the plain update
            use = use & (window.steps >= window.begin + window.settled.clamp(min=1)).unsqueeze(1)
            new = torch.where(use.unsqueeze(-1), x_acc, new)
            self.accelerated.index_copy_(0, states, torch.where(active.unsqueeze(1), use, was_acc))
        return new.reshape(stepped.shape).to(stepped.dtype)

    def _push_and_depth(self, states: Tensor, x64: Tensor, r: Tensor, window: Window) -> Tensor:
        """Store this round's iterates of the unconverged states; Long[W] history depth per state."""
        s1 = self.num_steps + 1
        slot = torch.remainder(self.hist_round, self.slots)
        flat = slot * s1 + states
        rows = window.active.view(-1, 1, 1)
        self.hist_x.index_copy_(0, flat, torch.where(rows, x64, self.hist_x.index_select(0, flat)))
        self.hist_r.index_copy_(0, flat, torch.where(rows, r, self.hist_r.index_select(0, flat)))
        stored = torch.stack([window.begin + 1, window.begin + window.active.sum()])
        old = self.hist_ranges.index_select(0, slot.reshape(1))[0]
        self.hist_ranges.index_copy_(0, slot.reshape(1), torch.where(window.running, stored, old).reshape(1, 2))
        self.hist_round.add_(window.running.long())
        current = self.hist_round - 1
        depth = torch.zeros_like(states)
        alive = torch.ones_like(window.active)
        for lag in range(1, self.m + 1):
            rng = self.hist_ranges.index_select(0, torch.remainder(current - lag, self.slots).reshape(1))[0]
            alive = alive & (states >= rng[0]) & (states <= rng[1]) & (current - lag >= 0)
            depth = depth + alive.long()
        # triangular consistency over the unconverged states only (converged rows do not constrain)
        depth = torch.where(window.active, depth, torch.full_like(depth, self.m))
        depth = torch.cummin(depth, dim=0).values
        return torch.where(window.active, depth, torch.zeros_like(depth))

    def _gather_history(self, buffer: Tensor, slots: Tensor, states: Tensor) -> Tensor:
        s1 = self.num_steps + 1
        flat = (slots.unsqueeze(1) * s1 + states.unsqueeze(0)).reshape(-1)      # [(m+1) * W]
        return buffer.index_select(0, flat).reshape(slots.shape[0], states.shape[0], *buffer.shape[1:])


def make_device_rounds(rule, settings: LoopSettings, denoise: Denoiser, like: Tensor) -> DeviceRounds:
    """The device-resident rounds of ``settings``' update rule (Picard or Anderson)."""
    if isinstance(settings, Anderson):
        return AndersonDeviceRounds(rule, settings, denoise, like)
    if isinstance(settings, Picard):
        return PicardDeviceRounds(rule, settings, denoise, like)
    raise ValueError(f"{type(settings).__name__} has no device-resident rounds (Picard and Anderson have)")


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
