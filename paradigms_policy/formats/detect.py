"""Recognize a checkpoint by its content and convert it to our one-file checkpoint dict.

* a directory (or a file in one) with ``config.json`` + ``model.safetensors``: a LeRobot policy;
* a torch zip archive whose pickle names ``paradigms_policy.checkpoint``: ours (plain data,
  ``weights_only`` load);
* any other torch file (zip or legacy pickle): unpickled with the allow-list of ``safe_pickle``
  (or fully when ``trust_checkpoint``) and recognized by its keys: ``cfg`` + ``state_dicts`` is a
  DiffusionPolicy workspace checkpoint.

File extensions are not consulted.
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path
from typing import Any

from ..checkpoint import FORMAT, CheckpointError, load_checkpoint
from . import diffusion_policy_ckpt, lerobot
from .safe_pickle import torch_load

__all__ = ["detect_format", "load_any_checkpoint", "OURS"]

OURS = "paradigms_policy"
_PICKLE_PROTO = 0x80


def _zip_pickle_strings(path: Path) -> set[str] | None:
    """Short strings in a torch zip archive's data.pkl (read with pickletools: nothing runs)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not names:
                return None
            data = archive.read(names[0])
    except (zipfile.BadZipFile, OSError):
        return None
    strings = set()
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if isinstance(arg, str) and len(arg) < 200:
                strings.add(arg)
    except Exception:  # noqa: BLE001 - a damaged pickle is reported by the real load
        pass
    return strings


def detect_format(path: str | Path) -> str:
    """``"lerobot_diffusion"``, ``"paradigms_policy"`` or ``"torch_pickle"`` (to be unpickled and inspected)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if lerobot.find_pretrained_dir(path) is not None:
        return lerobot.FORMAT_NAME
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory without config.json + model.safetensors (nor a "
                              "pretrained_model/ with them): not a LeRobot policy directory")
    if zipfile.is_zipfile(path):
        strings = _zip_pickle_strings(path) or set()
        return OURS if FORMAT in strings else "torch_pickle"
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head[:1] == bytes([_PICKLE_PROTO]):
        return "torch_pickle"  # torch's legacy (pre-1.6) format starts with a pickle
    raise CheckpointError(f"{path} is not a torch checkpoint file (nor a LeRobot policy directory): no "
                          "checkpoint format this package reads")


def load_any_checkpoint(path: str | Path, *, trust_checkpoint: bool = False) -> dict[str, Any]:
    """Our checkpoint dict for ``path`` in any supported format (see module docstring)."""
    path = Path(path)
    kind = detect_format(path)
    if kind == lerobot.FORMAT_NAME:
        return lerobot.convert_directory(lerobot.find_pretrained_dir(path))
    if kind == OURS:
        return load_checkpoint(path, map_location="cpu")
    payload = torch_load(path, trusted=trust_checkpoint)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        return load_checkpoint(path, map_location="cpu")
    if diffusion_policy_ckpt.is_workspace_payload(payload):
        return diffusion_policy_ckpt.convert_payload(payload, path)
    found = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
    raise CheckpointError(f"{path} is a torch file but not a known checkpoint (found {found}; expected a "
                          "paradigms_policy checkpoint or a DiffusionPolicy workspace checkpoint with "
                          "'cfg' and 'state_dicts')")
