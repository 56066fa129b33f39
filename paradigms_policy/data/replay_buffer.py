"""Episodes stored in DiffusionPolicy's zarr replay-buffer layout.

Layout (zarr v2)::

    <root>/data/<key>          [N_total, *shape]  all steps of all episodes, concatenated
    <root>/meta/episode_ends   [n_episodes] int64 cumulative end index (exclusive) of each episode

Episode ``i`` covers rows ``episode_ends[i-1]:episode_ends[i]`` (``0`` for ``i == 0``). The
buffer is either on disk (a ``DirectoryStore``) or in memory (a ``MemoryStore``); both go
through the same zarr API so code and tests see one behaviour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import zarr

__all__ = ["ReplayBuffer", "ReplayBufferError"]

DEFAULT_CHUNK_STEPS = 1024
IMAGE_CHUNK_STEPS = 64  # [T, H, W, C] arrays: 64 frames a chunk (1024 84x84 frames would be 21 MB)


class ReplayBufferError(ValueError):
    """The zarr store does not follow the replay-buffer layout, or an episode does not fit it."""


class ReplayBuffer:
    """A zarr group with ``data/<key>`` arrays split into episodes by ``meta/episode_ends``."""

    def __init__(self, root: zarr.Group, *, path: Path | None = None):
        self.root = root
        self.path = path
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, path: str | Path | None = None, *, overwrite: bool = False) -> "ReplayBuffer":
        """Create an empty buffer at ``path`` (a ``.zarr`` directory) or in memory when ``path`` is None."""
        if path is None:
            root = zarr.group(store=zarr.MemoryStore())
            resolved = None
        else:
            resolved = Path(path)
            if resolved.exists() and not overwrite:
                raise FileExistsError(f"replay buffer {resolved} already exists (pass overwrite=True to replace it)")
            root = zarr.open_group(str(resolved), mode="w")
        root.require_group("data")
        meta = root.require_group("meta")
        meta.zeros("episode_ends", shape=(0,), chunks=(DEFAULT_CHUNK_STEPS,), dtype=np.int64)
        return cls(root, path=resolved)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "ReplayBuffer":
        """Open an existing buffer; ``mode`` is zarr's ("r" read-only, "r+"/"a" appendable)."""
        resolved = Path(path)
        if not resolved.exists():
            raise FileNotFoundError(f"replay buffer {resolved} does not exist")
        try:
            root = zarr.open_group(str(resolved), mode=mode)
        except (zarr.errors.GroupNotFoundError, zarr.errors.ContainsArrayError, ValueError, KeyError) as exc:
            raise ReplayBufferError(f"{resolved} is not a zarr group: {exc}") from exc
        return cls(root, path=resolved)

    @classmethod
    def copy_to_memory(cls, path: str | Path) -> "ReplayBuffer":
        """Load a whole on-disk buffer into a writable in-memory one (fast random access for training)."""
        source = cls.open(path, mode="r")
        store = zarr.MemoryStore()
        zarr.copy_store(source.root.store, store)
        return cls(zarr.group(store=store), path=None)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check the layout: meta/episode_ends present, 1-D, integer, increasing; every data key as long as the episodes."""
        where = str(self.path) if self.path is not None else "<memory>"
        if "meta" not in self.root or "episode_ends" not in self.root["meta"]:
            raise ReplayBufferError(f"replay buffer {where}: missing 'meta/episode_ends' (required by the DiffusionPolicy layout)")
        if "data" not in self.root:
            raise ReplayBufferError(f"replay buffer {where}: missing 'data' group")
        ends = self.root["meta/episode_ends"]
        if ends.ndim != 1:
            raise ReplayBufferError(f"replay buffer {where}: 'meta/episode_ends' must be 1-D, got shape {ends.shape}")
        if not np.issubdtype(ends.dtype, np.integer):
            raise ReplayBufferError(f"replay buffer {where}: 'meta/episode_ends' must be integer, got dtype {ends.dtype}")
        values = np.asarray(ends[:], dtype=np.int64)
        if values.size:
            lengths = np.diff(values, prepend=0)
            bad = np.flatnonzero(lengths <= 0)
            if bad.size:
                i = int(bad[0])
                prev = int(values[i - 1]) if i > 0 else 0
                raise ReplayBufferError(
                    f"replay buffer {where}: 'meta/episode_ends' must be strictly increasing and positive; "
                    f"episode {i} ends at {int(values[i])} after previous end {prev}"
                )
        n_steps = int(values[-1]) if values.size else 0
        for key, array in self.root["data"].arrays():
            if array.shape[0] != n_steps:
                raise ReplayBufferError(
                    f"replay buffer {where}: ragged data: 'data/{key}' has {array.shape[0]} steps "
                    f"but meta/episode_ends[-1] = {n_steps}"
                )

    # ------------------------------------------------------------------ queries
    @property
    def episode_ends(self) -> np.ndarray:
        return np.asarray(self.root["meta/episode_ends"][:], dtype=np.int64)

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self.episode_ends, prepend=0)

    @property
    def n_episodes(self) -> int:
        return int(self.root["meta/episode_ends"].shape[0])

    @property
    def n_steps(self) -> int:
        ends = self.root["meta/episode_ends"]
        return int(ends[-1]) if ends.shape[0] else 0

    @property
    def attrs(self) -> zarr.attrs.Attributes:
        """Root attributes (e.g. robomimic ``env_args`` kept at import)."""
        return self.root.attrs

    def keys(self) -> list[str]:
        return [key for key, _ in self.root["data"].arrays()]

    def __contains__(self, key: str) -> bool:
        return key in self.root["data"]

    def __getitem__(self, key: str) -> zarr.Array:
        if key not in self.root["data"]:
            raise KeyError(f"replay buffer has no data key {key!r}; keys: {self.keys()}")
        return self.root["data"][key]

    def __len__(self) -> int:
        return self.n_episodes

    def episode_slice(self, index: int) -> slice:
        n = self.n_episodes
        if not -n <= index < n:
            raise IndexError(f"episode {index} out of range for {n} episodes")
        index %= n
        ends = self.episode_ends
        start = int(ends[index - 1]) if index > 0 else 0
        return slice(start, int(ends[index]))

    def get_episode(self, index: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        rows = self.episode_slice(index)
        return {key: self[key][rows] for key in (keys or self.keys())}

    def iter_episodes(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self.n_episodes):
            yield self.get_episode(i)

    # ------------------------------------------------------------------ writing
    def add_episode(self, episode: Mapping[str, np.ndarray], *, chunk_steps: int = DEFAULT_CHUNK_STEPS) -> None:
        """Append one episode: every key must have the same number of steps and match existing keys/shapes."""
        if not episode:
            raise ReplayBufferError("add_episode: empty episode dict")
        arrays = {key: np.asarray(value) for key, value in episode.items()}
        lengths = {key: (a.shape[0] if a.ndim else None) for key, a in arrays.items()}
        if any(length is None for length in lengths.values()):
            scalars = [k for k, length in lengths.items() if length is None]
            raise ReplayBufferError(f"add_episode: keys {scalars} are scalars; every key needs a leading time axis")
        if len(set(lengths.values())) != 1:
            raise ReplayBufferError(f"add_episode: keys have different numbers of steps: {lengths}")
        n_new = next(iter(lengths.values()))
        if n_new == 0:
            raise ReplayBufferError("add_episode: episode has zero steps")
        existing = self.keys()
        if not existing and self.n_steps:
            raise ReplayBufferError(f"add_episode: buffer has {self.n_steps} steps in meta/episode_ends but no data arrays")
        if existing and set(existing) != set(arrays):
            raise ReplayBufferError(
                f"add_episode: keys {sorted(arrays)} differ from the buffer's keys {sorted(existing)}"
            )
        data = self.root["data"]
        for key, value in arrays.items():  # check everything first: a failed add must not leave ragged arrays
            if key in data and data[key].shape[1:] != value.shape[1:]:
                raise ReplayBufferError(
                    f"add_episode: key {key!r} has per-step shape {value.shape[1:]}, buffer has {data[key].shape[1:]}"
                )
        for key, value in arrays.items():
            if key in data:
                target = data[key]
                target.append(value.astype(target.dtype, copy=False))
            else:
                steps = min(chunk_steps, IMAGE_CHUNK_STEPS) if value.ndim == 4 else chunk_steps  # images: small chunks
                data.create_dataset(
                    key,
                    data=value,
                    chunks=(steps,) + value.shape[1:],
                    dtype=value.dtype,
                )
        ends = self.root["meta/episode_ends"]
        ends.append(np.array([self.n_steps + n_new], dtype=np.int64))

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "<memory>"
        shapes = {key: self[key].shape for key in self.keys()}
        return f"ReplayBuffer({where}, episodes={self.n_episodes}, steps={self.n_steps}, data={shapes})"
