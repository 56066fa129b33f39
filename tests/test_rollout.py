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
    """Policy stand-in that records what the control loop hands it.

    Chunk c predicts action (c, i) at horizon index i, so the executed actions show which chunk
    and which index ran at every step.
    """

    n_obs_steps, n_action_steps, horizon, obs_keys = 2, 3, 8, ["x"]

    def __init__(self):
        self.windows, self.n_executed, self.known, self.resets, self.chunk = [], [], [], 0, 0

    def reset(self):
        self.resets += 1

    def predict_action(self, obs, *, n_executed=None, deadline=None, seed=None, known_actions=None):
        self.windows.append(obs["x"][:, 0].copy())
        self.n_executed.append(n_executed)
        self.known.append(None if known_actions is None else np.asarray(known_actions).tolist())
        self.chunk += 1
        action_pred = np.stack([np.full(self.horizon, self.chunk), np.arange(self.horizon)], axis=1).astype(np.float32)
        start = self.n_obs_steps - 1
        return SimpleNamespace(action=action_pred[start:start + self.n_action_steps], action_pred=action_pred,
                               stats=SimpleNamespace(rounds=4, nfe=40, deadline_hit=False))


def executed(env) -> list[tuple[int, int]]:
    return [(int(a[0]), int(a[1])) for a in env.actions]


@pytest.mark.parametrize("execution", ["naive", "aligned", "inpaint"])
def test_receding_horizon_loop_matches_diffusion_policy(execution):
    """With no delay every execution mode is DiffusionPolicy's synchronous loop."""
    env, policy = CounterEnv(succeed_at=7), RecordingPolicy()
    result = run_episode(env, policy, seed=11, execution=execution)
    assert env.seeds == [11] and policy.resets == 1
    # history starts as the first observation repeated, then holds the last n_obs_steps observations
    assert [w.tolist() for w in policy.windows] == [[0, 0], [2, 3], [5, 6]]
    assert policy.n_executed == [None, 3, 3]
    assert policy.known == [None, None, None]
    # the executed slice (from index n_obs_steps - 1) runs in order, and the episode stops at success
    assert executed(env) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (3, 1)]
    assert result.success and result.length == 7 and result.max_reward == 1.0
    assert result.rounds == [4, 4, 4] and len(result.latency_ms) == 3
    assert result.dropped_actions == 0 and result.idle_steps == 0


def test_delay_naive_starts_late_chunks_at_their_first_action():
    env, policy = CounterEnv(succeed_at=10), RecordingPolicy()
    result = run_episode(env, policy, seed=0, delay_steps=2, execution="naive")
    # chunk 2 observes at step 3 and arrives at step 5; meanwhile chunk 1 keeps running
    assert [w.tolist() for w in policy.windows] == [[0, 0], [2, 3], [5, 6], [8, 9]]
    assert policy.n_executed == [None, 3, 3, 3]
    assert executed(env) == [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (2, 1), (2, 2), (2, 3), (3, 1), (3, 2)]
    assert result.dropped_actions == 0 and result.idle_steps == 0


@pytest.mark.parametrize("execution", ["aligned", "inpaint"])
def test_delay_aligned_drops_the_actions_whose_time_has_passed(execution):
    env, policy = CounterEnv(succeed_at=10), RecordingPolicy()
    result = run_episode(env, policy, seed=0, delay_steps=2, execution=execution)
    # action j of chunk 2 belongs to step 3 + j; it arrives at step 5, so j = 0, 1 are dropped
    assert executed(env) == [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (2, 3), (2, 4), (2, 5), (3, 3), (3, 4)]
    assert result.dropped_actions == 4 and result.idle_steps == 0
    if execution == "inpaint":  # the two actions committed while chunk 2 is solved are known to it
        assert policy.known == [None, [[1, 4], [1, 5]], [[2, 4], [2, 5]], [[3, 4], [3, 5]]]
    else:
        assert policy.known == [None, None, None, None]
    # boundary jumps are measured where the executing chunk changes (here: between chunks 1 and 2, 2 and 3)
    assert len(result.boundary_jumps) == 2 and len(result.inside_jumps) == 7


