"""Observation encoder with robomimic's module tree, so DiffusionPolicy's image weights load by name.

DiffusionPolicy's hybrid image policy (``DiffusionUnetHybridImagePolicy``) builds robomimic's
``ObservationEncoder``: per camera a ``VisualCore`` = ResNet-18 trunk (``backbone.nets.0..7``, the
torchvision children without avgpool/fc), a spatial-softmax keypoint head (``pool``: a 1x1 conv,
``temperature``, and the coordinate grids ``pos_x``/``pos_y`` as buffers), a flatten and a Linear
(``nets.3``), with a ReLU after each camera's features; low-dim keys are passed through flattened.
The same modules are registered twice (``backbone``/``pool`` and ``nets.0``/``nets.1``), so the state
dict lists them under both names, exactly as DiffusionPolicy's checkpoints do. LeRobot's diffusion
``rgb_encoder`` is the same network (optionally with a resize), so its weights are mapped onto it.

Images are float [N, C, H, W] in the range the checkpoint's normalizer produced. Inference only:
the crop is always a centre crop (torchvision's rounding: top = round((H - h) / 2)).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .names import module_key
from .obs_encoders import check_obs
from .resnet import NORM_LAYERS, BasicBlock

__all__ = ["RobomimicObsEncoder", "VisualCore", "ResNet18Conv", "KeypointSoftmax", "CenterCrop",
           "resnet18_output_hw"]


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def resnet18_output_hw(hw: Sequence[int]) -> tuple[int, int]:
    """Feature-map size of the ResNet-18 trunk for an input of size ``hw``."""
    out = []
    for size in hw:
        size = _conv_out(size, 7, 2, 3)  # conv1
        size = _conv_out(size, 3, 2, 1)  # maxpool
        for _ in range(3):  # layer2..4 downsample with stride-2 3x3 convs
            size = _conv_out(size, 3, 2, 1)
        out.append(size)
    return out[0], out[1]


class ResNet18Conv(nn.Module):
    """torchvision ResNet-18 children [conv1, bn1, relu, maxpool, layer1..4] as ``nets``."""

    def __init__(self, in_channels: int = 3, norm: str = "group"):
        super().__init__()
        if norm not in NORM_LAYERS:
            raise ValueError(f"norm must be one of {sorted(NORM_LAYERS)}, got {norm!r}")
        make_norm = NORM_LAYERS[norm]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False), make_norm(64),
                                   nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1)]
        in_planes = 64
        for idx, planes in enumerate((64, 128, 256, 512)):
            stride = 1 if idx == 0 else 2
            layers.append(nn.Sequential(BasicBlock(in_planes, planes, stride, make_norm),
                                        BasicBlock(planes, planes, 1, make_norm)))
            in_planes = planes
        self.nets = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nets(x)  # [N, 512, h, w]


class KeypointSoftmax(nn.Module):
    """robomimic's SpatialSoftmax: 1x1 conv to ``num_kp`` maps, softmax over pixels, expected (x, y).

    ``reduction`` picks the arithmetic of the expectation: "sum" (robomimic: sum(pos * attention))
    or "matmul" (LeRobot: attention @ grid); both give the same numbers up to float rounding.
    """

    def __init__(self, in_channels: int, feature_hw: Sequence[int], num_kp: int = 32, temperature: float = 1.0,
                 reduction: str = "sum"):
        super().__init__()
        if reduction not in ("sum", "matmul"):
            raise ValueError(f"reduction must be 'sum' or 'matmul', got {reduction!r}")
        self.num_kp = int(num_kp)
        self.reduction = reduction
        self.feature_hw = (int(feature_hw[0]), int(feature_hw[1]))
        h, w = self.feature_hw
        self.nets = nn.Conv2d(in_channels, self.num_kp, kernel_size=1)
        self.register_buffer("temperature", torch.full((1,), float(temperature)))
        # numpy-style float64 grid rounded to float32, as both originals build it
        xs = torch.linspace(-1.0, 1.0, w, dtype=torch.float64)
        ys = torch.linspace(-1.0, 1.0, h, dtype=torch.float64)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("pos_x", grid_x.reshape(1, h * w).to(torch.float32))
        self.register_buffer("pos_y", grid_y.reshape(1, h * w).to(torch.float32))
        self.output_dim = 2 * self.num_kp

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        h, w = self.feature_hw
        if tuple(feats.shape[-2:]) != (h, w):
            raise ValueError(f"keypoint head expects {h}x{w} feature maps, got {tuple(feats.shape[-2:])}")
        maps = self.nets(feats).reshape(-1, h * w)  # [N * K, h * w]
        attention = torch.softmax(maps / self.temperature, dim=-1)
        if self.reduction == "sum":
            x = torch.sum(self.pos_x * attention, dim=1, keepdim=True)
            y = torch.sum(self.pos_y * attention, dim=1, keepdim=True)
            xy = torch.cat([x, y], dim=1)
        else:
            xy = attention @ torch.cat([self.pos_x, self.pos_y], dim=0).T
        return xy.reshape(-1, self.num_kp, 2)  # [N, K, 2]


class VisualCore(nn.Module):
    """ResNet-18 trunk -> keypoints -> flatten -> Linear, registered as robomimic does (twice)."""

    def __init__(self, in_channels: int, input_hw: Sequence[int], num_kp: int = 32, feature_dim: int = 64,
                 norm: str = "group", reduction: str = "sum"):
        super().__init__()
        self.backbone = ResNet18Conv(in_channels, norm)
        self.pool = KeypointSoftmax(512, resnet18_output_hw(input_hw), num_kp, reduction=reduction)
        self.nets = nn.Sequential(self.backbone, self.pool, nn.Flatten(start_dim=1),
                                  nn.Linear(self.pool.output_dim, feature_dim))
        self.output_dim = int(feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nets(x)


class CenterCrop(nn.Module):
    """Centre crop with torchvision's offsets: [N, C, H, W] -> [N, C, h, w]."""

    def __init__(self, crop_hw: Sequence[int]):
        super().__init__()
        self.crop_hw = (int(crop_hw[0]), int(crop_hw[1]))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        (h, w), (ch, cw) = image.shape[-2:], self.crop_hw
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
        return image[..., top: top + ch, left: left + cw]


