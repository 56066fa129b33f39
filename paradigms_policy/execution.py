"""One model of time on the robot, shared by the ROS node, the simulated rollouts and the demo.

A chunk is planned from the observation taken at ``obs_time``. Following DiffusionPolicy's
convention, action j of its executed slice (horizon index ``n_obs_steps - 1 + j``) belongs to
``obs_time + j * dt``. Solving takes time, and the robot keeps executing the previous chunk
meanwhile, so when the new chunk arrives some of its actions are already in the past:

- ``naive``: the chunk starts at its first action when it arrives (what the first version did:
  every chunk runs as late as its solve took);
- ``aligned``: actions whose time has passed on arrival are dropped, never run late (as
  DiffusionPolicy's real-robot runner and LeRobot's async client do);
- ``inpaint``: aligned, and the actions the robot is committed to while the solve runs are given
  to the solver as known values, so the new chunk continues exactly from them.

The model also decides when to start the next solve (every k actions, or as soon as the
previous one is placed) and gives the warm-start shift: the control periods between the
observations of two consecutive solves. Times are plain floats in any unit (the node uses ROS
seconds, the rollouts use ticks with ``dt = 1``); nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

MODES = ("naive", "aligned", "inpaint")
REPLAN_POLICIES = ("every", "asap")


@dataclass(frozen=True)
class ExecutionSettings:
    """How chunks are placed in time and when the next one is planned.

    mode: one of ``MODES``. replan: ``every`` (the next solve observes ``replan_every`` periods
    after the previous one; 0 means the checkpoint's n_action_steps) or ``asap`` (as soon as the
    previous chunk is placed). start_margin: in periods; an action counts as passed on arrival
    if its time is before ``arrival + start_margin * dt`` (0 for a simulator that waits for the
    chunk; half a period for a robot that runs each point on its nearest tick).
    """

    mode: str = "inpaint"
    replan: str = "every"
    replan_every: int = 0
    start_margin: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"execution mode must be one of {MODES}, got {self.mode!r}")
        if self.replan not in REPLAN_POLICIES:
            raise ValueError(f"replan must be one of {REPLAN_POLICIES}, got {self.replan!r}")
        if isinstance(self.replan_every, bool) or not isinstance(self.replan_every, int) or self.replan_every < 0:
            raise ValueError(f"replan_every must be an integer >= 0 (0: n_action_steps), got {self.replan_every!r}")
        if not (math.isfinite(self.start_margin) and 0.0 <= self.start_margin < 1.0):
            raise ValueError(f"start_margin must be in [0, 1) control periods, got {self.start_margin!r}")


@dataclass(frozen=True)
class ChunkGeometry:
    """Where a chunk's executable actions sit in the predicted horizon.

    ``action_start`` is the horizon index of the action at ``obs_time``: n_obs_steps - 1 in
    DiffusionPolicy's convention (its low-dim policy without ``oa_step_convention`` uses n_obs_steps).
    """

    horizon: int
    action_start: int
    n_action_steps: int

    def __post_init__(self) -> None:
        if not 0 <= self.action_start < self.horizon:
            raise ValueError(f"action_start must be in [0, horizon={self.horizon}), got {self.action_start}")
        if not 1 <= self.n_action_steps <= self.executable:
            raise ValueError(f"n_action_steps must be in [1, {self.executable}] (horizon - action_start), "
                             f"got {self.n_action_steps}")

    @classmethod
    def of(cls, policy, n_action_steps: int | None = None) -> "ChunkGeometry":
        start = int(getattr(policy, "action_start", policy.n_obs_steps - 1))
        return cls(int(policy.horizon), start, int(n_action_steps or policy.n_action_steps))

    @property
    def first_executed(self) -> int:
        """Horizon index of action 0 of the executed slice (the action at ``obs_time``)."""
        return self.action_start

    @property
    def executable(self) -> int:
        """Actions from the first executed one to the end of the horizon."""
        return self.horizon - self.action_start


@dataclass(frozen=True)
class SolveRequest:
    """What a solve started now needs: its observation time, warm-start shift and known actions."""

    obs_time: float
    previous_obs_time: float | None  # the previous solve's observation time (restored by ``cancel``)
    shift: int | None  # periods since the previous solve's observation; None: no previous solve
    known_actions: np.ndarray  # [n, A]: actions 0..n-1 of the executed slice, already committed
    expected_arrival: float
    first: bool  # nothing placed since reset: the robot is idle, waiting for this chunk


@dataclass(frozen=True)
class Placement:
    """Where an arrived chunk went on the robot's timeline."""

    start_time: float  # time of the first placed action
    actions: np.ndarray  # [m, A], one per period from start_time (m = 0: the whole chunk was late)
    dropped: int  # executed-slice actions whose time had passed on arrival (index of the first placed one)


