"""ResNet-18 convolutional trunk with GroupNorm, plus a spatial-softmax keypoint head.

GroupNorm (groups = channels // 16) replaces BatchNorm as in DiffusionPolicy's vision
encoders: batch statistics are unreliable with small batches and under EMA weights.
Layer names follow torchvision's resnet18 (conv1, bn1, layer1..4, downsample) so weights can
be mapped, though the norm layers are GroupNorm.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["group_norm", "batch_norm", "NORM_LAYERS", "BasicBlock", "ResNet18Trunk", "SpatialSoftmax",
           "ResNet18Keypoints"]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 16 channels per group (at least one group)."""
    return nn.GroupNorm(max(1, channels // 16), channels)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm (torchvision's default), used in eval mode with its running statistics."""
    return nn.BatchNorm2d(channels)


NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {"group": group_norm, "batch": batch_norm}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34 block)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 norm: Callable[[int], nn.Module] = group_norm):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), norm(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class ResNet18Trunk(nn.Module):
    """ResNet-18 without avgpool/fc: [N, C, H, W] -> [N, 512, ceil(H/32), ceil(W/32)]."""

    out_channels = 512

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = group_norm(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = (64, 128, 256, 512)
        in_planes = 64
        for idx, planes in enumerate(widths):
            stride = 1 if idx == 0 else 2
            layer = nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes))
            setattr(self, f"layer{idx + 1}", layer)
            in_planes = planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))  # [N, 64, H/4, W/4]
        x = self.layer1(x)
        x = self.layer2(x)  # /8
        x = self.layer3(x)  # /16
        return self.layer4(x)  # [N, 512, H/32, W/32]


class SpatialSoftmax(nn.Module):
    """Expected image coordinates of learned keypoint heatmaps.

    A 1x1 conv maps features to ``num_kp`` heatmaps; a softmax over each map gives a
    distribution whose mean (x, y) in [-1, 1] is the keypoint: [N, C, H, W] -> [N, 2*num_kp].
    """

    def __init__(self, in_channels: int, num_kp: int = 32, temperature: float = 1.0):
        super().__init__()
        self.num_kp = num_kp
        self.temperature = temperature
        self.nets = nn.Conv2d(in_channels, num_kp, kernel_size=1)
        self.output_dim = 2 * num_kp

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        n, _, h, w = feats.shape
        maps = self.nets(feats).reshape(n, self.num_kp, h * w)  # [N, K, H*W]
        attention = torch.softmax(maps / self.temperature, dim=-1)
        ys = torch.linspace(-1.0, 1.0, h, device=feats.device, dtype=feats.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=feats.device, dtype=feats.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        pos = torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=-1)  # [H*W, 2]
        keypoints = attention @ pos  # [N, K, 2]
        return keypoints.reshape(n, self.output_dim)


class ResNet18Keypoints(nn.Module):
    """Image -> ResNet-18 (GroupNorm) -> spatial softmax -> Linear: [N,C,H,W] -> [N, feature_dim]."""

    def __init__(self, in_channels: int = 3, num_kp: int = 32, feature_dim: int = 64):
        super().__init__()
        self.backbone = ResNet18Trunk(in_channels)
        self.pool = SpatialSoftmax(ResNet18Trunk.out_channels, num_kp)
        self.proj = nn.Linear(self.pool.output_dim, feature_dim)
        self.output_dim = feature_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(self.backbone(image)))
