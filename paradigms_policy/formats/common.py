"""Pieces shared by the foreign-format converters: errors, noise-scheduler checks, strict weight mapping."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import torch

from ..checkpoint import CheckpointError, check_state_dict
from ..training.network import PolicyNetwork

__all__ = ["UnsupportedCheckpointError", "scheduler_settings", "fit_state_dict", "file_digest"]

_DEFAULT_BETAS = (1e-4, 2e-2)
_STEP_RULE_PREDICTIONS = ("epsilon", "sample")


class UnsupportedCheckpointError(CheckpointError):
    """The checkpoint is readable but uses a feature this package cannot run; the message names it."""


def scheduler_settings(*, num_train_timesteps: Any, beta_schedule: Any, prediction_type: Any, clip_sample: Any,
                       clip_sample_range: Any = 1.0, beta_start: Any = None, beta_end: Any = None,
                       variance_type: Any = None, scheduler: str = "DDPMScheduler",
                       num_inference_steps: Any = None, where: str = "") -> dict[str, Any]:
    """Our ``noise_scheduler`` dict from a diffusers-style configuration; unsupported settings raise."""
    prefix = f"{where}: " if where else ""
    if prediction_type not in _STEP_RULE_PREDICTIONS:
        raise UnsupportedCheckpointError(f"{prefix}prediction_type {prediction_type!r} is not supported "
                                         f"(supported: {list(_STEP_RULE_PREDICTIONS)})")
    if beta_schedule not in ("squaredcos_cap_v2", "linear", "scaled_linear"):
        raise UnsupportedCheckpointError(f"{prefix}beta_schedule {beta_schedule!r} is not supported")
    if beta_schedule != "squaredcos_cap_v2":
        betas = (float(beta_start if beta_start is not None else _DEFAULT_BETAS[0]),
                 float(beta_end if beta_end is not None else _DEFAULT_BETAS[1]))
        if betas != _DEFAULT_BETAS:
            raise UnsupportedCheckpointError(
                f"{prefix}beta_start/beta_end {betas} with a {beta_schedule} schedule are not supported "
                f"(only {_DEFAULT_BETAS})")
    if variance_type not in (None, "fixed_small"):
        raise UnsupportedCheckpointError(f"{prefix}DDPM variance_type {variance_type!r} is not supported "
                                         "(the DDPM step rule is fixed_small)")
    settings = {"num_train_timesteps": int(num_train_timesteps), "beta_schedule": str(beta_schedule),
                "prediction_type": str(prediction_type), "clip_sample": bool(clip_sample),
                "scheduler": scheduler}
    if float(clip_sample_range) != 1.0:
        settings["clip_sample_range"] = float(clip_sample_range)
    if num_inference_steps is not None:
        settings["num_inference_steps"] = int(num_inference_steps)
    return settings


def fit_state_dict(obs_encoder: Mapping[str, Any], model_kwargs: Mapping[str, Any], n_obs_steps: int,
                   state_dict: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Build our network, fill names that alias the same tensor (robomimic registers modules twice),
    and check strictly: every network key present with its shape, no key of ``state_dict`` left over."""
    try:
        network = PolicyNetwork(obs_encoder, model_kwargs, n_obs_steps)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{what}: cannot build the network from its configuration: {exc}") from exc
    groups: dict[int, list[str]] = {}
    for name, tensor in network.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    full = dict(state_dict)
    for names in groups.values():
        given = [n for n in names if n in state_dict]
        if given:
            for name in names:
                full.setdefault(name, state_dict[given[0]])
    check_state_dict(network, full, what)
    network.load_state_dict(full, strict=True)
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def file_digest(path: Path) -> str:
    """sha256 of a file (recorded in converted checkpoints as provenance)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
