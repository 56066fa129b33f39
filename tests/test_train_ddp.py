"""paradigms-train under torchrun: N-process DDP (gloo on CPU) is the single-process run with the same global batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import compose_train_config, torchrun_train
from paradigms_policy.checkpoint import load_checkpoint
from paradigms_policy.train import train
from paradigms_policy.training.distributed import World
from paradigms_policy.training.sampling import batch_indices, step_noise

# 6 steps of the tiny model, every loss logged, a kept checkpoint at step 3 to resume from
STEPS = ["training.max_steps=6", "training.log_every=1", "training.val_every=3", "training.checkpoint_every=3",
         "training.keep_checkpoints=true", "training.batch_size=16", "lr_scheduler.warmup_steps=2"]


def test_ranks_split_the_global_batch():
    shards = [World(rank=r, size=4).shard(16) for r in range(4)]
    assert [np.arange(16)[s].tolist() for s in shards] == [list(range(4 * r, 4 * r + 4)) for r in range(4)]
    with pytest.raises(ValueError, match="not divisible by the 2 processes"):
        World(rank=0, size=2).shard(15)


def test_a_steps_batch_and_noise_depend_on_seed_and_step_only():
    first, again = batch_indices(100, 7, 16, seed=3), batch_indices(100, 7, 16, seed=3)
    assert np.array_equal(first, again) and len(set(first.tolist())) == 16
    assert not np.array_equal(first, batch_indices(100, 8, 16, seed=3))
    # one epoch visits every window once (the last partial batch dropped)
    epoch = np.concatenate([batch_indices(100, s, 16, seed=3) for s in range(6)])
    assert len(set(epoch.tolist())) == 96
    eps, t = step_noise(3, 7, (16, 8, 2), 100)
    eps2, t2 = step_noise(3, 7, (16, 8, 2), 100)
    assert torch.equal(eps, eps2) and torch.equal(t, t2) and t.min() >= 0 and t.max() < 100
    assert not torch.equal(eps, step_noise(3, 8, (16, 8, 2), 100)[0])


def _losses(run_dir):
    state = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    history = state["training"]["losses"]
    return ([r["train_loss"] for r in history if "train_loss" in r],
            [r["val_loss"] for r in history if "val_loss" in r], state)


@pytest.mark.slow
def test_two_process_gloo_ddp_follows_single_process_and_resumes_across_world_sizes(bimodal_zarr, tmp_path,
                                                                                    one_torch_thread):
    train(compose_train_config(bimodal_zarr, tmp_path / "single", STEPS))
    proc = torchrun_train(2, bimodal_zarr, tmp_path / "ddp", STEPS)
    assert "final checkpoint" in proc.stdout
    single_train, single_val, single = _losses(tmp_path / "single")
    ddp_train, ddp_val, ddp = _losses(tmp_path / "ddp")
    assert len(single_train) == 6 and single["training"]["world_size"] == 1 and ddp["training"]["world_size"] == 2
    np.testing.assert_allclose(ddp_train, single_train, rtol=1e-5)
    np.testing.assert_allclose(ddp_val, single_val, rtol=1e-5)
    for name, weight in single["state_dicts"]["ema_model"].items():  # rank 0's EMA: the deployed weights
        torch.testing.assert_close(ddp["state_dicts"]["ema_model"][name], weight, rtol=1e-4, atol=1e-6)
    assert not (tmp_path / "ddp" / "checkpoints" / "latest.pt.tmp").exists()

    # resume from the step-3 checkpoint of the other world size: the same last three steps
    step3 = "checkpoints/step_0000003.pt"
    train(compose_train_config(bimodal_zarr, tmp_path / "ddp_then_single",
                               STEPS + [f"resume_from={tmp_path / 'ddp' / step3}"]))
    torchrun_train(2, bimodal_zarr, tmp_path / "single_then_ddp", STEPS + [f"resume_from={tmp_path / 'single' / step3}"])
    for run in ("ddp_then_single", "single_then_ddp"):
        resumed_train, resumed_val, resumed = _losses(tmp_path / run)
        assert resumed["training"]["global_step"] == 6
        np.testing.assert_allclose(resumed_train, single_train, rtol=1e-5, err_msg=run)
        np.testing.assert_allclose(resumed_val, single_val, rtol=1e-5, err_msg=run)
