"""paradigms-demos end to end: expert episodes -> robomimic HDF5 -> zarr, and the JSON summary."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def lift_demos(tmp_path_factory):
    """Two Lift demonstrations written by the hydra app itself (paradigms-demos)."""
    from paradigms_policy import demos

    out_dir = tmp_path_factory.mktemp("demos")
    argv = sys.argv
    sys.argv = ["paradigms-demos", "task=lift", "episodes=2", "seed=0", f"out_dir={out_dir}", "progress=false"]
    try:
        demos.main()
    finally:
        sys.argv = argv
    return out_dir


def test_hdf5_has_robomimic_layout(lift_demos):
    from paradigms_policy.data.robomimic_hdf5 import read_robomimic_hdf5
    from paradigms_policy.sim.envs import task_env_meta

    episodes, env_args, masks = read_robomimic_hdf5(lift_demos / "lift_demos.hdf5")
    assert len(episodes) == 2
    expected = task_env_meta("lift")
    assert env_args["env_name"] == "Lift" and env_args["env_kwargs"] == expected["env_kwargs"]
    assert sorted(masks["train"] + masks["valid"]) == ["demo_0", "demo_1"]
    for episode in episodes:
        T = len(episode["actions"])
        assert 20 < T <= 200
        assert {k: v.shape[1:] for k, v in episode["obs"].items()} == {
            "robot0_eef_pos": (3,), "robot0_eef_quat": (4,), "robot0_gripper_qpos": (2,), "object": (10,)
        }
        assert episode["actions"].shape == (T, 7) and np.all(np.abs(episode["actions"]) <= 1.0)
        assert episode["states"].shape[0] == T and episode["states"].ndim == 2
        assert episode["dones"][-1] == 1 and episode["dones"][:-1].sum() == 0
        assert episode["rewards"].max() == 1.0  # the sparse reward of a successful episode
        assert episode["num_samples"] == T and episode["model_file"].startswith("<mujoco")
        for key, obs in episode["obs"].items():  # next_obs[t] is the observation after action t
            np.testing.assert_array_equal(episode["next_obs"][key][:-1], obs[1:])
        # the cube ends up lifted: above the table by more than robosuite's 4 cm margin
        assert episode["obs"]["object"][-1, 2] > episode["obs"]["object"][0, 2] + 0.02


def test_states_replay_to_the_recorded_observations(lift_demos):
    from paradigms_policy.data.robomimic_hdf5 import read_robomimic_hdf5
    from paradigms_policy.sim.envs import make_env

    episodes, env_args, _ = read_robomimic_hdf5(lift_demos / "lift_demos.hdf5")
    env = make_env(env_args)
    episode = episodes[0]
    # robosuite refreshes observables on its own clock inside a control step, so a recorded obs
    # can lag the state by a physics sub-step (robomimic regenerates obs from states for this
    # reason): compare to within 2 mm, far below the centimetres the arm moves per step.
    for t in (0, len(episode["actions"]) // 2):
        obs = env.reset_to_state(episode["states"][t])
        np.testing.assert_allclose(obs["object"][:3], episode["obs"]["object"][t, :3], atol=2e-3)
        np.testing.assert_allclose(obs["robot0_eef_pos"], episode["obs"]["robot0_eef_pos"][t], atol=2e-3)
    moved = np.abs(episode["obs"]["robot0_eef_pos"][-1] - episode["obs"]["robot0_eef_pos"][0]).max()
    assert moved > 0.05
    env.close()


class _CountingEnv:
    """obs["t"] counts steps; the task succeeds at step 3 (a stand-in for a simulator in record_episode)."""

    def reset(self, seed=None):
        self.t = 0
        return {"t": np.array([0.0])}, {}

    def get_state(self):
        return np.array([float(self.t)])

    def step(self, action):
        self.t += 1
        return {"t": np.array([float(self.t)])}, float(self.t >= 3), False, False, {"is_success": self.t >= 3}


class _ZeroExpert:
    def act(self, obs):
        return np.zeros(2, dtype=np.float32)


def test_last_next_obs_is_the_observation_after_the_last_action():
    """As robomimic's dataset_states_to_obs.py writes it: next_obs[t] follows action t, the last row included."""
    from paradigms_policy.demos import record_episode

    result = record_episode(_CountingEnv(), _ZeroExpert(), 0, max_steps=20, hold_steps=2)
    episode = result.episode
    assert result.success and result.first_success_step == 3
    np.testing.assert_array_equal(episode["obs"]["t"][:, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(episode["next_obs"]["t"][:, 0], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(episode["states"][:, 0], [0, 1, 2, 3, 4])
    assert episode["model_file"] is None  # an env without a MuJoCo model


def test_robomimic_sequence_dataset_reads_the_demos(lift_demos, robomimic_reader):
    """Issue 12: robomimic's SequenceDataset with default arguments (next_obs loaded) reads paradigms-demos files."""
    keys = ["object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]
    for filter_key in (None, "train", "valid"):
        reader = robomimic_reader(lift_demos / "lift_demos.hdf5", keys, filter_by_attribute=filter_key)
        item = reader[len(reader) - 1]
        assert item["actions"].shape == (1, 7) and item["next_obs"]["object"].shape == (1, 10)
    assert reader.env_meta()["env_name"] == "Lift" and reader.shape_meta()["ac_dim"] == 7


def test_zarr_matches_hdf5(lift_demos):
    from paradigms_policy.data.replay_buffer import ReplayBuffer
    from paradigms_policy.data.robomimic_hdf5 import read_robomimic_hdf5

    episodes, _, _ = read_robomimic_hdf5(lift_demos / "lift_demos.hdf5")
    buffer = ReplayBuffer.open(lift_demos / "lift_demos.zarr")
    assert buffer.n_episodes == 2
    assert set(buffer.keys()) == {"robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object", "action"}
    for i, episode in enumerate(episodes):
        stored = buffer.get_episode(i)
        np.testing.assert_array_equal(stored["action"], episode["actions"])
        np.testing.assert_array_equal(stored["object"], episode["obs"]["object"])


def test_summary_reports_expert_success(lift_demos):
    summary = json.loads((lift_demos / "lift_demos.json").read_text())
    assert summary["episodes_attempted"] == 2 and summary["episodes_kept"] == 2
    assert summary["episodes_dropped"] == 0 and summary["expert_success_rate"] == 1.0
    assert summary["episode_length"]["min"] > summary["steps_to_first_success"]["min"]


def test_failed_episodes_are_dropped_or_kept_on_request(tmp_path, capsys):
    from paradigms_policy.data.robomimic_hdf5 import read_robomimic_hdf5
    from paradigms_policy.demos import generate_demos

    # 15 steps is too short for the expert to lift the cube
    with pytest.raises(RuntimeError, match="solved none"):
        generate_demos("lift", 1, 0, tmp_path / "dropped", max_steps=15, progress=False)
    assert "dropped 1 failed" in capsys.readouterr().out
    summary = generate_demos("lift", 1, 0, tmp_path / "kept", max_steps=15, keep_failed=True, progress=False)
    assert summary["episodes_kept"] == 1 and summary["expert_success_rate"] == 0.0
    episodes, _, _ = read_robomimic_hdf5(tmp_path / "kept" / "lift_demos.hdf5")
    assert len(episodes[0]["actions"]) == 15


def test_bad_arguments_are_rejected(tmp_path):
    from paradigms_policy.demos import generate_demos

    with pytest.raises(ValueError, match="no scripted expert"):
        generate_demos("stack", 1, 0, tmp_path)
    with pytest.raises(ValueError, match="episodes"):
        generate_demos("lift", 0, 0, tmp_path)


@pytest.fixture(scope="module")
def pusht_demos(tmp_path_factory):
    """One PushT demonstration from the scripted pusher (about a second)."""
    from paradigms_policy.demos import generate_demos

    out_dir = tmp_path_factory.mktemp("pusht_demos")
    summary = generate_demos("pusht", 1, 0, out_dir, progress=False)
    return out_dir, summary


def test_pusht_demos_are_robomimic_gym_datasets(pusht_demos, robomimic_reader):
    from paradigms_policy.data.robomimic_hdf5 import read_robomimic_hdf5

    out_dir, summary = pusht_demos
    assert summary["expert_success_rate"] == 1.0 and summary["hold_steps_after_success"] == 0
    episodes, env_args, _ = read_robomimic_hdf5(out_dir / "pusht_demos.hdf5")
    assert env_args["type"] == 2 and env_args["env_name"] == "gym_pusht/PushT-v0"  # robomimic's EnvType.GYM_TYPE
    assert env_args["env_kwargs"]["obs_type"] == "environment_state_agent_pos"
    episode = episodes[0]
    T = len(episode["actions"])
    assert episode["actions"].shape == (T, 2) and episode["states"].shape == (T, 5)
    assert {k: v.shape[1:] for k, v in episode["next_obs"].items()} == {"agent_pos": (2,), "keypoint": (8, 2)}
    assert episode["rewards"][-1] == 1.0 and episode["rewards"][:-1].max() < 1.0  # ends at the first success
    reader = robomimic_reader(out_dir / "pusht_demos.hdf5", ["agent_pos", "keypoint"])
    assert reader[T - 1]["next_obs"]["keypoint"].shape == (1, 8, 2)


def test_pusht_states_replay_exactly(pusht_demos):
    from paradigms_policy.data.robomimic_hdf5 import read_robomimic_hdf5
    from paradigms_policy.sim.pusht import make_pusht_env

    out_dir, _ = pusht_demos
    episode = read_robomimic_hdf5(out_dir / "pusht_demos.hdf5")[0][0]
    env = make_pusht_env()
    for t in (0, len(episode["actions"]) // 2, len(episode["actions"]) - 1):
        obs = env.reset_to_state(episode["states"][t])
        np.testing.assert_allclose(obs["keypoint"], episode["obs"]["keypoint"][t], atol=1e-3)
        np.testing.assert_allclose(obs["agent_pos"], episode["obs"]["agent_pos"][t], atol=1e-3)
    env.close()


@pytest.fixture(scope="module")
def lift_image_demos(tmp_path_factory):
    """One image Lift demonstration (agentview camera, 84x84, software-rendered)."""
    from paradigms_policy.demos import generate_demos

    out_dir = tmp_path_factory.mktemp("lift_image_demos")
    summary = generate_demos("lift_image", 1, 0, out_dir, progress=False)
    return out_dir, summary


def test_image_demos_record_uint8_camera_frames_in_hdf5_and_zarr(lift_image_demos, robomimic_reader):
    from paradigms_policy.data.replay_buffer import ReplayBuffer
    from paradigms_policy.data.robomimic_hdf5 import read_robomimic_hdf5

    out_dir, summary = lift_image_demos
    assert summary["expert_success_rate"] == 1.0 and "agentview_image" in summary["obs_keys"]
    episodes, env_args, _ = read_robomimic_hdf5(out_dir / "lift_image_demos.hdf5")
    kwargs = env_args["env_kwargs"]  # robomimic's camera metadata, so the env can be rebuilt with its renderer
    assert kwargs["use_camera_obs"] and kwargs["camera_names"] == ["agentview"] and kwargs["camera_heights"] == 84
    episode = episodes[0]
    T = len(episode["actions"])
    for group in ("obs", "next_obs"):  # robomimic's image layout: uint8 [T, H, W, C]
        frames = episode[group]["agentview_image"]
        assert frames.dtype == np.uint8 and frames.shape == (T, 84, 84, 3)
    np.testing.assert_array_equal(episode["next_obs"]["agentview_image"][:-1], episode["obs"]["agentview_image"][1:])
    assert episode["obs"]["robot0_eef_pos"].dtype == np.float32 and "object" in episode["obs"]
    assert not np.array_equal(episode["obs"]["agentview_image"][0], episode["obs"]["agentview_image"][-1])  # it moved
    buffer = ReplayBuffer.open(out_dir / "lift_image_demos.zarr")
    stored = buffer.get_episode(0)["agentview_image"]
    assert stored.dtype == np.uint8 and np.array_equal(stored, episode["obs"]["agentview_image"])
    reader = robomimic_reader(out_dir / "lift_image_demos.hdf5", ["agentview_image", "robot0_eef_pos"])
    assert reader[T - 1]["next_obs"]["agentview_image"].shape == (1, 84, 84, 3)
