"""paradigms-profile: offline latency profile of every sampler on one checkpoint (hydra app).

Replays consecutive observations of a recorded episode (so warm starts see realistic
cycle-to-cycle changes), solves one action chunk per control cycle with each sampler, and
reports sequential rounds, denoiser evaluations, wall-clock latency and the error against the
sequential sample drawn with the same noise. Prints a table, writes ``profile.json`` and
``profile.png`` into ``out_dir``. The parts live in ``paradigms_policy.profiling``.

    paradigms-profile checkpoint=PATH out_dir=DIR cycles=30 budget_ms=40
    paradigms-profile checkpoint=random samplers=[picard_cold,picard_warm]
    paradigms-profile device=cuda executor=eager            # eager against CUDA graphs (the default on CUDA)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from paradigms_policy import paths
from paradigms_policy.profiling.episodes import control_cycles, load_episodes
from paradigms_policy.profiling.measure import ReferenceCache, allocation_counts, run_cycles, warm_up
from paradigms_policy.profiling.policies import describe_checkpoint, load_policies
from paradigms_policy.profiling.report import format_table, write_report
from paradigms_policy.profiling.stats import add_speedups, describe_sampler, summarize
from paradigms_policy.runtime import describe_device, resolve_device, set_cpu_threads

__all__ = ["run_profile", "main"]


def check_config(cfg) -> None:
    """Fail before any model is built if the configuration cannot be profiled."""
    from paradigms_policy.diffusion.samplers import SAMPLER_NAMES
    from paradigms_policy.profiling.policies import sampler_of

    samplers = list(cfg.samplers)
    if not samplers:
        raise ValueError("samplers must name at least one sampler")
    unknown = [n for n in samplers if sampler_of(cfg, n) not in SAMPLER_NAMES]
    if unknown:
        raise ValueError(f"unknown sampler(s) {unknown}; expected names from {list(SAMPLER_NAMES)}, or a label "
                         "with sampler_overrides.<label>.sampler naming one")
    if int(cfg.cycles) < 1:
        raise ValueError(f"cycles must be >= 1, got {cfg.cycles}")
    if cfg.budget_ms is not None and not float(cfg.budget_ms) > 0:
        raise ValueError(f"budget_ms must be > 0, got {cfg.budget_ms}")


def run_profile(cfg) -> dict[str, Any]:
    """Profile the configured samplers; write profile.json / profile.png; return the report."""
    check_config(cfg)
    samplers = list(cfg.samplers)
    if cfg.threads is not None or resolve_device(cfg.device).type == "cpu":
        set_cpu_threads(None if cfg.threads is None else int(cfg.threads))
    policies, checkpoint, checkpoint_path = load_policies(cfg, samplers)
    any_policy = next(iter(policies.values()))
    cycles = int(cfg.cycles)
    episodes, source = load_episodes(any_policy, episode_source=cfg.episode_source, episode_index=int(cfg.episode_index),
                                     checkpoint_path=checkpoint_path, n_steps=cycles * any_policy.n_action_steps + 1,
                                     seed=int(cfg.seed))
    windows, starts = control_cycles(episodes, any_policy.n_obs_steps, any_policy.n_action_steps, cycles)
    if len(windows) < cycles:
        print(f"[profile] the episodes have only {len(windows)} re-planning cycles; profiling those")
    print(f"[profile] model: {describe_checkpoint(checkpoint)}")
    print(f"[profile] observations: {source} ({len(windows)} cycles in {sum(starts)} episode(s), "
          f"re-plan every {any_policy.n_action_steps} steps)")
    device = describe_device(any_policy.device)
    print(f"[profile] device: {device}, executor: {any_policy.denoiser.executor}")

    print("[profile] warming up ...", flush=True)
    for policy in policies.values():
        warm_up(policy, windows, starts, solves=int(cfg.warmup_solves), seed=int(cfg.seed))
    warmed = {name: allocation_counts(policy) for name, policy in policies.items()}
    references = ReferenceCache()
    print(f"[profile] timing {len(windows)} cycles x {len(samplers)} samplers (interleaved) ...", flush=True)
    timed = run_cycles(policies, windows, starts, references, seed=int(cfg.seed))
    results = {name: describe_sampler(policies[name], timed[name], cfg.plot_cycle) for name in samplers}
    if cfg.budget_ms is not None:
        budget_s = float(cfg.budget_ms) / 1e3
        print(f"[profile] budgeted pass ({float(cfg.budget_ms):g} ms) ...", flush=True)
        budgeted = run_cycles(policies, windows, starts, references, seed=int(cfg.seed), budget_s=budget_s)
        for name, records in budgeted.items():
            b = summarize(records, budget_s)
            results[name]["deadline"] = {**b["deadline"], "latency_ms": b["latency_ms"], "rounds": b["rounds"],
                                         "error": b["error"], "converged_fraction": b["converged_fraction"]}
    for name, policy in policies.items():
        now = allocation_counts(policy)
        results[name]["allocations"] = {"after_warmup": warmed[name],
                                        "created_while_timed": {k: now[k] - warmed[name][k] for k in now}}
    add_speedups(results)
    steps = max((s["steps"] for n, s in results.items() if n.startswith("ddpm")), default=None)
    report = {
        "checkpoint": checkpoint,
        "device": device,
        "executor": any_policy.denoiser.executor,
        "torch": torch.__version__,
        "steps": int(steps if steps is not None else max(s["steps"] for s in results.values())),
        "observations": source,
        "cycles": len(windows),
        "episodes": int(sum(starts)),
        "samplers": results,
    }
    json_path, png_path = write_report(report, Path(cfg.out_dir))
    print(format_table(report))
    late = {n: s["allocations"]["created_while_timed"] for n, s in results.items()
            if any(s["allocations"]["created_while_timed"].values())}
    if late:
        print(f"[profile] WARNING: buffers/graphs created during timed solves: {late}")
    print(f"[profile] wrote {json_path} and {png_path}")
    return report


def _hydra_entry(cfg) -> None:
    run_profile(cfg)


def main() -> None:
    """Console entry point ``paradigms-profile`` (hydra overrides on the command line)."""
    import hydra

    hydra.main(version_base="1.3", config_path=str(paths.config_dir()), config_name="profile")(_hydra_entry)()


if __name__ == "__main__":
    main()
