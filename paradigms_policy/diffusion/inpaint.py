"""Known values inside a sample (inpainting), as DiffusionPolicy's ``conditional_sample`` does it.

While a chunk is solved the robot keeps executing the previous one, so the first actions of
the new chunk are already decided. They enter the solve as known values: every state of the
trajectory holds them at their positions, before each model call and after each step, so the
sequential sampler computes y_{j+1} = M(F_j(M(y_j))) with M the masking. The parallel solvers
apply the same M to every step output and every stored state, which makes M(F_j) their step
map: their fixed point is the inpainted sequential sample, and they equal it at tolerance 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Inpainting:
    """Known entries of a sample: ``mask`` (Bool) and ``values``, both [B, *event]."""

    mask: Tensor
    values: Tensor

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool:
            raise ValueError(f"inpainting mask must be bool, got {self.mask.dtype}")
        if tuple(self.mask.shape) != tuple(self.values.shape):
            raise ValueError(f"inpainting mask {tuple(self.mask.shape)} and values {tuple(self.values.shape)} "
                             "must have the same shape")
        if not bool(torch.isfinite(self.values[self.mask]).all()):
            raise ValueError("inpainting values contain NaN or inf at known positions")

    def check_fits(self, x: Tensor) -> None:
        """Raise ValueError unless the known entries match a state of shape [B, *event]."""
        if tuple(self.mask.shape) != tuple(x.shape):
            raise ValueError(f"inpainting is for shape {tuple(self.mask.shape)}, the sample is {tuple(x.shape)}")

    def apply(self, x: Tensor) -> Tensor:
        """x [..., B, *event] with the known entries set (any number of leading axes)."""
        values = self.values.to(device=x.device, dtype=x.dtype)
        return torch.where(self.mask.to(x.device), values, x)

    @property
    def count(self) -> int:
        return int(self.mask.sum())


def apply_inpainting(inpaint: Inpainting | None, x: Tensor) -> Tensor:
    """``inpaint.apply(x)``, or x itself when nothing is known."""
    return x if inpaint is None else inpaint.apply(x)


def known_prefix(values: Tensor, first: int, batch_event: tuple[int, ...]) -> Inpainting:
    """Inpainting for a contiguous run of known rows along the horizon axis (event dim 0).

    values: [n, *rest] (one sample) or [B, n, *rest]; rows ``first .. first+n-1`` of a sample of
    shape ``batch_event`` = (B, H, *rest) become known.
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
    return Inpainting(mask=mask, values=full)
