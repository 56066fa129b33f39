"""Triangular Anderson acceleration of the Picard fixed point (after ParaTAA).

Unknowns are the states x_t, t = 1..S (x_0 = x_init is given). With the one-step
residual r_t = F_{t-1}(x_{t-1}) - x_t, the order-k residual of a window that
starts at ``begin`` is

    R_t = sum_{s = max(begin+1, t-k+1)..t} r_s

(k >= window: the cumulative ParaDiGMS form, x + R is exactly the Picard
update). Storing the history as one-step residuals keeps it valid when the
window slides (R is rebuilt for the current ``begin``).

Each state t keeps its last m+1 iterates of (x_t, r_t). With differences dX,
dR (most recent first) the update is the Anderson type-II step

    x_t <- x_t + R_t - (dX_t + dR_t) gamma_t,
    gamma_t = argmin_g  sum_{s = begin+1..t} |R_s - dR_s g|^2 + lam' |g|^2

where the sum runs only over states s <= t, i.e. from t toward the noisy end:
x_t depends only on those states (the triangular structure). One gamma per
state and batch element (batch elements are independent problems); lam' is
``lam`` times the mean diagonal of the Gram matrix (scale-free ridge).

Mixing starts once a state has two stored iterates. The first state of the
window (the noisiest unconverged one) and the leading states the window slides
past always take the plain update, so the solve ends within S rounds and is the
sequential sample at tolerance 0. Safeguard (per state and batch element): the
plain Picard update is used where the accelerated one is not predicted to
reduce the triangular residual, or where the triangular residual (sum over
s <= t) grew after the previous round's accelerated update.

Convergence is judged on the undiscounted cumulative residual sum_{s<=t} r_s
(picard.cumulative_residual), the more conservative measure, not on the
discounted R_t. Even so the exact-linear form needs a tight tolerance on the
trained Lift checkpoint (samplers.py: 0.01 / abs 1e-3).
"""

from __future__ import annotations

import time

import torch

from .budget import Clock, DeadlineGuard, RoundTimeEstimator, validate_deadline
from .criteria import ConvergenceCriterion, leading_converged
from .inpaint import Inpainting
from .picard import (DEFAULT_TOLERANCE, DEFAULT_WINDOW, Denoiser, SolveLog, TrajectoryState, apply_transfer,
                     finish_unconverged, transfer_matrix, make_result, make_stats, next_window, validate_solver_inputs)
from .types import SampleResult

DEFAULT_HISTORY = 2
DEFAULT_LAMBDA = 1e-3


def windowed_sum(r: torch.Tensor, order_k: int, a: torch.Tensor | None = None) -> torch.Tensor:
    """Order-k residual R_t from one-step residuals r along dim 0 (window positions).

    a is None: R_t = sum of the last ``order_k`` entries of r (cumulative form).
    a: [W] state coefficients of the window's steps (a[0] belongs to the step into
    the first position): R_t = a_{t} R_{t-1} + r_t truncated to the last order_k
    terms, i.e. sum_s (prod of a over the steps between s and t) r_s.
    """
    if a is None:
        c = torch.cumsum(r, dim=0)
        if order_k >= r.shape[0]:
            return c
        out = c.clone()
        out[order_k:] = c[order_k:] - c[:-order_k]
        return out
    return apply_transfer(discounted_sum_matrix(a, order_k), r)


def discounted_sum_matrix(a: torch.Tensor, order_k: int) -> torch.Tensor:
    """[W,W] matrix M with (M r)_t = sum_{s = max(0, t-k+1)..t} (prod a_{s+1..t}) r_s."""
    matrix = transfer_matrix(a)
    w = a.shape[0]
    if order_k < w:
        rows = torch.arange(w, device=a.device)
        matrix = matrix * ((rows.unsqueeze(1) - rows.unsqueeze(0)) < order_k).to(matrix.dtype)
    return matrix


