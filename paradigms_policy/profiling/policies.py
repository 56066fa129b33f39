"""What is profiled: the checkpoint (identified by file name and sha256) and one Policy per sampler."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Sequence

from paradigms_policy import paths
from paradigms_policy.runtime import default_executor, resolve_device

from .synthetic import count_parameters, random_checkpoint

__all__ = ["describe_checkpoint", "file_sha256", "load_policies", "sampler_of", "sampler_overrides"]


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of a checkpoint directory (a LeRobot ``pretrained_model/``): its files' names and bytes."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            h.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def sampler_overrides(cfg, name: str) -> dict[str, Any]:
    """make_sampler overrides for ``name``: the global tolerances (parallel samplers), then per-name ones.

    A per-name entry may hold ``sampler``: then ``name`` is a label for a variant of that sampler
    (``picard_warm_device: {sampler: picard_warm, rounds_per_sync: 8}``); see ``sampler_of``.
    """
    overrides: dict[str, Any] = {}
    if not sampler_of(cfg, name).endswith("_sequential"):
        if cfg.tolerance is not None:
            overrides["tolerance"] = float(cfg.tolerance)
        if cfg.abs_tolerance is not None:
            overrides["abs_tolerance"] = float(cfg.abs_tolerance)
    per_name = (cfg.sampler_overrides or {}).get(name) or {}
    overrides.update({str(k): v for k, v in dict(per_name).items() if str(k) != "sampler"})
    return overrides


def sampler_of(cfg, name: str) -> str:
    """The registry sampler behind a profiled name: its ``sampler_overrides`` entry's ``sampler``, else itself."""
    per_name = (cfg.sampler_overrides or {}).get(name) or {}
    return str(per_name.get("sampler", name))


def load_policies(cfg, names: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any], Path | None]:
    """({sampler name: Policy}, checkpoint identity, checkpoint file or None), one Policy per sampler.

    Separate Policies (same weights) let the samplers run interleaved cycle by cycle, so a
    change in background load on a shared machine hits all of them alike. The identity is
    ``{"name", "sha256", "parameters"}`` (``"description"`` too for a random network): a file
    is named by its base name and content hash, not by where it lies on this machine.
    """
    from paradigms_policy.formats import load_any_checkpoint
    from paradigms_policy.policy import Policy

    device = resolve_device(cfg.device)
    options = dict(device=device, executor=cfg.executor or default_executor(device), compile=bool(cfg.compile))
    checkpoint = cfg.checkpoint
    path: Path | None = None
    if checkpoint is not None and str(checkpoint).lower() == "random":
        ckpt = random_checkpoint(cfg.random_network, int(cfg.seed))
    else:
        path = Path(checkpoint) if checkpoint is not None else paths.default_checkpoint()
        if path.exists():  # any format: ours, a DiffusionPolicy .ckpt, a LeRobot directory
            ckpt = load_any_checkpoint(path, trust_checkpoint=bool(cfg.get("trust_checkpoint", False)))
        elif checkpoint is not None:
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
        else:
            print(f"[profile] shipped checkpoint {path.name} not found: profiling a random network instead")
            ckpt, path = random_checkpoint(cfg.random_network, int(cfg.seed)), None
    policies = {name: Policy(ckpt, path=path, sampler=sampler_of(cfg, name), **options, **sampler_overrides(cfg, name))
                for name in names}
    n_params = count_parameters(next(iter(policies.values())).network)
    if path is None:
        identity = {"name": "random", "sha256": None, "parameters": n_params, "description": ckpt["description"]}
    else:
        identity = {"name": path.name, "sha256": file_sha256(path), "parameters": n_params}
    return policies, identity, path


def describe_checkpoint(identity: Mapping[str, Any]) -> str:
    """One line for logs and plot titles: name and short hash, or the random network's description."""
    if identity.get("sha256"):
        return f"{identity['name']} (sha256 {identity['sha256'][:12]}, {identity['parameters'] / 1e6:.2f}M params)"
    return str(identity.get("description") or identity["name"])
