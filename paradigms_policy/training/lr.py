"""Learning-rate schedule: linear warm-up then half-cosine decay to zero (diffusers' "cosine")."""

from __future__ import annotations

import math

import torch

__all__ = ["cosine_with_warmup", "make_lr_scheduler"]


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate after ``step`` optimizer steps."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def make_lr_scheduler(optimizer: torch.optim.Optimizer, name: str, warmup_steps: int,
                      total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    if name == "cosine":
        factor = lambda step: cosine_with_warmup(step, warmup_steps, total_steps)  # noqa: E731
    elif name == "constant":
        factor = lambda step: min(1.0, step / max(1, warmup_steps))  # noqa: E731
    else:
        raise ValueError(f"unknown lr scheduler {name!r}; expected 'cosine' or 'constant'")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
