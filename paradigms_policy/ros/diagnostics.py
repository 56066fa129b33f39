"""Cycle statistics of the policy node and their diagnostic_msgs form.

``CycleStats`` is fed from the inference worker (one record per solve) and from the control
tick (input problems); ``status`` turns a snapshot into a DiagnosticStatus whose level says
whether anything is wrong: ERROR for a failed configure (until the next successful one),
unusable inputs or failed solves, WARN for missed budgets or solves that stopped unconverged;
the message names the lifecycle state when the node is not active.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


@dataclass(frozen=True)
class CycleRecord:
    latency_s: float  # control tick -> chunk published
    sampling_s: float  # time inside predict_action
    rounds: int
    converged: bool
    deadline_hit: bool
    budget_missed: bool
    warm_started: bool


class CycleStats:
    """Thread-safe accumulator: a sliding window of recent cycles plus lifetime counters."""

    def __init__(self, window: int = 200):
        self._lock = threading.Lock()
        self._recent: deque[CycleRecord] = deque(maxlen=window)
        self.cycles = 0
        self.budget_misses = 0
        self.stale_inputs = 0
        self.input_errors = 0
        self.failed_solves = 0
        self.holds = 0
        self.warm_hits = 0
        self._input_problems: dict[str, str] = {}
        self._last_failure = ""

    def record_cycle(self, record: CycleRecord) -> None:
        with self._lock:
            self._recent.append(record)
            self.cycles += 1
            self.budget_misses += int(record.budget_missed)
            self.warm_hits += int(record.warm_started)
            self._last_failure = ""

    def record_failure(self, reason: str) -> None:
        with self._lock:
            self.failed_solves += 1
            self._last_failure = reason

    def set_input_problem(self, topic: str, problem: str, stale: bool) -> None:
        with self._lock:
            self._input_problems[topic] = problem
            if stale:
                self.stale_inputs += 1
            else:
                self.input_errors += 1

    def set_input_problems(self, problems: dict[str, tuple[str, bool]]) -> None:
        """Replace the current input problems ({topic: (problem, stale)}; one tick's findings)."""
        with self._lock:
            self._input_problems = {t: p for t, (p, _) in problems.items()}
            self.stale_inputs += sum(1 for _, stale in problems.values() if stale)
            self.input_errors += sum(1 for _, stale in problems.values() if not stale)

    def record_hold(self) -> None:
        with self._lock:
            self.holds += 1

    def clear_input_problems(self) -> None:
        with self._lock:
            self._input_problems.clear()

    def input_problems(self) -> dict[str, str]:
        with self._lock:
            return dict(self._input_problems)

    def summary(self) -> dict[str, float]:
        with self._lock:
            recent = list(self._recent)
            counters = dict(cycles=self.cycles, budget_misses=self.budget_misses, stale_inputs=self.stale_inputs,
                            input_errors=self.input_errors, failed_solves=self.failed_solves, holds=self.holds)
            warm = self.warm_hits
        out: dict[str, float] = {k: float(v) for k, v in counters.items()}
        out["warm_start_hit_rate"] = warm / self.cycles if self.cycles else 0.0
        if recent:
            latency = np.array([r.latency_s for r in recent]) * 1e3
            sampling = np.array([r.sampling_s for r in recent]) * 1e3
            out.update(
                latency_p50_ms=float(np.percentile(latency, 50)),
                latency_p99_ms=float(np.percentile(latency, 99)),
                sampling_p50_ms=float(np.percentile(sampling, 50)),
                rounds_mean=float(np.mean([r.rounds for r in recent])),
                rounds_max=float(max(r.rounds for r in recent)),
                converged_fraction=float(np.mean([r.converged for r in recent])),
                recent_budget_miss_fraction=float(np.mean([r.budget_missed for r in recent])),
                recent_deadline_hit_fraction=float(np.mean([r.deadline_hit for r in recent])),
            )
        return out

    def status(self, name: str, hardware_id: str, state: str, config_error: str = "") -> DiagnosticStatus:
        """DiagnosticStatus for the current state (level, message and key/values).

        ``state``: the lifecycle state (unconfigured, inactive, active); ``config_error``: why the
        last configure failed ("" after a successful one), reported as ERROR until then.
        """
        summary = self.summary()
        active = state == "active"
        problems = self.input_problems() if active else {}
        with self._lock:
            failure = self._last_failure if active else ""
        level, messages = OK, []
        if config_error:
            level = ERROR
            messages.append(f"configure failed: {config_error}")
        if problems:
            level = ERROR
            messages.append("bad input: " + "; ".join(f"{t}: {p}" for t, p in sorted(problems.items())))
        if failure:
            level = ERROR
            messages.append(f"solve failed: {failure}")
        if active and summary.get("recent_budget_miss_fraction", 0.0) > 0.01:
            level = max(level, WARN)
            messages.append(f"{summary['recent_budget_miss_fraction']:.0%} of recent chunks missed the latency budget")
        if active and summary.get("converged_fraction", 1.0) < 0.5:
            level = max(level, WARN)
            messages.append(f"only {summary['converged_fraction']:.0%} of recent solves converged before the deadline")
        if not active:
            messages.append(state)
        elif not summary["cycles"] and not problems and not failure:
            level = max(level, WARN)
            messages.append("active, no chunk published yet")
        status = DiagnosticStatus()
        status.level = level
        status.name = name
        status.hardware_id = hardware_id
        status.message = "; ".join(messages) if messages else "ok"
        status.values = [KeyValue(key=k, value=f"{v:.4g}") for k, v in summary.items()]
        status.values += [KeyValue(key=f"input_problem:{t}", value=p) for t, p in sorted(problems.items())]
        status.values.append(KeyValue(key="state", value=state))
        return status


def diagnostic_array(status: DiagnosticStatus, stamp) -> DiagnosticArray:
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array


def status_values(status: DiagnosticStatus) -> dict[str, str]:
    """{key: value} of a DiagnosticStatus (used by the demo, benchmark and tests)."""
    return {kv.key: kv.value for kv in status.values}
