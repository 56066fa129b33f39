"""SequenceDataset: DiffusionPolicy's padded windows, episode split, normalizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paradigms_policy.data.replay_buffer import ReplayBuffer
from paradigms_policy.data.sequence_dataset import SequenceDataset, split_episodes, window_indices


def _counting_buffer(lengths: list[int]) -> ReplayBuffer:
    """Episode e step s has value 100 * e + s in every key, so windows can be read off their values."""
    buffer = ReplayBuffer.create()
    for e, length in enumerate(lengths):
        steps = (100 * e + np.arange(length, dtype=np.float32))[:, None]
        buffer.add_episode({"obs": np.repeat(steps, 2, axis=1), "action": steps})
    return buffer


def test_window_indices_repeat_edge_frames():
    # one episode of 5 steps, horizon 4, pad 1 before and 1 after: window starts -1..2
    got = window_indices(np.array([5]), horizon=4, pad_before=1, pad_after=1)
    np.testing.assert_array_equal(got, [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 4]])


def test_windows_never_cross_episodes():
    ds = SequenceDataset(_counting_buffer([6, 9, 4]), horizon=8, obs_keys=["obs"], n_obs_steps=2, n_action_steps=4)
    for i in range(len(ds)):
        episode = np.unique(ds[i]["action"].numpy() // 100)
        assert episode.size == 1
    # windows per episode = length - horizon + pad_before + pad_after + 1, if positive
    assert len(ds) == sum(max(0, n - 8 + 1 + 3 + 1) for n in [6, 9, 4])


def test_item_shapes_and_padding_values():
    ds = SequenceDataset(_counting_buffer([10]), horizon=16, obs_keys=["obs"], n_obs_steps=2, n_action_steps=8)
    first, last = ds[0], ds[len(ds) - 1]
    assert first["obs"]["obs"].shape == (2, 2) and first["obs"]["obs"].dtype == torch.float32
    assert first["action"].shape == (16, 1)
    # first window: the observation history is the first frame repeated (pad_before = 1)
    np.testing.assert_array_equal(first["obs"]["obs"][:, 0], [0, 0])
    np.testing.assert_array_equal(first["action"][:3, 0], [0, 0, 1])
    # last window ends with the last frame repeated (pad_after = 7)
    np.testing.assert_array_equal(last["action"][-8:, 0], [9] * 8)


def test_batch_equals_items():
    ds = SequenceDataset(_counting_buffer([12, 20]), horizon=8, obs_keys=["obs"], n_obs_steps=3, n_action_steps=4)
    batch = ds.get_batch([3, 0, 17])
    for row, index in enumerate([3, 0, 17]):
        torch.testing.assert_close(batch["action"][row], ds[index]["action"])
        torch.testing.assert_close(batch["obs"]["obs"][row], ds[index]["obs"]["obs"])
    assert batch["obs"]["obs"].shape == (3, 3, 2)


def test_episode_split_is_disjoint_and_seeded():
    buffer = _counting_buffer([12] * 20)
    train = SequenceDataset(buffer, 8, ["obs"], n_action_steps=4, val_ratio=0.2, seed=7)
    val = train.get_validation_dataset()
    train_eps = {int(train[i]["action"][0, 0]) // 100 for i in range(len(train))}
    val_eps = {int(val[i]["action"][0, 0]) // 100 for i in range(len(val))}
    assert len(val_eps) == 4 and len(train_eps) == 16 and not train_eps & val_eps
    again = SequenceDataset(buffer, 8, ["obs"], n_action_steps=4, val_ratio=0.2, seed=7).get_validation_dataset()
    np.testing.assert_array_equal(again.indices, val.indices)
    assert split_episodes(5, 0.0, 0).sum() == 0 and split_episodes(2, 0.9, 0).sum() == 1


def test_normalizer_maps_data_to_unit_range():
    ds = SequenceDataset(_counting_buffer([10, 10]), 8, ["obs"], n_action_steps=4)
    normalizer = ds.get_normalizer()
    assert set(normalizer.keys()) == {"obs", "action"}
    scaled = normalizer["action"].normalize(ds.get_all_actions())
    assert float(scaled.min()) == pytest.approx(-1.0) and float(scaled.max()) == pytest.approx(1.0)
    assert ds.shape_meta == {"obs": {"obs": {"shape": [2], "type": "low_dim"}}, "action": {"shape": [1]}}


def test_bad_arguments_are_named(tmp_path):
    buffer = _counting_buffer([10])
    with pytest.raises(KeyError, match=r"no data key\(s\) \['eef'\]"):
        SequenceDataset(buffer, 8, ["eef"], n_action_steps=4)
    with pytest.raises(ValueError, match="n_obs_steps"):
        SequenceDataset(buffer, 4, ["obs"], n_obs_steps=5)
    with pytest.raises(ValueError, match="no training windows"):
        SequenceDataset(buffer, 16, ["obs"], pad_before=0, pad_after=0)


def test_opens_path_and_rejects_nan(tmp_path):
    buffer = ReplayBuffer.create(tmp_path / "nan.zarr")
    obs = np.zeros((10, 2), dtype=np.float32)
    obs[3, 1] = np.nan
    buffer.add_episode({"obs": obs, "action": np.zeros((10, 1), dtype=np.float32)})
    with pytest.raises(ValueError, match="data/obs contains NaN"):
        SequenceDataset(tmp_path / "nan.zarr", 8, ["obs"], n_action_steps=4)
