"""LeRobot diffusion policies (``pretrained_model/``) -> our one-file checkpoint dict.

Matched against huggingface/lerobot ``policies/diffusion/{configuration,modeling}_diffusion.py`` of
v0.4.4 (and the defaults of the newest tree: horizon 64, n_action_steps 32, BatchNorm, one encoder
per camera), ``processor/normalize_processor.py`` (0.4: stats in
``policy_{pre,post}processor_step_*_{normalizer,unnormalizer}_processor.safetensors``, flat
``<feature>.<stat>`` keys) and ``policies/normalize.py`` of v0.3.3 (older: in-model buffers
``normalize_inputs.buffer_<feature with . as _>.<stat>``, ``unnormalize_outputs.*``).

A directory holds ``config.json`` and ``model.safetensors`` (plain tensors, no code runs on load).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..checkpoint import CheckpointError
from ..model.normalizer import LinearNormalizer
from .common import UnsupportedCheckpointError, file_digest, fit_state_dict, scheduler_settings

__all__ = ["FORMAT_NAME", "find_pretrained_dir", "convert_directory", "map_unet_key", "read_safetensors"]

FORMAT_NAME = "lerobot_diffusion"
STATE, ENV = "observation.state", "observation.environment_state"
_EPS = 1e-8  # LeRobot's normalization epsilon (both layouts)
_NORM_MODES = ("MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10", "IDENTITY")
_RANGE_STATS = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (a header and raw buffers: nothing is executed)."""
    try:
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover - safetensors is an install requirement
        raise CheckpointError("reading LeRobot checkpoints needs the 'safetensors' package") from exc
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc


def find_pretrained_dir(path: Path) -> Path | None:
    """The directory with config.json + model.safetensors for ``path`` (that dir, its ``pretrained_model/``,
    or the dir of a given config.json / model.safetensors), or None."""
    candidates = [path.parent] if path.is_file() else [path, path / "pretrained_model"]
    for cand in candidates:
        if (cand / "config.json").is_file() and (cand / "model.safetensors").is_file():
            return cand
    return None


# ----------------------------------------------------------------------------- weights
_DOWNUP_RESAMPLE = re.compile(r"^(down_modules|up_modules)\.(\d+)\.2\.(weight|bias)$")
_RES_CONV = re.compile(r"\.conv([12])\.")


def map_unet_key(key: str) -> str:
    """LeRobot ``diffusion.unet`` name (without prefix) -> DiffusionPolicy's ConditionalUnet1D name."""
    key = _DOWNUP_RESAMPLE.sub(r"\1.\2.2.conv.\3", key)  # no `.conv` on LeRobot's resampling layers
    return _RES_CONV.sub(lambda m: f".blocks.{int(m.group(1)) - 1}.", key)  # conv1/conv2 -> blocks.0/blocks.1


def _map_rgb_encoder(sub: str, prefix: str, out: dict[str, torch.Tensor], tensor: torch.Tensor) -> None:
    """One LeRobot rgb_encoder tensor (name after ``rgb_encoder[.i].``) onto the robomimic tree at ``prefix``."""
    if sub.startswith("backbone."):
        out[f"{prefix}.backbone.nets.{sub[len('backbone.'):]}"] = tensor
    elif sub in ("pool.nets.weight", "pool.nets.bias"):
        out[f"{prefix}.{sub}"] = tensor
    elif sub == "pool.pos_grid":  # [h*w, 2] -> robomimic's pos_x / pos_y [1, h*w]
        out[f"{prefix}.pool.pos_x"] = tensor[:, 0].reshape(1, -1).clone()
        out[f"{prefix}.pool.pos_y"] = tensor[:, 1].reshape(1, -1).clone()
        out[f"{prefix}.pool.temperature"] = torch.ones(1)  # LeRobot's softmax has no temperature
    elif sub in ("out.weight", "out.bias"):
        out[f"{prefix}.nets.3.{sub[len('out.'):]}"] = tensor
    else:
        raise CheckpointError(f"unexpected LeRobot rgb_encoder tensor {sub!r}")


