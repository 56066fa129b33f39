"""robomimic HDF5 write/read/import: the file follows robomimic's layout and converts to the zarr layout."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from paradigms_policy.data.replay_buffer import ReplayBuffer
from paradigms_policy.data.robomimic_hdf5 import (
    RobomimicFormatError,
    import_robomimic_hdf5,
    read_robomimic_hdf5,
    write_robomimic_hdf5,
)

ENV_ARGS = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"], "control_freq": 20}}


def _episodes(n: int = 11, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        length = 3 + i
        episodes.append({
            "obs": {"robot0_eef_pos": rng.normal(size=(length, 3)).astype(np.float32),
                    "object": rng.normal(size=(length, 10)).astype(np.float32)},
            "actions": rng.uniform(-1, 1, size=(length, 7)),
            "states": rng.normal(size=(length, 32)),
            "rewards": np.zeros(length),
            "dones": np.eye(1, length, length - 1)[0],
        })
    return episodes


def test_written_file_has_robomimic_layout(tmp_path):
    path = write_robomimic_hdf5(tmp_path / "demo.hdf5", _episodes(), ENV_ARGS, train_fraction=0.9, seed=3)
    with h5py.File(path, "r") as f:
        assert f["data"].attrs["total"] == sum(3 + i for i in range(11))
        assert json.loads(f["data"].attrs["env_args"]) == ENV_ARGS
        assert f["data/demo_10"].attrs["num_samples"] == 13
        assert f["data/demo_10/obs/object"].shape == (13, 10)
        assert f["data/demo_0/actions"].shape == (3, 7)
        train = [n.decode() for n in f["mask/train"][()]]
        valid = [n.decode() for n in f["mask/valid"][()]]
        assert f["mask/train"].dtype.kind == "S"
    assert len(train) == 10 and len(valid) == 1
    assert sorted(train + valid, key=lambda n: int(n.split("_")[1])) == [f"demo_{i}" for i in range(11)]


def test_read_round_trip_in_numeric_demo_order(tmp_path):
    episodes = _episodes()
    path = write_robomimic_hdf5(tmp_path / "demo.hdf5", episodes, ENV_ARGS)
    read, env_args, masks = read_robomimic_hdf5(path)
    assert env_args == ENV_ARGS
    assert [e["name"] for e in read] == [f"demo_{i}" for i in range(11)]  # demo_10 after demo_9
    for original, loaded in zip(episodes, read):
        for key in ("actions", "states", "rewards", "dones"):
            np.testing.assert_array_equal(loaded[key], original[key])
        np.testing.assert_array_equal(loaded["obs"]["object"], original["obs"]["object"])
    assert set(masks) == {"train", "valid"}


def test_split_is_seeded(tmp_path):
    a = read_robomimic_hdf5(write_robomimic_hdf5(tmp_path / "a.hdf5", _episodes(), ENV_ARGS, seed=1))[2]
    b = read_robomimic_hdf5(write_robomimic_hdf5(tmp_path / "b.hdf5", _episodes(), ENV_ARGS, seed=1))[2]
    c = read_robomimic_hdf5(write_robomimic_hdf5(tmp_path / "c.hdf5", _episodes(), ENV_ARGS, seed=2))[2]
    assert a == b and len(a["valid"]) == 1
    assert a["valid"] != c["valid"] or a["train"] != c["train"]


def test_import_to_zarr_layout(tmp_path):
    episodes = _episodes()
    hdf5 = write_robomimic_hdf5(tmp_path / "demo.hdf5", episodes, ENV_ARGS)
    buffer = import_robomimic_hdf5(hdf5, tmp_path / "demo.zarr", ["object", "robot0_eef_pos"])
    reopened = ReplayBuffer.open(tmp_path / "demo.zarr")
    for rb in (buffer, reopened):
        assert sorted(rb.keys()) == ["action", "object", "robot0_eef_pos"]
        np.testing.assert_array_equal(rb.episode_lengths, [3 + i for i in range(11)])
        np.testing.assert_allclose(rb.get_episode(10)["action"], episodes[10]["actions"])
        np.testing.assert_array_equal(rb.get_episode(4)["object"], episodes[4]["obs"]["object"])
        assert rb.attrs["env_args"] == ENV_ARGS
        assert rb.attrs["obs_keys"] == ["object", "robot0_eef_pos"]


def test_import_names_missing_obs_key(tmp_path):
    hdf5 = write_robomimic_hdf5(tmp_path / "demo.hdf5", _episodes(2), ENV_ARGS)
    with pytest.raises(RobomimicFormatError, match=r"no obs key\(s\) \['gripper'\]"):
        import_robomimic_hdf5(hdf5, None, ["object", "gripper"])


def test_write_rejects_inconsistent_episode(tmp_path):
    episodes = _episodes(2)
    episodes[1]["actions"] = episodes[1]["actions"][:-1]
    with pytest.raises(RobomimicFormatError, match="episode 1: arrays have different numbers of steps"):
        write_robomimic_hdf5(tmp_path / "bad.hdf5", episodes, ENV_ARGS)
    with pytest.raises(RobomimicFormatError, match="env_kwargs"):
        write_robomimic_hdf5(tmp_path / "bad.hdf5", _episodes(1), {"env_name": "Lift", "type": 1})


def test_read_rejects_non_robomimic_file(tmp_path):
    path = tmp_path / "other.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(RobomimicFormatError, match="no 'data' group"):
        read_robomimic_hdf5(path)
