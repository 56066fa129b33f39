"""One-file checkpoints: everything needed to rebuild, resume and deploy a trained policy.

A checkpoint is a ``torch.save`` of a dict of plain data and tensors (loadable with
``weights_only=True``)::

    format          "paradigms_policy.checkpoint"
    version         1
    config          resolved training config (dict)
    shape_meta      {"obs": {key: {"shape": [...], "type": "low_dim"|"rgb"}}, "action": {"shape": [A]}}
    horizon, n_obs_steps, n_action_steps
    model_kwargs    ConditionalUnet1D constructor arguments
    obs_encoder     encoder spec (training.network.obs_encoder_spec)
    noise_scheduler {num_train_timesteps, beta_schedule, prediction_type, clip_sample}
    state_dicts     {"ema_model" (deployed), "model", "optimizer", "lr_scheduler"} (a slim export keeps ema_model only)
    normalizer      LinearNormalizer state dict
    training        {global_step, epoch, losses, wall_time_s, torch_version, seed, ...}
    env_args        (optional) robomimic env metadata {env_name, type, env_kwargs} of the training data
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .model.normalizer import LinearNormalizer
from .training.network import PolicyNetwork

__all__ = [
    "CheckpointError",
    "FORMAT",
    "VERSION",
    "REQUIRED_KEYS",
    "save_checkpoint",
    "load_checkpoint",
    "build_network",
    "build_normalizer",
    "slim_checkpoint",
]

FORMAT = "paradigms_policy.checkpoint"
VERSION = 1
REQUIRED_KEYS = ("config", "shape_meta", "horizon", "n_obs_steps", "n_action_steps", "model_kwargs",
                 "obs_encoder", "noise_scheduler", "state_dicts", "normalizer", "training")
TRAINING_ONLY_STATES = ("model", "optimizer", "lr_scheduler")


class CheckpointError(ValueError):
    """A file is not a usable paradigms_policy checkpoint; the message says why."""


def save_checkpoint(path: str | Path, **fields: Any) -> Path:
    """Write the checkpoint atomically (temp file + rename) so a crash never leaves a torn ``latest.pt``."""
    missing = [key for key in REQUIRED_KEYS if key not in fields]
    if missing:
        raise CheckpointError(f"save_checkpoint: missing fields {missing}")
    if "ema_model" not in fields["state_dicts"]:
        raise CheckpointError("save_checkpoint: state_dicts must contain 'ema_model' (the deployed weights)")
    payload = {"format": FORMAT, "version": VERSION, **fields}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def slim_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """A deployable copy without optimizer state and raw (non-EMA) weights: about a quarter of the size."""
    slim = dict(checkpoint)
    slim["state_dicts"] = {"ema_model": checkpoint["state_dicts"]["ema_model"]}
    slim["training"] = {**checkpoint.get("training", {}), "slim": True}
    return slim


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint; raises CheckpointError naming what is wrong."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a torch checkpoint file (torch.save writes a zip archive; this is not one)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if "Unsupported global" in line]
        reason = lines[0] if lines else str(exc).splitlines()[0]
        raise CheckpointError(
            f"{path} is not a plain-data checkpoint (refusing an unsafe load; a pickled object, not a "
            f"paradigms_policy checkpoint?): {reason}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt archives
        raise CheckpointError(f"{path} is not a torch checkpoint file: {exc}") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is a torch file but holds a {type(payload).__name__}, not a checkpoint dict")
    if payload.get("format") != FORMAT:
        found = payload.get("format", "<no 'format' key>")
        raise CheckpointError(f"{path} is not a paradigms_policy checkpoint: format is {found!r}, expected {FORMAT!r}")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')!r} is not supported (expected {VERSION})")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    if "ema_model" not in payload["state_dicts"]:
        raise CheckpointError(f"{path}: state_dicts has no 'ema_model' weights")
    return payload


def check_state_dict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Compare names and shapes before loading so a mismatch is reported by parameter, not as a wall of text."""
    own = module.state_dict()
    missing = [name for name in own if name not in state_dict]
    unexpected = [name for name in state_dict if name not in own]
    problems = []
    for name, tensor in own.items():
        if name in state_dict and tuple(state_dict[name].shape) != tuple(tensor.shape):
            problems.append(f"{name}: checkpoint {tuple(state_dict[name].shape)} vs config {tuple(tensor.shape)}")
    if problems or missing or unexpected:
        lines = [f"{what} weights do not fit the network built from the checkpoint's config:"]
        lines += [f"  shape mismatch {p}" for p in problems[:10]]
        if len(problems) > 10:
            lines.append(f"  ... and {len(problems) - 10} more shape mismatches")
        if missing:
            lines.append(f"  missing in checkpoint: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            lines.append(f"  not in network: {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        raise CheckpointError("\n".join(lines))


def build_network(checkpoint: Mapping[str, Any], weights: str = "ema_model") -> PolicyNetwork:
    """Rebuild the network from the checkpoint's config and load ``weights`` ("ema_model" or "model")."""
    try:
        network = PolicyNetwork(checkpoint["obs_encoder"], checkpoint["model_kwargs"], checkpoint["n_obs_steps"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot build the network from the checkpoint's config: {exc}") from exc
    state_dicts = checkpoint["state_dicts"]
    if weights not in state_dicts:
        raise CheckpointError(f"checkpoint has no {weights!r} weights; it has {sorted(state_dicts)}")
    check_state_dict(network, state_dicts[weights], weights)
    network.load_state_dict(state_dicts[weights], strict=True)
    return network.eval().requires_grad_(False)


def build_normalizer(checkpoint: Mapping[str, Any]) -> LinearNormalizer:
    normalizer = LinearNormalizer.from_state_dict(checkpoint["normalizer"])
    needed = list(checkpoint["shape_meta"]["obs"]) + ["action"]
    absent = [key for key in needed if key not in normalizer]
    if absent:
        raise CheckpointError(f"checkpoint normalizer lacks keys {absent}")
    return normalizer