class ActionTimeline:
    """The actions the robot is committed to, one per control period, keyed by time."""

    def __init__(self, dt: float):
        if not dt > 0:
            raise ValueError(f"dt must be positive, got {dt!r}")
        self.dt = float(dt)
        self.times: list[float] = []
        self.actions: list[np.ndarray] = []

    def clear(self) -> None:
        self.times, self.actions = [], []

    def install(self, start: float, actions: np.ndarray) -> None:
        """Replace everything from ``start`` on with ``actions`` (one per period)."""
        keep = next((i for i, t in enumerate(self.times) if t >= start - 0.5 * self.dt), len(self.times))
        self.times = self.times[:keep] + [start + i * self.dt for i in range(len(actions))]
        self.actions = self.actions[:keep] + [np.array(a, dtype=np.float64) for a in actions]

    def action_at(self, t: float) -> np.ndarray | None:
        """The action whose slot is nearest ``t`` (within half a period), or None."""
        for time_, action in zip(self.times, self.actions):
            if abs(time_ - t) < 0.5 * self.dt:
                return action
            if time_ > t:
                break
        return None

    def run(self, start: float, until: float) -> np.ndarray:
        """Actions for start, start+dt, ... before ``until``, stopping at the first slot with none: [n, A]."""
        out = []
        t = start
        while t < until - 1e-9 * self.dt:
            action = self.action_at(t)
            if action is None:
                break
            out.append(action)
            t += self.dt
        return np.array(out).reshape(len(out), -1) if out else np.zeros((0, 0))

    def last_at_or_before(self, t: float) -> np.ndarray | None:
        """The action running at ``t``, else the latest one before it (what the robot was last told), or None."""
        current = self.action_at(t)
        if current is not None:
            return current
        before = [a for time_, a in zip(self.times, self.actions) if time_ <= t]
        return before[-1] if before else None

    def covered_until(self, t: float) -> float:
        """End of the run of actions from ``t`` on (``t`` itself when none is due at ``t``).

        Each action covers half a period either side of its time; actions installed on different
        grids (a chunk on its observation's, a hold on the tick's) join when they touch.
        """
        end, half = float(t), 0.5 * self.dt
        for time_ in self.times:
            if time_ + half <= end:
                continue
            if time_ - half > end + 0.5 * half:
                break
            end = time_ + half
        return end

    def forget_before(self, t: float) -> None:
        """Drop actions whose slot ended before ``t`` (executed), so the timeline stays short."""
        keep = next((i for i, s in enumerate(self.times) if s >= t - 0.5 * self.dt), len(self.times))
        self.times, self.actions = self.times[keep:], self.actions[keep:]


