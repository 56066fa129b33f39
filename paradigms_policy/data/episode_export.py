"""Export a checkpoint's held-out demo episodes as ``<checkpoint stem>.episode.npz`` (what the profiler replays).

    python -m paradigms_policy.data.episode_export runs/demos/can_demos.zarr checkpoints/can_lowdim.episode.npz

The episodes are the validation episodes of paradigms-train's split (``split_episodes(n, val_ratio,
seed)``, the defaults of config/train.yaml), so the profiler sees observations the policy was not
trained on. The file holds one array per observation key and ``action`` (all steps concatenated),
``episode_ends`` (cumulative) and ``demo_indices`` (the episodes' indices in the replay buffer);
``checkpoints/lift_lowdim.episode.npz`` has the same layout.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from .replay_buffer import ReplayBuffer
from .sequence_dataset import split_episodes

__all__ = ["export_validation_episodes", "main"]


def export_validation_episodes(zarr_path: str | Path, out_path: str | Path, *, val_ratio: float = 0.05,
                               seed: int = 42, keys: Sequence[str] | None = None) -> Path:
    """Write the validation episodes of ``zarr_path`` (train split ``val_ratio``/``seed``) to ``out_path``."""
    buffer = ReplayBuffer.open(zarr_path, mode="r")
    indices = np.flatnonzero(split_episodes(buffer.n_episodes, val_ratio, seed))
    if len(indices) == 0:
        raise ValueError(f"{zarr_path}: val_ratio {val_ratio} leaves no validation episode of {buffer.n_episodes}")
    keys = list(keys) if keys is not None else list(buffer.attrs.get("obs_keys") or buffer.keys())
    if "action" not in keys:
        keys.append("action")
    missing = [key for key in keys if key not in buffer]
    if missing:
        raise KeyError(f"{zarr_path} has no data key(s) {missing}; keys: {buffer.keys()}")
    episodes = [buffer.get_episode(int(i), keys) for i in indices]
    arrays = {key: np.concatenate([e[key] for e in episodes]).astype(np.float32) for key in keys}
    arrays["episode_ends"] = np.cumsum([len(e["action"]) for e in episodes]).astype(np.int64)
    arrays["demo_indices"] = indices.astype(np.int64)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_path, **arrays)
    return out_path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zarr", help="replay buffer the checkpoint was trained on")
    parser.add_argument("out", help="output .npz (name it <checkpoint stem>.episode.npz)")
    parser.add_argument("--val-ratio", type=float, default=0.05, help="dataset.val_ratio of the training run")
    parser.add_argument("--seed", type=int, default=42, help="dataset.seed of the training run")
    args = parser.parse_args(argv)
    path = export_validation_episodes(args.zarr, args.out, val_ratio=args.val_ratio, seed=args.seed)
    with np.load(path) as data:
        print(f"wrote {path}: {len(data['episode_ends'])} episodes, {int(data['episode_ends'][-1])} steps, "
              f"demo indices {data['demo_indices'].tolist()}")


if __name__ == "__main__":
    main()