def _map_weights(tensors: Mapping[str, torch.Tensor], cameras: list[str], separate: bool) -> tuple[dict, list[str]]:
    """(our network state dict, names left for the normalizer). Unknown names raise."""
    from ..model.names import module_key

    out: dict[str, torch.Tensor] = {}
    leftover = []
    for key, tensor in tensors.items():
        if key.startswith("diffusion.unet."):
            out["model." + map_unet_key(key[len("diffusion.unet."):])] = tensor
        elif key.startswith("diffusion.rgb_encoder."):
            sub = key[len("diffusion.rgb_encoder."):]
            if separate:
                index, _, sub = sub.partition(".")
                if not index.isdigit() or int(index) >= len(cameras):
                    raise CheckpointError(f"LeRobot weight {key} names camera encoder {index}, the config has "
                                          f"{len(cameras)} camera(s)")
                targets = [cameras[int(index)]]
            else:
                targets = cameras  # one shared encoder: every camera gets the same weights
            for cam in targets:
                _map_rgb_encoder(sub, f"obs_encoder.obs_nets.{module_key(cam)}", out, tensor)
        elif key.split(".", 1)[0] in ("normalize_inputs", "normalize_targets", "unnormalize_outputs"):
            leftover.append(key)
        else:
            raise CheckpointError(f"LeRobot weight {key} is not part of a diffusion policy this package maps")
    return out, leftover


# ----------------------------------------------------------------------------- normalization
def _processor_stats(root: Path, json_name: str, registry: str) -> dict[str, dict[str, torch.Tensor]] | None:
    """{feature: {stat: tensor}} from a 0.4-style processor, or None if the directory has none."""
    config_path = root / json_name
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from exc
    for step in config.get("steps", []):
        if step.get("registry_name") == registry and step.get("state_file"):
            flat = read_safetensors(root / step["state_file"])
            stats: dict[str, dict[str, torch.Tensor]] = {}
            for name, tensor in flat.items():
                feature, _, stat = name.rpartition(".")
                stats.setdefault(feature, {})[stat] = tensor
            return stats
    return {}


def _buffer_stats(leftover: Mapping[str, torch.Tensor], module: str, features: list[str]) -> dict[str, dict]:
    """{feature: {stat: tensor}} from the pre-0.4 in-model buffers of ``module``."""
    stats: dict[str, dict[str, torch.Tensor]] = {}
    for feature in features:
        prefix = f"{module}.buffer_{feature.replace('.', '_')}."
        found = {k[len(prefix):]: v for k, v in leftover.items() if k.startswith(prefix)}
        if found:
            stats[feature] = found
    return stats


def _affine(feature: str, mode: str, stats: Mapping[str, torch.Tensor], shape: list[int], output: bool,
            processor: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], list[str]]:
    """(scale, offset, input stats, notes) reproducing LeRobot's (un)normalization as y = x * scale + offset.

    Inputs use the normalize formula, the action the unnormalize one (they differ by LeRobot's eps).
    Per-channel image stats [C, 1, 1] are expanded to [C * H * W].
    """
    notes: list[str] = []
    numel = math.prod(shape)
    def full(t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float32)
        if t.numel() == numel:
            return t.reshape(-1)
        try:  # e.g. per-channel image stats [C, 1, 1] -> [C, H, W]
            return t.expand(*shape).reshape(-1)
        except RuntimeError as exc:
            raise CheckpointError(
                f"LeRobot stats of {feature!r} have shape {list(t.shape)}, the feature {shape}") from exc

    def need(*names: str) -> list[torch.Tensor]:
        absent = [n for n in names if n not in stats]
        if absent:
            raise CheckpointError(f"LeRobot normalization of {feature!r} ({mode}) lacks stats {absent}; "
                                  f"found {sorted(stats)}")
        return [full(stats[n]) for n in names]

    if mode == "IDENTITY":
        scale, offset = torch.ones(numel), torch.zeros(numel)
    elif mode == "MEAN_STD":
        mean, std = need("mean", "std")
        scale = 1.0 / std if output else 1.0 / (std + _EPS)
        if output and bool((std == 0).any()):
            scale = 1.0 / (std + _EPS)
            notes.append(f"{feature}: std is 0 in some dims; unnormalizing with std + eps there")
        offset = -mean * scale
    elif mode in _RANGE_STATS:
        low, high = need(*_RANGE_STATS[mode])
        span = high - low
        if processor:  # 0.4 processor: a zero span is replaced by eps, same both ways
            span = torch.where(span == 0, torch.full_like(span, _EPS), span)
        elif not output:  # pre-0.4 buffers: (x - min) / (max - min + eps) on the way in only
            span = span + _EPS
        elif bool((span == 0).any()):
            span = span + _EPS
            notes.append(f"{feature}: max == min in some dims; unnormalizing with eps there")
        scale = 2.0 / span
        offset = -1.0 - low * scale
    else:
        raise UnsupportedCheckpointError(f"LeRobot normalization mode {mode!r} of {feature!r} is not supported")

    input_stats = {}
    for name in ("min", "max", "mean", "std"):
        if name in stats:
            input_stats[name] = full(stats[name])
    if len(input_stats) < 4:
        derived = []
        if "mean" not in input_stats:
            input_stats["mean"] = ((input_stats["min"] + input_stats["max"]) / 2 if {"min", "max"} <= set(input_stats)
                                   else -offset / scale)
            derived.append("mean")
        if "std" not in input_stats:
            input_stats["std"] = ((input_stats["max"] - input_stats["min"]) / math.sqrt(12.0)
                                  if {"min", "max"} <= set(input_stats) else 1.0 / scale)
            derived.append("std")
        for name, sign in (("min", -1.0), ("max", 1.0)):
            if name not in input_stats:
                input_stats[name] = input_stats["mean"] + sign * math.sqrt(3.0) * input_stats["std"]
                derived.append(name)
        notes.append(f"{feature}: input stats {derived} derived (not in the checkpoint)")
    return scale, offset, input_stats, notes


