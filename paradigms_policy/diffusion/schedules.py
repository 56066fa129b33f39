"""Beta schedules and per-timestep noise tables (same numbers as diffusers).

diffusers builds betas in float32; DiffusionPolicy checkpoints were trained
with those exact betas, so we round betas through float32 the same way and
then do all further arithmetic (alphas, cumulative products) in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")


def _cosine_alpha_bar(t: float) -> float:
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def make_betas(
    beta_schedule: str,
    num_train_timesteps: int,
    beta_start: float = 1e-4,
    beta_end: float = 2e-2,
    max_beta: float = 0.999,
) -> torch.Tensor:
    """Betas [T] as float64, with the values diffusers uses (float32-rounded)."""
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    n = num_train_timesteps
    if beta_schedule == "squaredcos_cap_v2":
        betas = [
            min(1 - _cosine_alpha_bar((i + 1) / n) / _cosine_alpha_bar(i / n), max_beta) for i in range(n)
        ]
        b32 = torch.tensor(betas, dtype=torch.float32)
    elif beta_schedule == "linear":
        b32 = torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        b32 = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2
    else:
        raise ValueError(f"unknown beta_schedule {beta_schedule!r}; expected one of {BETA_SCHEDULES}")
    return b32.to(torch.float64)


@dataclass(frozen=True)
class NoiseSchedule:
    """Float64 tables indexed by training timestep t in [0, T)."""

    betas: torch.Tensor  # [T]
    alphas: torch.Tensor  # [T]
    alphas_cumprod: torch.Tensor  # [T]

    @property
    def num_train_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """alphas_cumprod at integer timesteps t; t < 0 means 'clean data' (alpha_bar = 1)."""
        t = torch.as_tensor(t, dtype=torch.long)
        out = self.alphas_cumprod[t.clamp(min=0)]
        return torch.where(t < 0, torch.ones_like(out), out)


def make_schedule(
    beta_schedule: str = "squaredcos_cap_v2",
    num_train_timesteps: int = 100,
    beta_start: float = 1e-4,
    beta_end: float = 2e-2,
) -> NoiseSchedule:
    betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
    alphas = 1.0 - betas
    return NoiseSchedule(betas=betas, alphas=alphas, alphas_cumprod=torch.cumprod(alphas, dim=0))