class RobomimicObsEncoder(nn.Module):
    """DiffusionPolicy's hybrid observation encoder (robomimic tree); features in ``obs_meta`` order.

    obs_meta: {key: {"shape": [...], "type": "rgb" | "low_dim"}}. ``norm``: "group" (DiffusionPolicy's
    ``obs_encoder_group_norm``) or "batch". ``resize_shape`` (LeRobot) resizes bilinearly with
    antialiasing, as torchvision's Resize does on tensors, before the crop.
    """

    def __init__(self, obs_meta: Mapping[str, Mapping], crop_shape: Sequence[int] | None = None,
                 num_kp: int = 32, feature_dim: int = 64, norm: str = "group", feature_activation: str = "relu",
                 reduction: str = "sum", resize_shape: Sequence[int] | None = None):
        super().__init__()
        if feature_activation not in ("relu", "none"):
            raise ValueError(f"feature_activation must be 'relu' or 'none', got {feature_activation!r}")
        self.obs_meta: dict[str, tuple[tuple[int, ...], str]] = {}
        self.obs_nets = nn.ModuleDict()
        self.obs_randomizers = nn.ModuleDict()
        self.activation = nn.ReLU() if feature_activation == "relu" else None
        self.resize_shape = tuple(int(v) for v in resize_shape) if resize_shape is not None else None
        self.output_dim = 0
        for key, meta in obs_meta.items():
            shape = tuple(int(d) for d in meta["shape"])
            kind = meta.get("type", "low_dim")
            self.obs_meta[key] = (shape, kind)
            if kind == "rgb":
                if len(shape) != 3:
                    raise ValueError(f"rgb observation {key!r} must have shape [C, H, W], got {shape}")
                seen = self.resize_shape or shape[1:]
                if crop_shape is not None:
                    crop = tuple(int(v) for v in crop_shape)
                    if crop[0] > seen[0] or crop[1] > seen[1]:
                        raise ValueError(f"crop {list(crop)} does not fit image {key!r} of size {list(seen)}")
                    self.obs_randomizers[module_key(key)] = CenterCrop(crop)
                    seen = crop
                if min(resnet18_output_hw(seen)) < 1:
                    raise ValueError(f"rgb observation {key!r}: image size {list(seen)} is too small for ResNet-18")
                self.obs_nets[module_key(key)] = VisualCore(shape[0], seen, num_kp, feature_dim, norm, reduction)
                self.output_dim += int(feature_dim)
            elif kind == "low_dim":
                self.output_dim += math.prod(shape)
            else:
                raise ValueError(f"observation {key!r} has unknown type {kind!r} (expected 'rgb' or 'low_dim')")

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for key, (shape, kind) in self.obs_meta.items():
            value = check_obs(obs, key, shape)
            if kind == "rgb":
                if self.resize_shape is not None:
                    value = F.interpolate(value, size=self.resize_shape, mode="bilinear", align_corners=False,
                                          antialias=True)
                name = module_key(key)
                if name in self.obs_randomizers:
                    value = self.obs_randomizers[name](value)
                value = self.obs_nets[name](value)
                if self.activation is not None:
                    value = self.activation(value)
            parts.append(value.reshape(value.shape[0], -1))
        return torch.cat(parts, dim=-1)  # [N, output_dim]
