"""Batched denoiser execution with static buffers: eager (CPU/CUDA) or CUDA-graph replay.

The parallel solvers call the network many times per control cycle with shapes
``[W, B, *event]`` (W = window rows, B = batch). Allocating per call and, on a GPU, launching
each kernel from Python costs more than the small robot network itself. So the denoiser keeps
a few fixed sets of input/output buffers ("slots"); on CUDA the forward pass on a slot is
captured once with ``torch.cuda.CUDAGraph`` and replayed (one host launch per call). On CPU
the very same buffer code runs the network eagerly, so CPU tests exercise the GPU's logic.

A call of W rows uses the smallest slot with at least W rows: on CUDA the graph replays its
full width and the rows past W (left over from earlier calls, finite) are computed and
ignored, so a solver whose window shrinks near the end of the chain needs ONE graph, not one
per width. The network treats every row on its own (per-sample GroupNorm), so padding rows
change nothing in the others. On CPU the eager path runs only the W rows it was given.

Allocation and capture must not land inside a deadline-bound solve, so the denoiser counts
them (``slots_created``, ``graphs_captured``): a caller warms the widths it will use (the
widest round and width 1) and can then check that the counts stay put while it serves calls.
Inside an enclosing CUDA-graph capture (whole solver rounds, ``runtime/round_graph.py``) a
call runs the forward eagerly so that its kernels become part of that graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from .device import resolve_device, resolve_dtype

__all__ = ["BatchedDenoiser", "EXECUTORS"]

EXECUTORS = ("eager", "cuda_graph")
_CUDA_GRAPH_WARMUP_ITERS = 3  # side-stream runs before capture (cuDNN autotune, lazy init)


@dataclass
class _WindowSlot:
    """Static buffers (and, for CUDA graphs, the captured graph) for one window size W."""

    window: int
    sample: torch.Tensor  # [W*B, *event]  network input
    timestep: torch.Tensor  # Long[W*B]   t expanded over the batch
    cond: torch.Tensor  # [W*B, G]      bound conditioning repeated over W
    output: torch.Tensor  # [W*B, *event]  network output
    graph: "torch.cuda.CUDAGraph | None" = None


class BatchedDenoiser:
    """A ``Denoiser``: ``denoise(x [W,B,*event], t Long[W]) -> model output [W,B,*event]``.

    Usage per control cycle: ``bind(global_cond [B,G])`` once, then any number of calls. Call
    ``warmup(window_sizes, batch)`` at start-up so buffers exist (and graphs are captured)
    before the first deadline; a call wider than every warmed slot is still served, but pays
    allocation/capture then.

    Returned tensors are fresh copies (same device/dtype as ``x``), never views of the static
    output buffer, so callers may keep them across calls.

    Counters: ``calls`` (batched calls), ``evaluations`` (sum of W over calls: network
    evaluations per batch element, the solvers' NFE), ``samples_evaluated`` (sum of W*B).
    Warm-up calls are not counted. ``reset_counters`` zeroes these three.

    Lifetime counters, never reset: ``slots_created`` (sets of static buffers allocated, one
    per window size and batch size) and ``graphs_captured`` (CUDA graphs captured). If either
    moves after warm-up, a call paid for allocation or capture.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        event_shape: tuple[int, ...],
        cond_dim: int,
        executor: str = "eager",
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        compile: bool = False,
    ):
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
        event_shape = tuple(int(d) for d in event_shape)
        if not event_shape or any(d < 1 for d in event_shape):
            raise ValueError(f"event_shape must be non-empty positive sizes, got {event_shape}")
        if int(cond_dim) < 1:
            raise ValueError(f"cond_dim must be >= 1, got {cond_dim}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        if executor == "cuda_graph" and self.device.type != "cuda":
            raise ValueError(f"executor 'cuda_graph' needs a CUDA device, got device {str(self.device)!r}")
        self.executor = executor
        self.event_shape = event_shape
        self.cond_dim = int(cond_dim)
        # eval mode (no dropout); gradients are off per call (no_grad), parameters are left as they are
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self._forward: Callable[..., torch.Tensor] = torch.compile(self.model) if compile else self.model
        self.compiled = bool(compile)
        self._batch: int | None = None
        self._cond: torch.Tensor | None = None  # [B, G] bound conditioning
        self._slots: dict[int, _WindowSlot] = {}
        self._graph_pool = None  # one memory pool shared by all graphs (replayed one at a time)
        self.slots_created = 0
        self.graphs_captured = 0
        self.calls = 0
        self.evaluations = 0
        self.samples_evaluated = 0

    # ------------------------------------------------------------------ binding
    @property
    def batch(self) -> int | None:
        """Batch size fixed by the last ``bind``/``warmup`` (None before)."""
        return self._batch

    @property
    def window_sizes(self) -> list[int]:
        """Row widths of the allocated (and on CUDA, captured) slots."""
        return sorted(self._slots)

    def slot_width_for(self, window: int) -> int | None:
        """Width of the slot a call of ``window`` rows would use (None: it would allocate one)."""
        wide_enough = [w for w in self._slots if w >= window]
        return min(wide_enough) if wide_enough else None

    def bind(self, global_cond: torch.Tensor) -> None:
        """Set the conditioning for the next calls. A new batch size drops all buffers/graphs."""
        if not isinstance(global_cond, torch.Tensor):
            raise TypeError(f"global_cond must be a torch.Tensor, got {type(global_cond).__name__}")
        if global_cond.ndim != 2 or global_cond.shape[1] != self.cond_dim or global_cond.shape[0] < 1:
            raise ValueError(
                f"global_cond must have shape [B, {self.cond_dim}] with B >= 1, got {tuple(global_cond.shape)}"
            )
        if not torch.isfinite(global_cond).all():
            raise ValueError("global_cond contains NaN or Inf")
        batch = int(global_cond.shape[0])
        if batch != self._batch:
            self._reset_batch(batch)
        assert self._cond is not None
        self._cond.copy_(global_cond)
        for slot in self._slots.values():
            self._fill_cond(slot)

    def _reset_batch(self, batch: int) -> None:
        self._slots.clear()  # graphs and their memory pool go with them
        self._graph_pool = None
        self._batch = batch
        self._cond = torch.zeros(batch, self.cond_dim, device=self.device, dtype=self.dtype)

    def _fill_cond(self, slot: _WindowSlot) -> None:
        assert self._cond is not None and self._batch is not None
        slot.cond.view(slot.window, self._batch, self.cond_dim).copy_(self._cond.unsqueeze(0).expand(slot.window, -1, -1))

    # ------------------------------------------------------------------ buffers
    def _slot(self, window: int) -> _WindowSlot:
        """The smallest slot with at least ``window`` rows; a new one of exactly that width if none."""
        width = self.slot_width_for(window)
        if width is None:
            slot = self._make_slot(window)
            self._slots[window] = slot
            return slot
        return self._slots[width]

    def _make_slot(self, window: int) -> _WindowSlot:
        assert self._batch is not None
        n = window * self._batch
        opts = dict(device=self.device, dtype=self.dtype)
        slot = _WindowSlot(
            window=window,
            sample=torch.zeros(n, *self.event_shape, **opts),
            timestep=torch.zeros(n, device=self.device, dtype=torch.long),
            cond=torch.zeros(n, self.cond_dim, **opts),
            output=torch.zeros(n, *self.event_shape, **opts),
        )
        self._fill_cond(slot)
        self.slots_created += 1
        if self.executor == "cuda_graph":
            slot.graph = self._capture(slot)
            self.graphs_captured += 1
        return slot

    def _run_eager(self, slot: _WindowSlot, rows: int | None = None) -> None:
        """The forward pass on the slot's first ``rows`` rows (all rows when None)."""
        n = slot.sample.shape[0] if rows is None else rows
        with torch.no_grad():
            out = self._forward(slot.sample[:n], slot.timestep[:n], global_cond=slot.cond[:n])
            slot.output[:n].copy_(out)

    def _capture(self, slot: _WindowSlot) -> "torch.cuda.CUDAGraph":
        """Warm up on a side stream (lazy init, autotune, compile), then capture one forward.

        All graphs share one memory pool: nothing allocated inside a capture outlives it (the
        result is copied into the slot's own output buffer), and graphs replay one at a time,
        so one pool sized for the largest window serves every window.
        """
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(_CUDA_GRAPH_WARMUP_ITERS):
                self._run_eager(slot)
        torch.cuda.current_stream(self.device).wait_stream(side)
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph, pool=self._graph_pool):
            out = self._forward(slot.sample, slot.timestep, global_cond=slot.cond)
            slot.output.copy_(out)
        torch.cuda.synchronize(self.device)
        return graph

    def warmup(self, window_sizes: Iterable[int], batch: int, *, run: bool = True) -> None:
        """Allocate buffers (capture graphs) for each W, before any deadline; ``run``: run each once.

        Sizes are prepared largest first, so the shared graph memory pool is sized by the first
        capture. ``run=False`` only allocates (an eager slot on CPU then has nothing left to warm);
        a CUDA-graph slot always runs, since capture runs the network.
        Keeps the bound conditioning if ``batch`` matches it; otherwise binds zeros of the new
        batch size (the next ``bind`` overwrites them). Call counters are left untouched.
        """
        batch = int(batch)
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        windows = [int(w) for w in window_sizes]
        bad = [w for w in windows if w < 1]
        if bad:
            raise ValueError(f"window sizes must be >= 1, got {bad}")
        if batch != self._batch:
            self._reset_batch(batch)
        for window in sorted(set(windows), reverse=True):
            slot = self._slots.get(window)
            if slot is None:  # each width asked for gets its own slot (a narrower call then uses it)
                slot = self._slots[window] = self._make_slot(window)
            if run:
                self._execute(slot)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ calls
    def _execute(self, slot: _WindowSlot, rows: int | None = None) -> None:
        """Replay the slot's graph (full width), or run eagerly on ``rows`` rows.

        Inside another graph's capture a replay cannot be recorded, so the forward runs
        eagerly and its kernels join the enclosing graph.
        """
        if slot.graph is not None and not torch.cuda.is_current_stream_capturing():
            slot.graph.replay()
        else:
            self._run_eager(slot, rows)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self._batch is None:
            raise RuntimeError("BatchedDenoiser called before bind(global_cond)")
        expected_tail = (self._batch, *self.event_shape)
        if x.ndim != 2 + len(self.event_shape) or tuple(x.shape[1:]) != expected_tail or x.shape[0] < 1:
            raise ValueError(f"x must have shape [W, {', '.join(map(str, expected_tail))}], got {tuple(x.shape)}")
        window = int(x.shape[0])
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t)
        if t.ndim == 0:
            t = t.expand(window)
        if t.shape != (window,) or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"t must be an integer tensor of shape [{window}], got {t.dtype} {tuple(t.shape)}")
        slot = self._slot(window)
        rows = window * self._batch
        slot.sample[:rows].view(window, *expected_tail).copy_(x)
        slot.timestep[:rows].view(window, self._batch).copy_(t.view(window, 1).expand(window, self._batch))
        self._execute(slot, rows)
        self.calls += 1
        self.evaluations += window
        self.samples_evaluated += window * self._batch
        return slot.output[:rows].view(window, *expected_tail).to(device=x.device, dtype=x.dtype, copy=True)

    def reset_counters(self) -> None:
        self.calls = 0
        self.evaluations = 0
        self.samples_evaluated = 0

    def __repr__(self) -> str:
        return (
            f"BatchedDenoiser(executor={self.executor!r}, device={str(self.device)!r}, dtype={self.dtype}, "
            f"event_shape={self.event_shape}, cond_dim={self.cond_dim}, batch={self._batch}, "
            f"windows={self.window_sizes}, compiled={self.compiled})"
        )
