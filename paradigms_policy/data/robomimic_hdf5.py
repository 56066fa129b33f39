"""robomimic HDF5 demonstrations: write, read, and import into the zarr replay-buffer layout.

File layout (robomimic's, as its ``dataset_states_to_obs.py`` writes it)::

    data/                        attrs: total (int, all steps), env_args (JSON {env_name, env_version, type, env_kwargs})
    data/demo_<i>/               attrs: num_samples (int); model_file (MJCF XML), ep_meta (JSON) when known
    data/demo_<i>/obs/<key>      [T, *shape]  observation before action t
    data/demo_<i>/next_obs/<key> [T, *shape]  observation after action t (the last row: after the final action)
    data/demo_<i>/actions        [T, A]
    data/demo_<i>/states         [T, S]   (simulator state, for replay)
    data/demo_<i>/rewards        [T]      reward after action t
    data/demo_<i>/dones          [T]
    mask/train, mask/valid       byte strings: the demo names in each split (robomimic "filter keys")

robomimic's ``SequenceDataset`` reads ``num_samples`` for its index and, by default
(``load_next_obs=True``), ``next_obs/<key>`` next to every ``obs/<key>``: a file without them
fails there with "component not found".
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
    "next_obs_from",
    "write_robomimic_hdf5",
    "read_robomimic_hdf5",
    "import_robomimic_hdf5",
    "demo_names",
]

EPISODE_ARRAYS = ("actions", "states", "rewards", "dones")
OBS_GROUPS = ("obs", "next_obs")
DEMO_ATTRS = ("model_file", "ep_meta")  # per-demo string attributes robomimic keeps when present
_DEMO_NAME = re.compile(r"^demo_(\d+)$")


class RobomimicFormatError(ValueError):
    """The HDF5 file or an episode does not follow robomimic's dataset layout."""


def next_obs_from(obs: dict[str, np.ndarray], final_obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """robomimic's ``next_obs``: ``obs`` shifted by one step, ending with the observation after the last action."""
    missing = sorted(set(obs) - set(final_obs))
    if missing:
        raise RobomimicFormatError(f"final observation lacks obs key(s) {missing}")
    return {key: np.concatenate([np.asarray(value)[1:], np.asarray(final_obs[key])[None]]) for key, value in obs.items()}


def _check_episode(index: int, episode: dict[str, Any]) -> int:
    """Return the episode's length after checking every array (obs, next_obs, actions, ...) has it."""
    missing = [name for name in OBS_GROUPS + EPISODE_ARRAYS if name not in episode]
    if missing:
        hint = " (build next_obs with next_obs_from(obs, final_obs))" if "next_obs" in missing else ""
        raise RobomimicFormatError(f"episode {index}: missing {missing}{hint}")
    if not episode["obs"]:
        raise RobomimicFormatError(f"episode {index}: 'obs' has no keys")
    if set(episode["next_obs"]) != set(episode["obs"]):
        raise RobomimicFormatError(f"episode {index}: next_obs keys {sorted(episode['next_obs'])} differ from "
                                   f"obs keys {sorted(episode['obs'])}")
    for key, value in episode["obs"].items():
        if np.shape(episode["next_obs"][key]) != np.shape(value):
            raise RobomimicFormatError(f"episode {index}: next_obs/{key} has shape {np.shape(episode['next_obs'][key])}, "
                                       f"obs/{key} has {np.shape(value)}")
    lengths = {name: len(episode[name]) for name in EPISODE_ARRAYS}
    lengths.update({f"{group}/{key}": len(value) for group in OBS_GROUPS for key, value in episode[group].items()})
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
    """Write ``episodes`` as a robomimic HDF5 file, laid out as robomimic's own scripts write it.

    Each episode: ``obs`` and ``next_obs`` ({key: [T, *shape]}), ``actions``, ``states``, ``rewards``,
    ``dones`` ([T, ...]), and optionally ``model_file`` (MJCF XML string) and ``ep_meta`` (dict), stored
    as demo attributes. ``env_args`` is robomimic's env metadata (``env.serialize()``).
    """
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
            demo.attrs["num_samples"] = int(n_steps)
            if episode.get("model_file") is not None:
                demo.attrs["model_file"] = str(episode["model_file"])
            if episode.get("ep_meta") is not None:
                demo.attrs["ep_meta"] = json.dumps(episode["ep_meta"])
            for name in EPISODE_ARRAYS:
                demo.create_dataset(name, data=np.asarray(episode[name]))
            for group_name in OBS_GROUPS:
                group = demo.create_group(group_name)
                for key, value in episode[group_name].items():
                    value = np.asarray(value)
                    image = value.dtype == np.uint8 and value.ndim == 4  # [T, H, W, C] camera frames
                    # gzip as robomimic's dataset_states_to_obs.py --compress does; h5py reads it transparently
                    group.create_dataset(key, data=value, compression="gzip" if image else None)
        data.attrs["total"] = int(sum(lengths))
        data.attrs["env_args"] = json.dumps(env_args, indent=4)
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
    """Read every demo (numeric order) -> (episodes, env_args, masks {split: [demo names]}).

    An episode holds ``name``, ``obs``, ``next_obs`` (when the file has it; older files may not), the
    arrays present, and ``num_samples`` / ``model_file`` / ``ep_meta`` from the demo's attributes.
    """
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
            episode: dict[str, Any] = {"name": name}
            for group_name in OBS_GROUPS:
                if group_name in demo:
                    episode[group_name] = {key: demo[group_name][key][()] for key in demo[group_name].keys()}
            for array_name in EPISODE_ARRAYS:
                if array_name in demo:
                    episode[array_name] = demo[array_name][()]
            _check_lengths(path, name, episode)
            episode.update(_demo_attrs(path, name, demo, len(episode["actions"])))
            episodes.append(episode)
        masks = {split: [n.decode() if isinstance(n, bytes) else str(n) for n in f["mask"][split][()]]
                 for split in (f["mask"].keys() if "mask" in f else [])}
    return episodes, env_args, masks


def _check_lengths(path: Path, name: str, episode: dict[str, Any]) -> None:
    lengths = {key: len(episode[key]) for key in EPISODE_ARRAYS if key in episode}
    for group_name in OBS_GROUPS:
        lengths.update({f"{group_name}/{key}": len(value) for key, value in episode.get(group_name, {}).items()})
    if len(set(lengths.values())) != 1:
        raise RobomimicFormatError(f"{path}: {name} has arrays of different lengths: {lengths}")


def _demo_attrs(path: Path, name: str, demo: h5py.Group, n_steps: int) -> dict[str, Any]:
    """num_samples (checked against the arrays), model_file and ep_meta of one demo group."""
    out: dict[str, Any] = {}
    if "num_samples" in demo.attrs:
        out["num_samples"] = int(demo.attrs["num_samples"])
        if out["num_samples"] != n_steps:
            raise RobomimicFormatError(f"{path}: {name} has num_samples {out['num_samples']} but {n_steps} actions")
    for attr in DEMO_ATTRS:
        if attr in demo.attrs:
            raw = demo.attrs[attr]
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            out[attr] = json.loads(text) if attr == "ep_meta" else text
    return out


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
