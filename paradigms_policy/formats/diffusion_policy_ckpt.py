"""DiffusionPolicy workspace checkpoints (``.ckpt``) -> our one-file checkpoint dict.

Matched against real-stanford/diffusion_policy (``workspace/base_workspace.py`` ``save_checkpoint``:
``torch.save({'cfg', 'state_dicts': {'model', 'ema_model', 'optimizer'}, 'pickles'}, pickle_module=dill)``;
``policy/diffusion_unet_lowdim_policy.py``, ``policy/diffusion_unet_hybrid_image_policy.py`` with the
robomimic 0.2 encoder; ``model/common/normalizer.py``; the ``train_diffusion_unet_*`` configs).

Supported: ``DiffusionUnetLowdimPolicy`` with ``obs_as_global_cond`` (one observation key ``obs``) and
``DiffusionUnetHybridImagePolicy`` with ``obs_as_global_cond``. Refused with a named reason: the
transformer policies, local conditioning, inpainting of observations, ``pred_action_steps_only``,
other policy classes, schedulers our step rules do not reproduce.
"""

from __future__ import annotations

import ast
import operator
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..checkpoint import CheckpointError
from ..model.normalizer import LinearNormalizer
from .common import UnsupportedCheckpointError, file_digest, fit_state_dict, scheduler_settings

__all__ = ["FORMAT_NAME", "is_workspace_payload", "convert_payload"]

FORMAT_NAME = "diffusion_policy_workspace"
LOWDIM = "diffusion_policy.policy.diffusion_unet_lowdim_policy.DiffusionUnetLowdimPolicy"
HYBRID = "diffusion_policy.policy.diffusion_unet_hybrid_image_policy.DiffusionUnetHybridImagePolicy"
# parameter-free placeholders DiffusionPolicy's modules register (ModuleAttrMixin, LowdimMaskGenerator)
_PLACEHOLDERS = ("_dummy_variable", "mask_generator._dummy_variable")


def is_workspace_payload(payload: Any) -> bool:
    return isinstance(payload, Mapping) and {"cfg", "state_dicts"} <= set(payload)


# ----------------------------------------------------------------------------- config reading
_INTERP = re.compile(r"\$\{([^${}]*)\}")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge}


