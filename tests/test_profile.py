"""paradigms-profile on tiny networks: report shape, exactness at tight tolerance, files, bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from paradigms_policy.diffusion.samplers import make_sampler
from paradigms_policy.profile import run_profile
from paradigms_policy.profiling.episodes import control_cycles, episodes_from_npz, observation_windows

REPO = Path(__file__).resolve().parent.parent
ALL_SAMPLERS = ["ddpm_sequential", "ddim_sequential", "picard_cold", "picard_warm", "anderson_cold", "anderson_warm"]
TINY_RANDOM = [
    "checkpoint=random",
    "random_network.down_dims=[16,32]",
    "random_network.diffusion_step_embed_dim=16",
    "threads=1",
    "warmup_solves=1",
]
LIFT_OBS = {"object": [10], "robot0_eef_pos": [3], "robot0_eef_quat": [4], "robot0_gripper_qpos": [2]}


def profile_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base="1.3"):
        return compose("profile", overrides=list(overrides))


def make_tiny_checkpoint(path: Path) -> Path:
    """A random tiny checkpoint with Lift low-dim inputs and an action range far from [-1, 1]."""
    from paradigms_policy.checkpoint import save_checkpoint
    from paradigms_policy.model.normalizer import LinearNormalizer
    from paradigms_policy.training.network import PolicyNetwork, obs_encoder_spec

    torch.manual_seed(0)
    shape_meta = {"obs": {k: {"shape": s, "type": "low_dim"} for k, s in LIFT_OBS.items()}, "action": {"shape": [7]}}
    n_obs_steps = 2
    model_kwargs = dict(input_dim=7, global_cond_dim=19 * n_obs_steps, diffusion_step_embed_dim=16,
                        down_dims=[16, 32], kernel_size=3, n_groups=4)
    network = PolicyNetwork(obs_encoder_spec(shape_meta), model_kwargs, n_obs_steps)
    rng = np.random.default_rng(0)
    data = {k: rng.normal(size=(64, s[0])).astype(np.float32) for k, s in LIFT_OBS.items()}
    data["action"] = rng.uniform(-5.0, 5.0, size=(64, 7)).astype(np.float32)  # scale ~0.2 -> errors x5
    normalizer = LinearNormalizer().fit(data)
    return save_checkpoint(
        path,
        config={}, shape_meta=shape_meta, horizon=16, n_obs_steps=n_obs_steps, n_action_steps=8,
        model_kwargs=model_kwargs, obs_encoder=obs_encoder_spec(shape_meta),
        noise_scheduler={"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2",
                         "prediction_type": "epsilon", "clip_sample": True},
        state_dicts={"ema_model": network.state_dict()}, normalizer=normalizer.state_dict(), training={},
    )


@pytest.fixture(scope="module")
def tight_report(tmp_path_factory):
    """All six samplers, tolerance far below anything visible: parallel == sequential."""
    out = tmp_path_factory.mktemp("profile")
    cfg = profile_cfg(*TINY_RANDOM, f"out_dir={out}", "cycles=2", "tolerance=1e-6", "abs_tolerance=1e-7")
    return run_profile(cfg), out


def test_report_has_the_agreed_json_shape(tight_report):
    report, out = tight_report
    on_disk = json.loads((out / "profile.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["checkpoint"]["name"] == "random" and on_disk["checkpoint"]["sha256"] is None
    assert on_disk["checkpoint"]["description"].startswith("random network")
    assert on_disk["checkpoint"]["parameters"] > 0
    assert isinstance(on_disk["device"], str) and on_disk["device"].startswith("cpu")
    assert on_disk["steps"] == 100
    assert list(on_disk["samplers"]) == ALL_SAMPLERS
    for name, s in on_disk["samplers"].items():
        assert set(s["rounds"]) >= {"median", "p90", "max"}, name
        assert set(s["nfe"]) >= {"median"}, name
        assert set(s["latency_ms"]) >= {"p50", "p99", "max"}, name
        assert set(s["error"]) >= {"max_abs", "rms"}, name
        assert s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"]
        assert s["cycles"] == 2
        assert s["allocations"]["created_while_timed"] == {"slots": 0, "graphs": 0}, name
        assert s["allocations"]["after_warmup"]["slots"] == (1 if name.endswith("_sequential") else 2), name  # {1, widest}
        assert s["speedup_p50"]["vs_ddpm"] == pytest.approx(
            on_disk["samplers"]["ddpm_sequential"]["latency_ms"]["p50"] / s["latency_ms"]["p50"])
    assert "SYNTHETIC" in on_disk["observations"]


def test_rounds_and_evaluations_are_what_each_sampler_does(tight_report):
    samplers = tight_report[0]["samplers"]
    assert samplers["ddpm_sequential"]["rounds"] == {"median": 100.0, "p90": 100.0, "max": 100.0}
    assert samplers["ddpm_sequential"]["nfe"]["median"] == 100
    assert samplers["ddim_sequential"]["rounds"]["max"] == 16
    for name in ALL_SAMPLERS[2:]:
        s = samplers[name]
        assert 1 <= s["rounds"]["median"] <= s["rounds"]["max"] <= 100, name
        assert s["window"] == make_sampler(name).window and s["tolerance"] == pytest.approx(1e-6), name
        assert s["rounds"]["median"] <= s["nfe"]["median"] <= s["window"] * s["rounds"]["median"], name
        assert s["converged_fraction"] == 1.0, name


def test_parallel_samplers_match_sequential_at_tight_tolerance(tight_report):
    samplers = tight_report[0]["samplers"]
    for name in ("ddpm_sequential", "ddim_sequential"):
        assert samplers[name]["error"]["max_abs"] == 0.0  # a sequential sampler is its own reference
    for name in ALL_SAMPLERS[2:]:
        err = samplers[name]["error_normalized"]
        assert err["max_abs"] < 1e-4, (name, err)
        assert 0.0 <= err["rms"] <= err["max_abs"]


def test_png_is_written(tight_report):
    png = tight_report[1] / "profile.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_loose_tolerance_shows_error_in_action_units(tmp_path):
    """A real checkpoint: errors reported both normalized and unnormalized (action range ~10)."""
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.pt")
    cfg = profile_cfg(f"checkpoint={ckpt}", f"out_dir={tmp_path / 'out'}", "cycles=2", "warmup_solves=1", "threads=1",
                      "samplers=[picard_cold]", "tolerance=0.5", "abs_tolerance=0.05")
    report = run_profile(cfg)
    assert report["checkpoint"] == {"name": "tiny.pt", "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
                                    "parameters": report["checkpoint"]["parameters"]}
    assert str(tmp_path) not in (tmp_path / "out" / "profile.json").read_text()  # no path of this machine
    s = report["samplers"]["picard_cold"]
    assert s["error_normalized"]["max_abs"] > 0
    # action = (x - offset) / scale with scale = 2 / range ~ 0.2: errors grow by the same factor per dimension
    assert s["error"]["max_abs"] > 2.0 * s["error_normalized"]["max_abs"]
    assert s["error"]["max_abs"] < 10.0 * s["error_normalized"]["max_abs"]


def test_recorded_episode_is_used_and_budget_is_reported(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.pt")
    rng = np.random.default_rng(1)
    episode = {k: rng.normal(size=(40, s[0])).astype(np.float32) for k, s in LIFT_OBS.items()}
    np.savez(tmp_path / "tiny.episode.npz", **episode)  # picked up beside the checkpoint
    cfg = profile_cfg(f"checkpoint={ckpt}", f"out_dir={tmp_path / 'out'}", "cycles=10", "warmup_solves=1",
                      "threads=1", "samplers=[ddim_sequential,picard_warm]", "budget_ms=60")
    report = run_profile(cfg)
    assert report["observations"] == "1 recorded episode(s) of tiny.episode.npz"
    assert report["cycles"] == 5  # 40 steps, re-planning every 8
    for name in ("ddim_sequential", "picard_warm"):
        d = report["samplers"][name]["deadline"]
        assert d["budget_ms"] == 60.0 and d["calls"] == 5
        assert 0 <= d["late_beyond_one_round"] <= d["late"] <= d["calls"]
        assert 0 <= d["deadline_hit"] <= d["calls"]
    assert report["samplers"]["ddim_sequential"]["deadline"]["deadline_hit"] == 0  # sequential runs all steps


def test_npz_episodes_are_split_at_episode_ends(tmp_path):
    steps = {k: np.arange(30 * s[0], dtype=np.float32).reshape(30, s[0]) for k, s in LIFT_OBS.items()}
    np.savez(tmp_path / "two.npz", episode_ends=np.array([12, 30]), **steps)
    episodes = episodes_from_npz(tmp_path / "two.npz", list(LIFT_OBS))
    assert [len(e["object"]) for e in episodes] == [12, 18]
    np.testing.assert_array_equal(episodes[1]["object"][0], steps["object"][12])
    np.savez(tmp_path / "bad.npz", episode_ends=np.array([12, 29]), **steps)
    with pytest.raises(ValueError, match="episode_ends"):
        episodes_from_npz(tmp_path / "bad.npz", list(LIFT_OBS))


def test_replay_buffer_episodes_are_replayed_one_after_another(tmp_path):
    from paradigms_policy.data.replay_buffer import ReplayBuffer

    ckpt = make_tiny_checkpoint(tmp_path / "tiny.pt")
    buffer = ReplayBuffer.create(tmp_path / "demos.zarr")
    rng = np.random.default_rng(2)
    for _ in range(3):
        episode = {k: rng.normal(size=(17, s[0])).astype(np.float32) for k, s in LIFT_OBS.items()}
        buffer.add_episode({**episode, "action": rng.normal(size=(17, 7)).astype(np.float32)})
    cfg = profile_cfg(f"checkpoint={ckpt}", f"out_dir={tmp_path / 'out'}", f"episode_source={tmp_path / 'demos.zarr'}",
                      "episode_index=-1", "cycles=5", "warmup_solves=0", "threads=1", "samplers=[picard_warm]")
    report = run_profile(cfg)
    assert (report["cycles"], report["episodes"]) == (5, 2)  # 3 cycles from the last episode, 2 from the first
    assert report["observations"].startswith("recorded episodes of")


def test_control_cycles_flag_episode_starts():
    episodes = [{"a": np.arange(n, dtype=np.float32)[:, None]} for n in (17, 9, 30)]
    windows, starts = control_cycles(iter(episodes), n_obs_steps=2, n_action_steps=8, cycles=6)
    assert starts == [True, False, False, True, False, True]
    np.testing.assert_array_equal(windows[3]["a"][:, 0], [0, 0])  # second episode restarts with padding
    np.testing.assert_array_equal(windows[4]["a"][:, 0], [7, 8])


def test_episode_missing_a_key_is_a_clear_error(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.pt")
    np.savez(tmp_path / "partial.npz", object=np.zeros((20, 10), np.float32))
    cfg = profile_cfg(f"checkpoint={ckpt}", f"out_dir={tmp_path}", f"episode_source={tmp_path / 'partial.npz'}",
                      "samplers=[ddim_sequential]")
    with pytest.raises(KeyError, match="robot0_eef_pos"):
        run_profile(cfg)


@pytest.mark.parametrize(
    "override,error,match",
    [
        ("cycles=0", ValueError, "cycles"),
        ("samplers=[]", ValueError, "samplers"),
        ("samplers=[euler_magic]", ValueError, "euler_magic"),
        ("budget_ms=-5", ValueError, "budget_ms"),
        ("checkpoint=/nonexistent/ckpt.pt", FileNotFoundError, "nonexistent"),
    ],
)
def test_bad_configuration_raises(tmp_path, override, error, match):
    cfg = profile_cfg(*TINY_RANDOM, f"out_dir={tmp_path}", "cycles=1", override)
    with pytest.raises(error, match=match):
        run_profile(cfg)


def test_observation_windows_replan_every_n_action_steps():
    episode = {"a": np.arange(30, dtype=np.float32)[:, None], "b": np.arange(30, dtype=np.float32)[:, None] * 10}
    windows = observation_windows(episode, n_obs_steps=2, n_action_steps=8, cycles=10)
    assert len(windows) == 4  # ends at steps 0, 8, 16, 24
    np.testing.assert_array_equal(windows[0]["a"][:, 0], [0, 0])  # first step repeated at reset
    np.testing.assert_array_equal(windows[1]["a"][:, 0], [7, 8])
    np.testing.assert_array_equal(windows[3]["b"][:, 0], [230, 240])


def test_console_entry_point_runs(tmp_path):
    """``python -m paradigms_policy.profile`` with hydra overrides, as the paradigms-profile script runs it."""
    from paradigms_policy import paths

    try:
        paths.config_dir()
    except FileNotFoundError as exc:
        pytest.skip(f"package share directory not set up: {exc}")
    cmd = [sys.executable, "-m", "paradigms_policy.profile", *TINY_RANDOM, f"out_dir={tmp_path}", "cycles=2",
           "warmup_solves=0", "samplers=[ddim_sequential,anderson_warm]"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "anderson_warm" in proc.stdout and "latency ms" in proc.stdout
    report = json.loads((tmp_path / "profile.json").read_text())
    assert list(report["samplers"]) == ["ddim_sequential", "anderson_warm"]
    assert (tmp_path / "profile.png").is_file()
