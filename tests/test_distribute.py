"""Episodes as jobs, run in this process or on Ray: same seeds, same results, lost workers' episodes retried."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from paradigms_policy.sim.distribute import resolve_backend
from paradigms_policy.sim.episodes import EpisodeJob, WorkerSettings
from paradigms_policy.sim.rollout import episode_jobs, episode_seeds
from paradigms_policy.sim.sweep import SweepRow, sweep_rows

REPO = Path(__file__).resolve().parent.parent
TIMING = ("latency_ms", "seconds")  # wall-clock fields: the only ones allowed to differ between runs


def deterministic(result: dict) -> dict:
    return {key: value for key, value in result.items() if key not in TIMING}


# -- jobs, backends and sweep grids (no Ray, no env) -------------------------------------------------
def test_jobs_keep_todays_seeds_and_noise_seeds():
    seeds = episode_seeds(3, start_seed=100)
    jobs = episode_jobs("lift", None, ["ddim_sequential", "anderson_warm"], seeds, delay_steps=2, execution="inpaint")
    assert [(j.sampler, j.seed) for j in jobs] == [("ddim_sequential", 100), ("ddim_sequential", 101),
                                                   ("ddim_sequential", 102), ("anderson_warm", 100),
                                                   ("anderson_warm", 101), ("anderson_warm", 102)]
    assert [j.noise_seed for j in jobs[:3]] == [100_000, 101_000, 102_000]  # seed * 1000, chunk c adds c
    assert all(j.delay_steps == 2 and j.execution == "inpaint" for j in jobs)
    assert len(set(jobs)) == len(jobs)  # jobs are hashable keys, one per episode


def test_backend_choice(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_backend("auto", 1, None) == "inline"
    assert resolve_backend("auto", 2, None) == "ray"
    assert resolve_backend("auto", 1, "auto") == "ray"
    assert resolve_backend("ray", 1, None) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert resolve_backend("auto", 1, None) == "ray"
    with pytest.raises(ValueError, match="inline runs one worker"):
        resolve_backend("inline", 2, None)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        resolve_backend("auto", 0, None)


def test_sweep_grid_runs_delay_zero_once():
    rows = sweep_rows(["lift"], ["a", "b"], [2, 0], ["naive", "inpaint"], checkpoints={"lift": "x.pt"},
                      inpainting="noised")
    assert [r.key for r in rows] == ["lift|a|d=0|any", "lift|a|d=2|naive", "lift|a|d=2|inpaint (noised)",
                                     "lift|b|d=0|any", "lift|b|d=2|naive", "lift|b|d=2|inpaint (noised)"]
    assert all(r.checkpoint == "x.pt" for r in rows)
    assert rows[1].inpainting is None and rows[2].inpainting == "noised"
    replans = sweep_rows(["lift"], ["a"], [2], ["aligned"], replan_every=[0, 4])
    assert [r.key for r in replans] == ["lift|a|d=2|aligned", "lift|a|d=2|aligned|k=4"]
    with pytest.raises(ValueError, match="unknown execution modes"):
        sweep_rows(["lift"], ["a"], [0], ["late"])


# -- the same episodes in this process and on Ray -----------------------------------------------------
@pytest.fixture(scope="module")
def lift_jobs(lift_random_checkpoint) -> list[EpisodeJob]:
    """Two samplers x 3 seeds, with delay and inpainting, 12 steps each (3 chunks)."""
    return episode_jobs("lift", str(lift_random_checkpoint), ["ddim_sequential", "anderson_warm"],
                        episode_seeds(3, start_seed=7), delay_steps=2, execution="inpaint", max_steps=12)


@pytest.fixture(scope="module")
def inline_results(lift_jobs) -> dict[EpisodeJob, dict]:
    """The reference: every job run in this process, one torch thread."""
    import torch

    from paradigms_policy.sim.distribute import run_jobs

    threads = torch.get_num_threads()
    try:
        outcome = run_jobs(lift_jobs, WorkerSettings(num_threads=1), workers=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert outcome.backend == "inline" and not outcome.retried
    return outcome.results


@pytest.mark.sim
def test_ray_two_workers_give_the_single_worker_results(ray_local, lift_jobs, inline_results):
    from paradigms_policy.sim.distribute import run_jobs

    finished = []
    outcome = run_jobs(lift_jobs, WorkerSettings(num_threads=1), workers=2, progress=False,
                       on_result=lambda job, result, worker: finished.append(worker))
    assert outcome.backend == "ray" and not outcome.retried and outcome.ray_init_s is None  # the fixture's Ray
    assert {info["package"] for info in outcome.worker_info} == {str(REPO / "paradigms_policy")}  # this checkout
    assert set(finished) == {0, 1}  # both workers ran episodes
    assert set(outcome.results) == set(lift_jobs)
    for job in lift_jobs:
        assert deterministic(outcome.results[job]) == deterministic(inline_results[job]), job
    assert any(r["inside_jumps"] for r in inline_results.values())  # the comparison covers executed actions


@pytest.mark.sim
def test_killed_worker_loses_only_its_episodes_which_are_retried(ray_local, lift_jobs, inline_results):
    from paradigms_policy.sim.distribute import RayEpisodePool

    seen: list[EpisodeJob] = []
    killed: list[int] = []
    with RayEpisodePool(WorkerSettings(num_threads=1), 2, max_retries=2) as pool:
        pids = pool.pids()
        for job, result, slot in pool.stream(lift_jobs):
            seen.append(job)
            assert deterministic(result) == deterministic(inline_results[job]), job
            if not killed:  # this worker still holds its next episode (it keeps two): kill it mid-run
                os.kill(pids[slot], signal.SIGKILL)
                killed.append(slot)
        retried = list(pool.retried)
        assert pool.pids()[killed[0]] != pids[killed[0]]  # a fresh worker took the dead one's place
        # an episode that raises is not a lost worker: its error comes back at once, without a retry
        bad = EpisodeJob("lift", lift_jobs[0].checkpoint, "no_such_sampler", 1, max_steps=4)
        with pytest.raises(ValueError, match="unknown sampler 'no_such_sampler'"):
            list(pool.stream([bad]))
        assert pool.retried == retried
    assert sorted(seen, key=str) == sorted(lift_jobs, key=str)  # every episode exactly once
    assert retried and set(retried) <= set(lift_jobs)


@pytest.mark.sim
def test_sweep_is_one_command_and_the_same_on_ray(ray_local, lift_random_checkpoint, tmp_path, monkeypatch, capsys,
                                                  one_torch_thread):
    from paradigms_policy import sweep_app
    from paradigms_policy.sim import sweep

    common = [f"checkpoints.lift={lift_random_checkpoint}", "tasks=[lift]", "samplers=[ddim_sequential]",
              "delays=[0,2]", "executions=[aligned,inpaint]", "episodes=2", "start_seed=3", "max_steps=12",
              "progress=false", "plot=false"]
    argv = sys.argv
    try:
        for workers in (1, 2):
            sys.argv = ["paradigms-sweep", *common, f"workers={workers}", f"out_dir={tmp_path / str(workers)}"]
            sweep_app.main()
    finally:
        sys.argv = argv
    printed = capsys.readouterr().out
    assert "| lift | `ddim_sequential` | 2 | inpaint |" in printed
    inline, on_ray = (json.loads((tmp_path / str(w) / "sweep.json").read_text()) for w in (1, 2))
    assert list(inline["rows"]) == ["lift|ddim_sequential|d=0|any", "lift|ddim_sequential|d=2|aligned",
                                    "lift|ddim_sequential|d=2|inpaint"]
    assert inline["last_run"]["backend"] == "inline" and on_ray["last_run"]["backend"] == "ray"
    timing = {"latency_ms_p50", "latency_ms_p90", "seconds_per_episode"}
    for key, row in inline["rows"].items():
        assert {k: v for k, v in row.items() if k not in timing} == \
               {k: v for k, v in on_ray["rows"][key].items() if k not in timing}, key
    assert (tmp_path / "1" / "sweep.md").read_text().count("| lift |") == 3

    # a rerun with the same out_dir finds every row done and runs no episode
    monkeypatch.setattr(sweep, "run_jobs", lambda *a, **k: pytest.fail("a finished row ran again"))
    rows = sweep_rows(["lift"], ["ddim_sequential"], [0, 2], ["aligned", "inpaint"],
                      checkpoints={"lift": str(lift_random_checkpoint)})
    again = sweep.run_sweep(rows, 2, tmp_path / "1", start_seed=3, max_steps=12, progress=False)
    assert again["rows"] == inline["rows"]
    with pytest.raises(ValueError, match="seeds"):
        sweep.run_sweep(rows, 3, tmp_path / "1", start_seed=3, max_steps=12, progress=False)


def test_sweep_row_labels():
    assert SweepRow("lift", None, "s", 0, "inpaint", "noised").label == "any"
    assert SweepRow("lift", None, "s", 4, "aligned").key == "lift|s|d=4|aligned"
