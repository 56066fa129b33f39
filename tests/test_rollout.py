"""Receding-horizon rollouts: the control loop on fakes, the statistics, and paradigms-rollout end to end."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

from paradigms_policy.sim.rollout import format_table, run_episode, summarize, wilson_interval, EpisodeResult


class CounterEnv(gym.Env):
    """obs["x"] = number of steps taken; succeeds (terminates) after ``succeed_at`` steps."""

    def __init__(self, succeed_at: int = 100, max_episode_steps: int = 50):
        self.observation_space = gym.spaces.Dict({"x": gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)})
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.succeed_at, self.max_episode_steps = succeed_at, max_episode_steps
        self.actions: list[np.ndarray] = []
        self.seeds: list[int | None] = []

    def reset(self, *, seed=None, options=None):
        self.t = 0
        self.seeds.append(seed)
        return {"x": np.zeros(1, np.float32)}, {"is_success": False}

    def step(self, action):
        self.actions.append(np.asarray(action))
        self.t += 1
        success = self.t >= self.succeed_at
        return ({"x": np.full(1, self.t, np.float32)}, float(success), success,
                self.t >= self.max_episode_steps and not success, {"is_success": success})


class RecordingPolicy:
    """Policy stand-in that records what the control loop hands it."""

    n_obs_steps, n_action_steps, horizon, obs_keys = 2, 3, 8, ["x"]

    def __init__(self):
        self.windows, self.n_executed, self.resets, self.chunk = [], [], 0, 0

    def reset(self):
        self.resets += 1

    def predict_action(self, obs, *, n_executed=None, deadline=None, seed=None):
        self.windows.append(obs["x"][:, 0].copy())
        self.n_executed.append(n_executed)
        self.chunk += 1
        action = np.full((self.n_action_steps, 2), self.chunk, np.float32)
        return SimpleNamespace(action=action, stats=SimpleNamespace(rounds=4, nfe=40, deadline_hit=False))


def test_receding_horizon_loop_matches_diffusion_policy():
    env, policy = CounterEnv(succeed_at=7), RecordingPolicy()
    result = run_episode(env, policy, seed=11)
    assert env.seeds == [11] and policy.resets == 1
    # history starts as the first observation repeated, then holds the last n_obs_steps observations
    assert [w.tolist() for w in policy.windows] == [[0, 0], [2, 3], [5, 6]]
    assert policy.n_executed == [None, 3, 3]
    # every action of a chunk is executed in order, and the episode stops at success
    assert [a[0] for a in env.actions] == [1, 1, 1, 2, 2, 2, 3]
    assert result.success and result.length == 7 and result.max_reward == 1.0
    assert result.rounds == [4, 4, 4] and len(result.latency_ms) == 3


def test_episode_stops_at_max_steps_without_success():
    env, policy = CounterEnv(), RecordingPolicy()
    result = run_episode(env, policy, seed=0, max_steps=5)
    assert not result.success and result.length == 5 and len(env.actions) == 5
    assert policy.n_executed == [None, 3]


def test_wilson_interval_reference_values():
    lo, hi = wilson_interval(45, 50)
    assert lo == pytest.approx(0.7864, abs=1e-3) and hi == pytest.approx(0.9565, abs=1e-3)
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0 and hi == pytest.approx(0.0713, abs=1e-3)
    assert wilson_interval(50, 50)[1] == 1.0


def test_summarize_aggregates_chunks_and_episodes():
    results = [
        EpisodeResult(seed=1, success=True, max_reward=1.0, length=10, rounds=[2, 4], nfe=[1, 1], latency_ms=[10.0, 30.0]),
        EpisodeResult(seed=2, success=False, max_reward=0.0, length=20, rounds=[6], nfe=[1], latency_ms=[20.0]),
    ]
    s = summarize(results)
    assert s["success_rate"] == 0.5 and s["successes"] == 1 and s["episodes"] == 2
    assert s["rounds_median"] == 4.0 and s["latency_ms_p50"] == 20.0 and s["chunks"] == 3
    assert s["episode_length_mean"] == 15.0 and s["mean_max_reward"] == 0.5
    assert s["success_ci95"][0] < 0.5 < s["success_ci95"][1]
    assert "x" in format_table({"task": "t", "episodes": 2, "samplers": {"x": s}})


# -- end to end with a tiny trained checkpoint -------------------------------------------------------
def _train_tiny(zarr_path, out_dir):
    from omegaconf import OmegaConf

    from paradigms_policy import paths
    from paradigms_policy.train import train

    cfg = OmegaConf.load(paths.config_dir() / "train.yaml")
    del cfg["hydra"]
    overrides = {
        "out_dir": str(out_dir), "dataset": {"path": str(zarr_path), "obs_keys": None, "val_ratio": 0.2},
        "horizon": 8, "n_obs_steps": 2, "n_action_steps": 4,
        "model": {"down_dims": [8, 16], "diffusion_step_embed_dim": 8, "n_groups": 4},
        "lr_scheduler": {"warmup_steps": 1},
        "training": {"max_steps": 2, "batch_size": 8, "val_every": 2, "val_batches": 1, "log_every": 1,
                     "checkpoint_every": 100, "progress": False, "num_threads": 1},
    }
    cfg = OmegaConf.merge(cfg, overrides)
    return train(cfg)


@pytest.fixture(scope="module")
def lift_shaped_checkpoint(tmp_path_factory):
    """A tiny policy trained for 2 steps on random data with Lift's obs keys and 7-d actions."""
    from paradigms_policy.data.replay_buffer import ReplayBuffer

    root = tmp_path_factory.mktemp("tiny_lift")
    buffer = ReplayBuffer.create(root / "lift.zarr")
    rng = np.random.default_rng(0)
    for _ in range(4):
        T = 20
        buffer.add_episode({
            "robot0_eef_pos": rng.normal(size=(T, 3)).astype(np.float32),
            "robot0_eef_quat": rng.normal(size=(T, 4)).astype(np.float32),
            "robot0_gripper_qpos": rng.normal(size=(T, 2)).astype(np.float32),
            "object": rng.normal(size=(T, 10)).astype(np.float32),
            "action": rng.uniform(-0.2, 0.2, size=(T, 7)).astype(np.float32),
        })
    return _train_tiny(root / "lift.zarr", root / "train")