# ----------------------------------------------------------------------------- conversion
def _features(config: Mapping[str, Any], key: str) -> dict[str, dict[str, Any]]:
    features = config.get(key)
    if not isinstance(features, Mapping):
        raise CheckpointError(f"LeRobot config.json has no {key!r}")
    return {name: {"type": str(ft.get("type")), "shape": [int(d) for d in ft.get("shape", [])]}
            for name, ft in features.items()}


def convert_directory(root: Path) -> dict[str, Any]:
    """A LeRobot ``pretrained_model`` directory -> our checkpoint dict."""
    config_path = root / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from exc
    kind = config.get("type")
    if kind is not None and kind != "diffusion":
        raise UnsupportedCheckpointError(f"{root}: LeRobot policy type {kind!r} is not supported (only 'diffusion')")
    if kind is None and not {"down_dims", "noise_scheduler_type"} <= set(config):
        raise UnsupportedCheckpointError(f"{root}: config.json is not a LeRobot diffusion policy config "
                                         "(no type, down_dims or noise_scheduler_type)")
    inputs, outputs = _features(config, "input_features"), _features(config, "output_features")
    if set(outputs) != {"action"} or len(outputs["action"]["shape"]) != 1:
        raise UnsupportedCheckpointError(f"{root}: output features {outputs} are not one 1-d 'action'")
    if STATE not in inputs:
        raise CheckpointError(
            f"{root}: LeRobot diffusion policies need {STATE!r}; the config's inputs are {sorted(inputs)}")
    cameras = [k for k, ft in inputs.items() if ft["type"] == "VISUAL"]
    unknown = [k for k, ft in inputs.items() if ft["type"] not in ("STATE", "VISUAL", "ENV")]
    if unknown:
        raise UnsupportedCheckpointError(f"{root}: input features {unknown} of types "
                                         f"{[inputs[k]['type'] for k in unknown]} are not supported")
    if not cameras and ENV not in inputs:
        raise CheckpointError(f"{root}: a LeRobot diffusion policy needs a camera or {ENV!r}")
    # global condition per step: [state, camera features (config order), environment state]
    order = [STATE, *cameras] + ([ENV] if ENV in inputs else [])
    obs_meta = {k: {"shape": inputs[k]["shape"], "type": "rgb" if k in cameras else "low_dim"} for k in order}
    action_dim = outputs["action"]["shape"][0]
    n_obs_steps, horizon = int(config.get("n_obs_steps", 2)), int(config.get("horizon", 16))
    n_action_steps = int(config.get("n_action_steps", 8))

    separate = bool(config.get("use_separate_rgb_encoder_per_camera", False))
    encoder: dict[str, Any]
    if cameras:
        if config.get("vision_backbone", "resnet18") != "resnet18":
            raise UnsupportedCheckpointError(f"{root}: vision_backbone {config.get('vision_backbone')!r} is not "
                                             "supported (only resnet18)")
        num_kp = int(config.get("spatial_softmax_num_keypoints", 32))
        crop, resize = config.get("crop_shape"), config.get("resize_shape")
        encoder = {"type": "robomimic", "obs_meta": obs_meta, "crop_shape": list(crop) if crop else None,
                   "num_kp": num_kp, "feature_dim": 2 * num_kp,
                   "norm": "group" if config.get("use_group_norm", False) else "batch",
                   "feature_activation": "relu", "reduction": "matmul",
                   "resize_shape": list(resize) if resize else None}
        env_dim = inputs[ENV]["shape"][0] if ENV in inputs else 0
        obs_dim = inputs[STATE]["shape"][0] + 2 * num_kp * len(cameras) + env_dim
    else:
        encoder = {"type": "low_dim", "obs_shapes": {k: m["shape"] for k, m in obs_meta.items()}}
        obs_dim = sum(math.prod(m["shape"]) for m in obs_meta.values())
    model_kwargs = {"input_dim": action_dim, "local_cond_dim": None, "global_cond_dim": obs_dim * n_obs_steps,
                    "diffusion_step_embed_dim": int(config.get("diffusion_step_embed_dim", 128)),
                    "down_dims": [int(d) for d in config.get("down_dims", (512, 1024, 2048))],
                    "kernel_size": int(config.get("kernel_size", 5)), "n_groups": int(config.get("n_groups", 8)),
                    "cond_predict_scale": bool(config.get("use_film_scale_modulation", True))}
    scheduler_type = config.get("noise_scheduler_type", "DDPM")
    if scheduler_type not in ("DDPM", "DDIM"):
        raise UnsupportedCheckpointError(f"{root}: noise_scheduler_type {scheduler_type!r} is not supported")
    noise_scheduler = scheduler_settings(
        num_train_timesteps=config.get("num_train_timesteps", 100),
        beta_schedule=config.get("beta_schedule", "squaredcos_cap_v2"),
        prediction_type=config.get("prediction_type", "epsilon"), clip_sample=config.get("clip_sample", True),
        clip_sample_range=config.get("clip_sample_range", 1.0), beta_start=config.get("beta_start"),
        beta_end=config.get("beta_end"), scheduler=f"{scheduler_type}Scheduler",
        num_inference_steps=config.get("num_inference_steps"), where=str(root))

    tensors = read_safetensors(root / "model.safetensors")
    mapped, leftover_names = _map_weights(tensors, cameras, separate)
    network_weights = fit_state_dict(encoder, model_kwargs, n_obs_steps, mapped, f"{root}/model.safetensors")

    # normalization: 0.4 processor files first, else the older in-model buffers
    leftover = {k: tensors[k] for k in leftover_names}
    pre = _processor_stats(root, "policy_preprocessor.json", "normalizer_processor")
    post = _processor_stats(root, "policy_postprocessor.json", "unnormalizer_processor")
    processor = pre is not None or post is not None
    if processor:
        layout = "processor"
        if leftover:
            raise CheckpointError(f"{root}: has processor files and in-model normalization buffers "
                                  f"({sorted(leftover)[:3]} ...); which one applies is ambiguous")
        in_stats, out_stats = pre or {}, post or {}
    elif leftover:
        layout = "in_model_buffers"
        in_stats = _buffer_stats(leftover, "normalize_inputs", list(inputs))
        out_stats = _buffer_stats(leftover, "unnormalize_outputs", ["action"])
        known = {f"{m}.buffer_{f.replace('.', '_')}.{s}" for m, feats in
                 (("normalize_inputs", inputs), ("normalize_targets", outputs), ("unnormalize_outputs", outputs))
                 for f in feats for s in ("min", "max", "mean", "std")}
        unused = sorted(set(leftover) - known)
        if unused:
            raise CheckpointError(f"{root}: normalization buffers {unused[:5]} match no feature of the config")
    else:
        raise CheckpointError(f"{root}: no normalization statistics: neither policy_preprocessor.json / "
                              "policy_postprocessor.json nor normalize_inputs.* buffers in model.safetensors")
    mapping = {str(k): str(v) for k, v in config.get("normalization_mapping", {}).items()}
    for ftype, mode in mapping.items():
        if mode not in _NORM_MODES:
            raise UnsupportedCheckpointError(f"{root}: normalization mode {mode!r} for {ftype} is not supported")
    normalizer = LinearNormalizer()
    notes: list[str] = []
    for feature, ft, stats_table, output in [*((k, inputs[k], in_stats, False) for k in order),
                                             ("action", outputs["action"], out_stats, True)]:
        mode = mapping.get(ft["type"], "IDENTITY")
        stats = stats_table.get(feature, {})
        scale, offset, input_stats, more = _affine(feature, mode, stats, ft["shape"], output, processor)
        normalizer.set_affine(feature, scale, offset, input_stats)
        notes += more

    source = {"format": FORMAT_NAME, "path": str(root), "normalization": layout,
              "lerobot_type": kind or "diffusion (no type field)", "normalization_mapping": mapping,
              "sha256": file_digest(root / "model.safetensors")}
    if notes:
        source["notes"] = notes
    shape_meta = {"obs": obs_meta, "action": {"shape": [action_dim]}}
    return {
        "config": config, "shape_meta": shape_meta, "horizon": horizon, "n_obs_steps": n_obs_steps,
        "n_action_steps": n_action_steps, "action_start": n_obs_steps - 1, "model_kwargs": model_kwargs,
        "obs_encoder": encoder, "noise_scheduler": noise_scheduler, "state_dicts": {"ema_model": network_weights},
        "normalizer": normalizer.state_dict(), "training": {"source_format": FORMAT_NAME}, "source": source,
    }
