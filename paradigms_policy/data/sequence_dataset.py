"""Fixed-length training windows over a replay buffer, with DiffusionPolicy's edge padding.

A window is ``horizon`` consecutive steps of one episode. Windows may start up to
``pad_before`` steps before the episode and end up to ``pad_after`` steps after it; the missing
steps repeat the episode's first/last frame. With pad_before = n_obs_steps - 1 the first
window's observation history is the first frame repeated (what the robot sees at reset); with
pad_after = n_action_steps - 1 the last executed chunk is complete.

Each window is stored as a row of gather indices into the concatenated arrays ([N_windows,
horizon], clipped to the episode), so padding is just a repeated index and a batch is one
fancy-indexing call per key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..model.normalizer import LinearNormalizer
from .images import hwc_uint8_to_chw_float, is_image_array, set_image_range
from .replay_buffer import ReplayBuffer

__all__ = ["SequenceDataset", "window_indices", "split_episodes"]


def window_indices(episode_ends: np.ndarray, horizon: int, pad_before: int, pad_after: int,
                   episode_mask: np.ndarray | None = None) -> np.ndarray:
    """Gather indices [N_windows, horizon] of every padded window of the selected episodes."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if not 0 <= pad_before < horizon or not 0 <= pad_after < horizon:
        raise ValueError(f"pad_before ({pad_before}) and pad_after ({pad_after}) must be in [0, horizon={horizon})")
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    if episode_mask is None:
        episode_mask = np.ones(len(ends), dtype=bool)
    offsets = np.arange(horizon, dtype=np.int64)
    rows = []
    for start, end, keep in zip(starts, ends, episode_mask):
        if not keep:
            continue
        length = end - start
        first, last = -pad_before, length - horizon + pad_after  # window start, relative to the episode
        if last < first:
            continue  # episode shorter than a window even with padding
        rel = np.arange(first, last + 1, dtype=np.int64)[:, None] + offsets[None, :]  # [n, horizon]
        rows.append(start + np.clip(rel, 0, length - 1))
    if not rows:
        return np.zeros((0, horizon), dtype=np.int64)
    return np.concatenate(rows, axis=0)


def split_episodes(n_episodes: int, val_ratio: float, seed: int) -> np.ndarray:
    """Boolean validation mask over episodes: round(n * val_ratio) of them, at least 1 if val_ratio > 0
    and at most n - 1, chosen by a seeded permutation."""
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    mask = np.zeros(n_episodes, dtype=bool)
    if val_ratio == 0.0 or n_episodes < 2:
        return mask
    n_val = min(max(1, int(round(n_episodes * val_ratio))), n_episodes - 1)
    mask[np.random.default_rng(seed).permutation(n_episodes)[:n_val]] = True
    return mask


