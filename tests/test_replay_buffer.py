"""ReplayBuffer: DiffusionPolicy zarr layout round trip and clear errors for malformed stores."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from paradigms_policy.data.replay_buffer import ReplayBuffer, ReplayBufferError


def _episode(length: int, offset: float) -> dict[str, np.ndarray]:
    return {
        "obs": (np.arange(length * 3, dtype=np.float32).reshape(length, 3) + offset),
        "action": np.full((length, 2), offset, dtype=np.float32),
    }


@pytest.mark.parametrize("on_disk", [True, False])
def test_round_trip_keeps_episodes_and_layout(tmp_path, on_disk):
    path = tmp_path / "rb.zarr" if on_disk else None
    buffer = ReplayBuffer.create(path)
    lengths = [5, 1, 7]
    for i, length in enumerate(lengths):
        buffer.add_episode(_episode(length, 100.0 * i))
    if on_disk:
        buffer = ReplayBuffer.open(path)
        # the raw layout is DiffusionPolicy's: data/<key> concatenated, meta/episode_ends int64 cumulative
        raw = zarr.open_group(str(path), mode="r")
        assert raw["meta/episode_ends"].dtype == np.int64
        np.testing.assert_array_equal(raw["meta/episode_ends"][:], [5, 6, 13])
        assert raw["data/obs"].shape == (13, 3)
    assert buffer.n_episodes == 3 and buffer.n_steps == 13
    np.testing.assert_array_equal(buffer.episode_lengths, lengths)
    assert sorted(buffer.keys()) == ["action", "obs"]
    for i, length in enumerate(lengths):
        expected = _episode(length, 100.0 * i)
        got = buffer.get_episode(i)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    np.testing.assert_array_equal(buffer.get_episode(-1)["action"], _episode(7, 200.0)["action"])


def test_copy_to_memory_is_independent_of_disk(tmp_path):
    path = tmp_path / "rb.zarr"
    disk = ReplayBuffer.create(path)
    disk.add_episode(_episode(4, 1.0))
    memory = ReplayBuffer.copy_to_memory(path)
    memory.add_episode(_episode(2, 2.0))
    assert memory.n_episodes == 2 and ReplayBuffer.open(path).n_episodes == 1


def test_create_refuses_to_overwrite(tmp_path):
    ReplayBuffer.create(tmp_path / "rb.zarr")
    with pytest.raises(FileExistsError):
        ReplayBuffer.create(tmp_path / "rb.zarr")
    assert ReplayBuffer.create(tmp_path / "rb.zarr", overwrite=True).n_episodes == 0


def test_missing_episode_ends_is_named(tmp_path):
    path = tmp_path / "bad.zarr"
    root = zarr.open_group(str(path), mode="w")
    root.create_dataset("data/obs", data=np.zeros((4, 2)))
    with pytest.raises(ReplayBufferError, match="missing 'meta/episode_ends'"):
        ReplayBuffer.open(path)


def test_ragged_data_key_is_named(tmp_path):
    path = tmp_path / "ragged.zarr"
    root = zarr.open_group(str(path), mode="w")
    root.create_dataset("data/obs", data=np.zeros((10, 2)))
    root.create_dataset("data/action", data=np.zeros((9, 2)))
    root.create_dataset("meta/episode_ends", data=np.array([4, 10], dtype=np.int64))
    with pytest.raises(ReplayBufferError, match=r"ragged.*'data/action' has 9 steps.*episode_ends\[-1\] = 10"):
        ReplayBuffer.open(path)


@pytest.mark.parametrize("ends", [[4, 3, 10], [0, 10], [5, 5, 10]])
def test_non_increasing_episode_ends_rejected(tmp_path, ends):
    path = tmp_path / "ends.zarr"
    root = zarr.open_group(str(path), mode="w")
    root.create_dataset("data/obs", data=np.zeros((10, 2)))
    root.create_dataset("meta/episode_ends", data=np.array(ends, dtype=np.int64))
    with pytest.raises(ReplayBufferError, match="strictly increasing"):
        ReplayBuffer.open(path)


def test_float_episode_ends_rejected(tmp_path):
    path = tmp_path / "float.zarr"
    root = zarr.open_group(str(path), mode="w")
    root.create_dataset("data/obs", data=np.zeros((4, 2)))
    root.create_dataset("meta/episode_ends", data=np.array([4.0]))
    with pytest.raises(ReplayBufferError, match="must be integer"):
        ReplayBuffer.open(path)


def test_open_non_zarr_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        ReplayBuffer.open(tmp_path / "absent.zarr")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ReplayBufferError, match="not a zarr group"):
        ReplayBuffer.open(tmp_path / "empty_dir")


def test_add_episode_validates_its_input():
    buffer = ReplayBuffer.create()
    with pytest.raises(ReplayBufferError, match="different numbers of steps"):
        buffer.add_episode({"obs": np.zeros((3, 2)), "action": np.zeros((4, 2))})
    buffer.add_episode(_episode(3, 0.0))
    with pytest.raises(ReplayBufferError, match="differ from the buffer's keys"):
        buffer.add_episode({"obs": np.zeros((3, 3))})
    with pytest.raises(ReplayBufferError, match="'action' has per-step shape"):
        buffer.add_episode({"obs": np.zeros((3, 3)), "action": np.zeros((3, 5))})
    with pytest.raises(ReplayBufferError, match="zero steps"):
        buffer.add_episode({"obs": np.zeros((0, 3)), "action": np.zeros((0, 2))})
    assert buffer.n_episodes == 1 and buffer.n_steps == 3  # failed adds leave no trace
    with pytest.raises(KeyError, match="no data key 'missing'"):
        buffer["missing"]


def test_export_validation_episodes_matches_the_training_split(tmp_path, bimodal_zarr):
    """The profiler's <checkpoint>.episode.npz: the held-out episodes of paradigms-train's split, in its layout."""
    from paradigms_policy.data.episode_export import export_validation_episodes
    from paradigms_policy.data.sequence_dataset import split_episodes
    from paradigms_policy.profiling.episodes import episodes_from_npz

    out = export_validation_episodes(bimodal_zarr, tmp_path / "x.episode.npz", val_ratio=0.2, seed=3)
    expected = np.flatnonzero(split_episodes(12, 0.2, 3))
    with np.load(out) as data:
        np.testing.assert_array_equal(data["demo_indices"], expected)
        assert set(data.files) == {"pos", "target", "action", "episode_ends", "demo_indices"}
    buffer = ReplayBuffer.open(bimodal_zarr)
    episodes = episodes_from_npz(out, ["pos", "target"])
    assert len(episodes) == len(expected)
    np.testing.assert_array_equal(episodes[-1]["pos"], buffer.get_episode(int(expected[-1]))["pos"])
