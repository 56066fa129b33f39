"""paradigms-profile: offline latency profile of every sampler on one checkpoint.

Replays consecutive observations of a recorded episode (so warm starts see realistic
cycle-to-cycle changes), solves one action chunk per control cycle with each sampler, and
reports sequential rounds, denoiser evaluations, wall-clock latency and the error against the
sequential sample drawn with the same noise. Prints a table, writes ``profile.json`` and
``profile.png`` into ``out_dir``.

    paradigms-profile checkpoint=PATH out_dir=DIR cycles=30 budget_ms=40
    paradigms-profile checkpoint=random samplers=[picard_cold,picard_warm]
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from paradigms_policy import paths
from paradigms_policy.runtime import default_executor, describe_device, resolve_device, set_cpu_threads

__all__ = ["run_profile", "random_checkpoint", "load_policies", "control_cycles", "observation_windows", "main"]


# --------------------------------------------------------------------------- what is profiled
def random_checkpoint(cfg) -> dict[str, Any]:
    """An in-memory checkpoint of a randomly initialized network of the configured (shipped) shape.

    Its normalizer is the identity on [-1, 1], so action and normalized units coincide.
    """
    from paradigms_policy.model.normalizer import LinearNormalizer
    from paradigms_policy.training.network import PolicyNetwork, obs_encoder_spec

    net = cfg.random_network
    obs_shapes = {str(k): [int(d) for d in v] for k, v in net.obs_shapes.items()}
    shape_meta = {"obs": {k: {"shape": s, "type": "low_dim"} for k, s in obs_shapes.items()},
                  "action": {"shape": [int(net.action_dim)]}}
    n_obs = int(net.n_obs_steps)
    obs_dim = sum(math.prod(s) for s in obs_shapes.values())
    model_kwargs = dict(input_dim=int(net.action_dim), global_cond_dim=obs_dim * n_obs,
                        diffusion_step_embed_dim=int(net.diffusion_step_embed_dim),
                        down_dims=[int(d) for d in net.down_dims], kernel_size=int(net.kernel_size),
                        n_groups=int(net.n_groups), cond_predict_scale=bool(net.get("cond_predict_scale", False)))
    torch.manual_seed(int(cfg.seed))
    spec = obs_encoder_spec(shape_meta)
    network = PolicyNetwork(spec, model_kwargs, n_obs)
    unit = {k: np.stack([-np.ones(s, np.float32), np.ones(s, np.float32)]) for k, s in obs_shapes.items()}
    unit["action"] = np.stack([-np.ones(int(net.action_dim), np.float32), np.ones(int(net.action_dim), np.float32)])
    normalizer = LinearNormalizer().fit(unit)
    n_params = sum(p.numel() for p in network.parameters())
    return {
        "description": f"random network (down_dims={list(net.down_dims)}, {n_params / 1e6:.2f}M params, seed {cfg.seed})",
        "config": {}, "shape_meta": shape_meta, "horizon": int(net.horizon), "n_obs_steps": n_obs,
        "n_action_steps": int(net.n_action_steps), "model_kwargs": model_kwargs, "obs_encoder": spec,
        "noise_scheduler": {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2",
                            "prediction_type": "epsilon", "clip_sample": True},
        "state_dicts": {"ema_model": network.state_dict()}, "normalizer": normalizer.state_dict(), "training": {},
    }


def load_policies(cfg, names: Sequence[str]) -> tuple[dict[str, Any], str]:
    """({sampler name: Policy}, description): one Policy per sampler, built exactly as deployed.

    Separate Policies (same weights) let the samplers run interleaved cycle by cycle, so a
    change in background load on a shared machine hits all of them alike.
    """
    from paradigms_policy.formats import load_any_checkpoint
    from paradigms_policy.policy import Policy

    device = resolve_device(cfg.device)
    options = dict(device=device, executor=cfg.executor or default_executor(device), compile=bool(cfg.compile))
    checkpoint = cfg.checkpoint
    path = None
    if checkpoint is not None and str(checkpoint).lower() == "random":
        ckpt = random_checkpoint(cfg)
        description = ckpt["description"]
    else:
        path = Path(checkpoint) if checkpoint is not None else paths.default_checkpoint()
        if path.exists():  # any format: ours, a DiffusionPolicy .ckpt, a LeRobot directory
            ckpt = load_any_checkpoint(path, trust_checkpoint=bool(cfg.get("trust_checkpoint", False)))
            description = str(path)
        elif checkpoint is not None:
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
        else:
            print(f"[profile] shipped checkpoint {path} not found: profiling a random network instead")
            ckpt = random_checkpoint(cfg)
            description, path = ckpt["description"], None
    policies = {name: Policy(ckpt, path=path, sampler=name, **options, **_sampler_overrides(cfg, name)) for name in names}
    return policies, description


# --------------------------------------------------------------------------- observations
def _episodes_from_zarr(path: Path, first: int, keys: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
    """Episodes first, first+1, ... (wrapping around) of a replay buffer, read one at a time."""
    from paradigms_policy.data.replay_buffer import ReplayBuffer

    buffer = ReplayBuffer.open(path, "r")
    n = buffer.n_episodes
    if not -n <= first < n:
        raise ValueError(f"episode_index {first} out of range: {path} has {n} episodes")
    missing = [k for k in keys if k not in buffer]
    if missing:
        raise KeyError(f"episode_source {path} lacks observation keys {missing}; has {buffer.keys()}")
    for i in range(n):
        yield buffer.get_episode((first + i) % n, keys=list(keys))


def _episodes_from_npz(path: Path, keys: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """Episodes of a recorded .npz: steps concatenated, split at ``episode_ends`` when present."""
    with np.load(path) as data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise KeyError(f"episode file {path} lacks observation keys {missing}; has {data.files}")
        steps = {k: np.asarray(data[k], dtype=np.float32) for k in keys}
        length = min(len(v) for v in steps.values())
        ends = np.asarray(data["episode_ends"], dtype=np.int64) if "episode_ends" in data.files else np.array([length])
    if len(ends) == 0 or np.any(np.diff(ends) <= 0) or ends[0] <= 0 or ends[-1] != length:
        raise ValueError(f"episode file {path}: episode_ends {ends.tolist()} do not split its {length} steps")
    starts = np.concatenate([[0], ends[:-1]])
    return [{k: v[a:b] for k, v in steps.items()} for a, b in zip(starts, ends)]


def synthesize_episode(policy, n_steps: int, seed: int) -> dict[str, np.ndarray]:
    """Smooth sinusoids inside the normalizer's observed range (stands in for a recorded episode)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_steps, dtype=np.float64)[:, None]
    stats = policy.normalizer.input_stats()
    episode = {}
    for key, shape in policy.obs_shapes.items():
        low, high = (stats[key][s].detach().cpu().numpy().astype(np.float64).reshape(-1) for s in ("min", "max"))
        dims = math.prod(shape)
        low, high = np.broadcast_to(low, (dims,)), np.broadcast_to(high, (dims,))
        period = rng.uniform(60.0, 160.0, size=dims)
        phase = rng.uniform(0.0, 2 * np.pi, size=dims)
        mid, half = (high + low) / 2, (high - low) / 2
        values = mid + 0.6 * half * np.sin(2 * np.pi * t / period + phase)  # [n_steps, dims]
        episode[key] = values.reshape(n_steps, *shape).astype(np.float32)
    return episode


