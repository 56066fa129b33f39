"""``sampler: auto``: pick the sampler with the least expected latency on this machine.

Expected latency = the study's median rounds (registry.MEASURED, warm where the sampler
warm-starts) x the measured time of one batched call of that sampler's typical width on
this machine. Candidates: the sequential samplers and the warm parallel samplers of the
rules validated in rollouts (registry.ROLLOUT_VALIDATED) whose study error is within the
bar. A parallel sampler without study figures is not a candidate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import Tensor

from .registry import ROLLOUT_VALIDATED, SAMPLERS, STUDY_SOURCE, SamplerSpec
from .types import Denoiser

AUTO_ERROR_BAR = 0.02  # max abs vs the sequential sample of the same rule, normalized units
MAX_TIMED_ROWS = 4096  # wider calls are extrapolated linearly from the widest one timed


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str
    expected_s: dict[str, float]  # candidate -> expected seconds per chunk


def candidates(error_bar: float = AUTO_ERROR_BAR, rules: tuple[str, ...] = ROLLOUT_VALIDATED,
               specs: Mapping[str, SamplerSpec] | None = None) -> dict[str, SamplerSpec]:
    """Entries auto may choose: sequential or warm parallel, validated rule, measured within the bar."""
    out = {}
    for name, spec in (SAMPLERS if specs is None else specs).items():
        if spec.rule not in rules or spec.measured is None or spec.measured.error_max > error_bar:
            continue
        if spec.update == "sequential" or spec.warm:
            out[name] = spec
    return out


def round_rows(spec: SamplerSpec, event_numel: int) -> int:
    """Denoiser rows of a typical round (the study's mean steps per round; Newton adds its probes)."""
    if spec.settings is None:
        return 1
    steps = max(1, int(round(spec.measured.steps_per_round)))
    return int(spec.settings.rows_per_round(steps, event_numel))


def measure_round_times(denoise: Denoiser, rule, x_init: Tensor, widths, repeats: int = 2,
                        max_rows: int = MAX_TIMED_ROWS) -> dict[int, float]:
    """Best-of-``repeats`` seconds of one batched call per width (widths above ``max_rows`` not timed)."""
    times = {}
    s = int(rule.num_steps)
    timesteps = rule.timesteps.to(x_init.device)
    for w in sorted({int(w) for w in widths if 1 <= int(w) <= max_rows}):
        x = x_init.unsqueeze(0).expand(w, *x_init.shape).contiguous()
        t = timesteps[torch.arange(w, device=x_init.device) % s]
        with torch.no_grad():
            denoise(x, t)  # first call of a width allocates buffers (and captures graphs on CUDA)
            best = float("inf")
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                denoise(x, t)
                best = min(best, time.perf_counter() - t0)
        times[w] = best
    return times


def call_time(round_times: Mapping[int, float]) -> Callable[[int], float]:
    """Seconds of a call of any width: piecewise linear between timed widths, linear beyond the widest."""
    if not round_times:
        raise ValueError("no round times measured")
    widths = sorted(round_times)

    def at(w: int) -> float:
        if w <= widths[0]:
            return round_times[widths[0]]
        if w >= widths[-1]:
            return round_times[widths[-1]] * w / widths[-1]
        for lo, hi in zip(widths, widths[1:]):
            if lo <= w <= hi:
                f = (w - lo) / (hi - lo)
                return (1 - f) * round_times[lo] + f * round_times[hi]
        raise AssertionError("unreachable")

    return at


def choose_sampler(round_times: Mapping[int, float], event_numel: int, *, error_bar: float = AUTO_ERROR_BAR,
                   rules: tuple[str, ...] = ROLLOUT_VALIDATED,
                   specs: Mapping[str, SamplerSpec] | None = None) -> Choice:
    """The candidate with the least expected latency, and a reason naming the runner-up and the figures.

    round_times: {rows: seconds of one batched call} measured on this machine; specs: the
    registry (default) or another table of SamplerSpecs.
    """
    pool = candidates(error_bar, rules, specs)
    if not pool:
        raise ValueError(f"no sampler meets the error bar {error_bar} for rules {rules}")
    t = call_time(round_times)
    expected = {name: spec.measured.rounds_median * t(round_rows(spec, event_numel)) for name, spec in pool.items()}
    ranked = sorted(expected, key=expected.get)
    best = ranked[0]

    def describe(name: str) -> str:
        spec = pool[name]
        rows = round_rows(spec, event_numel)
        return (f"{name} ({spec.measured.rounds_median:g} rounds x {1e3 * t(rows):.1f} ms per {rows}-row call "
                f"= {1e3 * expected[name]:.1f} ms)")

    timed = ", ".join(f"{w}: {1e3 * s:.2f} ms" for w, s in sorted(round_times.items()))
    reason = (f"auto chose {describe(best)}"
              + (f"; next {describe(ranked[1])}" if len(ranked) > 1 else "")
              + f"; candidates within max-abs error {error_bar:g} of their sequential rule (rules {', '.join(rules)}), "
                f"rounds from {STUDY_SOURCE}; call times measured here ({timed})")
    return Choice(name=best, reason=reason, expected_s=expected)
