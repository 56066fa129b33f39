"""What optimizer step ``s`` trains on, as a function of (seed, s) alone.

The global batch is slice ``s`` of a per-epoch shuffle seeded with (seed, epoch), as a
DistributedSampler with ``drop_last`` would give it, and its diffusion noise and timesteps come
from a generator seeded with (seed, s), drawn for the whole global batch. Each rank takes its
contiguous rows of both (``World.shard``). So the sample at global position i of step s gets the
same data and the same noise whatever the number of processes and wherever a run was resumed:
N-process DDP and single-process training with the same global batch see identical batches, and
no RNG state has to travel in checkpoints.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["batch_indices", "step_noise"]


def batch_indices(n_windows: int, step: int, batch_size: int, seed: int) -> np.ndarray:
    """Dataset indices of the global batch of ``step`` (epoch-wise shuffle, the last partial batch dropped)."""
    if n_windows < 1:
        raise ValueError("the training set has no windows")
    per_epoch = max(1, n_windows // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_windows)
    return order[position * batch_size: (position + 1) * batch_size]


def step_noise(seed: int, step: int, shape: tuple[int, ...], num_train_timesteps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise [B, *event] and timesteps [B] for the global batch of ``step`` (CPU, float32 / int64)."""
    key = int(np.random.SeedSequence([seed, step, 0x5EED]).generate_state(1, dtype=np.uint64)[0]) >> 1
    generator = torch.Generator().manual_seed(key)
    noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    timesteps = torch.randint(0, num_train_timesteps, (shape[0],), generator=generator)
    return noise, timesteps
