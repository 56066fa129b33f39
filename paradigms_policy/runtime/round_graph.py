"""Whole solver rounds captured as CUDA graphs: the host launches a block of rounds at once.

A device-resident round (``diffusion/device_rounds.py``) is a fixed sequence of kernels on
static buffers, with no host read inside. Capturing K of them back to back gives one graph
whose replay runs K rounds for one host launch; the host reads the convergence flags after
it. Blocks of 1, 2, 4, ..., K rounds are captured (the solver picks a power of two that fits
the deadline and the expected remaining rounds), all in one memory pool: they replay one at
a time and keep nothing of their own between replays (the state lives in the static buffers).
"""

from __future__ import annotations

from typing import Callable

import torch

_WARMUP_ROUNDS = 3  # side-stream rounds before capture (lazy init, cuDNN autotune)


def block_sizes(max_block: int) -> list[int]:
    """Powers of two up to ``max_block``: 1, 2, 4, ..."""
    if max_block < 1:
        raise ValueError(f"max_block must be >= 1, got {max_block}")
    return [1 << i for i in range(max_block.bit_length()) if 1 << i <= max_block]


class RoundGraph:
    """Replays captured blocks of ``round_fn``; callable as ``run_rounds(n)`` (n a sum of captured blocks).

    ``capture()`` runs ``round_fn`` (warm-up and capture): the solver state it works on is
    overwritten, so load the real problem afterwards. Counts ``graphs_captured``.
    """

    def __init__(self, round_fn: Callable[[], None], max_block: int, device: torch.device):
        if torch.device(device).type != "cuda":
            raise ValueError(f"RoundGraph captures CUDA graphs; got device {str(device)!r}")
        self.round_fn = round_fn
        self.device = torch.device(device)
        self.sizes = block_sizes(int(max_block))
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.graphs_captured = 0
        self.replays = 0

    def capture(self) -> None:
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(_WARMUP_ROUNDS):
                self.round_fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        pool = torch.cuda.graph_pool_handle()
        for size in sorted(self.sizes, reverse=True):  # largest first sizes the shared pool
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph, pool=pool):
                for _ in range(size):
                    self.round_fn()
            self.graphs[size] = graph
            self.graphs_captured += 1
        torch.cuda.synchronize(self.device)

    def __call__(self, rounds: int) -> None:
        """Run ``rounds`` rounds: the largest captured blocks first."""
        if not self.graphs:
            raise RuntimeError("RoundGraph used before capture()")
        left = int(rounds)
        for size in sorted(self.graphs, reverse=True):
            while left >= size:
                self.graphs[size].replay()
                self.replays += 1
                left -= size
