"""Device, dtype and CPU-thread policy shared by every entry point.

One place decides what "auto" means, so the Policy, the profiler and the ROS node agree on
where the network runs and in which precision.
"""

from __future__ import annotations

import os

import torch

__all__ = ["resolve_device", "resolve_dtype", "default_executor", "set_cpu_threads", "describe_device"]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float64": torch.float64,
    "fp64": torch.float64,
    "double": torch.float64,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Map ``"auto"``/None to CUDA when available, else CPU; validate explicit CUDA requests."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(resolved)!r} requested but CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None = None) -> torch.dtype:
    """Float32 by default; accept names like ``"float64"``/``"fp16"`` or a torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        return dtype
    key = str(dtype).strip().lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(set(_DTYPES))}")
    return _DTYPES[key]


def default_executor(device: torch.device | str) -> str:
    """CUDA graphs on a GPU (one host sync per replay), eager static buffers on CPU."""
    return "cuda_graph" if torch.device(device).type == "cuda" else "eager"


def set_cpu_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op CPU threads (None -> all cores visible to this process); return the count.

    Small networks at batch 1 are latency-bound: more threads than cores only adds contention.
    """
    if num_threads is None:
        try:
            num_threads = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            num_threads = os.cpu_count() or 1
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    torch.set_num_threads(int(num_threads))
    return torch.get_num_threads()


def describe_device(device: torch.device | str) -> str:
    """Human-readable device string for reports (GPU name, or CPU with thread count)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({torch.get_num_threads()} threads)"
