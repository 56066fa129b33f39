"""Camera images between their stored form and what the policy sees (DiffusionPolicy's rgb convention).

Stored (robomimic HDF5, zarr, env observations, ROS rgb8): uint8 [..., H, W, C]. Policy input: float32
[..., C, H, W] in [0, 1]. The normalizer then maps [0, 1] to [-1, 1] with fixed parameters, as
DiffusionPolicy's ``get_image_range_normalizer`` does.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ..model.normalizer import LinearNormalizer

__all__ = ["is_image_array", "hwc_uint8_to_chw_float", "set_image_range", "obs_for_policy", "IMAGE_RANGE_STATS"]

# input stats of a uniform [0, 1] pixel, as DiffusionPolicy's get_image_range_normalizer stores them
IMAGE_RANGE_STATS = {"min": [0.0], "max": [1.0], "mean": [0.5], "std": [float(np.sqrt(1.0 / 12.0))]}


def is_image_array(array: Any) -> bool:
    """A recorded camera stream: uint8 [T, H, W, C] with 1, 3 or 4 channels."""
    shape = getattr(array, "shape", ())
    return np.dtype(getattr(array, "dtype", np.float32)) == np.uint8 and len(shape) == 4 and shape[-1] in (1, 3, 4)


def hwc_uint8_to_chw_float(images: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, C] -> float32 tensor [..., C, H, W] in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim < 3:
        raise ValueError(f"expected uint8 images [..., H, W, C], got {images.dtype} {list(images.shape)}")
    return torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3).to(torch.float32).div_(255.0)


def set_image_range(normalizer: LinearNormalizer, key: str) -> None:
    """DiffusionPolicy's image normalizer for ``key``: y = 2x - 1 (pixels in [0, 1] -> [-1, 1])."""
    normalizer.set_affine(key, [2.0], [-1.0], IMAGE_RANGE_STATS)


def obs_for_policy(obs: Mapping[str, np.ndarray], shape_meta: Mapping[str, Any]) -> dict[str, Any]:
    """Env observations -> the policy's form: every rgb key of ``shape_meta`` from uint8 HWC to float CHW [0, 1].

    Other keys pass through unchanged; rgb keys already in float CHW are left as they are.
    """
    out = dict(obs)
    for key, meta in shape_meta.get("obs", {}).items():
        if meta.get("type") == "rgb" and key in out and np.asarray(out[key]).dtype == np.uint8:
            out[key] = hwc_uint8_to_chw_float(out[key]).numpy()
    return out