def _safe_eval(expr: str) -> Any:
    """Arithmetic / comparison / conditional expressions of literals only (DiffusionPolicy's ``${eval:...}``
    strings); anything else is refused rather than evaluated."""
    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else (+value if isinstance(node.op, ast.UAdd) else not value)
        if isinstance(node, ast.BoolOp):
            values = [walk(v) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMPOPS:
            return _CMPOPS[type(node.ops[0])](walk(node.left), walk(node.comparators[0]))
        if isinstance(node, ast.IfExp):
            return walk(node.body) if walk(node.test) else walk(node.orelse)
        raise UnsupportedCheckpointError(f"config expression {expr!r} is not plain arithmetic; not evaluated")
    return walk(ast.parse(expr.strip(), mode="eval"))


def _lookup(root: Mapping[str, Any], dotted: str) -> Any:
    node: Any = root
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise CheckpointError(f"config interpolation ${{{dotted}}} does not resolve")
    return node


def _resolve(value: Any, root: Mapping[str, Any], depth: int = 0) -> Any:
    """Resolve ``${a.b}`` and ``${eval:'...'}`` interpolations (DiffusionPolicy's train.py resolves the
    config before saving, so this is only needed for unresolved configs)."""
    if depth > 20:
        raise CheckpointError("config interpolations nest too deeply (a cycle?)")
    if isinstance(value, Mapping):
        return {k: _resolve(v, root, depth) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, root, depth) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    whole = _INTERP.fullmatch(value)
    if whole and not whole.group(1).startswith("eval:"):
        body = whole.group(1).strip()
        if ":" in body:
            raise UnsupportedCheckpointError(f"config resolver ${{{body}}} is not supported")
        return _resolve(_lookup(root, body), root, depth + 1)

    def substitute(match: re.Match) -> str:
        body = match.group(1).strip()
        if body.startswith("eval:"):
            return repr(_safe_eval(body[5:].strip().strip("'\"")))
        if ":" in body:
            raise UnsupportedCheckpointError(f"config resolver ${{{body}}} is not supported")
        return str(_resolve(_lookup(root, body), root, depth + 1))

    text = value
    while "${" in text:
        new = _INTERP.sub(substitute, text)
        if new == text:
            raise CheckpointError(f"config value {value!r} does not resolve")
        text = new
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def plain_config(cfg: Any) -> dict[str, Any]:
    """The OmegaConf config as plain data with interpolations resolved (without running any code)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        raw = OmegaConf.to_container(cfg, resolve=False)
    elif isinstance(cfg, Mapping):
        raw = dict(cfg)
    else:
        raise CheckpointError(f"'cfg' is a {type(cfg).__name__}, not an OmegaConf config")
    return _resolve(raw, raw)


# ----------------------------------------------------------------------------- conversion
def _require(policy: Mapping[str, Any], key: str, target: str) -> Any:
    if key not in policy:
        raise CheckpointError(f"cfg.policy ({target}) lacks {key!r}")
    return policy[key]


def _model_kwargs(source: Mapping[str, Any], action_dim: int, global_cond_dim: int) -> dict[str, Any]:
    return {"input_dim": int(action_dim), "local_cond_dim": None, "global_cond_dim": int(global_cond_dim),
            "diffusion_step_embed_dim": int(source.get("diffusion_step_embed_dim", 256)),
            "down_dims": [int(d) for d in source.get("down_dims", (256, 512, 1024))],
            "kernel_size": int(source.get("kernel_size", 5)), "n_groups": int(source.get("n_groups", 8)),
            "cond_predict_scale": bool(source.get("cond_predict_scale", False))}


def _check_conditioning(policy: Mapping[str, Any], target: str) -> None:
    if policy.get("obs_as_local_cond", False):
        raise UnsupportedCheckpointError(f"{target} with obs_as_local_cond=True (local conditioning) is not supported; "
                                         "only global conditioning (obs_as_global_cond=True) runs here")
    if not policy.get("obs_as_global_cond", False):
        raise UnsupportedCheckpointError(f"{target} with obs_as_global_cond=False (inpainting of observations) is "
                                         "not supported; only global conditioning runs here")
    if policy.get("pred_action_steps_only", False):
        raise UnsupportedCheckpointError(f"{target} with pred_action_steps_only=True is not supported")


def _lowdim(policy: Mapping[str, Any]) -> tuple[dict, dict, dict, int]:
    model = dict(_require(policy, "model", LOWDIM))
    obs_dim, action_dim = int(_require(policy, "obs_dim", LOWDIM)), int(_require(policy, "action_dim", LOWDIM))
    n_obs_steps = int(_require(policy, "n_obs_steps", LOWDIM))
    if model.get("local_cond_dim") is not None:
        raise UnsupportedCheckpointError(f"{LOWDIM}: a UNet with local_cond_dim (local conditioning) is not supported")
    shape_meta = {"obs": {"obs": {"shape": [obs_dim], "type": "low_dim"}}, "action": {"shape": [action_dim]}}
    encoder = {"type": "low_dim", "obs_shapes": {"obs": [obs_dim]}}
    start = n_obs_steps - 1 if policy.get("oa_step_convention", False) else n_obs_steps
    return shape_meta, encoder, _model_kwargs(model, action_dim, obs_dim * n_obs_steps), start


def _hybrid(policy: Mapping[str, Any], weights: Mapping[str, torch.Tensor]) -> tuple[dict, dict, dict, int]:
    shape_meta = _require(policy, "shape_meta", HYBRID)
    n_obs_steps = int(_require(policy, "n_obs_steps", HYBRID))
    obs_meta = {}
    for key, meta in shape_meta["obs"].items():
        kind = meta.get("type", "low_dim")
        if kind not in ("rgb", "low_dim"):
            raise UnsupportedCheckpointError(f"{HYBRID}: observation {key!r} of type {kind!r} is not supported")
        obs_meta[key] = {"shape": [int(d) for d in meta["shape"]], "type": kind}
    action_shape = [int(d) for d in shape_meta["action"]["shape"]]
    if len(action_shape) != 1:
        raise UnsupportedCheckpointError(f"{HYBRID}: action shape {action_shape} is not one-dimensional")
    cameras = [k for k, m in obs_meta.items() if m["type"] == "rgb"]
    encoder: dict[str, Any]
    if cameras:
        first = f"obs_encoder.obs_nets.{cameras[0]}"
        kp, proj = weights.get(f"{first}.pool.nets.weight"), weights.get(f"{first}.nets.3.weight")
        if kp is None or proj is None:
            raise CheckpointError(f"{HYBRID}: weights lack the robomimic encoder of camera {cameras[0]!r} "
                                  f"({first}.pool.nets.weight / {first}.nets.3.weight)")
        crop = policy.get("crop_shape")
        encoder = {"type": "robomimic", "obs_meta": obs_meta, "crop_shape": list(crop) if crop is not None else None,
                   "num_kp": int(kp.shape[0]), "feature_dim": int(proj.shape[0]),
                   "norm": "group" if policy.get("obs_encoder_group_norm", False) else "batch",
                   "feature_activation": "relu", "reduction": "sum"}
        obs_dim = sum(int(proj.shape[0]) if m["type"] == "rgb" else int(torch.Size(m["shape"]).numel())
                      for m in obs_meta.values())
    else:
        encoder = {"type": "low_dim", "obs_shapes": {k: m["shape"] for k, m in obs_meta.items()}}
        obs_dim = sum(int(torch.Size(m["shape"]).numel()) for m in obs_meta.values())
    shape = {"obs": obs_meta, "action": {"shape": action_shape}}
    return shape, encoder, _model_kwargs(policy, action_shape[0], obs_dim * n_obs_steps), n_obs_steps - 1


def convert_payload(payload: Mapping[str, Any], path: str | Path | None = None) -> dict[str, Any]:
    """A loaded workspace payload -> our checkpoint dict (see ``paradigms_policy.checkpoint``)."""
    where = str(path) if path is not None else "DiffusionPolicy checkpoint"
    cfg = plain_config(payload["cfg"])
    policy = cfg.get("policy")
    if not isinstance(policy, Mapping) or "_target_" not in policy:
        raise CheckpointError(f"{where}: cfg has no policy._target_")
    target = str(policy["_target_"])
    if "transformer" in target.lower():
        raise UnsupportedCheckpointError(f"{where}: {target} (the transformer denoiser) is not supported; "
                                         "only the ConditionalUnet1D policies run here")
    if target not in (LOWDIM, HYBRID):
        raise UnsupportedCheckpointError(f"{where}: policy {target} is not supported; supported: {LOWDIM}, {HYBRID}")
    _check_conditioning(policy, target)
    use_ema = bool(cfg.get("training", {}).get("use_ema", False))
    weights_name = "ema_model" if use_ema else "model"
    state_dicts = payload["state_dicts"]
    if weights_name not in state_dicts:
        raise CheckpointError(f"{where}: cfg.training.use_ema={use_ema} but state_dicts has no {weights_name!r} "
                              f"(it has {sorted(state_dicts)})")
    weights = dict(state_dicts[weights_name])

    if target == LOWDIM:
        shape_meta, encoder, model_kwargs, action_start = _lowdim(policy)
    else:
        shape_meta, encoder, model_kwargs, action_start = _hybrid(policy, weights)
    n_obs_steps = int(policy["n_obs_steps"])

    sched_cfg = dict(_require(policy, "noise_scheduler", target))
    sched_class = str(sched_cfg.get("_target_", "")).rsplit(".", 1)[-1] or "DDPMScheduler"
    if sched_class not in ("DDPMScheduler", "DDIMScheduler"):
        raise UnsupportedCheckpointError(f"{where}: noise scheduler {sched_class} is not supported")
    noise_scheduler = scheduler_settings(
        num_train_timesteps=sched_cfg.get("num_train_timesteps", 1000),
        beta_schedule=sched_cfg.get("beta_schedule", "linear"),
        prediction_type=sched_cfg.get("prediction_type", "epsilon"), clip_sample=sched_cfg.get("clip_sample", True),
        beta_start=sched_cfg.get("beta_start"), beta_end=sched_cfg.get("beta_end"),
        variance_type=sched_cfg.get("variance_type") if sched_class == "DDPMScheduler" else None,
        scheduler=sched_class, num_inference_steps=policy.get("num_inference_steps"), where=where)

    normalizer_sd = {k[len("normalizer."):]: v for k, v in weights.items() if k.startswith("normalizer.")}
    network_sd = {k: v for k, v in weights.items() if not k.startswith("normalizer.") and k not in _PLACEHOLDERS}
    network_weights = fit_state_dict(encoder, model_kwargs, n_obs_steps, network_sd, f"{where} ({weights_name})")
    try:
        normalizer = LinearNormalizer.from_state_dict(normalizer_sd)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: normalizer does not load: {exc}") from exc
    absent = [k for k in [*shape_meta["obs"], "action"] if k not in normalizer]
    if absent:
        raise CheckpointError(f"{where}: the normalizer (normalizer.params_dict.*) lacks keys {absent}")

    pickles = payload.get("pickles", {})
    source = {"format": FORMAT_NAME, "path": str(path) if path is not None else None, "policy": target,
              "weights": weights_name, "scheduler": sched_class,
              "state_dicts": sorted(state_dicts), "pickles": sorted(pickles)}
    if path is not None and Path(path).is_file():
        source["sha256"] = file_digest(Path(path))
    if target == HYBRID and not policy.get("eval_fixed_crop", False) and policy.get("crop_shape") is not None:
        source["note"] = ("eval_fixed_crop=False: DiffusionPolicy crops images at random even at inference; "
                          "this package takes the centre crop")
    return {
        "config": cfg, "shape_meta": shape_meta, "horizon": int(policy["horizon"]), "n_obs_steps": n_obs_steps,
        "n_action_steps": int(policy["n_action_steps"]), "action_start": int(action_start),
        "model_kwargs": model_kwargs, "obs_encoder": encoder, "noise_scheduler": noise_scheduler,
        "state_dicts": {"ema_model": network_weights}, "normalizer": normalizer.state_dict(),
        "training": {"source_format": FORMAT_NAME, "source_weights": weights_name},
        "source": source,
    }