@pytest.mark.sim
def test_rollout_app_two_episodes_end_to_end(lift_shaped_checkpoint, tmp_path, capsys):
    from paradigms_policy import rollout_app

    out_dir = tmp_path / "rollout"
    argv = sys.argv
    sys.argv = ["paradigms-rollout", f"checkpoint={lift_shaped_checkpoint}", "task=lift", "episodes=2",
                "samplers=[ddim_sequential,picard_warm]", f"out_dir={out_dir}", "max_steps=12", "start_seed=5"]
    try:
        rollout_app.main()
    finally:
        sys.argv = argv
    printed = capsys.readouterr().out
    assert "ddim_sequential" in printed and "picard_warm" in printed
    report = json.loads((out_dir / "rollout.json").read_text())
    assert report["task"] == "lift" and report["episodes"] == 2 and report["seeds"] == [5, 6]
    assert set(report["samplers"]) == {"ddim_sequential", "picard_warm"}
    for name, s in report["samplers"].items():
        assert 0.0 <= s["success_ci95"][0] <= s["success_rate"] <= s["success_ci95"][1] <= 1.0
        assert [e["seed"] for e in s["per_episode"]] == [5, 6]  # every sampler on the same seeds
        assert all(e["length"] == 12 for e in s["per_episode"])  # 3 chunks of n_action_steps=4
        assert s["chunks"] == 6 and s["rounds_median"] >= 1 and s["latency_ms_p50"] > 0
    assert report["samplers"]["ddim_sequential"]["rounds_median"] == 16  # one round per DDIM step


@pytest.mark.sim
def test_mismatched_checkpoint_fails_before_any_episode(bimodal_zarr, tmp_path, monkeypatch):
    from paradigms_policy.sim import rollout
    from paradigms_policy.sim.envs import TaskMismatchError

    checkpoint = _train_tiny(bimodal_zarr, tmp_path / "train")  # obs pos/target, 2-d actions

    def no_episodes(*args, **kwargs):
        raise AssertionError("an episode started despite the mismatch")

    monkeypatch.setattr(rollout, "run_episode", no_episodes)
    with pytest.raises(TaskMismatchError) as excinfo:
        rollout.evaluate(str(checkpoint), "lift", ["ddim_sequential"], episodes=1, progress=None)
    message = str(excinfo.value)
    assert "'pos'" in message and "'target'" in message and "action" in message and "[7]" in message