class AndersonHistory:
    """Ring buffer of the last m+1 iterates (x, r) of every state, with validity."""

    def __init__(self, history: int, num_states: int, batch: int, dim: int, device):
        self.m = history
        self.slots = history + 1
        self.x = torch.zeros(self.slots, num_states, batch, dim, dtype=torch.float64, device=device)
        self.r = torch.zeros_like(self.x)
        self.ranges: list[tuple[int, int] | None] = [None] * self.slots  # (first, last) state stored
        self.round = 0

    def push(self, first: int, x: torch.Tensor, r: torch.Tensor) -> None:
        """Store iterates of states first..first+W-1 ([W,B,D])."""
        slot = self.round % self.slots
        w = x.shape[0]
        self.x[slot, first:first + w] = x
        self.r[slot, first:first + w] = r
        self.ranges[slot] = (first, first + w - 1)
        self.round += 1

    def depth(self, first: int, w: int) -> torch.Tensor:
        """Long[W]: how many previous consecutive rounds (<= m) stored each state."""
        states = torch.arange(first, first + w)
        depth = torch.zeros(w, dtype=torch.long)
        alive = torch.ones(w, dtype=torch.bool)
        current = self.round - 1
        for lag in range(1, self.m + 1):
            if current - lag < 0:
                break
            rng = self.ranges[(current - lag) % self.slots]
            ok = torch.zeros(w, dtype=torch.bool) if rng is None else (states >= rng[0]) & (states <= rng[1])
            alive &= ok
            depth += alive.long()
        # triangular consistency: state t may use a column only if every s <= t has it
        return torch.cummin(depth, dim=0).values

    def differences(self, first: int, w: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """dX, dr: [n, W, B, D], column l = iterate(round-l) - iterate(round-l-1)."""
        current = self.round - 1
        idx = [(current - lag) % self.slots for lag in range(n + 1)]
        xs = self.x[idx, first:first + w]
        rs = self.r[idx, first:first + w]
        return xs[:-1] - xs[1:], rs[:-1] - rs[1:]


def anderson_update(x: torch.Tensor, big_r: torch.Tensor, dx: torch.Tensor, d_big_r: torch.Tensor,
                    depth: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Triangular Anderson step.

    x, big_r: [W,B,D]; dx, d_big_r: [n,W,B,D]; depth: Long[W] (valid columns per state).
    Returns (x_acc [W,B,D], predicted_gain Bool[W,B]: accelerated step predicted to
    reduce the triangular residual).
    """
    n = dx.shape[0]
    col = torch.arange(n, device=x.device)
    mask = (col.unsqueeze(0) < depth.to(x.device).unsqueeze(1)).to(x.dtype)  # [W, n]
    gram = torch.cumsum(torch.einsum("iwbd,jwbd->wbij", d_big_r, d_big_r), dim=0)   # [W,B,n,n]
    rhs = torch.cumsum(torch.einsum("iwbd,wbd->wbi", d_big_r, big_r), dim=0)        # [W,B,n]
    rr = torch.cumsum((big_r * big_r).sum(-1), dim=0)                                # [W,B]
    mm = (mask.unsqueeze(-1) * mask.unsqueeze(-2)).unsqueeze(1)                     # [W,1,n,n]
    gram_m = gram * mm
    diag_mean = gram_m.diagonal(dim1=-2, dim2=-1).sum(-1) / mask.sum(-1).clamp_min(1).unsqueeze(1)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    reg = (lam * diag_mean + 1e-300).unsqueeze(-1).unsqueeze(-1) * eye
    system = gram_m + reg + (1.0 - mask).unsqueeze(1).unsqueeze(-1) * eye  # identity on unused columns
    rhs_m = rhs * mask.unsqueeze(1)
    gamma = torch.linalg.solve(system, rhs_m.unsqueeze(-1)).squeeze(-1)     # [W,B,n]
    gamma = gamma * mask.unsqueeze(1)
    predicted = rr - 2 * (gamma * rhs_m).sum(-1) + torch.einsum("wbi,wbij,wbj->wb", gamma, gram_m, gamma)
    x_acc = x + big_r - torch.einsum("iwbd,wbi->wbd", dx + d_big_r, gamma)
    gain = (predicted < rr) & torch.isfinite(x_acc).all(-1)
    return x_acc, gain


def solve_anderson(
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
    history: int = DEFAULT_HISTORY,
    order_k: int | None = None,
    lam: float = DEFAULT_LAMBDA,
    exact_linear: bool = True,
    inpaint: Inpainting | None = None,
) -> SampleResult:
    """Solve all S steps with sliding-window triangular Anderson acceleration.

    Same inputs, stopping rule, statistics and deadline handling as
    :func:`solve_picard`; ``history`` is the number m of stored differences,
    ``order_k`` the residual order (None = window, the cumulative form), ``lam``
    the relative ridge parameter, ``exact_linear`` as in :func:`solve_picard`.
    ``history=0`` is plain Picard. ``inpaint`` as in :func:`solve_picard` (known entries
    have zero residual, so their differences are zero and mixing leaves them unchanged).
    """
    validate_solver_inputs(rule, x_init, noise, window, init_trajectory, max_rounds)
    validate_deadline(deadline)
    if isinstance(history, bool) or not isinstance(history, int) or history < 0:
        raise ValueError(f"history must be an integer >= 0, got {history!r}")
    if order_k is not None and (not isinstance(order_k, int) or order_k < 1):
        raise ValueError(f"order_k must be None or an integer >= 1, got {order_k!r}")
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    k = window if order_k is None else order_k
    criterion = ConvergenceCriterion(rule.error_var.to(x_init.device), tolerance, abs_tolerance)
    start = clock()
    guard = DeadlineGuard(deadline, clock, round_time_estimator)
    state = TrajectoryState(rule, x_init, noise, init_trajectory, inpaint)
    s = state.num_steps
    b = x_init.shape[0]
    log = SolveLog(s)
    hist = AndersonHistory(history, s + 1, b, x_init[0].numel(), x_init.device) if history > 0 else None
    accelerated = torch.zeros(s + 1, b, dtype=torch.bool, device=x_init.device)
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
            x_cur = state.traj[begin + 1:begin + w + 1]
            shape = x_cur.shape
            x64 = x_cur.reshape(w, b, -1).double()
            r = stepped.reshape(w, b, -1).double() - x64           # one-step residuals r_{begin+1..}
            a_w = state.a[begin:begin + w].double() if exact_linear else None
            sum_matrix = discounted_sum_matrix(a_w, k) if a_w is not None else None
            big_r = windowed_sum(r, k) if a_w is None else apply_transfer(sum_matrix, r)
            # undiscounted cumulative residual (see picard.cumulative_residual)
            errors = criterion.evaluate(torch.cumsum(r, dim=0).reshape(shape), begin)
            new = x64 + big_r
            if k >= w:  # exactly the Picard form (first state bit-identical to a sequential step)
                new[0] = stepped[0].reshape(b, -1).double()
            lead = leading_converged(errors.converged)
            if hist is not None:
                hist.push(begin + 1, x64, r)
                depth = hist.depth(begin + 1, w)
                n = int(depth.max())
                if n > 0:
                    dx, dr = hist.differences(begin + 1, w, n)
                    if sum_matrix is None:
                        d_big_r = torch.stack([windowed_sum(dr[i], k) for i in range(n)])
                    else:  # all n columns in one matmul: [W,W] @ [W, n*B*D]
                        d_big_r = apply_transfer(sum_matrix, dr.transpose(0, 1)).transpose(0, 1)
                    x_acc, gain = anderson_update(x64, big_r, dx, d_big_r, depth, lam)
                    # safeguard: residual grew after last round's accelerated update -> plain
                    prev_big_r = big_r - d_big_r[0]
                    # triangular residual |R|_{s<=t}^2 now vs. at the previous iterate
                    grew = torch.cumsum(big_r.pow(2).sum(-1), 0) > torch.cumsum(prev_big_r.pow(2).sum(-1), 0)
                    grew &= (depth > 0).unsqueeze(1).to(grew.device)
                    was_acc = accelerated[begin + 1:begin + w + 1]
                    use = gain & (depth > 0).unsqueeze(1).to(gain.device) & ~(was_acc & grew)
                    use[:max(1, lead)] = False  # first state / states slid past: plain update
                    new = torch.where(use.unsqueeze(-1), x_acc, new)
                    accelerated[begin + 1:begin + w + 1] = use
            state.traj[begin + 1:begin + w + 1] = state.project(new.reshape(shape).to(x_cur.dtype), begin + 1)
            guard.end_round(w, t0)
            log.record(begin, errors)
            slide = max(1, lead)
            begin = next_window(state, begin, w, slide, window)
    converged = begin >= s
    if not converged:
        finish_unconverged(state, furthest)
    stats = make_stats(log, converged, guard.hit and not converged, clock() - start, init_trajectory is not None)
    return make_result(state, stats)
