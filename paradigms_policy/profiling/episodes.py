"""Observation histories for profiling: recorded episodes (zarr or .npz) or a synthetic one.

Consecutive control cycles of an episode are replayed so that warm starts see realistic
cycle-to-cycle changes. Descriptions name files, never the absolute path of this machine.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

__all__ = ["episodes_from_zarr", "episodes_from_npz", "synthesize_episode", "load_episodes", "control_cycles",
           "observation_windows"]


def episodes_from_zarr(path: Path, first: int, keys: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
    """Episodes first, first+1, ... (wrapping around) of a replay buffer, read one at a time."""
    from paradigms_policy.data.replay_buffer import ReplayBuffer

    buffer = ReplayBuffer.open(path, "r")
    n = buffer.n_episodes
    if not -n <= first < n:
        raise ValueError(f"episode_index {first} out of range: {path} has {n} episodes")
    missing = [k for k in keys if k not in buffer]
    if missing:
        raise KeyError(f"episode_source {path} lacks observation keys {missing}; has {buffer.keys()}")
    for i in range(n):
        yield buffer.get_episode((first + i) % n, keys=list(keys))


def episodes_from_npz(path: Path, keys: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """Episodes of a recorded .npz: steps concatenated, split at ``episode_ends`` when present."""
    with np.load(path) as data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise KeyError(f"episode file {path} lacks observation keys {missing}; has {data.files}")
        steps = {k: np.asarray(data[k], dtype=np.float32) for k in keys}
        length = min(len(v) for v in steps.values())
        ends = np.asarray(data["episode_ends"], dtype=np.int64) if "episode_ends" in data.files else np.array([length])
    if len(ends) == 0 or np.any(np.diff(ends) <= 0) or ends[0] <= 0 or ends[-1] != length:
        raise ValueError(f"episode file {path}: episode_ends {ends.tolist()} do not split its {length} steps")
    starts = np.concatenate([[0], ends[:-1]])
    return [{k: v[a:b] for k, v in steps.items()} for a, b in zip(starts, ends)]


def synthesize_episode(policy, n_steps: int, seed: int) -> dict[str, np.ndarray]:
    """Smooth sinusoids inside the normalizer's observed range (stands in for a recorded episode)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_steps, dtype=np.float64)[:, None]
    stats = policy.normalizer.input_stats()
    episode = {}
    for key, shape in policy.obs_shapes.items():
        low, high = (stats[key][s].detach().cpu().numpy().astype(np.float64).reshape(-1) for s in ("min", "max"))
        dims = math.prod(shape)
        low, high = np.broadcast_to(low, (dims,)), np.broadcast_to(high, (dims,))
        period = rng.uniform(60.0, 160.0, size=dims)
        phase = rng.uniform(0.0, 2 * np.pi, size=dims)
        mid, half = (high + low) / 2, (high - low) / 2
        values = mid + 0.6 * half * np.sin(2 * np.pi * t / period + phase)  # [n_steps, dims]
        episode[key] = values.reshape(n_steps, *shape).astype(np.float32)
    return episode


def load_episodes(policy, *, episode_source: str | Path | None, episode_index: int, checkpoint_path: Path | None,
                  n_steps: int, seed: int) -> tuple[Iterator[dict[str, np.ndarray]], str]:
    """(episodes {key: [T, *shape]}, where they came from).

    Order: ``episode_source`` (a zarr replay buffer or an .npz), else ``<checkpoint stem>.episode.npz``
    beside the checkpoint, else one synthetic episode of ``n_steps`` steps.
    """
    keys = list(policy.obs_shapes)
    if episode_source:
        path = Path(episode_source)
        if path.suffix == ".npz":
            episodes = episodes_from_npz(path, keys)
            return iter(episodes), f"{len(episodes)} recorded episode(s) of {path.name}"
        return episodes_from_zarr(path, int(episode_index), keys), f"recorded episodes of {path.name} from index {episode_index}"
    if checkpoint_path is not None:
        npz = checkpoint_path.with_name(checkpoint_path.stem + ".episode.npz")
        if npz.is_file():
            episodes = episodes_from_npz(npz, keys)
            return iter(episodes), f"{len(episodes)} recorded episode(s) of {npz.name}"
    episode = synthesize_episode(policy, n_steps, seed)
    return iter([episode]), "SYNTHETIC smooth trajectory inside the normalizer range (no recorded episode given)"


def control_cycles(episodes: Iterator[Mapping[str, np.ndarray]], n_obs_steps: int, n_action_steps: int,
                   cycles: int) -> tuple[list[dict[str, np.ndarray]], list[bool]]:
    """(observation windows, starts-an-episode flags) for up to ``cycles`` cycles, episode after episode."""
    windows: list[dict[str, np.ndarray]] = []
    starts: list[bool] = []
    for episode in episodes:
        more = observation_windows(episode, n_obs_steps, n_action_steps, cycles - len(windows))
        windows += more
        starts += [True] + [False] * (len(more) - 1)
        if len(windows) >= cycles:
            break
    return windows, starts


def observation_windows(episode: Mapping[str, np.ndarray], n_obs_steps: int, n_action_steps: int,
                        cycles: int) -> list[dict[str, np.ndarray]]:
    """One observation history per control cycle, re-planning every n_action_steps env steps.

    Cycle c sees steps c*n_action_steps - n_obs_steps + 1 .. c*n_action_steps, the first step
    repeated before the episode start (as DiffusionPolicy pads at reset).
    """
    lengths = {k: len(v) for k, v in episode.items()}
    length = min(lengths.values())
    if length < 1:
        raise ValueError(f"episode has no steps: {lengths}")
    available = (length - 1) // n_action_steps + 1
    windows = []
    for c in range(min(cycles, available)):
        end = c * n_action_steps
        idx = np.clip(np.arange(end - n_obs_steps + 1, end + 1), 0, None)
        windows.append({k: np.asarray(v[idx], dtype=np.float32) for k, v in episode.items()})
    return windows