class ExecutionModel:
    """Plans solves and places their chunks on the robot's timeline (see the module docstring)."""

    def __init__(self, settings: ExecutionSettings, geometry: ChunkGeometry, dt: float):
        self.settings = settings
        self.geometry = geometry
        self.dt = float(dt)
        self.timeline = ActionTimeline(dt)
        self.last_obs_time: float | None = None
        self._replan_now = False

    def reset(self) -> None:
        """A new episode or a restart: nothing committed, the next solve is the first."""
        self.timeline.clear()
        self.last_obs_time = None
        self._replan_now = False

    @property
    def started(self) -> bool:
        return self.last_obs_time is not None

    def replan_every(self, delay_steps: int = 0) -> int:
        """Periods between the observations of consecutive solves that take ``delay_steps`` periods.

        ``every``: replan_every (0: n_action_steps), shortened so the chunk still covers the
        robot until the next one arrives, but never below the delay (one solve at a time);
        ``asap``: as soon as a chunk arrives.
        """
        if self.settings.replan == "asap":
            return max(1, delay_steps)
        k = self.settings.replan_every or self.geometry.n_action_steps
        return max(1, delay_steps, min(k, self.geometry.executable - delay_steps))

    def idle_per_cycle(self, delay_steps: int) -> int:
        """Periods per cycle with no action to run: a chunk covers ``executable`` periods from its observation."""
        return max(0, self.replan_every(delay_steps) + delay_steps - self.geometry.executable)

    def check_delay(self, delay_steps: int) -> None:
        """Raise ValueError if no action of a chunk that takes ``delay_steps`` periods could still run."""
        if isinstance(delay_steps, bool) or not isinstance(delay_steps, int) or delay_steps < 0:
            raise ValueError(f"delay must be an integer number of control periods >= 0, got {delay_steps!r}")
        if delay_steps >= self.geometry.executable and self.settings.mode != "naive":
            raise ValueError(
                f"a delay of {delay_steps} periods leaves nothing to run: a chunk holds {self.geometry.executable} "
                f"executable actions (horizon {self.geometry.horizon} from index {self.geometry.action_start})")

    def due(self, now: float, delay_steps: int = 0) -> bool:
        """Whether a solve should observe now (the caller asks only when no solve is in flight)."""
        if self.last_obs_time is None or self.settings.replan == "asap" or self._replan_now:
            return True
        return now >= self.last_obs_time + (self.replan_every(delay_steps) - 0.5) * self.dt

    def request(self, obs_time: float, expected_arrival: float) -> SolveRequest:
        """Start a solve on the observation taken at ``obs_time``, expected to arrive at ``expected_arrival``."""
        first = self.last_obs_time is None
        shift = None if first else int(round((obs_time - self.last_obs_time) / self.dt))
        known = np.zeros((0, 0))
        if self.settings.mode == "inpaint" and not first:
            until = expected_arrival + self.settings.start_margin * self.dt
            known = self.timeline.run(obs_time, until)[: self.geometry.executable - 1]  # leave one free action
        previous, self.last_obs_time = self.last_obs_time, float(obs_time)
        self._replan_now = False
        return SolveRequest(obs_time=float(obs_time), previous_obs_time=previous, shift=shift, known_actions=known,
                            expected_arrival=float(expected_arrival), first=first)

    def cancel(self, request: SolveRequest) -> None:
        """A requested solve published nothing (bad input, failure): the next tick may plan again."""
        if self.last_obs_time == request.obs_time:
            self.last_obs_time = request.previous_obs_time

    def place(self, request: SolveRequest, action_pred: np.ndarray, arrival: float) -> Placement:
        """Put the chunk predicted for ``request`` ([horizon, A]) on the timeline at ``arrival``."""
        action_pred = np.asarray(action_pred, dtype=np.float64)
        if action_pred.ndim != 2 or action_pred.shape[0] != self.geometry.horizon:
            raise ValueError(f"action_pred must be [horizon={self.geometry.horizon}, A], got {list(action_pred.shape)}")
        executable = action_pred[self.geometry.first_executed:]
        margin = self.settings.start_margin * self.dt
        if request.first or self.settings.mode == "naive":
            # naive, or a robot idle until this chunk (the world waited): start at action 0 on arrival,
            # never before its own time (an observation may be stamped with the next tick's time)
            first_index, start = 0, max(float(arrival) + margin, request.obs_time)
        else:
            first_index = max(0, math.ceil((arrival + margin - request.obs_time) / self.dt - 1e-9))
            start = request.obs_time + first_index * self.dt
        actions = executable[first_index:]
        if len(actions):
            self.timeline.install(start, actions)
        self.timeline.forget_before(min(float(arrival), request.obs_time) - self.dt)
        return Placement(start_time=start, actions=actions, dropped=min(first_index, len(executable)))

    def hold(self, start: float, actions: np.ndarray) -> Placement:
        """Put fault actions (a hold: see ros/fault_action.py) on the timeline from ``start`` on.

        They replace the plan from ``start``, like a chunk would, but plan nothing: the next solve
        is planned as before (its known actions are these, if it starts while they run).
        """
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or len(actions) == 0:
            raise ValueError(f"hold actions must be [n >= 1, A], got {list(actions.shape)}")
        self.timeline.install(float(start), actions)
        return Placement(start_time=float(start), actions=actions, dropped=0)

    def replan_now(self) -> None:
        """Make the next ``due`` true whatever the schedule (the robot was sent a hold: give it a plan soon)."""
        self._replan_now = True

    def last_commanded(self, t: float) -> np.ndarray | None:
        """The action the robot runs at ``t`` or was last given before it; None if nothing was placed."""
        return self.timeline.last_at_or_before(t)

    def covered_until(self, t: float) -> float:
        """Time until which the robot has actions from ``t`` on without a hole."""
        return self.timeline.covered_until(t)


class LatencyTracker:
    """Expected time from starting a solve to its chunk's arrival: a high quantile of recent ones.

    The node plans with it (which actions are committed while solving, when a chunk will land)
    instead of the worst-case budget; until something is measured it answers ``initial``.
    """

    def __init__(self, initial: float, window: int = 20, quantile: float = 0.9):
        if not initial > 0 or window < 1 or not 0 < quantile <= 1:
            raise ValueError(f"need initial > 0, window >= 1, 0 < quantile <= 1; got {initial}, {window}, {quantile}")
        self.initial, self.quantile = float(initial), float(quantile)
        self._recent: deque[float] = deque(maxlen=window)

    def add(self, seconds: float) -> None:
        if math.isfinite(seconds) and seconds >= 0:
            self._recent.append(float(seconds))

    def expected(self) -> float:
        if not self._recent:
            return self.initial
        return float(np.quantile(np.fromiter(self._recent, float), self.quantile))

    def clear(self) -> None:
        self._recent.clear()


def chunk_jumps(actions: np.ndarray, chunk_ids: np.ndarray, dims: list[int] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Largest per-dimension change between consecutive executed actions: (at chunk boundaries, inside chunks).

    actions [T, A] as executed, chunk_ids [T] the chunk each came from; ``dims`` restricts the
    dimensions (e.g. leave out a binary gripper command, whose jumps are meant).
    """
    actions = np.asarray(actions, dtype=np.float64)
    if len(actions) < 2:
        return np.zeros(0), np.zeros(0)
    if dims is not None:
        actions = actions[:, dims]
    jumps = np.abs(np.diff(actions, axis=0)).max(axis=1)
    boundary = np.asarray(chunk_ids[1:]) != np.asarray(chunk_ids[:-1])
    return jumps[boundary], jumps[~boundary]
