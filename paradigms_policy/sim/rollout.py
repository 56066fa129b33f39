"""Receding-horizon evaluation of a Policy in simulation, as DiffusionPolicy's env runners do it.

Per episode: ``policy.reset()``, ``env.reset(seed)``, fill the observation history with the
first observation repeated ``n_obs_steps`` times, then loop: predict a chunk from the last
``n_obs_steps`` observations, execute its actions (appending each new observation), re-plan.
Every sampler is evaluated on the same episode seeds and chunk noise seeds.

Time follows the execution model (``paradigms_policy.execution``), the same one the ROS node
uses: with ``delay_steps = d`` the environment keeps executing the previous chunk for d steps
while the next one is "computed", deterministically (the solve itself runs instantly here), and
the chunk is then placed ``naive`` / ``aligned`` / ``inpaint``. The first chunk of an episode is
solved while the robot waits. With d = 0 every mode is the synchronous DiffusionPolicy loop.

``evaluate`` turns a rollout into episode jobs (``sim.episodes``) and runs them in this process or
on Ray workers (``sim.distribute``); the results do not depend on where an episode ran.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from paradigms_policy.data.images import obs_for_policy
from paradigms_policy.execution import ChunkGeometry, ExecutionModel, ExecutionSettings, chunk_jumps
from paradigms_policy.sim.distribute import resolve_backend, run_jobs
from paradigms_policy.sim.envs import check_policy_fits_task, make_task_env
from paradigms_policy.sim.episodes import EpisodeJob, WorkerSettings

DEFAULT_START_SEED = 100_000  # as DiffusionPolicy's test_start_seed: far from demo seeds


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    max_reward: float
    length: int  # env steps executed
    rounds: list[int] = field(default_factory=list)  # solver rounds per chunk
    nfe: list[int] = field(default_factory=list)  # denoiser evaluations per chunk
    latency_ms: list[float] = field(default_factory=list)  # predict_action wall time per chunk
    deadline_hits: int = 0
    seconds: float = 0.0
    dropped_actions: int = 0  # executed-slice actions whose time had passed when their chunk arrived
    idle_steps: int = 0  # env steps with no action due (the robot held still)
    boundary_jumps: list[float] = field(default_factory=list)  # max |a_t - a_t-1| where the chunk changes
    inside_jumps: list[float] = field(default_factory=list)  # the same inside a chunk


@dataclass
class _InFlight:
    request: Any
    action_pred: np.ndarray
    arrival: int
    chunk: int


def _stat(stats: Any, name: str, default: Any = None) -> Any:
    return getattr(stats, name, default) if stats is not None else default


def _hold_action(env, last: np.ndarray | None, dim: int) -> np.ndarray:
    """What the robot does with nothing to run: zero motion, holding the env's ``hold_action_dims``."""
    action = np.zeros(dim)
    if last is not None:
        for d in getattr(env, "hold_action_dims", ()):
            action[d] = last[d]
    return action


