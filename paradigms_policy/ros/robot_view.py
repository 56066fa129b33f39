"""What a robot subscribed to the policy node sees: which inputs a chunk came from, and holes in its plan.

Used by the fault-injection tests and the soak benchmark to judge the node from the outside:

- ``SentLog`` records every observation a driver published (topic, time, good or bad) and
  tells, from a chunk's ``input_stamps`` (the receive times the node reports in
  ``policy/cycle_stats``), whether any message it was computed from was bad. A message
  received at ``s`` is the newest one sent on its topic at or before ``s``.
- ``PlanView`` replays received JointTrajectories the way a robot executes them (a new one
  replaces the plan from its start time on, points before it stay) and finds control periods
  with no action: holes on the robot's timeline.

Plain Python; times are seconds of one clock (ROS time on one machine).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field


def parse_input_stamps(text: str) -> dict[str, list[float]]:
    """``topic=t0,t1;topic2=...`` (cycle stats ``input_stamps``) -> {topic: [stamps]}."""
    out: dict[str, list[float]] = {}
    for part in filter(None, text.split(";")):
        topic, _, stamps = part.partition("=")
        out[topic] = [float(s) for s in stamps.split(",") if s]
    return out


@dataclass
class SentLog:
    """Observations a driver published, per topic, in time order."""

    times: dict[str, list[float]] = field(default_factory=dict)
    bad: dict[str, list[bool]] = field(default_factory=dict)

    def record(self, topic: str, sent_s: float, bad: bool) -> None:
        self.times.setdefault(topic, []).append(float(sent_s))
        self.bad.setdefault(topic, []).append(bool(bad))

    def bad_inputs_used(self, input_stamps: str, slack_s: float = 1e-4) -> list[tuple[str, float]]:
        """(topic, receive stamp) of every bad message among those a chunk was computed from."""
        found = []
        for topic, stamps in parse_input_stamps(input_stamps).items():
            times, bad = self.times.get(topic, []), self.bad.get(topic, [])
            for stamp in stamps:
                i = bisect_right(times, stamp + slack_s) - 1
                if i >= 0 and bad[i]:
                    found.append((topic, stamp))
        return found


@dataclass(frozen=True)
class ReceivedPlan:
    received_s: float
    start_s: float  # time of the first point (header stamp + its time_from_start)
    points: int
    dt: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.points * self.dt


class PlanView:
    """The robot's plan over time, rebuilt from the trajectories it received."""

    def __init__(self, plans: list[ReceivedPlan] | None = None):
        self.plans = sorted(plans or [], key=lambda p: p.received_s)

    def add(self, plan: ReceivedPlan) -> None:
        self.plans.append(plan)
        self.plans.sort(key=lambda p: p.received_s)

    def covered(self, t: float) -> bool:
        """Whether the robot has an action for the control period at ``t``.

        The latest trajectory received by ``t`` whose first point is due by ``t`` decides: a
        later one with a later start replaces only from its start on.
        """
        current = None
        for plan in self.plans:
            if plan.received_s > t:
                break
            if plan.start_s - 0.5 * plan.dt <= t:
                current = plan
        return current is not None and t < current.end_s - 0.5 * current.dt + 1e-9

    def holes(self, start_s: float, end_s: float, dt: float) -> list[float]:
        """Control periods (times start_s, start_s + dt, ... < end_s) with no action."""
        steps = int(math.floor((end_s - start_s) / dt + 1e-9))
        return [start_s + i * dt for i in range(steps) if not self.covered(start_s + i * dt)]
