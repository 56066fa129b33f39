"""robomimic HDF5 demonstrations: write, read, and import into the zarr replay-buffer layout.

File layout (robomimic's)::

    data/                      attrs: total (int, all steps), env_args (JSON {env_name, type, env_kwargs})
    data/demo_<i>/             attrs: num_samples (int)
    data/demo_<i>/obs/<key>    [T, *shape]
    data/demo_<i>/actions      [T, A]
    data/demo_<i>/states       [T, S]   (simulator state, for replay)
    data/demo_<i>/rewards      [T]
    data/demo_<i>/dones        [T]
    mask/train, mask/valid     byte strings: the demo names in each split
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from .replay_buffer import ReplayBuffer

__all__ = [
    "RobomimicFormatError",
    "write_robomimic_hdf5",
    "read_robomimic_hdf5",
    "import_robomimic_hdf5",
    "demo_names",
]

EPISODE_ARRAYS = ("actions", "states", "rewards", "dones")
_DEMO_NAME = re.compile(r"^demo_(\d+)$")


class RobomimicFormatError(ValueError):
    """The HDF5 file or an episode does not follow robomimic's dataset layout."""


def _check_episode(index: int, episode: dict[str, Any]) -> int:
    """Return the episode's length after checking every array has it."""
    missing = [name for name in ("obs",) + EPISODE_ARRAYS if name not in episode]
    if missing:
        raise RobomimicFormatError(f"episode {index}: missing {missing}")
    if not episode["obs"]:
        raise RobomimicFormatError(f"episode {index}: 'obs' has no keys")
    lengths = {name: len(episode[name]) for name in EPISODE_ARRAYS}
    lengths.update({f"obs/{key}": len(value) for key, value in episode["obs"].items()})
    if len(set(lengths.values())) != 1:
        raise RobomimicFormatError(f"episode {index}: arrays have different numbers of steps: {lengths}")
    n_steps = lengths["actions"]
    if n_steps == 0:
        raise RobomimicFormatError(f"episode {index}: zero steps")
    return n_steps


def split_demos(n_demos: int, train_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded random episode split; keeps at least one train demo and, if possible, one valid demo."""
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in [0, 1], got {train_fraction}")
    order = np.random.default_rng(seed).permutation(n_demos)
    n_train = int(round(train_fraction * n_demos))
    if n_demos > 1 and train_fraction < 1.0:
        n_train = min(n_train, n_demos - 1)
    n_train = max(n_train, min(1, n_demos))
    return sorted(order[:n_train].tolist()), sorted(order[n_train:].tolist())


def write_robomimic_hdf5(
    path: str | Path,
    episodes: list[dict[str, Any]],
    env_args: dict[str, Any],
    train_fraction: float = 0.9,
    seed: int = 0,
) -> Path:
    """Write ``episodes`` (dicts of obs/actions/states/rewards/dones) as a robomimic HDF5 file."""
    path = Path(path)
    if not episodes:
        raise RobomimicFormatError("write_robomimic_hdf5: no episodes to write")
    for key in ("env_name", "type", "env_kwargs"):
        if key not in env_args:
            raise RobomimicFormatError(f"env_args is missing {key!r} (robomimic needs env_name, type, env_kwargs)")
    lengths = [_check_episode(i, episode) for i, episode in enumerate(episodes)]
    train, valid = split_demos(len(episodes), train_fraction, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for i, (episode, n_steps) in enumerate(zip(episodes, lengths)):
            demo = data.create_group(f"demo_{i}")
            demo.attrs["num_samples"] = n_steps
            obs = demo.create_group("obs")
            for key, value in episode["obs"].items():
                obs.create_dataset(key, data=np.asarray(value))
            for name in EPISODE_ARRAYS:
                demo.create_dataset(name, data=np.asarray(episode[name]))
        data.attrs["total"] = int(sum(lengths))
        data.attrs["env_args"] = json.dumps(env_args)
        mask = f.create_group("mask")
        for split, members in (("train", train), ("valid", valid)):
            names = np.array([f"demo_{i}".encode() for i in members], dtype="S")
            mask.create_dataset(split, data=names, dtype=names.dtype if names.size else "S8")
    return path


def demo_names(data_group: h5py.Group) -> list[str]:
    """Demo group names in numeric order (demo_2 before demo_10)."""
    names = [name for name in data_group.keys() if _DEMO_NAME.match(name)]
    return sorted(names, key=lambda name: int(_DEMO_NAME.match(name).group(1)))


def _open_data_group(f: h5py.File, path: Path) -> h5py.Group:
    if "data" not in f:
        raise RobomimicFormatError(f"{path}: no 'data' group (not a robomimic dataset)")
    return f["data"]


def _read_env_args(data: h5py.Group, path: Path) -> dict[str, Any]:
    if "env_args" not in data.attrs:
        raise RobomimicFormatError(f"{path}: data.attrs has no 'env_args'")
    raw = data.attrs["env_args"]
    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except json.JSONDecodeError as exc:
        raise RobomimicFormatError(f"{path}: data.attrs['env_args'] is not valid JSON: {exc}") from exc


def read_robomimic_hdf5(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, list[str]]]:
    """Read every demo (numeric order) -> (episodes, env_args, masks {split: [demo names]})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"robomimic dataset {path} does not exist")
    episodes: list[dict[str, Any]] = []
    with h5py.File(path, "r") as f:
        data = _open_data_group(f, path)
        env_args = _read_env_args(data, path)
        for name in demo_names(data):
            demo = data[name]
            missing = [key for key in ("obs", "actions") if key not in demo]
            if missing:
                raise RobomimicFormatError(f"{path}: {name} is missing {missing}")
            episode = {"name": name, "obs": {key: demo["obs"][key][()] for key in demo["obs"].keys()}}
            for array_name in EPISODE_ARRAYS:
                if array_name in demo:
                    episode[array_name] = demo[array_name][()]
            _check_lengths(path, name, episode)
            episodes.append(episode)
        masks = {split: [n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][split][()]]
                 for split in (f["mask"].keys() if "mask" in f else [])}
    return episodes, env_args, masks


