"""Exponential moving average of model weights with DiffusionPolicy's warm-up schedule.

decay(step) = 1 - (1 + step / inv_gamma) ** -power, clamped to [min_value, max_value], and 0 for
the first update, so early averages follow the fast-changing weights and late ones are smooth.
The averaged copy is the network that gets deployed.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMAModel", "ema_decay"]


def ema_decay(step: int, power: float = 0.75, inv_gamma: float = 1.0, min_value: float = 0.0,
              max_value: float = 0.9999, update_after_step: int = 0) -> float:
    """Decay used for the update made after ``step`` optimizer steps (0-based)."""
    k = max(0, step - update_after_step - 1)
    if k <= 0:
        return 0.0
    value = 1.0 - (1.0 + k / inv_gamma) ** -power
    return max(min_value, min(value, max_value))


class EMAModel:
    """Keeps ``averaged_model``, a frozen copy of ``model`` updated by ``step(model)`` after each optimizer step."""

    def __init__(self, model: nn.Module, *, power: float = 0.75, inv_gamma: float = 1.0, min_value: float = 0.0,
                 max_value: float = 0.9999, update_after_step: int = 0):
        self.averaged_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power = power
        self.inv_gamma = inv_gamma
        self.min_value = min_value
        self.max_value = max_value
        self.update_after_step = update_after_step
        self.optimization_step = 0
        self.decay = 0.0

    def get_decay(self, step: int) -> float:
        return ema_decay(step, self.power, self.inv_gamma, self.min_value, self.max_value, self.update_after_step)

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        self.decay = self.get_decay(self.optimization_step)
        for averaged, current in zip(self.averaged_model.parameters(), model.parameters()):
            if current.requires_grad:
                averaged.mul_(self.decay).add_(current.detach(), alpha=1.0 - self.decay)
            else:  # frozen parameters (e.g. normalizer constants) are copied, not averaged
                averaged.copy_(current.detach())
        for averaged, current in zip(self.averaged_model.buffers(), model.buffers()):
            averaged.copy_(current)
        self.optimization_step += 1
