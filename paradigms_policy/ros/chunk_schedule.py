"""When to start the next solve, and where on the robot's timeline its chunk begins.

The robot executes one action per control period: action i of a chunk stamped ``s`` runs
from ``s + i*dt``. While a new chunk is being computed the robot keeps executing the previous
one, so the new chunk must start where the robot will be when it arrives: after the
``n_executed`` actions of the previous chunk whose slots have begun by the arrival time
(at most the latency budget after the tick). That same count is the shift of the warm start
(the new chunk's action 0 is the previous chunk's action ``n_executed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkPlan:
    """The timing of one solve: start of the new chunk (ROS time, s) and the warm-start shift."""

    stamp_s: float
    n_executed: int | None  # None: no usable previous chunk (cold start)
    gap_s: float  # time the robot has nothing to execute before this chunk starts (0 when seamless)
    first: bool = False  # no chunk published since activation: the robot is idle, waiting for this one


class ChunkScheduler:
    """Tracks the last published chunk; decides at each tick whether to solve and how to stamp it."""

    def __init__(self, period_s: float, budget_s: float):
        if period_s <= 0 or budget_s <= 0:
            raise ValueError(f"period_s and budget_s must be positive, got {period_s}, {budget_s}")
        self.period_s = period_s
        self.budget_s = budget_s
        self.prev_stamp_s: float | None = None
        self.prev_length = 0

    def reset(self) -> None:
        self.prev_stamp_s = None
        self.prev_length = 0

    def executed_by(self, t: float) -> int:
        """Actions of the previous chunk the robot has started by time ``t``.

        A robot ticking at the same rate with an unknown phase runs each action on the tick
        nearest its time, i.e. up to half a period early, so an action counts as started when its
        time is before ``t + period/2``: the new chunk then starts at an action no robot tick has
        reached yet when it arrives.
        """
        if self.prev_stamp_s is None:
            return 0
        started = math.floor((t - self.prev_stamp_s) / self.period_s + 0.5) + 1
        return max(0, min(self.prev_length, started))

    def end_s(self) -> float | None:
        """When the robot runs out of the previous chunk."""
        if self.prev_stamp_s is None:
            return None
        return self.prev_stamp_s + self.prev_length * self.period_s

    def due(self, now_s: float) -> bool:
        """Solve now if waiting one more tick would let the robot run out before the chunk arrives."""
        end = self.end_s()
        return end is None or now_s + self.period_s + self.budget_s + 0.5 * self.period_s >= end - 1e-9

    def plan(self, now_s: float) -> ChunkPlan:
        """Timing of a solve started at ``now_s`` that publishes by ``now_s + budget``."""
        arrival = now_s + self.budget_s
        if self.prev_stamp_s is None:  # cold: half a period after arrival, so no robot tick is past it
            return ChunkPlan(stamp_s=arrival + 0.5 * self.period_s, n_executed=None, gap_s=0.0, first=True)
        end = self.end_s()
        if arrival + 0.5 * self.period_s < end:
            k = self.executed_by(arrival)
            return ChunkPlan(stamp_s=self.prev_stamp_s + k * self.period_s, n_executed=k, gap_s=0.0)
        # the robot runs out first: start on the previous chunk's grid at the first slot no tick has reached
        k = math.floor((arrival - self.prev_stamp_s) / self.period_s + 0.5) + 1
        return ChunkPlan(stamp_s=self.prev_stamp_s + k * self.period_s, n_executed=k,
                         gap_s=(k - self.prev_length) * self.period_s)

    def published(self, stamp_s: float, length: int) -> None:
        self.prev_stamp_s = stamp_s
        self.prev_length = int(length)
