"""paradigms-train: a tiny policy learns the bimodal demonstrations; checkpoints, resume, hydra app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from conftest import compose_train_config, make_bimodal_episodes
from paradigms_policy.checkpoint import load_checkpoint
from paradigms_policy.data.replay_buffer import ReplayBuffer
from paradigms_policy.policy import load_policy
from paradigms_policy.train import train
from paradigms_policy.training.ema import ema_decay
from paradigms_policy.training.lr import cosine_with_warmup

REPO = Path(__file__).resolve().parent.parent


def test_loss_falls_and_checkpoint_acts(trained_run):
    final = load_checkpoint(trained_run / "checkpoints" / "final.pt")
    losses = [r["train_loss"] for r in final["training"]["losses"] if "train_loss" in r]
    assert len(losses) == 12  # every 25 of 300 steps
    assert losses[-1] < 0.3 * losses[0], losses
    vals = [r["val_loss"] for r in final["training"]["losses"] if r.get("val_loss") is not None]
    assert len(vals) == 3 and vals[-1] < vals[0]
    assert final["training"]["global_step"] == 300
    assert set(final["state_dicts"]) == {"model", "ema_model", "optimizer", "lr_scheduler"}
    assert final["shape_meta"] == {"obs": {"pos": {"shape": [2], "type": "low_dim"},
                                           "target": {"shape": [3], "type": "low_dim"}},
                                   "action": {"shape": [2]}}
    assert final["config"]["optimizer"]["lr"] == 3e-3  # the resolved config travels with the weights
    log = json.loads((trained_run / "train_log.json").read_text())
    assert log["global_step"] == 300 and log["n_val_episodes"] == 3

    policy = load_policy(trained_run / "checkpoints" / "final.pt", sampler="ddim_sequential")
    episode = make_bimodal_episodes(1, seed=5)[0]
    obs = {"pos": episode["pos"][10:12], "target": episode["target"][10:12]}
    first = policy.predict_action(obs, seed=7)
    again = policy.predict_action(obs, seed=7)
    assert first.action.shape == (4, 2) and first.action_pred.shape == (8, 2)
    assert np.isfinite(first.action_pred).all()
    np.testing.assert_array_equal(first.action, again.action)
    # the policy has learned to move forward along x like the demonstrations (x grows by 1/40 per step)
    assert np.all(np.diff(first.action_pred[:, 0]) > 0)
    assert abs(first.action[0, 0] - episode["action"][11, 0]) < 0.1


def test_slim_export_holds_only_ema_weights(trained_run):
    slim = load_checkpoint(trained_run.parent / "slim.pt")
    full = load_checkpoint(trained_run / "checkpoints" / "final.pt")
    assert set(slim["state_dicts"]) == {"ema_model"} and slim["training"]["slim"]
    for name, tensor in full["state_dicts"]["ema_model"].items():
        torch.testing.assert_close(slim["state_dicts"]["ema_model"][name], tensor)
    # the EMA weights differ from the raw ones (they are an average)
    assert any(not torch.equal(full["state_dicts"]["model"][n], t) for n, t in full["state_dicts"]["ema_model"].items())


def test_resume_continues_from_latest(tmp_path):
    buffer = ReplayBuffer.create(tmp_path / "data.zarr")
    for episode in make_bimodal_episodes(n_episodes=6):
        buffer.add_episode(episode)
    common = ["training.val_every=10", "training.log_every=5", "training.checkpoint_every=10"]
    train(compose_train_config(tmp_path / "data.zarr", tmp_path / "run", common + ["training.max_steps=10"]))
    first = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    train(compose_train_config(tmp_path / "data.zarr", tmp_path / "run",
                               common + ["training.max_steps=20", "resume=true"]))
    resumed = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert resumed["training"]["global_step"] == 20
    assert [r["step"] for r in resumed["training"]["losses"]] == [5, 10, 15, 20]
    assert resumed["training"]["losses"][:2] == first["training"]["losses"]
    assert resumed["state_dicts"]["optimizer"]["state"][0]["step"] == 20  # AdamW state carried over


def test_hydra_app_runs_as_a_process(tmp_path, bimodal_zarr):
    out_dir = tmp_path / "app"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "paradigms_policy.train", f"dataset.path={bimodal_zarr}", f"out_dir={out_dir}",
            "training.max_steps=20", "training.val_every=10", "training.log_every=10", "training.checkpoint_every=10",
            "model.down_dims=[16,32]", "model.diffusion_step_embed_dim=16", "model.n_groups=4", "horizon=8",
            "n_action_steps=4", "training.batch_size=16", "training.num_threads=1", "training.progress=false"]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "final checkpoint" in proc.stdout
    assert (out_dir / "checkpoints" / "final.pt").is_file() and (out_dir / "checkpoints" / "latest.pt").is_file()
    assert (out_dir / ".hydra" / "config.yaml").is_file()
    assert not (tmp_path / "outputs").exists()  # hydra wrote into out_dir, not a dated cwd folder
    assert load_checkpoint(out_dir / "checkpoints" / "final.pt")["training"]["global_step"] == 20


def test_missing_dataset_is_named(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="dataset.path"):
        train(compose_train_config(tmp_path / "absent.zarr", tmp_path / "run", ["training.max_steps=1"]))


def test_ema_and_lr_schedules():
    assert ema_decay(0) == 0.0 and ema_decay(1) == 0.0
    assert abs(ema_decay(2) - (1 - 2 ** -0.75)) < 1e-12
    assert ema_decay(10**9) == 0.9999  # capped
    assert cosine_with_warmup(0, 10, 110) == 0.0 and cosine_with_warmup(5, 10, 110) == 0.5
    assert cosine_with_warmup(10, 10, 110) == 1.0 and abs(cosine_with_warmup(60, 10, 110) - 0.5) < 1e-12
    assert cosine_with_warmup(110, 10, 110) == 0.0
