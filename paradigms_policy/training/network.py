"""The trainable part of a DiffusionPolicy: observation encoder + ConditionalUnet1D, and its training loss.

Conditioning follows DiffusionPolicy with ``obs_as_global_cond``: the normalized observations of
the ``n_obs_steps`` most recent steps are encoded per step and flattened (time-major) into one
global condition vector [B, n_obs_steps * D]; the UNet denoises the whole action horizon.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.schedules import make_schedule
from ..model.conditional_unet1d import ConditionalUnet1D
from ..model.obs_encoders import ImageObsEncoder, LowDimObsEncoder
from ..model.robomimic_encoder import RobomimicObsEncoder

__all__ = ["PolicyNetwork", "build_obs_encoder", "obs_encoder_spec", "NoiseAdder", "DiffusionLoss"]


def obs_encoder_spec(shape_meta: Mapping[str, Any], **image_kwargs: Any) -> dict[str, Any]:
    """A plain-data description of the encoder, stored in checkpoints so it can be rebuilt."""
    obs_meta = {key: {"shape": list(meta["shape"]), "type": meta.get("type", "low_dim")}
                for key, meta in shape_meta["obs"].items()}
    if any(meta["type"] == "rgb" for meta in obs_meta.values()):
        return {"type": "image", "obs_meta": obs_meta, **image_kwargs}
    return {"type": "low_dim", "obs_shapes": {key: meta["shape"] for key, meta in obs_meta.items()}}


def build_obs_encoder(spec: Mapping[str, Any]) -> nn.Module:
    kind = spec.get("type")
    if kind == "low_dim":
        return LowDimObsEncoder(spec["obs_shapes"])
    if kind in ("image", "robomimic"):
        kwargs = {k: v for k, v in spec.items() if k not in ("type", "obs_meta")}
        encoder = ImageObsEncoder if kind == "image" else RobomimicObsEncoder  # robomimic: DiffusionPolicy's key names
        return encoder(spec["obs_meta"], **kwargs)
    raise ValueError(f"unknown obs encoder type {kind!r}; expected 'low_dim', 'image' or 'robomimic'")


class PolicyNetwork(nn.Module):
    """``obs_encoder`` and ``model`` (the UNet); one state dict, one EMA copy."""

    def __init__(self, obs_encoder_spec: Mapping[str, Any], model_kwargs: Mapping[str, Any], n_obs_steps: int):
        super().__init__()
        self.obs_encoder = build_obs_encoder(obs_encoder_spec)
        self.n_obs_steps = int(n_obs_steps)
        expected = self.obs_encoder.output_dim * self.n_obs_steps
        if model_kwargs.get("global_cond_dim") != expected:
            raise ValueError(
                f"model_kwargs['global_cond_dim'] = {model_kwargs.get('global_cond_dim')} but the observation "
                f"encoder gives {self.obs_encoder.output_dim} features x {self.n_obs_steps} obs steps = {expected}"
            )
        self.model = ConditionalUnet1D(**model_kwargs)

    def global_cond(self, nobs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalized obs {key: [B, n_obs_steps, *shape]} -> global condition [B, n_obs_steps * D]."""
        first = next(iter(nobs.values()))
        batch = first.shape[0]
        flat = {key: value[:, : self.n_obs_steps].reshape(batch * self.n_obs_steps, *value.shape[2:])
                for key, value in nobs.items()}
        features = self.obs_encoder(flat)  # [B * n_obs_steps, D]
        return features.reshape(batch, -1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, global_cond: torch.Tensor) -> torch.Tensor:
        return self.model(sample, timestep, global_cond=global_cond)


class NoiseAdder:
    """Forward diffusion q(x_t | x_0) for training: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""

    def __init__(self, num_train_timesteps: int = 100, beta_schedule: str = "squaredcos_cap_v2",
                 prediction_type: str = "epsilon", **_: Any):
        if prediction_type not in ("epsilon", "sample"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'sample', got {prediction_type!r}")
        self.schedule = make_schedule(beta_schedule, num_train_timesteps)
        # float32 like diffusers' add_noise, which DiffusionPolicy trains with
        self.alphas_cumprod = self.schedule.alphas_cumprod.to(torch.float32)
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod.to(x0.device)[timesteps].reshape(-1, *([1] * (x0.ndim - 1)))
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def loss(self, network: PolicyNetwork, nobs: Mapping[str, torch.Tensor], naction: torch.Tensor,
             generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
             timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """MSE between the UNet output and its target (noise or clean actions) at random timesteps.

        ``noise`` / ``timesteps`` given: use them (training draws them per step, see training.sampling);
        otherwise they are drawn from ``generator`` (or torch's global RNG).
        """
        cond = network.global_cond(nobs)
        if noise is None:
            noise = torch.randn(naction.shape, generator=generator, device=naction.device, dtype=naction.dtype)
        if timesteps is None:
            timesteps = torch.randint(0, self.num_train_timesteps, (naction.shape[0],), generator=generator,
                                      device=naction.device)
        noisy = self.add_noise(naction, noise, timesteps)
        prediction = network(noisy, timesteps, cond)
        target = noise if self.prediction_type == "epsilon" else naction
        return F.mse_loss(prediction, target)


class DiffusionLoss(nn.Module):
    """The training loss as a module, so DistributedDataParallel sees the whole computation in one forward."""

    def __init__(self, network: PolicyNetwork, noise: NoiseAdder):
        super().__init__()
        self.network = network
        self.noise = noise

    def forward(self, nobs: Mapping[str, torch.Tensor], naction: torch.Tensor, noise: torch.Tensor,
                timesteps: torch.Tensor) -> torch.Tensor:
        return self.noise.loss(self.network, nobs, naction, noise=noise, timesteps=timesteps)
