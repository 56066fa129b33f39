"""The process group a training run belongs to: one process, or N under ``torchrun``.

``torchrun --nproc_per_node=N -m paradigms_policy.train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK;
without them the run is a world of one and nothing here talks to another process. Backend: gloo
on CPU, nccl on CUDA (each rank on ``cuda:LOCAL_RANK``). Rank 0 is the main rank: it keeps the
EMA weights, runs validation, writes checkpoints and logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["World", "init_world", "default_backend"]


def default_backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@dataclass(frozen=True)
class World:
    """This process's place in the run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: a single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, global_batch: int) -> slice:
        """This rank's contiguous part of a global batch (rank r takes rows [r * b, (r + 1) * b))."""
        if global_batch % self.size:
            raise ValueError(f"training.batch_size {global_batch} is not divisible by the {self.size} processes: "
                             "each rank trains on batch_size / world_size windows per step")
        part = global_batch // self.size
        return slice(self.rank * part, (self.rank + 1) * part)

    def mean(self, value: torch.Tensor) -> float:
        """The mean of a scalar over all ranks (every rank gets it)."""
        if not self.distributed:
            return float(value)
        total = value.detach().clone().reshape(1).to(torch.float64 if self.backend == "gloo" else value.dtype)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return float(total) / self.size

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def init_world(device: str, backend: str | None = None) -> tuple[World, torch.device]:
    """Join the process group torchrun describes (if any) and pick this rank's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"training.device={device} but CUDA is not available on this machine")
        resolved = torch.device("cuda", local_rank if size > 1 or resolved.index is None else resolved.index)
        torch.cuda.set_device(resolved)
    if size <= 1:
        return World(), resolved
    backend = backend or default_backend(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://",
                                device_id=resolved if resolved.type == "cuda" else None)
    return World(rank=rank, size=size, local_rank=local_rank, backend=backend), resolved
