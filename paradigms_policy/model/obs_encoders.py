"""Observation encoders: dict of observation tensors -> one feature vector per sample.

The policy flattens the observation-history axis into the batch before calling these
(obs[key]: [N, *shape] with N = B * n_obs_steps) and reshapes the result to [B, n_obs * D].
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn

from .conv_encoder import SmallConvKeypoints
from .resnet import ResNet18Keypoints

__all__ = ["LowDimObsEncoder", "ImageObsEncoder", "CropRandomizer", "check_obs"]


def check_obs(obs: Mapping[str, torch.Tensor], key: str, shape: tuple) -> torch.Tensor:
    """Fetch obs[key] and check it is [N, *shape] with finite values; errors name the key."""
    if key not in obs:
        raise KeyError(f"observation {key!r} missing; got keys {sorted(obs)}")
    value = obs[key]
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"observation {key!r} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != len(shape) + 1 or tuple(value.shape[1:]) != tuple(shape):
        raise ValueError(f"observation {key!r} must be [N, {', '.join(map(str, shape))}], got {tuple(value.shape)}")
    return value


class LowDimObsEncoder(nn.Module):
    """Concatenate flattened low-dimensional observations in the order of ``obs_shapes``."""

    def __init__(self, obs_shapes: Mapping[str, Sequence[int]]):
        super().__init__()
        if not obs_shapes:
            raise ValueError("LowDimObsEncoder needs at least one observation key")
        self.obs_shapes = {k: tuple(int(d) for d in s) for k, s in obs_shapes.items()}
        self.output_dim = sum(math.prod(s) for s in self.obs_shapes.values())

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for key, shape in self.obs_shapes.items():
            value = check_obs(obs, key, shape)
            parts.append(value.reshape(value.shape[0], -1))  # [N, prod(shape)]
        return torch.cat(parts, dim=-1)  # [N, output_dim]


class CropRandomizer(nn.Module):
    """Random crop per sample in training, centre crop in eval: [N,C,H,W] -> [N,C,h,w]."""

    def __init__(self, input_hw: Sequence[int], crop_hw: Sequence[int]):
        super().__init__()
        self.input_hw = tuple(int(v) for v in input_hw)
        self.crop_hw = tuple(int(v) for v in crop_hw)
        if any(c > i or c < 1 for c, i in zip(self.crop_hw, self.input_hw)):
            raise ValueError(f"crop shape {self.crop_hw} does not fit image shape {self.input_hw}")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        (h, w), (ch, cw) = self.input_hw, self.crop_hw
        if not self.training:
            top, left = (h - ch) // 2, (w - cw) // 2
            return image[:, :, top : top + ch, left : left + cw]
        n = image.shape[0]
        tops = torch.randint(0, h - ch + 1, (n,), device=image.device)
        lefts = torch.randint(0, w - cw + 1, (n,), device=image.device)
        rows = tops[:, None] + torch.arange(ch, device=image.device)  # [N, ch]
        cols = lefts[:, None] + torch.arange(cw, device=image.device)  # [N, cw]
        batch = torch.arange(n, device=image.device)[:, None, None]
        # advanced indices around a slice put the broadcast dims first: [N, ch, cw, C]
        crops = image[batch, :, rows[:, :, None], cols[:, None, :]]
        return crops.permute(0, 3, 1, 2)


BACKBONES = ("resnet18", "small_conv")


class ImageObsEncoder(nn.Module):
    """One ResNet-18-GroupNorm (or small conv) + spatial-softmax encoder per camera, plus low-dim keys.

    Images are channels first [N, C, H, W], as the normalizer leaves them (DiffusionPolicy: [0, 1]
    pixels mapped to [-1, 1]). Features are concatenated in the order of ``obs_meta``: each rgb key
    gives ``feature_dim`` values, each low-dim key its flattened size. ``backbone="small_conv"`` is
    ``conv_encoder.SmallConvKeypoints`` with ``conv_widths`` / ``conv_strided`` (sized for CPU training).
    """

    def __init__(
        self,
        obs_meta: Mapping[str, Mapping],
        crop_shape: Sequence[int] | None = None,
        num_kp: int = 32,
        feature_dim: int = 64,
        backbone: str = "resnet18",
        conv_widths: Sequence[int] = (32, 64, 64, 128),
        conv_strided: int = 3,
    ):
        """obs_meta: {key: {"shape": [...], "type": "rgb" | "low_dim"}} (Policy.shape_meta["obs"])."""
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown image backbone {backbone!r}; expected one of {BACKBONES}")
        self.obs_meta = {}
        self.cameras = nn.ModuleDict()
        self.crops = nn.ModuleDict()
        self.output_dim = 0
        for key, meta in obs_meta.items():
            shape = tuple(int(d) for d in meta["shape"])
            kind = meta.get("type", "low_dim")
            self.obs_meta[key] = (shape, kind)
            if kind == "rgb":
                if len(shape) != 3:
                    raise ValueError(f"rgb observation {key!r} must have shape [C, H, W], got {shape}")
                if crop_shape is not None:
                    self.crops[key] = CropRandomizer(shape[1:], crop_shape)
                seen_hw = tuple(crop_shape) if crop_shape is not None else shape[1:]
                if backbone == "small_conv":
                    self.cameras[key] = SmallConvKeypoints(shape[0], num_kp=num_kp, feature_dim=feature_dim,
                                                           widths=conv_widths, n_strided=conv_strided)
                    self.output_dim += feature_dim
                    continue
                if min(seen_hw) <= 32:
                    # ResNet-18 downsamples 32x: a 1-pixel feature map makes spatial softmax constant
                    raise ValueError(
                        f"rgb observation {key!r}: image/crop size {seen_hw} must exceed 32 pixels per side"
                    )
                self.cameras[key] = ResNet18Keypoints(shape[0], num_kp=num_kp, feature_dim=feature_dim)
                self.output_dim += feature_dim
            elif kind == "low_dim":
                self.output_dim += math.prod(shape)
            else:
                raise ValueError(f"observation {key!r} has unknown type {kind!r} (expected 'rgb' or 'low_dim')")
        if not self.cameras:
            raise ValueError("ImageObsEncoder needs at least one 'rgb' observation; use LowDimObsEncoder")

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for key, (shape, kind) in self.obs_meta.items():
            value = check_obs(obs, key, shape)
            if kind == "rgb":
                if key in self.crops:
                    value = self.crops[key](value)  # [N, C, h, w]
                parts.append(self.cameras[key](value))  # [N, feature_dim]
            else:
                parts.append(value.reshape(value.shape[0], -1))
        return torch.cat(parts, dim=-1)  # [N, output_dim]
