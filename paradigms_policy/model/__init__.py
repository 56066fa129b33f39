"""Networks: DiffusionPolicy's ConditionalUnet1D, observation encoders and the normalizer."""

from .conditional_unet1d import ConditionalResidualBlock1D, ConditionalUnet1D
from .normalizer import LinearNormalizer, SingleFieldNormalizer
from .obs_encoders import CropRandomizer, ImageObsEncoder, LowDimObsEncoder
from .resnet import ResNet18Keypoints, ResNet18Trunk, SpatialSoftmax

__all__ = [
    "ConditionalUnet1D",
    "ConditionalResidualBlock1D",
    "LinearNormalizer",
    "SingleFieldNormalizer",
    "LowDimObsEncoder",
    "ImageObsEncoder",
    "CropRandomizer",
    "ResNet18Trunk",
    "ResNet18Keypoints",
    "SpatialSoftmax",
]
