"""Foreign checkpoint formats (DiffusionPolicy workspace ``.ckpt``, LeRobot diffusion policies) mapped onto
our one-file checkpoint dict, so ``Policy`` needs nothing format-specific. See ``detect.load_any_checkpoint``."""

from .common import UnsupportedCheckpointError
from .detect import detect_format, load_any_checkpoint
from .safe_pickle import UnsafeCheckpointError

__all__ = ["load_any_checkpoint", "detect_format", "UnsafeCheckpointError", "UnsupportedCheckpointError"]
