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
    next_obs_from,
    read_robomimic_hdf5,
    write_robomimic_hdf5,
)

ENV_ARGS = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"], "control_freq": 20}}


def _episodes(n: int = 11, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        length = 3 + i
        obs = {"robot0_eef_pos": rng.normal(size=(length + 1, 3)).astype(np.float32),
               "object": rng.normal(size=(length + 1, 10)).astype(np.float32)}  # one more: after the last action
        episodes.append({
            "obs": {k: v[:-1] for k, v in obs.items()},
            "next_obs": {k: v[1:] for k, v in obs.items()},
            "model_file": f"<mujoco model='demo_{i}'/>",
            "ep_meta": {},
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
        assert f["data/demo_10/next_obs/object"].shape == (13, 10)
        assert f["data/demo_3"].attrs["model_file"] == "<mujoco model='demo_3'/>"
        assert json.loads(f["data/demo_3"].attrs["ep_meta"]) == {}
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
        np.testing.assert_array_equal(loaded["next_obs"]["object"], original["next_obs"]["object"])
        assert loaded["num_samples"] == len(original["actions"])
        assert loaded["model_file"] == original["model_file"] and loaded["ep_meta"] == {}
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


def test_next_obs_from_shifts_and_appends_the_final_observation():
    obs = {"x": np.arange(4.0)[:, None]}
    nxt = next_obs_from(obs, {"x": np.array([9.0])})
    np.testing.assert_array_equal(nxt["x"][:, 0], [1.0, 2.0, 3.0, 9.0])
    with pytest.raises(RobomimicFormatError, match=r"final observation lacks obs key\(s\) \['x'\]"):
        next_obs_from(obs, {"y": np.zeros(1)})


@pytest.mark.parametrize("filter_key", [None, "train", "valid"])
def test_robomimic_sequence_dataset_defaults_read_the_file(tmp_path, robomimic_reader, filter_key):
    """robomimic's SequenceDataset access pattern (default arguments: next_obs loaded) reads every sample."""
    episodes = _episodes()
    path = write_robomimic_hdf5(tmp_path / "demo.hdf5", episodes, ENV_ARGS)
    reader = robomimic_reader(path, ["robot0_eef_pos", "object"], filter_by_attribute=filter_key)
    expected_demos = read_robomimic_hdf5(path)[2][filter_key] if filter_key else [f"demo_{i}" for i in range(11)]
    assert reader.demos == sorted(expected_demos, key=lambda n: int(n[5:]))
    assert len(reader) == sum(len(episodes[int(n[5:])]["actions"]) for n in reader.demos)
    assert reader.env_meta() == ENV_ARGS
    assert reader.shape_meta() == {"ac_dim": 7, "all_shapes": {"object": (10,), "robot0_eef_pos": (3,)}}
    items = [reader[i] for i in range(len(reader))]
    first_demo = episodes[int(reader.demos[0][5:])]
    np.testing.assert_allclose(items[0]["actions"][0], first_demo["actions"][0])
    np.testing.assert_array_equal(items[0]["next_obs"]["object"][0], first_demo["obs"]["object"][1])
    assert {k: v.shape for k, v in items[-1]["obs"].items()} == {"robot0_eef_pos": (1, 3), "object": (1, 10)}


def test_robomimic_reader_with_frame_stack_and_sequence(tmp_path, robomimic_reader):
    """DiffusionPolicy's robomimic settings (2 stacked frames, 16-step sequences) pad at both ends."""
    episodes = _episodes(3)
    path = write_robomimic_hdf5(tmp_path / "demo.hdf5", episodes, ENV_ARGS)
    reader = robomimic_reader(path, ["object"], frame_stack=2, seq_length=16)
    item = reader[0]
    assert item["actions"].shape == (17, 7) and item["obs"]["object"].shape == (17, 10)
    np.testing.assert_array_equal(item["obs"]["object"][0], item["obs"]["object"][1])  # frame-stack padding
    np.testing.assert_array_equal(item["next_obs"]["object"][-1], episodes[0]["next_obs"]["object"][-1])


def test_file_without_next_obs_fails_robomimic_defaults(tmp_path, robomimic_reader):
    """The bug of issue 12, kept as a check that the reader is as strict as robomimic."""
    path = write_robomimic_hdf5(tmp_path / "demo.hdf5", _episodes(2), ENV_ARGS)
    with h5py.File(path, "a") as f:
        for name in ("demo_0", "demo_1"):
            del f[f"data/{name}/next_obs"]
    with pytest.raises(KeyError):
        robomimic_reader(path, ["object"])[0]
    assert robomimic_reader(path, ["object"], load_next_obs=False)[0]["obs"]["object"].shape == (1, 10)
    episodes, _, _ = read_robomimic_hdf5(path)  # our reader still takes such (older) files
    assert "next_obs" not in episodes[0]


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
    no_next = _episodes(1)
    del no_next[0]["next_obs"]
    with pytest.raises(RobomimicFormatError, match=r"missing \['next_obs'\].*next_obs_from"):
        write_robomimic_hdf5(tmp_path / "bad.hdf5", no_next, ENV_ARGS)
    short = _episodes(1)
    short[0]["next_obs"]["object"] = short[0]["next_obs"]["object"][:, :3]
    with pytest.raises(RobomimicFormatError, match="next_obs/object has shape"):
        write_robomimic_hdf5(tmp_path / "bad.hdf5", short, ENV_ARGS)


def test_read_rejects_wrong_num_samples(tmp_path):
    path = write_robomimic_hdf5(tmp_path / "demo.hdf5", _episodes(2), ENV_ARGS)
    with h5py.File(path, "a") as f:
        f["data/demo_1"].attrs["num_samples"] = 99
    with pytest.raises(RobomimicFormatError, match="demo_1 has num_samples 99 but 4 actions"):
        read_robomimic_hdf5(path)


def test_read_rejects_non_robomimic_file(tmp_path):
    path = tmp_path / "other.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(RobomimicFormatError, match="no 'data' group"):
        read_robomimic_hdf5(path)


def test_robomimic_own_sequence_dataset_reads_the_file_when_installed(tmp_path):
    """The same check with robomimic itself, where it is installed (not in this project's venv)."""
    dataset = pytest.importorskip("robomimic.utils.dataset")
    path = write_robomimic_hdf5(tmp_path / "demo.hdf5", _episodes(), ENV_ARGS)
    for filter_key in (None, "train"):
        ds = dataset.SequenceDataset(hdf5_path=str(path), obs_keys=("object", "robot0_eef_pos"),
                                     dataset_keys=("actions", "rewards", "dones"), filter_by_attribute=filter_key)
        item = ds[len(ds) - 1]
        assert item["next_obs"]["object"].shape == (1, 10) and item["actions"].shape == (1, 7)
