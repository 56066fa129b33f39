"""How batched denoiser calls execute: eager static buffers or CUDA-graph replay; device policy."""

from .device import default_executor, describe_device, resolve_device, resolve_dtype, set_cpu_threads
from .executor import EXECUTORS, BatchedDenoiser

__all__ = [
    "BatchedDenoiser",
    "EXECUTORS",
    "default_executor",
    "describe_device",
    "resolve_device",
    "resolve_dtype",
    "set_cpu_threads",
]