def run_episode(
    env,
    policy,
    seed: int,
    *,
    max_steps: int | None = None,
    deadline_s: float | None = None,
    noise_seed: int | None = None,
    delay_steps: int = 0,
    execution: ExecutionSettings | str = "aligned",
) -> EpisodeResult:
    """One receding-horizon episode; ends on success (terminated), truncation or ``max_steps``."""
    start = time.perf_counter()
    settings = ExecutionSettings(mode=execution) if isinstance(execution, str) else execution
    model = ExecutionModel(settings, ChunkGeometry.of(policy), dt=1.0)
    model.check_delay(delay_steps)
    policy.reset()
    obs, _ = env.reset(seed=seed)
    keys = list(policy.obs_keys)
    history: deque[dict[str, np.ndarray]] = deque([obs] * policy.n_obs_steps, maxlen=policy.n_obs_steps)
    limit = int(max_steps or getattr(env, "max_episode_steps", None) or 1000)
    result = EpisodeResult(seed=seed, success=False, max_reward=-math.inf, length=0)
    in_flight: _InFlight | None = None
    executed, chunk_of = [], []
    slot_chunk: dict[int, int] = {}  # tick -> the chunk whose action is placed there
    chunk = 0
    last_action = None

    def place(flight: _InFlight, tick: int) -> None:
        placement = model.place(flight.request, flight.action_pred, arrival=tick)
        result.dropped_actions += placement.dropped
        first = int(round(placement.start_time))
        slot_chunk.update({first + i: flight.chunk for i in range(len(placement.actions))})

    while result.length < limit:
        tick = result.length
        if in_flight is not None and in_flight.arrival <= tick:
            place(in_flight, tick)
            in_flight = None
        if in_flight is None and model.due(tick, delay_steps):
            delay = 0 if not model.started else delay_steps  # the first chunk: the robot waits for it
            request = model.request(obs_time=tick, expected_arrival=tick + delay)
            # [n_obs_steps, *shape]; camera frames from uint8 HWC to the policy's float CHW in [0, 1]
            obs_window = obs_for_policy({k: np.stack([h[k] for h in history]) for k in keys},
                                        getattr(policy, "shape_meta", {}))
            t0 = time.perf_counter()
            out = policy.predict_action(
                obs_window,
                n_executed=request.shift,
                deadline=None if deadline_s is None else time.perf_counter() + deadline_s,
                seed=None if noise_seed is None else noise_seed + chunk,
                known_actions=request.known_actions if len(request.known_actions) else None,
            )
            result.latency_ms.append((time.perf_counter() - t0) * 1e3)
            result.rounds.append(int(_stat(out.stats, "rounds", 0) or 0))
            result.nfe.append(int(_stat(out.stats, "nfe", 0) or 0))
            result.deadline_hits += int(bool(_stat(out.stats, "deadline_hit", False)))
            in_flight = _InFlight(request, np.asarray(out.action_pred), tick + delay, chunk)
            chunk += 1
            if delay == 0:
                place(in_flight, tick)
                in_flight = None
        action = model.timeline.action_at(tick)
        if action is None:
            action = _hold_action(env, last_action, int(np.prod(env.action_space.shape)))
            result.idle_steps += 1
        else:
            executed.append(action)
            chunk_of.append(slot_chunk[tick])
        last_action = action
        obs, reward, terminated, truncated, info = env.step(action)
        history.append(obs)
        result.length += 1
        result.max_reward = max(result.max_reward, float(reward))
        result.success = result.success or bool(info.get("is_success", False))
        if terminated or truncated:
            break
    dims = getattr(env, "continuous_action_dims", None)
    boundary, inside = chunk_jumps(np.array(executed), np.array(chunk_of), dims)
    result.boundary_jumps, result.inside_jumps = boundary.tolist(), inside.tolist()
    result.seconds = time.perf_counter() - start
    return result


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for a binomial success rate (sensible at 0% and 100%)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact bounds at 0% / 100%
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Aggregate episodes of one sampler into the rollout.json entry."""
    n = len(results)
    successes = sum(r.success for r in results)
    rounds = np.concatenate([r.rounds for r in results]) if n else np.zeros(0)
    nfe = np.concatenate([r.nfe for r in results]) if n else np.zeros(0)
    latency = np.concatenate([r.latency_ms for r in results]) if n else np.zeros(0)
    boundary = np.concatenate([r.boundary_jumps for r in results]) if n else np.zeros(0)
    inside = np.concatenate([r.inside_jumps for r in results]) if n else np.zeros(0)
    lo, hi = wilson_interval(successes, n)
    return {
        "episodes": n,
        "successes": int(successes),
        "success_rate": successes / n if n else float("nan"),
        "success_ci95": [lo, hi],
        "mean_max_reward": float(np.mean([r.max_reward for r in results])) if n else float("nan"),
        "episode_length_mean": float(np.mean([r.length for r in results])) if n else float("nan"),
        "chunks": int(len(rounds)),
        "rounds_median": float(np.median(rounds)) if len(rounds) else float("nan"),
        "rounds_mean": float(np.mean(rounds)) if len(rounds) else float("nan"),
        "nfe_mean": float(np.mean(nfe)) if len(nfe) else float("nan"),
        "latency_ms_p50": float(np.percentile(latency, 50)) if len(latency) else float("nan"),
        "latency_ms_p90": float(np.percentile(latency, 90)) if len(latency) else float("nan"),
        "deadline_hits": int(sum(r.deadline_hits for r in results)),
        "seconds_per_episode": float(np.mean([r.seconds for r in results])) if n else float("nan"),
        "dropped_actions": int(sum(r.dropped_actions for r in results)),
        "idle_steps": int(sum(r.idle_steps for r in results)),
        "jump_boundary_p50": _percentile(boundary, 50),
        "jump_boundary_p99": _percentile(boundary, 99),
        "jump_inside_p50": _percentile(inside, 50),
        "jump_inside_p99": _percentile(inside, 99),
        "per_episode": [
            {"seed": r.seed, "success": bool(r.success), "length": r.length, "max_reward": r.max_reward}
            for r in results
        ],
    }


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def episode_seeds(episodes: int, start_seed: int = DEFAULT_START_SEED) -> list[int]:
    return [start_seed + i for i in range(episodes)]


def episode_jobs(task: str, checkpoint: str | None, samplers: Sequence[str], seeds: Sequence[int], *,
                 delay_steps: int = 0, execution: str = "aligned", inpainting: str | None = None,
                 replan_every: int = 0, max_steps: int | None = None,
                 deadline_ms: float | None = None) -> list[EpisodeJob]:
    """Every sampler on every seed, sampler-major (a worker switches sampler rarely)."""
    return [EpisodeJob(task=task, checkpoint=checkpoint, sampler=name, seed=int(seed), delay_steps=int(delay_steps),
                       execution=execution, inpainting=inpainting, replan_every=int(replan_every),
                       max_steps=max_steps, deadline_ms=deadline_ms)
            for name in samplers for seed in seeds]


def evaluate(
    checkpoint: str | None,
    task: str,
    samplers: Sequence[str],
    episodes: int,
    *,
    start_seed: int = DEFAULT_START_SEED,
    device: str = "cpu",
    workers: int = 1,
    max_steps: int | None = None,
    deadline_ms: float | None = None,
    num_threads: int | None = None,
    delay_steps: int = 0,
    execution: str = "aligned",
    progress: Callable[[str], None] | None = print,
    trust_checkpoint: bool = False,
    inpainting: str | None = None,
    replan_every: int = 0,
    ray_address: str | None = None,
    backend: str = "auto",
    max_retries: int = 3,
    progress_bar: bool = True,
) -> dict[str, Any]:
    """Evaluate ``samplers`` on the same ``episodes`` seeds; returns the rollout.json dict.

    The checkpoint is checked against the task env before any episode runs. Episodes are jobs
    (``paradigms_policy.sim.episodes``) run by ``paradigms_policy.sim.distribute``: in this process
    when ``workers == 1``, else as Ray tasks on ``workers`` actors, locally or on the cluster at
    ``ray_address`` (or RAY_ADDRESS); a dead worker's episodes are retried up to ``max_retries``
    times. Seeds and noise seeds depend only on the episode, so every way of running gives the same
    per-episode results. ``checkpoint`` may be in any format ``load_policy`` reads;
    ``trust_checkpoint`` lifts its pickle allow-list. ``delay_steps`` / ``execution``: simulated
    inference delay and chunk placement (module docstring); ``inpainting``: how known actions enter
    the solve (``Policy.inpainting``; None keeps the default); ``replan_every``: periods between the
    observations of consecutive chunks (0: n_action_steps).
    """
    from paradigms_policy.policy import DEFAULT_INPAINTING, load_policy

    if not samplers:
        raise ValueError("samplers is empty: name at least one sampler (e.g. ddpm_sequential)")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    samplers = list(samplers)
    kind = resolve_backend(backend, workers, ray_address)
    checkpoint = None if checkpoint is None else str(checkpoint)
    # fail fast, in this process, on an unloadable checkpoint, an unknown sampler or a task mismatch
    policy = load_policy(checkpoint, device=device, sampler=samplers[0], trust_checkpoint=trust_checkpoint)
    env = make_task_env(task)
    try:
        check_policy_fits_task(policy.shape_meta, env)
        ExecutionModel(ExecutionSettings(mode=execution, replan_every=replan_every), ChunkGeometry.of(policy),
                       dt=1.0).check_delay(delay_steps)
        for name in samplers[1:]:
            policy.set_sampler(name)
    finally:
        env.close()
    seeds = episode_seeds(episodes, start_seed)
    jobs = episode_jobs(task, checkpoint, samplers, seeds, delay_steps=delay_steps, execution=execution,
                        inpainting=inpainting, replan_every=replan_every, max_steps=max_steps,
                        deadline_ms=deadline_ms)
    settings = WorkerSettings(device=device, num_threads=num_threads, trust_checkpoint=bool(trust_checkpoint))
    preloaded = {(checkpoint, task): policy} if kind == "inline" else None
    del policy
    start = time.perf_counter()
    outcome = run_jobs(jobs, settings, workers=workers, ray_address=ray_address, backend=kind,
                       max_retries=max_retries, progress=progress_bar, preloaded=preloaded)
    raw = {name: [outcome.results[job] for job in jobs if job.sampler == name] for name in samplers}
    report: dict[str, Any] = {
        "task": task,
        "episodes": episodes,
        "checkpoint": checkpoint,
        "seeds": seeds,
        "device": device,
        "workers": workers,
        "backend": outcome.backend,
        "ray_address": (ray_address or os.environ.get("RAY_ADDRESS")) if outcome.backend == "ray" else None,
        "retried_episodes": len(outcome.retried),
        "ray_init_s": outcome.ray_init_s,  # None: inline, or joined a Ray that was already initialized
        "workers_ready_s": outcome.workers_ready_s,
        "delay_steps": delay_steps,
        "execution": execution,
        "inpainting": inpainting or DEFAULT_INPAINTING,
        "replan_every": int(replan_every),
        "wall_time_s": time.perf_counter() - start,
        "samplers": {name: summarize([EpisodeResult(**r) for r in raw[name]]) for name in samplers},
    }
    if progress is not None:
        progress(format_table(report))
    return report


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table of the per-sampler results."""
    header = f"{'sampler':<18} {'success':>8} {'95% CI':>15} {'max rew':>8} {'len':>6} {'rounds':>7} {'p50 ms':>8} {'p90 ms':>8}"
    lines = [f"task={report['task']} episodes={report['episodes']} delay={report.get('delay_steps', 0)} "
             f"execution={report.get('execution', 'aligned')}", header, "-" * len(header)]
    for name, s in report["samplers"].items():
        lo, hi = s["success_ci95"]
        lines.append(
            f"{name:<18} {s['success_rate']:>8.1%} {f'[{lo:.2f}, {hi:.2f}]':>15} {s['mean_max_reward']:>8.2f} "
            f"{s['episode_length_mean']:>6.1f} {s['rounds_median']:>7.1f} {s['latency_ms_p50']:>8.1f} {s['latency_ms_p90']:>8.1f}"
        )
    return "\n".join(lines)


def iter_names(value: Iterable[str] | str) -> list[str]:
    """Accept a list or a comma-separated string of sampler names."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]
