"""A small convolutional image encoder for CPU training: a few GroupNorm conv layers + spatial softmax.

DiffusionPolicy's image policies use a ResNet-18 per camera (``resnet.ResNet18Keypoints``), about
11M parameters and ~0.6 GFLOPs per 84x84 image: too slow to train on a 2-core CPU in an hour. This
keeps the same head (spatial-softmax keypoints + Linear) on a trunk of ``len(widths)`` 3x3 conv
layers, the first ``n_strided`` of them with stride 2.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .resnet import SpatialSoftmax, group_norm

__all__ = ["SmallConvTrunk", "SmallConvKeypoints"]


class SmallConvTrunk(nn.Module):
    """3x3 conv -> GroupNorm -> ReLU layers: [N, C, H, W] -> [N, widths[-1], H / 2**n_strided, W / 2**n_strided]."""

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (32, 64, 64, 128), n_strided: int = 3):
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be positive channel counts, got {widths}")
        if not 0 <= int(n_strided) <= len(widths):
            raise ValueError(f"n_strided must be in [0, {len(widths)}], got {n_strided}")
        layers: list[nn.Module] = []
        channels = int(in_channels)
        for index, width in enumerate(widths):
            stride = 2 if index < int(n_strided) else 1
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False), group_norm(width), nn.ReLU()]
            channels = width
        self.nets = nn.Sequential(*layers)
        self.out_channels = channels
        self.downsample = 2 ** int(n_strided)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nets(x)


class SmallConvKeypoints(nn.Module):
    """Image -> small conv trunk -> spatial softmax -> Linear: [N, C, H, W] -> [N, feature_dim]."""

    def __init__(self, in_channels: int = 3, num_kp: int = 32, feature_dim: int = 64,
                 widths: Sequence[int] = (32, 64, 64, 128), n_strided: int = 3):
        super().__init__()
        self.backbone = SmallConvTrunk(in_channels, widths, n_strided)
        self.pool = SpatialSoftmax(self.backbone.out_channels, num_kp)
        self.proj = nn.Linear(self.pool.output_dim, feature_dim)
        self.output_dim = feature_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(self.backbone(image)))