def test_delay_longer_than_the_chunk_is_refused():
    with pytest.raises(ValueError, match="leaves nothing to run"):
        run_episode(CounterEnv(), RecordingPolicy(), seed=0, delay_steps=7, execution="aligned")


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


def _synchronous_reference(env, policy, seed: int, steps: int, noise_seed: int) -> list[np.ndarray]:
    """The first version's loop, written out: predict, run n_action_steps actions, re-plan."""
    from collections import deque

    policy.reset()
    obs, _ = env.reset(seed=seed)
    history = deque([obs] * policy.n_obs_steps, maxlen=policy.n_obs_steps)
    actions, n_executed, chunk = [], None, 0
    while len(actions) < steps:
        window = {k: np.stack([h[k] for h in history]) for k in policy.obs_keys}
        out = policy.predict_action(window, n_executed=n_executed, seed=noise_seed + chunk)
        chunk, n_executed = chunk + 1, 0
        for action in out.action[: policy.n_action_steps]:
            obs, _, terminated, truncated, _ = env.step(action)
            history.append(obs)
            actions.append(np.asarray(action))
            n_executed += 1
            if terminated or truncated or len(actions) >= steps:
                return actions
    return actions


class RecordingEnv:
    """Wraps an env and records the actions it receives."""

    def __init__(self, env):
        self.env, self.actions = env, []
        self.action_space, self.max_episode_steps = env.action_space, env.max_episode_steps
        self.continuous_action_dims = env.continuous_action_dims

    def reset(self, **kw):
        return self.env.reset(**kw)

    def step(self, action):
        self.actions.append(np.asarray(action))
        return self.env.step(action)


@pytest.mark.sim
@pytest.mark.parametrize("sampler", ["ddim_sequential", "anderson_warm"])
def test_delay_zero_equals_the_synchronous_loop_exactly(lift_shaped_checkpoint, sampler):
    from paradigms_policy.policy import load_policy
    from paradigms_policy.sim.envs import make_task_env

    policy = load_policy(lift_shaped_checkpoint, sampler=sampler, num_inference_steps=10)
    env = make_task_env("lift")
    reference = _synchronous_reference(env, policy, seed=3, steps=14, noise_seed=3000)
    for execution in ("naive", "aligned", "inpaint"):
        recorder = RecordingEnv(env)
        run_episode(recorder, policy, seed=3, max_steps=14, noise_seed=3000, delay_steps=0, execution=execution)
        assert len(recorder.actions) == len(reference) == 14
        assert all(np.array_equal(a, b) for a, b in zip(recorder.actions, reference)), execution
    env.close()


@pytest.mark.sim
def test_inpainted_rollout_continues_exactly_from_the_committed_actions(lift_shaped_checkpoint):
    """With inpainting the new chunk's known actions equal what the robot ran: no jump is introduced there."""
    from paradigms_policy.policy import load_policy
    from paradigms_policy.sim.envs import make_task_env

    policy = load_policy(lift_shaped_checkpoint, sampler="ddim_sequential", num_inference_steps=10)
    predictions = []
    original = policy.predict_action

    def spy(obs, **kw):
        out = original(obs, **kw)
        predictions.append((kw.get("known_actions"), out.action_pred))
        return out

    policy.predict_action = spy
    env = make_task_env("lift")
    run_episode(env, policy, seed=4, max_steps=20, noise_seed=1, delay_steps=2, execution="inpaint")
    env.close()
    assert len(predictions) >= 3
    for known, action_pred in predictions[1:]:
        assert known is not None and known.shape == (2, 7)
        start = policy.n_obs_steps - 1
        np.testing.assert_allclose(action_pred[start:start + 2], known, atol=1e-5)
