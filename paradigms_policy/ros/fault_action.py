"""What the node does to the robot while its inputs (or its solves) are bad: the fault action.

``on_input_fault``:

- ``none``: publish nothing; the robot runs out the plan it has (made from good data), then idles.
- ``hold``: publish a short trajectory that holds the robot where it is, the way ros2_control's
  joint_trajectory_controller holds the last commanded position at the end of a trajectory, so
  a robot never keeps running a stale plan when its inputs go bad. In a delta action space
  (e.g. robosuite OSC_POSE: eef_dx..eef_daz) holding is a zero action; dimensions listed in
  ``hold_action_dims`` keep their last commanded value instead (a gripper's open/close command,
  or every dimension of an absolute action space such as joint positions).

A hold goes out once when an input fault begins and again whenever the robot would otherwise run
out of actions while the fault lasts. It is never shorter than the plan it replaces (nor than a
chunk, nor than a solve started when the inputs are back), so holding never opens a hole on the
robot's timeline; the first chunk from good data replaces it. A failed solve with good inputs does not stop a robot
that still has a plan: it holds only once that plan is about to run out. ``FaultTracker`` is the
state machine; ``hold_actions`` builds the points. Plain Python, no ROS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

FAULT_ACTIONS = ("none", "hold")
HOLD_LEAD_PERIODS = 2.0  # re-publish a hold when less than this much of the robot's plan is left


def hold_actions(last_commanded: np.ndarray, hold_dims: Sequence[int], steps: int) -> np.ndarray:
    """[steps, A] actions that hold still: 0, except ``hold_dims`` which repeat ``last_commanded``."""
    last = np.asarray(last_commanded, dtype=np.float64).reshape(-1)
    if steps < 1:
        raise ValueError(f"a hold needs at least one point, got steps={steps}")
    bad = [d for d in hold_dims if not 0 <= int(d) < last.size]
    if bad:
        raise ValueError(f"hold_action_dims {bad} are not dimensions of a {last.size}-d action")
    actions = np.zeros((steps, last.size))
    dims = [int(d) for d in hold_dims]
    actions[:, dims] = last[dims]
    return actions


@dataclass
class FaultEpisode:
    """One stretch of time in which nothing good could be published."""

    kind: str  # "input" (bad or stale inputs) | "solve" (a solve failed or got no round)
    started_s: float
    reason: str
    holds: int = 0  # hold trajectories published in this episode


class FaultTracker:
    """Tracks the current fault episode and decides when a hold is due."""

    def __init__(self) -> None:
        self.episode: FaultEpisode | None = None
        self.episodes = 0  # lifetime count

    @property
    def input_fault_since(self) -> float | None:
        """Start of the current input fault, or None."""
        return self.episode.started_s if self.episode is not None and self.episode.kind == "input" else None

    def begin(self, kind: str, now_s: float, reason: str) -> bool:
        """Enter (or continue) a fault episode; True when a new one starts (an input fault replaces a solve fault)."""
        if kind not in ("input", "solve"):
            raise ValueError(f"fault kind must be 'input' or 'solve', got {kind!r}")
        current = self.episode
        if current is not None and (current.kind == kind or kind == "solve"):
            current.reason = reason
            return False
        self.episode = FaultEpisode(kind, float(now_s), reason)
        self.episodes += 1
        return True

    def end(self, kind: str | None = None) -> FaultEpisode | None:
        """Leave the current episode (only if it is of ``kind``, when given); returns it."""
        episode = self.episode
        if episode is None or (kind is not None and episode.kind != kind):
            return None
        self.episode = None
        return episode

    def hold_due(self, now_s: float, covered_until_s: float, dt: float) -> bool:
        """Whether a hold should go out now: the first of an input fault, or the robot's plan is running out."""
        episode = self.episode
        if episode is None:
            return False
        if episode.kind == "input" and episode.holds == 0:
            return True
        return covered_until_s <= now_s + HOLD_LEAD_PERIODS * dt

    def held(self) -> None:
        if self.episode is not None:
            self.episode.holds += 1
