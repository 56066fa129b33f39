"""Per-key affine normalization of observations and actions (DiffusionPolicy semantics).

Each key's data is flattened to its last dimension and gets ``y = x * scale + offset``.
As in DiffusionPolicy, parameters of size D also apply to data whose trailing axes hold D values
together (``x.reshape(-1, D)``): a size-1 image normalizer, or per-pixel [C*H*W] parameters.
The state dict layout (``params_dict.<key>.{scale,offset,input_stats.{min,max,mean,std}}``)
matches DiffusionPolicy's LinearNormalizer so its checkpoints load, also into an empty one.
Dotted keys (LeRobot's ``observation.state``) are stored escaped (``model.names.module_key``).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from .names import module_key, original_key

__all__ = ["LinearNormalizer", "SingleFieldNormalizer"]

_MODES = ("limits", "gaussian")
_STAT_NAMES = ("min", "max", "mean", "std")
_PREFIX = "params_dict."


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.asarray(x))


def _frozen(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone(), requires_grad=False)


def _make_params(scale, offset, stats: Mapping[str, torch.Tensor]) -> nn.ParameterDict:
    return nn.ParameterDict(
        {
            "scale": _frozen(scale),
            "offset": _frozen(offset),
            "input_stats": nn.ParameterDict({k: _frozen(stats[k]) for k in _STAT_NAMES}),
        }
    )


def fit_params(
    data,
    mode: str = "limits",
    output_min: float = -1.0,
    output_max: float = 1.0,
    range_eps: float = 1e-4,
    key: str = "data",
) -> nn.ParameterDict:
    """Compute scale/offset and input stats from data [N, ..., D] (flattened to [-1, D])."""
    if mode not in _MODES:
        raise ValueError(f"normalizer mode must be one of {_MODES}, got {mode!r}")
    if not output_max > output_min:
        raise ValueError(f"output_max ({output_max}) must exceed output_min ({output_min})")
    x = _as_tensor(data).to(torch.float32)
    if x.ndim == 0 or x.numel() == 0:
        raise ValueError(f"cannot fit normalizer for {key!r}: empty data of shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"cannot fit normalizer for {key!r}: data contains NaN or inf")
    x = x.reshape(-1, x.shape[-1] if x.ndim > 1 else 1)  # [N, D]

    x_min = x.min(dim=0).values
    x_max = x.max(dim=0).values
    x_mean = x.mean(dim=0)
    x_std = x.std(dim=0) if x.shape[0] > 1 else torch.zeros_like(x_mean)

    if mode == "limits":
        span = x_max - x_min
        constant = span < range_eps
        # constant dims: unit scale, the constant lands at the middle of the output range
        span = torch.where(constant, torch.full_like(span, output_max - output_min), span)
        scale = (output_max - output_min) / span
        offset = output_min - scale * x_min
        offset = torch.where(constant, (output_max + output_min) / 2 - x_min, offset)
    else:
        constant = x_std < range_eps
        scale = 1.0 / torch.where(constant, torch.ones_like(x_std), x_std)
        offset = -x_mean * scale
    stats = {"min": x_min, "max": x_max, "mean": x_mean, "std": x_std}
    return _make_params(scale, offset, stats)


def _apply(x, params: nn.ParameterDict, forward: bool, key: str) -> torch.Tensor:
    scale, offset = params["scale"], params["offset"]
    x = _as_tensor(x).to(device=scale.device, dtype=scale.dtype)
    dim = scale.shape[0]
    if x.ndim >= 1 and x.shape[-1] == dim:
        # [..., D] broadcasts against [D]
        return x * scale + offset if forward else (x - offset) / scale
    trailing = [int(np.prod(x.shape[-k:])) for k in range(1, x.ndim + 1)]
    if x.ndim == 0 or not (dim == 1 or dim in trailing):
        raise ValueError(f"{key!r}: last dimension (or trailing axes together) must be {dim}, got shape {tuple(x.shape)}")
    flat = x.reshape(-1, dim)  # DiffusionPolicy's layout: [N, D]
    out = flat * scale + offset if forward else (flat - offset) / scale
    return out.reshape(x.shape)


class SingleFieldNormalizer:
    """View of one key's parameters: ``normalizer["action"].normalize(x)``."""

    def __init__(self, params: nn.ParameterDict, key: str = "data"):
        self.params = params
        self.key = key

    def normalize(self, x) -> torch.Tensor:
        return _apply(x, self.params, True, self.key)

    def unnormalize(self, x) -> torch.Tensor:
        return _apply(x, self.params, False, self.key)

    __call__ = normalize

    @property
    def scale(self) -> torch.Tensor:
        return self.params["scale"]

    @property
    def offset(self) -> torch.Tensor:
        return self.params["offset"]

    def input_stats(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.params["input_stats"].items()}


