"""Warm starts: initial trajectories that are close to the fixed point.

A warm start changes only where the solver *starts*, never what it solves: the
returned ``x_init`` and ``noise`` define the fixed point (the sequential sample
with that noise), and ``init_trajectory`` is only a guess for states 1..S.

Across control cycles (``shift_for_next_cycle``): the new chunk's action times
are the old ones advanced by ``n_shift`` executed actions, so every state of the
old trajectory is shifted left along the horizon (event dim 0). What is kept:

- x_init and noise columns that stay aligned are reused, so the kept part of
  the new problem is the same random draw as before and the old converged
  states are a good guess for it;
- the ``n_shift`` tail columns of x_init and noise are FRESH standard normal
  draws (they define the new problem; repeating old noise there would
  correlate the noise over time, which the model was never trained on);
- the tail columns of the guessed states 1..S repeat the last kept column of
  each state: actions are smooth in time, so the last known action (at each
  noise level) is the cheapest reasonable guess for the next ones, and it keeps
  the guess on the data manifold at the low-noise end where rounds are spent.

``init_from_cheap_solver`` makes a guess from a few coarse DDIM steps instead
(for a cold start), mapped onto the fine grid through the model's x0 / eps
predictions: state i gets sqrt(abar_i) x0_hat + sqrt(1 - abar_i) eps_hat.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .sequential import draw_noise
from .types import Denoiser, SampleResult


def _fresh(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


def _rollout_tail(rule, x_tail0: Tensor, x0_tail: Tensor, noise_tail: Tensor) -> Tensor:
    """States [S+1, ...] of the rule run with a FIXED x0 prediction per step (no model calls).

    Every step rule is affine in the state for a given x0 prediction and noise, so
    x_{j+1} = a_j x_j + b_j with a_j, b_j read off the rule in two batched calls.
    x_tail0: [B,n,...] fresh x_init tail; x0_tail: [S,B,n,...]; noise_tail: [S,B,n,...].
    """
    s = rule.num_steps
    idx = torch.arange(s, device=x_tail0.device)
    zeros = torch.zeros_like(x0_tail)
    prev = torch.cat([x0_tail[:1], x0_tail[:-1]], dim=0)
    b = rule.step(zeros, x0_tail, idx, noise_tail, prev_x0=prev)
    one = torch.ones_like(x0_tail[:, :1])
    zero = torch.zeros_like(one)
    # [S,B,1,...]: the state coefficient (same for every element)
    a = rule.step(one, zero, idx, zero, prev_x0=zero) - rule.step(zero, zero, idx, zero, prev_x0=zero)
    states = [x_tail0]
    for j in range(s):
        states.append(a[j] * states[-1] + b[j])
    return torch.stack(states)


def shift_for_next_cycle(prev: SampleResult, n_shift: int, generator: torch.Generator | None = None,
                         rule=None) -> tuple[Tensor, Tensor, Tensor | None]:
    """(x_init [B,H,...], noise [S,B,H,...], init_trajectory [S+1,B,H,...] or None).

    ``n_shift`` actions were executed since ``prev`` was solved. With n_shift >= H
    nothing overlaps: fresh draws and no initial trajectory (cold start).
    Tail of the guessed states: with ``rule``, the rule rolled out on the fresh
    tail noise with the previous x0 predictions of the last kept column held
    fixed (exact if the model's prediction there did not change); without a rule,
    each state's last kept column repeated.
    """
    traj = prev.trajectory
    if traj.dim() < 3:
        raise ValueError(f"previous trajectory must be [S+1, B, H, ...] with a horizon axis, got {tuple(traj.shape)}")
    if isinstance(n_shift, bool) or not isinstance(n_shift, int) or n_shift < 0:
        raise ValueError(f"n_shift must be an integer >= 0, got {n_shift!r}")
    if tuple(prev.noise.shape) != (traj.shape[0] - 1, *traj.shape[1:]):
        raise ValueError(f"previous noise shape {tuple(prev.noise.shape)} does not match trajectory "
                         f"{tuple(traj.shape)}")
    if rule is not None and rule.num_steps != traj.shape[0] - 1:
        raise ValueError(f"previous trajectory has {traj.shape[0] - 1} steps, the rule has {rule.num_steps}")
    horizon = traj.shape[2]
    x_old, noise_old = traj[0], prev.noise
    if n_shift >= horizon:
        return _fresh(tuple(x_old.shape), x_old, generator), _fresh(tuple(noise_old.shape), noise_old, generator), None
    if n_shift == 0:
        return x_old.clone(), noise_old.clone(), traj.clone()
    b, rest = x_old.shape[0], tuple(x_old.shape[2:])
    x_tail = _fresh((b, n_shift, *rest), x_old, generator)
    noise_tail = _fresh((noise_old.shape[0], b, n_shift, *rest), noise_old, generator)
    x_init = torch.cat([x_old[:, n_shift:], x_tail], dim=1)
    noise = torch.cat([noise_old[:, :, n_shift:], noise_tail], dim=2)
    kept = traj[:, :, n_shift:]
    if rule is not None:
        x0_src = prev.x0_preds if prev.x0_preds is not None else traj[-1:].expand(traj.shape[0] - 1, *traj.shape[1:])
        x0_tail = x0_src[:, :, -1:].expand(-1, -1, n_shift, *rest)
        tail = _rollout_tail(rule, x_tail, x0_tail, noise_tail)
    else:
        tail = kept[:, :, -1:].expand(-1, -1, n_shift, *rest)
    init = torch.cat([kept, tail], dim=2).clone()
    init[0] = x_init
    return x_init, noise, init


@torch.no_grad()
def init_from_cheap_solver(denoise: Denoiser, fine_rule, x_init: Tensor, noise: Tensor | None = None,
                           coarse_steps: int = 4) -> Tensor:
    """Initial trajectory [S+1,B,...] from ``coarse_steps`` DDIM steps on a subset of the fine grid.

    Costs ``coarse_steps`` sequential denoiser calls of width 1. ``noise`` is not
    used (DDIM adds none); it is accepted so the call mirrors the solvers'.
    """
    s = int(fine_rule.num_steps)
    if isinstance(coarse_steps, bool) or not isinstance(coarse_steps, int) or not 1 <= coarse_steps <= s:
        raise ValueError(f"coarse_steps must be an integer in [1, {s}], got {coarse_steps!r}")
    if not torch.isfinite(x_init).all():
        raise ValueError("x_init contains NaN or infinite values")
    # alpha_bar of the noise level of every fine state; state S is clean data
    abar_state = torch.cat([fine_rule.tables["alpha_bar"], torch.ones(1, dtype=torch.float64)])
    abar_state = abar_state.to(device=x_init.device, dtype=x_init.dtype)
    bounds = torch.linspace(0, s, coarse_steps + 1).round().long().tolist()
    traj = x_init.unsqueeze(0).repeat(s + 1, *([1] * x_init.dim()))
    timesteps = fine_rule.timesteps.to(x_init.device)
    x = x_init.unsqueeze(0)  # [1,B,...]
    shape = (-1,) + (1,) * x_init.dim()
    for a, b in zip(bounds[:-1], bounds[1:]):
        idx = torch.tensor([a], dtype=torch.long, device=x_init.device)
        out = denoise(x, timesteps[a:a + 1]).to(x.dtype)
        x0 = fine_rule.predict_x0(x, out, idx)
        ab = abar_state[a]
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        ab_seg = abar_state[a + 1:b + 1].reshape(shape)
        traj[a + 1:b + 1] = ab_seg.sqrt() * x0 + (1 - ab_seg).clamp_min(0).sqrt() * eps
        x = traj[b:b + 1]
    traj[0] = x_init
    return traj


class WarmStartState:
    """What a policy keeps between control cycles to warm-start the next solve.

    Two call forms of ``next``:
    - ``next(n_shift, batch_shape, generator)`` uses the remembered result
      (``update(result)`` after each solve) and draws a cold start without one
      (needs ``rule``);
    - ``next(prev_result, n_shift, generator)`` shifts the given result (and
      remembers it).
    Either form raises ValueError if the previous trajectory's shape differs
    from the expected one (another batch/horizon/step count).
    """

    def __init__(self, rule=None):
        self.rule = rule
        self.prev: SampleResult | None = None

    def update(self, result: SampleResult) -> None:
        """Remember the latest solve (call after every chunk that was published)."""
        self.prev = result

    def reset(self) -> None:
        """Forget the previous solve (new episode, stale data): the next solve is cold."""
        self.prev = None

    def next(self, first, second, generator: torch.Generator | None = None,
             dtype: torch.dtype = torch.float32,
             device: str | torch.device = "cpu") -> tuple[Tensor, Tensor, Tensor | None]:
        """(x_init, noise, init_trajectory or None) for the next solve."""
        if isinstance(first, SampleResult):
            prev, n_shift = first, second
            if self.prev is not None and tuple(self.prev.trajectory.shape) != tuple(prev.trajectory.shape):
                raise ValueError(f"warm start: trajectory shape changed from {tuple(self.prev.trajectory.shape)} "
                                 f"to {tuple(prev.trajectory.shape)}; call reset() when the shape changes")
            if self.rule is not None and prev.trajectory.shape[0] != self.rule.num_steps + 1:
                raise ValueError(f"warm start: previous trajectory has {prev.trajectory.shape[0] - 1} steps, "
                                 f"the rule has {self.rule.num_steps}")
            self.prev = prev
            return shift_for_next_cycle(prev, n_shift, generator, self.rule)
        n_shift, batch_shape = first, tuple(int(d) for d in second)
        if self.prev is None:
            if self.rule is None:
                raise ValueError("warm start: no previous solve and no rule to draw a cold start from")
            x_init, noise = draw_noise(self.rule, batch_shape, generator=generator, dtype=dtype, device=device)
            return x_init, noise, None
        steps = self.rule.num_steps if self.rule is not None else self.prev.trajectory.shape[0] - 1
        expected = (steps + 1, *batch_shape)
        got = tuple(self.prev.trajectory.shape)
        if got != expected:
            raise ValueError(f"warm start: previous trajectory has shape {got} but this solve needs "
                             f"[S+1, *batch_shape] = {expected}; call reset() when the shape changes")
        return shift_for_next_cycle(self.prev, n_shift, generator, self.rule)