def load_episodes(cfg, policy, n_steps: int) -> tuple[Iterator[dict[str, np.ndarray]], str]:
    """(episodes {key: [T, *shape]}, description of where they came from)."""
    keys = list(policy.obs_shapes)
    if cfg.episode_source:
        path = Path(cfg.episode_source)
        if path.suffix == ".npz":
            episodes = _episodes_from_npz(path, keys)
            return iter(episodes), f"{len(episodes)} recorded episode(s) of {path}"
        return _episodes_from_zarr(path, int(cfg.episode_index), keys), f"recorded episodes of {path} from index {cfg.episode_index}"
    checkpoint = cfg.checkpoint
    if checkpoint is None or str(checkpoint).lower() != "random":
        ckpt_path = Path(checkpoint) if checkpoint is not None else paths.default_checkpoint()
        npz = ckpt_path.with_name(ckpt_path.stem + ".episode.npz")
        if npz.is_file():
            episodes = _episodes_from_npz(npz, keys)
            return iter(episodes), f"{len(episodes)} recorded episode(s) of {npz}"
    episode = synthesize_episode(policy, n_steps, int(cfg.seed))
    return iter([episode]), "SYNTHETIC smooth trajectory inside the normalizer range (no recorded episode given)"


def control_cycles(episodes: Iterator[Mapping[str, np.ndarray]], n_obs_steps: int, n_action_steps: int,
                   cycles: int) -> tuple[list[dict[str, np.ndarray]], list[bool]]:
    """(observation windows, starts-an-episode flags) for up to ``cycles`` cycles, episode after episode."""
    windows: list[dict[str, np.ndarray]] = []
    starts: list[bool] = []
    for episode in episodes:
        more = observation_windows(episode, n_obs_steps, n_action_steps, cycles - len(windows))
        windows += more
        starts += [True] + [False] * (len(more) - 1)
        if len(windows) >= cycles:
            break
    return windows, starts


