"""paradigms-demos: scripted-expert demonstrations as a robomimic HDF5 and a zarr replay buffer.

    paradigms-demos task=lift episodes=200 seed=0 out_dir=runs/demos

Runs the task's scripted expert for ``episodes`` seeded episodes, keeps the successful ones
(unless keep_failed=true), writes ``out_dir/<task>_demos.hdf5`` (robomimic layout, as robomimic's own
scripts write it: env_args, total, per-demo num_samples and model_file, states, actions, rewards,
dones, obs/*, next_obs/*, mask/train|valid), converts it to ``out_dir/<task>_demos.zarr`` and
writes ``out_dir/<task>_demos.json`` with the expert's success rate and episode lengths.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import gymnasium as gym

from paradigms_policy import paths
from paradigms_policy.sim.envs import TASKS, make_env, task_env_meta
from paradigms_policy.sim.experts import Expert, make_expert

DEMO_TASKS: tuple[str, ...] = (*TASKS, "pusht")
# steps recorded after the first success: robosuite's human-demo collection keeps going briefly; PushT's
# episodes end at success (gym-pusht terminates there, and more pushing can only undo the alignment)
DEFAULT_HOLD_STEPS = {"lift": 10, "can": 10, "lift_image": 10, "pusht": 0}


@dataclass
class DemoResult:
    episode: dict[str, Any]  # obs/next_obs {key: [T,...]}, actions [T,7], states [T,S], rewards [T], dones [T],
    # model_file / ep_meta (robomimic demo attributes) when the env has them
    success: bool  # task solved and still solved at the last recorded step
    first_success_step: int | None  # 1-based step at which the task was first solved
    seconds: float


def episode_seeds(seed: int, index: int) -> tuple[int, int]:
    """(env seed, expert seed) for demo ``index`` of a run seeded with ``seed``."""
    env_seed, expert_seed = np.random.SeedSequence([seed, index]).generate_state(2)
    return int(env_seed), int(expert_seed)


def make_demo_env(task: str) -> tuple[gym.Env, dict[str, Any]]:
    """(env that records states, robomimic env metadata) for a task with a scripted expert."""
    if task == "pusht":
        from paradigms_policy.sim.pusht import make_pusht_env, pusht_env_meta

        return make_pusht_env(), pusht_env_meta()
    env_meta = task_env_meta(task)
    return make_env(env_meta, max_episode_steps=TASKS[task].max_episode_steps, terminate_on_success=False), env_meta


def record_episode(
    env: gym.Env,
    expert: Expert,
    env_seed: int,
    *,
    max_steps: int,
    hold_steps: int = 10,
) -> DemoResult:
    """Run ``expert`` from ``env.reset(seed=env_seed)``; stop ``hold_steps`` steps after the first success.

    Like robosuite's human-demo collection, recording continues briefly after success so that
    demonstrations show what to do once the goal is reached.
    """
    from paradigms_policy.data.robomimic_hdf5 import next_obs_from

    start = time.perf_counter()
    obs, _ = env.reset(seed=env_seed)
    model_file = env.model_xml() if hasattr(env, "model_xml") else None  # robosuite's DataCollectionWrapper does this
    ep_meta = env.ep_meta() if hasattr(env, "ep_meta") else None
    obs_rows: dict[str, list[np.ndarray]] = {k: [] for k in obs}
    actions, states, rewards, successes = [], [], [], []
    first_success: int | None = None
    for step in range(max_steps):
        action = expert.act(obs)
        for key, value in obs.items():
            obs_rows[key].append(value)
        states.append(env.get_state())
        actions.append(action)
        obs, reward, _, _, info = env.step(action)
        rewards.append(reward)
        successes.append(info["is_success"])
        if info["is_success"] and first_success is None:
            first_success = step + 1
        if first_success is not None and step + 1 >= first_success + hold_steps:
            break
    dones = np.zeros(len(actions), dtype=np.int64)
    dones[-1] = 1
    observations = {k: _as_stored(np.stack(v)) for k, v in obs_rows.items()}
    episode = {
        "obs": observations,
        "next_obs": next_obs_from(observations, {k: _as_stored(np.asarray(v)) for k, v in obs.items()}),
        "model_file": model_file,
        "ep_meta": ep_meta,
        "actions": np.stack(actions).astype(np.float32),
        "states": np.stack(states),
        "rewards": np.asarray(rewards, dtype=np.float32),
        "dones": dones,
    }
    success = first_success is not None and bool(successes[-1])
    return DemoResult(episode, success, first_success, time.perf_counter() - start)


def _as_stored(value: np.ndarray) -> np.ndarray:
    """Camera images stay uint8 (robomimic stores them so); everything else is float32."""
    return value if value.dtype == np.uint8 else value.astype(np.float32)


def expert_task(task: str) -> str:
    """The scripted expert that drives ``task`` (image Lift is driven by the Lift expert)."""
    spec = TASKS.get(task)
    return (spec.expert or task) if spec is not None else task


def generate_demos(
    task: str,
    episodes: int,
    seed: int,
    out_dir: str | Path,
    *,
    keep_failed: bool = False,
    hold_steps: int | None = None,
    max_steps: int | None = None,
    train_fraction: float = 0.9,
    progress: bool = True,
) -> dict[str, Any]:
    """Record, filter and write demonstrations; returns the JSON summary it also writes."""
    from tqdm import tqdm

    from paradigms_policy.data.robomimic_hdf5 import import_robomimic_hdf5, write_robomimic_hdf5

    task = task.lower()
    if task not in DEMO_TASKS:
        raise ValueError(f"no scripted expert for task {task!r}; expected one of {sorted(DEMO_TASKS)}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    hold_steps = DEFAULT_HOLD_STEPS[task] if hold_steps is None else int(hold_steps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env, env_meta = make_demo_env(task)
    max_steps = int(max_steps or env.max_episode_steps)

    kept: list[DemoResult] = []
    results: list[DemoResult] = []
    bar = tqdm(range(episodes), desc=f"{task} demos", unit="ep", disable=not progress)
    for index in bar:
        env_seed, expert_seed = episode_seeds(seed, index)
        result = record_episode(env, make_expert(expert_task(task), env, seed=expert_seed), env_seed,
                                max_steps=max_steps, hold_steps=hold_steps)
        results.append(result)
        if result.success or keep_failed:
            kept.append(result)
        bar.set_postfix(success=f"{np.mean([r.success for r in results]):.2f}", kept=len(kept))
    env.close()

    n_success = sum(r.success for r in results)
    dropped = len(results) - len(kept)
    print(f"expert success: {n_success}/{episodes} ({n_success / episodes:.1%}); "
          f"kept {len(kept)}, dropped {dropped} failed episode(s)")
    if not kept:
        raise RuntimeError(f"the {task} expert solved none of {episodes} episodes; nothing to write")

    hdf5_path = out_dir / f"{task}_demos.hdf5"
    zarr_path = out_dir / f"{task}_demos.zarr"
    write_robomimic_hdf5(hdf5_path, [r.episode for r in kept], env_meta, train_fraction=train_fraction, seed=seed)
    obs_keys = list(kept[0].episode["obs"])
    import_robomimic_hdf5(hdf5_path, zarr_path, obs_keys)

    lengths = np.array([len(r.episode["actions"]) for r in kept])
    success_steps = np.array([r.first_success_step for r in results if r.success])
    summary = {
        "task": task,
        "env_name": env_meta["env_name"],
        "seed": seed,
        "episodes_attempted": episodes,
        "episodes_kept": len(kept),
        "episodes_dropped": dropped,
        "expert_success_rate": n_success / episodes,
        "hold_steps_after_success": hold_steps,
        "max_steps": max_steps,
        "episode_length": _stats(lengths),
        "steps_to_first_success": _stats(success_steps),
        "seconds_per_episode": float(np.mean([r.seconds for r in results])),
        "total_steps": int(lengths.sum()),
        "obs_keys": obs_keys,
        "hdf5": str(hdf5_path),
        "zarr": str(zarr_path),
    }
    (out_dir / f"{task}_demos.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {hdf5_path}, {zarr_path} ({summary['total_steps']} steps, "
          f"mean length {summary['episode_length']['mean']:.1f})")
    return summary


def _stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan"), "std": float("nan")}
    return {"mean": float(np.mean(values)), "min": float(np.min(values)),
            "max": float(np.max(values)), "std": float(np.std(values))}


def _hydra_main(cfg) -> None:
    generate_demos(
        task=cfg.task,
        episodes=int(cfg.episodes),
        seed=int(cfg.seed),
        out_dir=cfg.out_dir,
        keep_failed=bool(cfg.keep_failed),
        hold_steps=None if cfg.hold_steps is None else int(cfg.hold_steps),
        max_steps=cfg.max_steps,
        train_fraction=float(cfg.train_fraction),
        progress=bool(cfg.progress),
    )


def main() -> None:
    import hydra

    hydra.main(version_base="1.3", config_path=str(paths.config_dir()), config_name="demos")(_hydra_main)()


if __name__ == "__main__":
    main()
