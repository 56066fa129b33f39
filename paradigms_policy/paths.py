"""Where the package's shared files (config/, checkpoints/, launch/) live.

In a source checkout (editable install, tests) they sit beside the package; in a ROS 2
install they are under ``share/paradigms_policy`` (setup.py ``data_files``).
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE_NAME = "paradigms_policy"


def share_dir() -> Path:
    """Return the directory holding ``config/``, ``checkpoints/`` and ``launch/``."""
    source_root = Path(__file__).resolve().parent.parent
    if (source_root / "package.xml").is_file():
        return source_root
    installed = Path(sys.prefix) / "share" / PACKAGE_NAME
    if installed.is_dir():
        return installed
    try:  # a sourced ROS 2 workspace
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE_NAME))
    except Exception as exc:  # noqa: BLE001 - any failure means "not installed"
        raise FileNotFoundError(
            f"cannot find the {PACKAGE_NAME} share directory (looked in {source_root} and {installed})"
        ) from exc


def config_dir() -> Path:
    """Hydra and ROS parameter files."""
    return share_dir() / "config"


def checkpoints_dir() -> Path:
    return share_dir() / "checkpoints"


DEFAULT_CHECKPOINT_NAME = "lift_lowdim.pt"


def default_checkpoint() -> Path:
    """The shipped checkpoint every command uses unless told otherwise."""
    return checkpoints_dir() / DEFAULT_CHECKPOINT_NAME
