"""A randomly initialized checkpoint of a given network shape, built in memory.

Stands in for a trained checkpoint where only the network's size matters (latency on a device),
e.g. DiffusionPolicy's own shape, down_dims 256-512-1024 (about 64M parameters).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["random_checkpoint", "count_parameters"]

SCHEDULER = {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "epsilon",
             "clip_sample": True}


def count_parameters(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def random_checkpoint(network: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """Checkpoint dict of a random network shaped by ``network`` (profile.yaml's ``random_network``).

    Keys of ``network``: obs_shapes, action_dim, horizon, n_obs_steps, n_action_steps, down_dims,
    diffusion_step_embed_dim, kernel_size, n_groups, cond_predict_scale (optional). Its
    normalizer is the identity on [-1, 1], so action and normalized units coincide.
    """
    from paradigms_policy.model.normalizer import LinearNormalizer
    from paradigms_policy.training.network import PolicyNetwork, obs_encoder_spec

    obs_shapes = {str(k): [int(d) for d in v] for k, v in network["obs_shapes"].items()}
    action_dim = int(network["action_dim"])
    shape_meta = {"obs": {k: {"shape": s, "type": "low_dim"} for k, s in obs_shapes.items()},
                  "action": {"shape": [action_dim]}}
    n_obs = int(network["n_obs_steps"])
    obs_dim = sum(math.prod(s) for s in obs_shapes.values())
    down_dims = [int(d) for d in network["down_dims"]]
    model_kwargs = dict(input_dim=action_dim, global_cond_dim=obs_dim * n_obs,
                        diffusion_step_embed_dim=int(network["diffusion_step_embed_dim"]),
                        down_dims=down_dims, kernel_size=int(network["kernel_size"]),
                        n_groups=int(network["n_groups"]),
                        cond_predict_scale=bool(network.get("cond_predict_scale", False)))
    torch.manual_seed(int(seed))
    spec = obs_encoder_spec(shape_meta)
    net = PolicyNetwork(spec, model_kwargs, n_obs)
    unit = {k: np.stack([-np.ones(s, np.float32), np.ones(s, np.float32)]) for k, s in obs_shapes.items()}
    unit["action"] = np.stack([-np.ones(action_dim, np.float32), np.ones(action_dim, np.float32)])
    normalizer = LinearNormalizer().fit(unit)
    n_params = count_parameters(net)
    return {
        "description": f"random network (down_dims={down_dims}, {n_params / 1e6:.2f}M params, seed {seed})",
        "config": {}, "shape_meta": shape_meta, "horizon": int(network["horizon"]), "n_obs_steps": n_obs,
        "n_action_steps": int(network["n_action_steps"]), "model_kwargs": model_kwargs, "obs_encoder": spec,
        "noise_scheduler": dict(SCHEDULER),
        "state_dicts": {"ema_model": net.state_dict()}, "normalizer": normalizer.state_dict(), "training": {},
    }
