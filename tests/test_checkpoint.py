"""Checkpoint files: round trip, and a clear CheckpointError for every way a file can be unusable."""

from __future__ import annotations

import pytest
import torch

from conftest import SHIPPED_CHECKPOINTS, make_random_checkpoint
from paradigms_policy.checkpoint import (
    FORMAT,
    CheckpointError,
    build_network,
    build_normalizer,
    load_checkpoint,
    save_checkpoint,
    slim_checkpoint,
)
from paradigms_policy.policy import load_policy


def test_round_trip_rebuilds_the_same_network(random_checkpoint):
    ckpt = load_checkpoint(random_checkpoint)
    assert ckpt["format"] == FORMAT and ckpt["version"] == 1
    assert ckpt["horizon"] == 8 and ckpt["n_obs_steps"] == 2 and ckpt["n_action_steps"] == 4
    network = build_network(ckpt)
    for name, tensor in network.state_dict().items():
        torch.testing.assert_close(tensor, ckpt["state_dicts"]["ema_model"][name])
    assert not network.training and not any(p.requires_grad for p in network.parameters())
    normalizer = build_normalizer(ckpt)
    assert set(normalizer.keys()) == {"pos", "target", "action"}
    slim = slim_checkpoint(ckpt)
    assert set(slim["state_dicts"]) == {"ema_model"} and set(ckpt["state_dicts"]) == {"ema_model", "model"}


def test_save_requires_the_documented_fields(tmp_path):
    with pytest.raises(CheckpointError, match=r"missing fields \[.*'normalizer'"):
        save_checkpoint(tmp_path / "x.pt", config={}, shape_meta={})


def test_missing_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="is not a file"):
        load_checkpoint(tmp_path)


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="is not a torch checkpoint file"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="is not a torch checkpoint file"):
        load_policy(path)


def test_torch_file_without_format(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="format is \"<no 'format' key>\""):
        load_checkpoint(path)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="holds a list, not a checkpoint dict"):
        load_checkpoint(path)


class _Arbitrary:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "workspace.pt"
    torch.save({"format": FORMAT, "payload": _Arbitrary()}, path)
    with pytest.raises(CheckpointError, match="not a plain-data checkpoint"):
        load_checkpoint(path)


def test_config_not_matching_weights_names_parameter_and_shapes(tmp_path):
    path = make_random_checkpoint(tmp_path / "a.pt", down_dims=(16, 32))
    ckpt = load_checkpoint(path)
    ckpt["model_kwargs"]["down_dims"] = [16, 64]  # config says a wider second level than the weights have
    bad = save_checkpoint(tmp_path / "bad.pt", **{k: v for k, v in ckpt.items() if k not in ("format", "version")})
    with pytest.raises(CheckpointError) as info:
        load_policy(bad)
    message = str(info.value)
    assert "do not fit" in message
    assert "model.mid_modules.0.blocks.0.block.0.weight: checkpoint (32, 32, 3) vs config (64, 64, 3)" in message
    assert "more shape mismatches" in message


def test_missing_weights_are_listed(tmp_path):
    ckpt = load_checkpoint(make_random_checkpoint(tmp_path / "a.pt"))
    del ckpt["state_dicts"]["ema_model"]["model.final_conv.1.bias"]
    with pytest.raises(CheckpointError, match=r"missing in checkpoint: \['model.final_conv.1.bias'\]"):
        build_network(ckpt)
    with pytest.raises(CheckpointError, match="no 'model_raw' weights"):
        build_network(ckpt, weights="model_raw")


@pytest.mark.parametrize("name", sorted(SHIPPED_CHECKPOINTS))
def test_shipped_checkpoint_acts_on_its_tasks_observations(name, shipped_episode, one_torch_thread):
    """Each shipped file loads as a Policy with the observation keys and shapes of its card, and one chunk
    predicted from two consecutive held-out observations is finite, of the right shape and inside the
    range of the training actions (PushT: pixel targets; Lift/Can: OSC deltas and gripper)."""
    import numpy as np

    obs_shapes, action_dim = SHIPPED_CHECKPOINTS[name]
    path, episode = shipped_episode(name)
    policy = load_policy(path, sampler="ddim_sequential")
    checkpoint = load_checkpoint(path)
    assert {k: v["shape"] for k, v in checkpoint["shape_meta"]["obs"].items()} == obs_shapes
    assert checkpoint["shape_meta"]["action"]["shape"] == [action_dim]
    assert sorted(policy.obs_keys) == sorted(obs_shapes)
    start = int(episode["episode_ends"][0]) // 2  # mid-episode of the first held-out demo
    obs = {k: episode[k][start:start + policy.n_obs_steps] for k in obs_shapes}
    out = policy.predict_action(obs, seed=0)
    assert out.action.shape == (policy.n_action_steps, action_dim)
    assert out.action_pred.shape == (checkpoint["horizon"], action_dim)
    assert np.all(np.isfinite(out.action_pred))
    low = checkpoint["normalizer"]["params_dict.action.input_stats.min"].numpy()
    high = checkpoint["normalizer"]["params_dict.action.input_stats.max"].numpy()
    margin = 0.01 * (high - low) + 1e-4  # clip_sample keeps samples in the training actions' range
    assert np.all((out.action_pred >= low - margin) & (out.action_pred <= high + margin))