class LinearNormalizer(nn.Module):
    """Named affine normalizers fitted from data; an nn.Module so it moves and saves with the policy."""

    def __init__(self):
        super().__init__()
        self.params_dict = nn.ParameterDict()

    @torch.no_grad()
    def fit(
        self,
        data: Mapping[str, object],
        mode: str = "limits",
        output_min: float = -1.0,
        output_max: float = 1.0,
        range_eps: float = 1e-4,
    ) -> "LinearNormalizer":
        """Fit every key of ``data`` (arrays [N, ..., D]); existing keys are replaced."""
        if not isinstance(data, Mapping):
            raise TypeError(f"fit expects a dict of arrays, got {type(data).__name__}")
        for key, value in data.items():
            self.params_dict[module_key(key)] = fit_params(value, mode, output_min, output_max, range_eps, key=key)
        return self

    def keys(self) -> list[str]:
        return [original_key(name) for name in self.params_dict.keys()]

    def __contains__(self, key: str) -> bool:
        return module_key(key) in self.params_dict

    def __getitem__(self, key: str) -> SingleFieldNormalizer:
        if module_key(key) not in self.params_dict:
            raise KeyError(f"normalizer has no key {key!r}; known keys: {self.keys()}")
        return SingleFieldNormalizer(self.params_dict[module_key(key)], key)

    def __setitem__(self, key: str, value: SingleFieldNormalizer) -> None:
        self.params_dict[module_key(key)] = value.params

    def set_affine(self, key: str, scale, offset, stats: Mapping[str, object]) -> None:
        """Set one key from explicit parameters (y = x * scale + offset) and input stats {min,max,mean,std}."""
        scale, offset = _as_tensor(scale).to(torch.float32), _as_tensor(offset).to(torch.float32)
        missing = [s for s in _STAT_NAMES if s not in stats]
        if missing:
            raise ValueError(f"normalizer key {key!r}: input stats lack {missing}")
        self.params_dict[module_key(key)] = _make_params(
            scale, offset, {s: _as_tensor(stats[s]).to(torch.float32) for s in _STAT_NAMES})

    def normalize(self, key_or_dict, x=None):
        """normalize("action", x) -> Tensor, or normalize({key: x, ...}) -> dict of Tensors."""
        return self._map(key_or_dict, x, forward=True)

    def unnormalize(self, key_or_dict, x=None):
        """Inverse of normalize, same call forms."""
        return self._map(key_or_dict, x, forward=False)

    def _map(self, key_or_dict, x, forward: bool):
        if isinstance(key_or_dict, Mapping):
            if x is not None:
                raise TypeError("pass either a dict or (key, x), not both")
            return {k: self._map_one(k, v, forward) for k, v in key_or_dict.items()}
        if x is None:
            raise TypeError("normalize(key, x): missing x")
        return self._map_one(key_or_dict, x, forward)

    def _map_one(self, key: str, x, forward: bool) -> torch.Tensor:
        field = self[key]
        return field.normalize(x) if forward else field.unnormalize(x)

    def input_stats(self) -> dict[str, dict[str, torch.Tensor]]:
        return {k: self[k].input_stats() for k in self.keys()}

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Rebuild the per-key structure from the keys present, so an empty normalizer can load.
        own = prefix + _PREFIX
        fields: dict[str, dict[str, torch.Tensor]] = {}
        for name, value in state_dict.items():
            if not name.startswith(own):
                continue
            field, _, leaf = name[len(own):].rpartition(".")
            if field.endswith(".input_stats"):
                field, leaf = field[: -len(".input_stats")], "input_stats." + leaf
            fields.setdefault(field, {})[leaf] = value
        new_params = nn.ParameterDict()
        for field, entries in fields.items():
            need = ["scale", "offset"] + [f"input_stats.{s}" for s in _STAT_NAMES]
            absent = [n for n in need if n not in entries]
            if absent:
                error_msgs.append(f"normalizer key {field!r} lacks {absent}")
                continue
            stats = {s: entries[f"input_stats.{s}"] for s in _STAT_NAMES}
            new_params[field] = _make_params(entries["scale"], entries["offset"], stats)
        self.params_dict = new_params.to(self._device_hint())
        for name in state_dict:
            if name.startswith(prefix) and not name.startswith(own):
                unexpected_keys.append(name)

    def _device_hint(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> "LinearNormalizer":
        norm = cls()
        norm.load_state_dict(dict(state_dict))
        return norm

    def extra_repr(self) -> str:
        return f"keys={self.keys()}"
