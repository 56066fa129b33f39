"""robosuite / gym-pusht envs created from robomimic-style metadata, seeding, compatibility checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from paradigms_policy.sim.envs import (
    TaskMismatchError,
    check_policy_fits_task,
    env_shape_meta,
    make_env,
    make_task_env,
    task_env_meta,
)

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def lift_env():
    env = make_task_env("lift")
    yield env
    env.close()


def test_lift_env_meta_is_robomimic_shaped_and_json_serializable():
    meta = task_env_meta("lift")
    assert meta["env_name"] == "Lift" and meta["type"] == 1
    kwargs = meta["env_kwargs"]
    assert kwargs["robots"] == ["Panda"] and kwargs["control_freq"] == 20 and kwargs["reward_shaping"] is False
    arm = kwargs["controller_configs"]["body_parts"]["right"]
    assert arm["type"] == "OSC_POSE" and arm["input_type"] == "delta"
    assert json.loads(json.dumps(meta)) == meta  # stored as the HDF5's env_args attribute


def test_lift_spaces_and_obs_from_metadata(lift_env):
    spaces = lift_env.observation_space.spaces
    assert {k: spaces[k].shape for k in spaces} == {
        "robot0_eef_pos": (3,), "robot0_eef_quat": (4,), "robot0_gripper_qpos": (2,), "object": (10,)
    }
    assert lift_env.action_space.shape == (7,)
    assert lift_env.action_space.low.min() == -1.0 and lift_env.action_space.high.max() == 1.0
    obs, info = lift_env.reset(seed=0)
    assert info["is_success"] is False
    for key, space in spaces.items():
        assert obs[key].dtype == np.float32 and obs[key].shape == space.shape
    # the cube rests on the table (z ~ 0.82) and its quaternion is a unit quaternion
    assert 0.80 < obs["object"][2] < 0.86
    assert np.linalg.norm(obs["object"][3:7]) == pytest.approx(1.0, abs=1e-4)
    obs, reward, terminated, truncated, info = lift_env.step(np.zeros(7))
    assert reward == 0.0 and not terminated and not truncated and info["is_success"] is False
    assert lift_env.get_state().ndim == 1


def test_same_seed_same_episode_different_seed_different_cube(lift_env):
    actions = np.random.default_rng(0).uniform(-1, 1, (5, 7))

    def run(seed):
        first, _ = lift_env.reset(seed=seed)
        state = lift_env.get_state()
        for action in actions:
            last, *_ = lift_env.step(action)
        return first, state, last

    first_a, state_a, last_a = run(7)
    first_b, state_b, last_b = run(7)
    first_c, _, _ = run(8)
    np.testing.assert_array_equal(state_a, state_b)
    for key in first_a:
        np.testing.assert_array_equal(first_a[key], first_b[key])
        np.testing.assert_array_equal(last_a[key], last_b[key])
    assert np.abs(first_a["object"][:3] - first_c["object"][:3]).max() > 1e-3


def test_reset_to_state_replays_the_stored_state(lift_env):
    obs, _ = lift_env.reset(seed=3)
    state = lift_env.get_state()
    lift_env.reset(seed=4)
    replayed = lift_env.reset_to_state(state)
    np.testing.assert_allclose(replayed["object"][:3], obs["object"][:3], atol=1e-6)


def test_truncates_after_max_episode_steps():
    env = make_env(task_env_meta("lift"), max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(np.zeros(7))[3] for _ in range(3)]
    env.close()
    assert flags == [False, False, True]


def test_bad_actions_and_metadata_are_rejected(lift_env):
    lift_env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        lift_env.step(np.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        lift_env.step(np.full(7, np.nan))
    with pytest.raises(ValueError, match="env_kwargs"):
        make_env({"env_name": "Lift", "type": 1})
    with pytest.raises(ValueError, match="not robosuite"):
        make_env({"env_name": "Lift", "type": 2, "env_kwargs": {}})
    with pytest.raises(ValueError, match="unknown robosuite task"):
        task_env_meta("stack")


def test_old_robosuite_part_controller_config_is_accepted():
    """robomimic datasets made with robosuite <= 1.4 store a bare OSC_POSE part config."""
    meta = task_env_meta("lift")
    meta["env_kwargs"]["controller_configs"] = {
        "type": "OSC_POSE", "input_max": 1, "input_min": -1,
        "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5], "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
        "kp": 150, "damping_ratio": 1, "impedance_mode": "fixed", "kp_limits": [0, 300],
        "damping_ratio_limits": [0, 10], "position_limits": None, "orientation_limits": None,
        "uncouple_pos_ori": True, "control_delta": True, "interpolation": None, "ramp_ratio": 0.2,
    }
    env = make_env(meta, seed=0)
    obs, *_ = env.step(np.r_[1.0, 0, 0, 0, 0, 0, -1.0])
    env.close()
    assert obs["robot0_eef_pos"].shape == (3,)


def test_check_policy_fits_task_names_every_mismatch(lift_env):
    check_policy_fits_task(env_shape_meta(lift_env), lift_env)  # the env fits itself
    bad = {
        "obs": {
            "robot0_eef_pos": {"shape": [3], "type": "low_dim"},
            "object": {"shape": [14], "type": "low_dim"},
            "agent_pos": {"shape": [2], "type": "low_dim"},
        },
        "action": {"shape": [2]},
    }
    with pytest.raises(TaskMismatchError) as excinfo:
        check_policy_fits_task(bad, lift_env)
    message = str(excinfo.value)
    assert "'object'" in message and "[14]" in message and "[10]" in message
    assert "'agent_pos'" in message and "not provided" in message
    assert "action" in message and "[2]" in message and "[7]" in message
    assert "obs key 'robot0_eef_pos'" not in message  # the matching key is not reported


def test_can_env_has_robomimic_object_size():
    env = make_task_env("can", seed=0)
    assert env.observation_space["object"].shape == (14,)
    assert env.env_meta["env_name"] == "PickPlaceCan"
    env.close()


def test_pusht_env_keys_and_seeding():
    env = make_task_env("pusht")
    assert env.observation_space["agent_pos"].shape == (2,)
    assert env.observation_space["keypoint"].shape == (8, 2)
    assert env.action_space.shape == (2,)
    a, info = env.reset(seed=5)
    b, _ = env.reset(seed=5)
    c, _ = env.reset(seed=6)
    assert info["is_success"] is False
    np.testing.assert_array_equal(a["keypoint"], b["keypoint"])
    assert np.abs(a["keypoint"] - c["keypoint"]).max() > 1.0
    obs, _, _, _, info = env.step(a["agent_pos"] + 5.0)
    assert obs["keypoint"].dtype == np.float32 and "is_success" in info
    env.close()


def test_pusht_state_round_trips_and_meta_is_robomimic_gym():
    """get_state rows (robomimic ``states``) put agent and T back exactly where they were."""
    from paradigms_policy.sim.pusht import pusht_env_meta

    env = make_task_env("pusht")
    obs, _ = env.reset(seed=3)
    for _ in range(5):
        obs, *_ = env.step(obs["agent_pos"] + 20.0)  # move (and maybe push) so the T's angle is not the reset one
    state = env.get_state()
    env.reset(seed=4)
    replayed = env.reset_to_state(state)
    np.testing.assert_allclose(replayed["keypoint"], obs["keypoint"], atol=1e-4)
    np.testing.assert_allclose(replayed["agent_pos"], obs["agent_pos"], atol=1e-4)
    with pytest.raises(ValueError, match=r"PushT state has shape \(4,\)"):
        env.reset_to_state(np.zeros(4))
    env.close()
    meta = pusht_env_meta()
    assert meta["type"] == 2 and meta["env_name"] == "gym_pusht/PushT-v0"
    assert json.loads(json.dumps(meta)) == meta