def observation_windows(episode: Mapping[str, np.ndarray], n_obs_steps: int, n_action_steps: int, cycles: int) -> list[dict[str, np.ndarray]]:
    """One observation history per control cycle, re-planning every n_action_steps env steps.

    Cycle c sees steps c*n_action_steps - n_obs_steps + 1 .. c*n_action_steps, the first step
    repeated before the episode start (as DiffusionPolicy pads at reset).
    """
    lengths = {k: len(v) for k, v in episode.items()}
    length = min(lengths.values())
    if length < 1:
        raise ValueError(f"episode has no steps: {lengths}")
    available = (length - 1) // n_action_steps + 1
    windows = []
    for c in range(min(cycles, available)):
        end = c * n_action_steps
        idx = np.clip(np.arange(end - n_obs_steps + 1, end + 1), 0, None)
        windows.append({k: np.asarray(v[idx], dtype=np.float32) for k, v in episode.items()})
    return windows


# --------------------------------------------------------------------------- measurement
@dataclass
class CycleRecord:
    latency_s: float
    rounds: int
    nfe: int
    converged: bool
    deadline_hit: bool
    err_norm: np.ndarray  # [horizon, A] sample - reference, normalized units
    err_action: np.ndarray  # same in action units
    residual_history: list[float] = field(default_factory=list)


