"""Triangular Anderson acceleration of the Picard update (after ParaTAA).

With one-step residuals r_t = F_{t-1}(x_{t-1}) - x_t, the order-k residual R_t of a
window sums (discounted, in the exact-linear form) the last k of them; x + R is the
Picard update. Every state keeps its last m+1 iterates of (x, r) and takes the
type-II Anderson step x_t <- x_t + R_t - (dX_t + dR_t) gamma_t, with gamma_t a
ridge least-squares fit over states s <= t only (the triangular structure).

The window's first state and the states it slides past take the plain update, so
the solve still ends within S rounds and is the sequential sample at tolerance 0;
a safeguard falls back to the plain update where mixing is not predicted to help
or the triangular residual grew after an accelerated step. Convergence is judged
on the undiscounted cumulative residual. Defaults: measured on the shipped
checkpoint (benchmarks/README.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from .budget import Clock, RoundTimeEstimator
from .fixed_point import Evaluation, LoopSettings, TrajectoryState, solve_fixed_point
from .inpaint import Inpainting
from .linear_forms import apply_transfer, discounted_sum_matrix, windowed_sum
from .types import Denoiser, SampleResult


@dataclass(frozen=True)
class Anderson(LoopSettings):
    """history m, residual order_k (None: the window), relative ridge lam, exact-linear or cumulative form."""

    window: int = 100
    tolerance: float = 0.01
    abs_tolerance: float | None = 1e-3
    history: int = 2
    order_k: int | None = None
    lam: float = 1e-3
    exact_linear: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.history, bool) or not isinstance(self.history, int) or self.history < 0:
            raise ValueError(f"history must be an integer >= 0, got {self.history!r}")
        if self.order_k is not None and (isinstance(self.order_k, bool) or not isinstance(self.order_k, int)
                                         or self.order_k < 1):
            raise ValueError(f"order_k must be None or an integer >= 1, got {self.order_k!r}")
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam!r}")

    def start(self, state: TrajectoryState) -> "AndersonRound":
        return AndersonRound(state, self)


class AndersonHistory:
    """Ring buffer of the last m+1 iterates (x, r) of every state, with validity."""

    def __init__(self, history: int, num_states: int, batch: int, dim: int, device):
        self.m = history
        self.slots = history + 1
        self.x = torch.zeros(self.slots, num_states, batch, dim, dtype=torch.float64, device=device)
        self.r = torch.zeros_like(self.x)
        self.ranges: list[tuple[int, int] | None] = [None] * self.slots  # (first, last) state stored
        self.round = 0

    def push(self, first: int, x: Tensor, r: Tensor) -> None:
        """Store iterates of states first..first+W-1 ([W,B,D])."""
        slot = self.round % self.slots
        w = x.shape[0]
        self.x[slot, first:first + w] = x
        self.r[slot, first:first + w] = r
        self.ranges[slot] = (first, first + w - 1)
        self.round += 1

    def depth(self, first: int, w: int) -> Tensor:
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

    def differences(self, first: int, w: int, n: int) -> tuple[Tensor, Tensor]:
        """dX, dr: [n, W, B, D], column l = iterate(round-l) - iterate(round-l-1)."""
        current = self.round - 1
        idx = [(current - lag) % self.slots for lag in range(n + 1)]
        xs = self.x[idx, first:first + w]
        rs = self.r[idx, first:first + w]
        return xs[:-1] - xs[1:], rs[:-1] - rs[1:]


def anderson_update(x: Tensor, big_r: Tensor, dx: Tensor, d_big_r: Tensor,
                    depth: Tensor, lam: float) -> tuple[Tensor, Tensor]:
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
    # solve_ex: no error check, so no host sync on a GPU (the ridge keeps the system regular; a
    # non-finite result fails the gain test below)
    gamma = torch.linalg.solve_ex(system, rhs_m.unsqueeze(-1)).result.squeeze(-1)     # [W,B,n]
    gamma = gamma * mask.unsqueeze(1)
    predicted = rr - 2 * (gamma * rhs_m).sum(-1) + torch.einsum("wbi,wbij,wbj->wb", gamma, gram_m, gamma)
    x_acc = x + big_r - torch.einsum("iwbd,wbi->wbd", dx + d_big_r, gamma)
    gain = (predicted < rr) & torch.isfinite(x_acc).all(-1)
    return x_acc, gain


class AndersonRound:
    """Per-solve history; ``change`` computes the round's residuals, ``new_states`` mixes."""

    def __init__(self, state: TrajectoryState, settings: Anderson):
        self.state = state
        self.settings = settings
        s = state.num_steps
        b = state.traj.shape[1]
        dim = state.traj[0, 0].numel()
        device = state.traj.device
        self.hist = AndersonHistory(settings.history, s + 1, b, dim, device) if settings.history > 0 else None
        self.accelerated = torch.zeros(s + 1, b, dtype=torch.bool, device=device)
        self._round: tuple | None = None

    def probes(self, begin: int, w: int) -> None:
        return None

    def change(self, begin: int, w: int, ev: Evaluation) -> Tensor:
        x_cur = self.state.traj[begin + 1:begin + w + 1]
        b = x_cur.shape[1]
        x64 = x_cur.reshape(w, b, -1).double()
        r = ev.stepped.reshape(w, b, -1).double() - x64  # one-step residuals r_{begin+1..}
        self._round = (x64, r)
        return torch.cumsum(r, dim=0).reshape(x_cur.shape)  # undiscounted (fixed_point.cumulative measure)

    def new_states(self, begin: int, w: int, ev: Evaluation, settled: int) -> Tensor:
        cfg = self.settings
        x64, r = self._round
        shape = ev.stepped.shape
        b = shape[1]
        k = cfg.window if cfg.order_k is None else cfg.order_k
        a_w = self.state.a[begin:begin + w].double() if cfg.exact_linear else None
        sum_matrix = discounted_sum_matrix(a_w, k) if a_w is not None else None
        big_r = windowed_sum(r, k) if a_w is None else apply_transfer(sum_matrix, r)
        new = x64 + big_r
        if k >= w:  # exactly the Picard form (first state bit-identical to a sequential step)
            new[0] = ev.stepped[0].reshape(b, -1).double()
        if self.hist is not None:
            hist = self.hist
            hist.push(begin + 1, x64, r)
            depth = hist.depth(begin + 1, w)
            n = int(depth.max())
            if n > 0:
                dx, dr = hist.differences(begin + 1, w, n)
                if sum_matrix is None:
                    d_big_r = torch.stack([windowed_sum(dr[i], k) for i in range(n)])
                else:  # all n columns in one matmul: [W,W] @ [W, n*B*D]
                    d_big_r = apply_transfer(sum_matrix, dr.transpose(0, 1)).transpose(0, 1)
                x_acc, gain = anderson_update(x64, big_r, dx, d_big_r, depth, cfg.lam)
                # safeguard: triangular residual |R|_{s<=t}^2 grew after last round's accelerated update
                prev_big_r = big_r - d_big_r[0]
                grew = torch.cumsum(big_r.pow(2).sum(-1), 0) > torch.cumsum(prev_big_r.pow(2).sum(-1), 0)
                grew &= (depth > 0).unsqueeze(1).to(grew.device)
                was_acc = self.accelerated[begin + 1:begin + w + 1]
                use = gain & (depth > 0).unsqueeze(1).to(gain.device) & ~(was_acc & grew)
                use[:max(1, settled)] = False  # first state / states slid past: plain update
                new = torch.where(use.unsqueeze(-1), x_acc, new)
                self.accelerated[begin + 1:begin + w + 1] = use
        return new.reshape(shape).to(ev.stepped.dtype)


def solve_anderson(denoise: Denoiser, rule, x_init: Tensor, noise: Tensor, *,
                   window: int = Anderson.window, tolerance: float = Anderson.tolerance,
                   abs_tolerance: float | None = Anderson.abs_tolerance, max_rounds: int | None = None,
                   history: int = Anderson.history, order_k: int | None = Anderson.order_k,
                   lam: float = Anderson.lam, exact_linear: bool = Anderson.exact_linear,
                   init_trajectory: Tensor | None = None, deadline: float | None = None,
                   clock: Clock = time.perf_counter, round_time_estimator: RoundTimeEstimator | None = None,
                   inpaint: Inpainting | None = None, observer=None) -> SampleResult:
    """Solve all S steps with sliding-window triangular Anderson acceleration (``history=0``: Picard)."""
    method = Anderson(window=window, tolerance=tolerance, abs_tolerance=abs_tolerance, max_rounds=max_rounds,
                      history=history, order_k=order_k, lam=lam, exact_linear=exact_linear)
    return solve_fixed_point(denoise, rule, x_init, noise, method, init_trajectory=init_trajectory,
                             deadline=deadline, clock=clock, round_time_estimator=round_time_estimator,
                             inpaint=inpaint, observer=observer)
