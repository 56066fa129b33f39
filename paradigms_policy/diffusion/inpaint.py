"""Known values inside a sample (inpainting).

While a chunk is solved the robot keeps executing the previous one, so the first actions of
the new chunk are already decided. They enter the solve as known values: every state i of the
trajectory holds a value v_i at the known positions, before each model call and after each
step, so the sequential sampler computes y_{i+1} = M_{i+1}(F_i(M_i(y_i))) with M_i the masking.
The parallel solvers apply the same M_i to every step output and stored state, which makes
their fixed point the inpainted sequential sample: they equal it at tolerance 0.

Two choices of v_i (``noise``):
- None: the clean known value at every level, as DiffusionPolicy's ``conditional_sample``;
- a tensor z (the solve's initial noise): the value the forward process gives at state i's
  noise level, v_i = sqrt(abar_i) known + sqrt(1 - abar_i) z (v_S is the clean value), so the
  network sees known and free entries at the same noise level, as it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Inpainting:
    """Known entries of a sample: ``mask`` (Bool) and clean ``values``, both [B, *event]; ``noise`` see module."""

    mask: Tensor
    values: Tensor
    noise: Tensor | None = None

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool:
            raise ValueError(f"inpainting mask must be bool, got {self.mask.dtype}")
        for name, other in (("values", self.values), ("noise", self.noise)):
            if other is not None and tuple(other.shape) != tuple(self.mask.shape):
                raise ValueError(f"inpainting mask {tuple(self.mask.shape)} and {name} {tuple(other.shape)} "
                                 "must have the same shape")
        if not bool(torch.isfinite(self.values[self.mask]).all()):
            raise ValueError("inpainting values contain NaN or inf at known positions")

    def check_fits(self, x: Tensor) -> None:
        """Raise ValueError unless the known entries match a state of shape [B, *event]."""
        if tuple(self.mask.shape) != tuple(x.shape):
            raise ValueError(f"inpainting is for shape {tuple(self.mask.shape)}, the sample is {tuple(x.shape)}")

    def bind(self, rule, like: Tensor) -> "StateInpainting":
        """The per-state values for the S+1 states of ``rule``, in ``like``'s dtype and device."""
        self.check_fits(like)
        mask = self.mask.to(like.device)
        clean = self.values.to(device=like.device, dtype=like.dtype)
        if self.noise is None:
            return StateInpainting(mask, clean.unsqueeze(0), rule.num_steps)
        abar = torch.cat([rule.tables["alpha_bar"], torch.ones(1, dtype=torch.float64)])
        abar = abar.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * like.dim()))
        noise = self.noise.to(device=like.device, dtype=like.dtype)
        return StateInpainting(mask, abar.sqrt() * clean + (1 - abar).clamp_min(0).sqrt() * noise, rule.num_steps)

    @property
    def count(self) -> int:
        return int(self.mask.sum())


class StateInpainting:
    """Inpainting bound to a rule: ``apply(states, first)`` sets the known entries of states first.."""

    def __init__(self, mask: Tensor, values: Tensor, num_steps: int):
        self.mask = mask
        self.values = values  # [S+1, B, *event], or [1, B, *event] for the same value at every state
        self.num_steps = int(num_steps)

    def apply(self, states: Tensor, first: int) -> Tensor:
        """states [n, B, *event] = states first..first+n-1 of the trajectory."""
        n = states.shape[0]
        if first < 0 or first + n > self.num_steps + 1:
            raise ValueError(f"states {first}..{first + n - 1} are outside 0..{self.num_steps}")
        values = self.values if self.values.shape[0] == 1 else self.values[first:first + n]
        return torch.where(self.mask, values, states)

    def apply_at(self, rows: Tensor, states: Tensor) -> Tensor:
        """rows [n, B, *event], each the state whose index is in ``states`` (Long[n])."""
        values = self.values if self.values.shape[0] == 1 else self.values[states.to(self.values.device)]
        return torch.where(self.mask, values, rows)

    def final(self, sample: Tensor) -> Tensor:
        """A sample [B, *event] (state S) with the known entries set."""
        return self.apply(sample.unsqueeze(0), self.num_steps)[0]


def bind_inpainting(inpaint: Inpainting | None, rule, like: Tensor) -> StateInpainting | None:
    return None if inpaint is None else inpaint.bind(rule, like)


def known_prefix(values: Tensor, first: int, batch_event: tuple[int, ...], noise: Tensor | None = None
                 ) -> Inpainting:
    """Inpainting for a contiguous run of known rows along the horizon axis (event dim 0).

    values: [n, *rest] (one sample) or [B, n, *rest]; rows ``first .. first+n-1`` of a sample of
    shape ``batch_event`` = (B, H, *rest) become known. ``noise``: [B, H, *rest] (module docstring).
    """
    b, h = batch_event[0], batch_event[1]
    if values.dim() == len(batch_event) - 1:
        values = values.unsqueeze(0).expand(b, *values.shape)
    n = values.shape[1]
    if first < 0 or first + n > h:
        raise ValueError(f"known rows {first}..{first + n - 1} do not fit a horizon of {h}")
    if tuple(values.shape[2:]) != tuple(batch_event[2:]) or values.shape[0] != b:
        raise ValueError(f"known values of shape {tuple(values.shape)} do not fit samples of shape {batch_event}")
    full = torch.zeros(batch_event, dtype=values.dtype, device=values.device)
    mask = torch.zeros(batch_event, dtype=torch.bool, device=values.device)
    full[:, first:first + n] = values
    mask[:, first:first + n] = True
    return Inpainting(mask=mask, values=full, noise=noise)
