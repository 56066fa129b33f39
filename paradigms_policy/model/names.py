"""Observation keys as module / parameter names.

``nn.ModuleDict`` and ``nn.ParameterDict`` refuse names containing ".", but LeRobot's feature
names are dotted (``observation.state``). Such keys are stored escaped, reversibly
("%" -> "%25", "." -> "%2E"); keys without either character are unchanged, so existing
checkpoints keep their state-dict names.
"""

from __future__ import annotations

__all__ = ["module_key", "original_key"]


def module_key(key: str) -> str:
    """An observation key as a ModuleDict / ParameterDict name."""
    return key.replace("%", "%25").replace(".", "%2E")


def original_key(name: str) -> str:
    """Inverse of ``module_key``."""
    return name.replace("%2E", ".").replace("%25", "%")
