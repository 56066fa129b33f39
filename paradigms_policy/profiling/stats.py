"""Summaries of timed cycles: rounds, evaluations, latency percentiles, error, deadline adherence."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .measure import CycleRecord

__all__ = ["summarize", "describe_sampler", "add_speedups"]

BASELINES = ("ddpm_sequential", "ddim_sequential")


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


def describe_sampler(policy, records: Sequence[CycleRecord], plot_cycle: int | None) -> dict[str, Any]:
    """``summarize`` plus the sampler's settings and one cycle's residual history (for the plot)."""
    sampler = policy.sampler
    summary = summarize(records)
    summary["steps"] = int(sampler.rule.num_steps)
    summary["tolerance"] = sampler.tolerance
    summary["abs_tolerance"] = sampler.solver_config.get("abs_tolerance")
    summary["window"] = sampler.window if sampler.is_parallel else None
    summary["warm_start"] = bool(sampler.uses_warm_start)
    cycle = len(records) // 2 if plot_cycle is None else plot_cycle
    cycle = min(int(cycle), len(records) - 1)
    summary["residual_history"] = {"cycle": cycle, "values": records[cycle].residual_history}
    return summary


def add_speedups(results: dict[str, Any]) -> None:
    """``speedup_p50``: latency p50 of each sequential baseline present / this sampler's (same run)."""
    baselines = [n for n in BASELINES if n in results]
    for summary in results.values():
        summary["speedup_p50"] = {
            f"vs_{b.removesuffix('_sequential')}": results[b]["latency_ms"]["p50"] / summary["latency_ms"]["p50"]
            for b in baselines
            if summary["latency_ms"]["p50"] > 0
        }