def _check_lengths(path: Path, name: str, episode: dict[str, Any]) -> None:
    lengths = {key: len(value) for key, value in episode.items() if key not in ("obs", "name")}
    lengths.update({f"obs/{key}": len(value) for key, value in episode["obs"].items()})
    if len(set(lengths.values())) != 1:
        raise RobomimicFormatError(f"{path}: {name} has arrays of different lengths: {lengths}")


def import_robomimic_hdf5(
    hdf5_path: str | Path,
    zarr_path: str | Path | None,
    obs_keys: Sequence[str] | None,
    *,
    overwrite: bool = True,
) -> ReplayBuffer:
    """Convert a robomimic HDF5 file into the zarr layout: data/<obs key> for each of ``obs_keys`` and data/action.

    ``obs_keys=None`` takes every obs key of the first demo. ``zarr_path=None`` builds the buffer in memory.
    The root attrs keep ``env_args``, the source file, the demo names and robomimic's masks.
    """
    hdf5_path = Path(hdf5_path)
    if not hdf5_path.is_file():
        raise FileNotFoundError(f"robomimic dataset {hdf5_path} does not exist")
    with h5py.File(hdf5_path, "r") as f:
        data = _open_data_group(f, hdf5_path)
        env_args = _read_env_args(data, hdf5_path)
        names = demo_names(data)
        if not names:
            raise RobomimicFormatError(f"{hdf5_path}: no demo_<i> groups under 'data'")
        keys = list(obs_keys) if obs_keys is not None else list(data[names[0]]["obs"].keys())
        if "action" in keys:
            raise RobomimicFormatError("obs key 'action' would collide with the zarr 'action' array")
        buffer = ReplayBuffer.create(zarr_path, overwrite=overwrite)
        for name in names:
            demo = data[name]
            if "obs" not in demo or "actions" not in demo:
                raise RobomimicFormatError(f"{hdf5_path}: {name} needs 'obs' and 'actions'")
            missing = [key for key in keys if key not in demo["obs"]]
            if missing:
                raise RobomimicFormatError(
                    f"{hdf5_path}: {name} has no obs key(s) {missing}; available: {sorted(demo['obs'].keys())}"
                )
            episode = {key: demo["obs"][key][()] for key in keys}
            episode["action"] = demo["actions"][()]
            lengths = {key: len(value) for key, value in episode.items()}
            if len(set(lengths.values())) != 1:
                raise RobomimicFormatError(f"{hdf5_path}: {name} has arrays of different lengths: {lengths}")
            buffer.add_episode(episode)
        masks = {split: [n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][split][()]]
                 for split in (f["mask"].keys() if "mask" in f else [])}
    buffer.attrs.update(
        {
            "env_args": env_args,
            "source": str(hdf5_path),
            "demo_names": names,
            "masks": masks,
            "obs_keys": keys,
        }
    )
    return buffer