class SequenceDataset(torch.utils.data.Dataset):
    """Windows of ``horizon`` actions with the first ``n_obs_steps`` observations of each window.

    Item: ``{"obs": {key: float32 [n_obs_steps, *shape]}, "action": float32 [horizon, A]}``. Camera images
    (uint8 [T, H, W, C] arrays in the buffer) come out as DiffusionPolicy feeds them: float32 [C, H, W] in [0, 1].
    ``split`` picks the training or the validation episodes of a seeded episode-level split.
    """

    def __init__(
        self,
        replay_buffer: ReplayBuffer | str | Path,
        horizon: int,
        obs_keys: Sequence[str],
        pad_before: int | None = None,
        pad_after: int | None = None,
        *,
        n_obs_steps: int = 2,
        n_action_steps: int = 8,
        action_key: str = "action",
        val_ratio: float = 0.0,
        seed: int = 42,
        split: str = "train",
    ):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if not 1 <= n_obs_steps <= horizon:
            raise ValueError(f"n_obs_steps must be in [1, horizon={horizon}], got {n_obs_steps}")
        if not 1 <= n_action_steps <= horizon - n_obs_steps + 1:
            raise ValueError(
                f"n_action_steps must be in [1, horizon - n_obs_steps + 1 = {horizon - n_obs_steps + 1}], got {n_action_steps}"
            )
        if not obs_keys:
            raise ValueError("obs_keys is empty")
        if not isinstance(replay_buffer, ReplayBuffer):
            replay_buffer = ReplayBuffer.open(replay_buffer, mode="r")
        missing = [key for key in list(obs_keys) + [action_key] if key not in replay_buffer]
        if missing:
            raise KeyError(f"replay buffer has no data key(s) {missing}; available: {replay_buffer.keys()}")
        if replay_buffer.n_episodes == 0:
            raise ValueError("replay buffer has no episodes")
        action_shape = replay_buffer[action_key].shape[1:]
        if len(action_shape) != 1:
            raise ValueError(f"actions must be [T, A]; data/{action_key} has per-step shape {action_shape}")

        self.horizon = int(horizon)
        self.n_obs_steps = int(n_obs_steps)
        self.n_action_steps = int(n_action_steps)
        self.pad_before = self.n_obs_steps - 1 if pad_before is None else int(pad_before)
        self.pad_after = self.n_action_steps - 1 if pad_after is None else int(pad_after)
        self.obs_keys = list(obs_keys)
        self.action_key = action_key
        self.val_ratio = float(val_ratio)
        self.seed = int(seed)
        self.episode_ends = replay_buffer.episode_ends
        # Whole arrays in memory: low-dim data as float32, camera images ([T, H, W, C] uint8, as recorded)
        # kept uint8 (4x smaller) and converted per batch. Random access must be fast.
        self.rgb_keys = [key for key in self.obs_keys if is_image_array(replay_buffer[key])]
        self._arrays = {key: np.asarray(replay_buffer[key][:], dtype=np.uint8 if key in self.rgb_keys else np.float32)
                        for key in self.obs_keys + [action_key]}
        for key, array in self._arrays.items():
            if key not in self.rgb_keys and not np.isfinite(array).all():
                raise ValueError(f"data/{key} contains NaN or inf")
        self.val_mask = split_episodes(len(self.episode_ends), self.val_ratio, self.seed)
        self._select(split)

    def _select(self, split: str) -> None:
        self.split = split
        mask = self.val_mask if split == "val" else ~self.val_mask
        self.episode_mask = mask
        self.indices = window_indices(self.episode_ends, self.horizon, self.pad_before, self.pad_after, mask)
        if split == "train" and len(self.indices) == 0:
            raise ValueError(
                f"no training windows: every episode is shorter than horizon {self.horizon} "
                f"minus padding ({self.pad_before}+{self.pad_after})"
            )

    def get_validation_dataset(self) -> "SequenceDataset":
        """The held-out episodes, sharing this dataset's arrays (empty when val_ratio == 0)."""
        other = copy.copy(self)
        other._select("val")
        return other

    # ------------------------------------------------------------------ metadata
    @property
    def action_dim(self) -> int:
        return int(self._arrays[self.action_key].shape[-1])

    @property
    def shape_meta(self) -> dict:
        """{"obs": {key: {"shape": [...], "type": "low_dim"|"rgb"}}, "action": {"shape": [A]}}."""
        obs = {}
        for key in self.obs_keys:
            shape = list(self._arrays[key].shape[1:])
            if key in self.rgb_keys:  # stored [H, W, C]; the policy sees [C, H, W]
                obs[key] = {"shape": [shape[2], shape[0], shape[1]], "type": "rgb"}
            else:
                obs[key] = {"shape": shape, "type": "low_dim"}
        return {"obs": obs, "action": {"shape": [self.action_dim]}}

    @property
    def n_episodes(self) -> int:
        return int(self.episode_mask.sum())

    def get_normalizer(self, mode: str = "limits", **fit_kwargs) -> LinearNormalizer:
        """Fit min-max (or gaussian) normalization on all steps of the buffer for every low-dim obs key and the
        action; camera images get DiffusionPolicy's fixed image-range normalizer ([0, 1] -> [-1, 1])."""
        normalizer = LinearNormalizer().fit({k: v for k, v in self._arrays.items() if k not in self.rgb_keys},
                                            mode=mode, **fit_kwargs)
        for key in self.rgb_keys:
            set_image_range(normalizer, key)
        return normalizer

    def get_all_actions(self) -> torch.Tensor:
        return torch.from_numpy(self._arrays[self.action_key])

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def get_batch(self, window_ids: np.ndarray | Sequence[int]) -> dict:
        """Batched windows: {"obs": {key: [B, n_obs_steps, *shape]}, "action": [B, horizon, A]}."""
        rows = self.indices[np.asarray(window_ids, dtype=np.int64)]  # [B, horizon]
        obs_rows = rows[:, : self.n_obs_steps]
        obs = {key: hwc_uint8_to_chw_float(self._arrays[key][obs_rows]) if key in self.rgb_keys
               else torch.from_numpy(self._arrays[key][obs_rows]) for key in self.obs_keys}
        return {"obs": obs, "action": torch.from_numpy(self._arrays[self.action_key][rows])}

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        batch = self.get_batch([index % len(self)])
        return {"obs": {k: v[0] for k, v in batch["obs"].items()}, "action": batch["action"][0]}

    def iter_batches(self, batch_size: int, *, shuffle: bool = True, generator: np.random.Generator | None = None,
                     drop_last: bool = False):
        """One epoch of batches (faster than a DataLoader: one gather per key per batch)."""
        order = (generator or np.random.default_rng()).permutation(len(self)) if shuffle else np.arange(len(self))
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for begin in range(0, stop, batch_size):
            chunk = order[begin: begin + batch_size]
            if len(chunk):
                yield self.get_batch(chunk)

    def __repr__(self) -> str:
        return (f"SequenceDataset(split={self.split}, episodes={self.n_episodes}, windows={len(self)}, "
                f"horizon={self.horizon}, obs_keys={self.obs_keys}, pad=({self.pad_before}, {self.pad_after}))")