def _digest(obs: Mapping[str, np.ndarray], *tensors: torch.Tensor) -> str:
    h = hashlib.sha1()
    for key in sorted(obs):
        h.update(key.encode())
        h.update(np.ascontiguousarray(obs[key]).tobytes())
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class ReferenceCache:
    """Sequential samples keyed by (rule, observations, x_init, noise): computed once, shared.

    Cold samplers draw the same noise at the same cycle, so ddpm_sequential's own samples are
    the references of picard_cold and anderson_cold.
    """

    def __init__(self):
        self._store: dict[tuple[str, str], torch.Tensor] = {}
        self.computed = 0

    def get(self, denoiser, rule, key: str, x_init: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The sequential sample (the denoiser must be bound to this cycle's conditioning)."""
        from paradigms_policy.diffusion.sequential import sample_sequential

        full_key = (repr(rule), key)
        if full_key not in self._store:
            self._store[full_key] = sample_sequential(denoiser, rule, x_init, noise).sample.detach().clone()
            self.computed += 1
        return self._store[full_key]

    def put(self, rule, key: str, sample: torch.Tensor) -> None:
        """Record a sequential sampler's own result as the reference for its inputs."""
        self._store.setdefault((repr(rule), key), sample.detach().clone())


def _cycle_seed(seed: int, cycle: int) -> int:
    # Same draws for every sampler at a given cycle, so cold samplers share references.
    return seed * 100_003 + cycle


def _sampler_overrides(cfg, name: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if not name.endswith("_sequential"):
        if cfg.tolerance is not None:
            overrides["tolerance"] = float(cfg.tolerance)
        if cfg.abs_tolerance is not None:
            overrides["abs_tolerance"] = float(cfg.abs_tolerance)
    per_name = (cfg.sampler_overrides or {}).get(name) or {}
    overrides.update({str(k): v for k, v in dict(per_name).items()})
    return overrides


def _warm_windows(sampler) -> list[int]:
    """Every window size a solve can use: the full window, and shorter ones at the data end."""
    if not sampler.is_parallel:
        return [1]
    return list(range(1, min(int(sampler.window), int(sampler.rule.num_steps)) + 1))


def run_cycle(policy, obs: Mapping[str, np.ndarray], new_episode: bool, references: ReferenceCache | None,
              *, seed: int, budget_s: float | None = None) -> CycleRecord:
    """One control cycle: a timed ``predict_action``, then (untimed) its error against sequential.

    The timed span is the whole call (checks, normalization, encoding, warm start, solve,
    unnormalization). ``new_episode`` resets the policy, so that solve is cold.
    """
    if new_episode:
        policy.reset()
    start = time.perf_counter()
    deadline = None if budget_s is None else start + budget_s
    out = policy.predict_action(obs, n_executed=policy.n_action_steps, deadline=deadline, seed=seed)
    latency = time.perf_counter() - start
    result = out.result
    rule = policy.sampler.rule
    x_init, noise = result.trajectory[0], result.noise
    if references is None:
        reference = result.sample
    else:
        key = _digest(obs, x_init, noise)
        if not policy.sampler.is_parallel:
            references.put(rule, key, result.sample)
        reference = references.get(policy.denoiser, rule, key, x_init, noise)  # still bound to this cycle
    unnormalize = policy.normalizer["action"].unnormalize
    with torch.no_grad():
        diff = (result.sample - reference).cpu()[0]  # [horizon, A]
        diff_action = (unnormalize(result.sample) - unnormalize(reference)).cpu()[0]
    stats = result.stats
    return CycleRecord(
        latency_s=latency,
        rounds=int(stats.rounds),
        nfe=int(stats.nfe),
        converged=bool(stats.converged),
        deadline_hit=bool(stats.deadline_hit),
        err_norm=diff.double().numpy(),
        err_action=diff_action.double().numpy(),
        residual_history=[float(r) for r in (stats.residual_history or [])],
    )


def run_cycles(
    policies: Mapping[str, Any],
    windows: Sequence[Mapping[str, np.ndarray]],
    starts: Sequence[bool],
    references: ReferenceCache | None,
    *,
    seed: int,
    budget_s: float | None = None,
) -> dict[str, list[CycleRecord]]:
    """Every cycle for every sampler, interleaved: cycle 0 for all samplers, then cycle 1, ...

    Cycle c uses the same noise seed for every sampler (cold samplers share their references).
    """
    records: dict[str, list[CycleRecord]] = {name: [] for name in policies}
    for cycle, (obs, new_episode) in enumerate(zip(windows, starts, strict=True)):
        for name, policy in policies.items():
            records[name].append(
                run_cycle(policy, obs, new_episode or cycle == 0, references, seed=_cycle_seed(seed, cycle), budget_s=budget_s)
            )
    return records


def warm_up(policy, windows, starts, cfg) -> None:
    """Before any timing: buffers for every window size, round-time estimates, first-call costs."""
    policy.denoiser.warmup(_warm_windows(policy.sampler), batch=1)
    policy.warmup()
    n_warm = int(cfg.warmup_solves)
    for cycle in range(min(n_warm, len(windows))):
        run_cycle(policy, windows[cycle], starts[cycle] or cycle == 0, None, seed=_cycle_seed(int(cfg.seed) + 7919, cycle))
    policy.reset()
    policy.denoiser.reset_counters()


def describe_sampler(policy, records: Sequence[CycleRecord], cfg) -> dict[str, Any]:
    sampler = policy.sampler
    summary = summarize(records)
    summary["steps"] = int(sampler.rule.num_steps)
    summary["tolerance"] = sampler.tolerance
    summary["abs_tolerance"] = sampler.solver_config.get("abs_tolerance")
    summary["window"] = sampler.window if sampler.is_parallel else None
    summary["warm_start"] = bool(sampler.uses_warm_start)
    plot_cycle = cfg.plot_cycle if cfg.plot_cycle is not None else len(records) // 2
    plot_cycle = min(int(plot_cycle), len(records) - 1)
    summary["residual_history"] = {"cycle": plot_cycle, "values": records[plot_cycle].residual_history}
    return summary


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(records: Sequence[CycleRecord], budget_s: float | None = None) -> dict[str, Any]:
    rounds = [r.rounds for r in records]
    latency_ms = [r.latency_s * 1e3 for r in records]
    err_a = np.stack([r.err_action for r in records])
    err_n = np.stack([r.err_norm for r in records])
    round_ms = [r.latency_s * 1e3 / max(r.rounds, 1) for r in records]
    summary: dict[str, Any] = {
        "rounds": {"median": _pct(rounds, 50), "p90": _pct(rounds, 90), "max": float(max(rounds))},
        "nfe": {"median": _pct([r.nfe for r in records], 50)},
        "latency_ms": {"p50": _pct(latency_ms, 50), "p99": _pct(latency_ms, 99), "max": float(max(latency_ms))},
        "error": {"max_abs": float(np.abs(err_a).max()), "rms": float(np.sqrt(np.mean(err_a**2)))},
        "error_normalized": {"max_abs": float(np.abs(err_n).max()), "rms": float(np.sqrt(np.mean(err_n**2)))},
        "converged_fraction": float(np.mean([r.converged for r in records])),
        "round_ms": {"median": _pct(round_ms, 50)},
        "cycles": len(records),
    }
    if budget_s is not None:
        budget_ms = budget_s * 1e3
        one_round = summary["round_ms"]["median"]
        summary["deadline"] = {
            "budget_ms": budget_ms,
            "calls": len(records),
            "late": int(sum(l > budget_ms for l in latency_ms)),
            "late_beyond_one_round": int(sum(l > budget_ms + one_round for l in latency_ms)),
            "deadline_hit": int(sum(r.deadline_hit for r in records)),
        }
    return summary


# --------------------------------------------------------------------------- reporting
def add_speedups(results: dict[str, Any]) -> None:
    """``speedup_p50``: latency p50 of each sequential baseline present / this sampler's (same run)."""
    baselines = [n for n in ("ddpm_sequential", "ddim_sequential") if n in results]
    for summary in results.values():
        summary["speedup_p50"] = {
            f"vs_{b.removesuffix('_sequential')}": results[b]["latency_ms"]["p50"] / summary["latency_ms"]["p50"]
            for b in baselines
            if summary["latency_ms"]["p50"] > 0
        }


def format_table(report: Mapping[str, Any]) -> str:
    rows = [
        ("sampler", "tol|abs", "win", "rounds med/p90/max", "nfe", "latency ms p50/p99/max", "speedup p50",
         "err max/rms (action)", "err max (norm)", "conv"),
    ]
    for name, s in report["samplers"].items():
        tol = "-" if s.get("tolerance") is None else f"{s['tolerance']:g}"
        if s.get("abs_tolerance") is not None:
            tol += f"|{s['abs_tolerance']:g}"
        win = "-" if s.get("window") is None else str(s["window"])
        r, l, e = s["rounds"], s["latency_ms"], s["error"]
        rows.append(
            (
                name,
                tol,
                win,
                f"{r['median']:.0f}/{r['p90']:.0f}/{r['max']:.0f}",
                f"{s['nfe']['median']:.0f}",
                f"{l['p50']:.1f}/{l['p99']:.1f}/{l['max']:.1f}",
                ", ".join(f"{v:.2f}x {k[3:]}" for k, v in s.get("speedup_p50", {}).items()) or "-",
                f"{e['max_abs']:.2e}/{e['rms']:.2e}",
                f"{s['error_normalized']['max_abs']:.2e}",
                f"{100 * s['converged_fraction']:.0f}%",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    deadline_rows = [(n, s["deadline"]) for n, s in report["samplers"].items() if "deadline" in s]
    if deadline_rows:
        lines.append("")
        lines.append(f"deadline adherence (budget {deadline_rows[0][1]['budget_ms']:.1f} ms):")
        lines.append("  sampler           calls  late  late>1round  stopped_early  latency p50/p99/max ms  err max (action)")
        for n, d in deadline_rows:
            l = d["latency_ms"]
            lines.append(
                f"  {n:<16}  {d['calls']:>5}  {d['late']:>4}  {d['late_beyond_one_round']:>11}  {d['deadline_hit']:>13}"
                f"  {l['p50']:.1f}/{l['p99']:.1f}/{l['max']:.1f}  {d['error']['max_abs']:.2e}"
            )
    return "\n".join(lines)


def write_plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["samplers"])
    samplers = report["samplers"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    x = np.arange(len(names))
    p50 = [samplers[n]["latency_ms"]["p50"] for n in names]
    p99 = [samplers[n]["latency_ms"]["p99"] for n in names]
    axes[0].bar(x - 0.2, p50, 0.4, label="p50")
    axes[0].bar(x + 0.2, p99, 0.4, label="p99")
    axes[0].set_ylabel("latency per chunk [ms]")
    axes[0].legend()
    axes[1].bar(x, [samplers[n]["rounds"]["median"] for n in names], 0.6, label="median")
    axes[1].scatter(x, [samplers[n]["rounds"]["max"] for n in names], color="k", marker="_", s=200, label="max")
    axes[1].set_ylabel("sequential rounds per chunk")
    axes[1].legend()
    for ax, title in ((axes[0], "latency"), (axes[1], "rounds")):
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(title)
    ax = axes[2]
    plotted = False
    for n in names:
        hist = samplers[n].get("residual_history", {})
        values = [v for v in hist.get("values", []) if v is not None and np.isfinite(v)]
        if values and not n.endswith("_sequential"):
            ax.semilogy(np.arange(1, len(values) + 1), np.maximum(values, 1e-12), marker=".", label=n)
            plotted = True
    ax.set_xlabel("round")
    ax.set_ylabel("residual")
    cycle = next((s["residual_history"]["cycle"] for s in samplers.values() if "residual_history" in s), None)
    ax.set_title(f"residual vs round (chunk {cycle})")
    if plotted:
        ax.legend()
    fig.suptitle(f"{report['checkpoint']} on {report['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- app
def run_profile(cfg) -> dict[str, Any]:
    """Profile the configured samplers; write profile.json / profile.png; return the report."""
    from paradigms_policy.diffusion.samplers import SAMPLER_NAMES

    samplers = list(cfg.samplers)
    if not samplers:
        raise ValueError("samplers must name at least one sampler")
    unknown = [n for n in samplers if n not in SAMPLER_NAMES]
    if unknown:
        raise ValueError(f"unknown sampler(s) {unknown}; expected names from {list(SAMPLER_NAMES)}")
    if int(cfg.cycles) < 1:
        raise ValueError(f"cycles must be >= 1, got {cfg.cycles}")
    if cfg.budget_ms is not None and not float(cfg.budget_ms) > 0:
        raise ValueError(f"budget_ms must be > 0, got {cfg.budget_ms}")
    if cfg.threads is not None or resolve_device(cfg.device).type == "cpu":
        set_cpu_threads(None if cfg.threads is None else int(cfg.threads))
    policies, description = load_policies(cfg, samplers)
    any_policy = next(iter(policies.values()))
    cycles = int(cfg.cycles)
    episodes, source = load_episodes(cfg, any_policy, cycles * any_policy.n_action_steps + 1)
    windows, starts = control_cycles(episodes, any_policy.n_obs_steps, any_policy.n_action_steps, cycles)
    if len(windows) < cycles:
        print(f"[profile] the episodes have only {len(windows)} re-planning cycles; profiling those")
    print(f"[profile] model: {description}")
    print(f"[profile] observations: {source} ({len(windows)} cycles in {sum(starts)} episode(s), "
          f"re-plan every {any_policy.n_action_steps} steps)")
    device = describe_device(any_policy.device)
    print(f"[profile] device: {device}, executor: {any_policy.denoiser.executor}")

    print("[profile] warming up ...", flush=True)
    for policy in policies.values():
        warm_up(policy, windows, starts, cfg)
    references = ReferenceCache()
    print(f"[profile] timing {len(windows)} cycles x {len(samplers)} samplers (interleaved) ...", flush=True)
    timed = run_cycles(policies, windows, starts, references, seed=int(cfg.seed))
    results = {name: describe_sampler(policies[name], timed[name], cfg) for name in samplers}
    if cfg.budget_ms is not None:
        budget_s = float(cfg.budget_ms) / 1e3
        print(f"[profile] budgeted pass ({float(cfg.budget_ms):g} ms) ...", flush=True)
        budgeted = run_cycles(policies, windows, starts, references, seed=int(cfg.seed), budget_s=budget_s)
        for name, records in budgeted.items():
            b = summarize(records, budget_s)
            results[name]["deadline"] = {**b["deadline"], "latency_ms": b["latency_ms"], "rounds": b["rounds"],
                                         "error": b["error"], "converged_fraction": b["converged_fraction"]}
    add_speedups(results)
    steps = max((s["steps"] for n, s in results.items() if n.startswith("ddpm")), default=None)
    report = {
        "checkpoint": description,
        "device": device,
        "executor": any_policy.denoiser.executor,
        "steps": int(steps if steps is not None else max(s["steps"] for s in results.values())),
        "observations": source,
        "cycles": len(windows),
        "episodes": int(sum(starts)),
        "samplers": results,
    }
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "profile.json").write_text(json.dumps(report, indent=2))
    write_plot(report, out_dir / "profile.png")
    print(format_table(report))
    print(f"[profile] wrote {out_dir / 'profile.json'} and {out_dir / 'profile.png'}")
    return report


def _hydra_entry(cfg) -> None:
    run_profile(cfg)


def main() -> None:
    """Console entry point ``paradigms-profile`` (hydra overrides on the command line)."""
    import hydra

    hydra.main(version_base="1.3", config_path=str(paths.config_dir()), config_name="profile")(_hydra_entry)()


if __name__ == "__main__":
    main()
