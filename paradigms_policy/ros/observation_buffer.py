"""Latest-message store and observation-history assembly for the control tick.

Subscription callbacks must stay cheap (they share the executor with timers and services),
so they only call ``store`` with the raw message and its receive time. The control tick calls
``snapshot`` once per period: it checks every input is present and fresh and appends the
latest message of each to a history of ``n_obs_steps`` ticks, which is the observation history
DiffusionPolicy was trained on (one observation per control step). Pure Python, no ROS, so it
is tested with a fake clock.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence


class InputError(ValueError):
    """An input topic cannot be used right now; ``topic`` names it."""

    def __init__(self, topic: str, problem: str):
        super().__init__(f"{topic}: {problem}")
        self.topic = topic
        self.problem = problem


class MissingInputError(InputError):
    """No message has been received on the topic yet."""


class StaleInputError(InputError):
    """The newest message on the topic is older than ``max_age_s``."""


@dataclass(frozen=True)
class Stamped:
    """A stored message and the time (seconds, node clock) it was received."""

    message: Any
    stamp: float

    @property
    def data_time(self) -> float:
        """The time the message describes: its header stamp when it has a non-zero one, else its receive time."""
        header = getattr(self.message, "header", None)
        stamp = getattr(header, "stamp", None)
        if stamp is None or (stamp.sec == 0 and stamp.nanosec == 0):
            return self.stamp
        return stamp.sec + stamp.nanosec * 1e-9


class ObservationBuffer:
    """Keeps the latest message per topic and a per-tick history of length ``n_obs_steps``."""

    def __init__(self, topics: Sequence[str], n_obs_steps: int, max_age_s: float):
        if n_obs_steps < 1:
            raise ValueError(f"n_obs_steps must be >= 1, got {n_obs_steps}")
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be positive, got {max_age_s}")
        if len(set(topics)) != len(topics):
            raise ValueError(f"topics must be unique, got {list(topics)}")
        self.topics = list(topics)
        self.n_obs_steps = int(n_obs_steps)
        self.max_age_s = float(max_age_s)
        self._lock = threading.Lock()
        self._latest: dict[str, Stamped] = {}
        self._history: deque[dict[str, Stamped]] = deque(maxlen=self.n_obs_steps)

    def store(self, topic: str, message: Any, stamp: float) -> None:
        """Remember ``message`` as the newest on ``topic`` (called from a subscription callback)."""
        if topic not in self.topics:
            raise KeyError(f"unknown topic {topic!r}; configured: {self.topics}")
        with self._lock:
            self._latest[topic] = Stamped(message, float(stamp))

    def latest(self, topic: str) -> Stamped | None:
        with self._lock:
            return self._latest.get(topic)

    def check(self, now: float) -> list[InputError]:
        """Every problem with the current inputs at time ``now`` (empty when all are usable)."""
        problems: list[InputError] = []
        with self._lock:
            for topic in self.topics:
                item = self._latest.get(topic)
                if item is None:
                    problems.append(MissingInputError(topic, "no message received yet"))
                    continue
                age = now - item.stamp
                if age > self.max_age_s:
                    problems.append(StaleInputError(
                        topic, f"stale: newest message is {age * 1e3:.0f} ms old (max_obs_age_ms {self.max_age_s * 1e3:.0f})"))
        return problems

    def snapshot(self, now: float) -> None:
        """Append the latest message of every topic to the history (one control tick).

        Raises the first ``InputError`` when an input is missing or stale, and then clears the
        history: a history with a hole in it is not the sequence the policy was trained on, so
        it is rebuilt from fresh ticks once the input is back.
        """
        problems = self.check(now)
        if problems:
            with self._lock:
                self._history.clear()
            raise problems[0]
        with self._lock:
            self._history.append({t: self._latest[t] for t in self.topics})

    def history(self) -> dict[str, list[Stamped]]:
        """Per topic, ``n_obs_steps`` messages oldest first.

        Until enough ticks have been seen, the oldest entry is repeated at the front (the
        edge padding DiffusionPolicy uses at the start of an episode).
        """
        with self._lock:
            if not self._history:
                raise MissingInputError(self.topics[0] if self.topics else "?", "no observation tick recorded yet")
            ticks = list(self._history)
        ticks = [ticks[0]] * (self.n_obs_steps - len(ticks)) + ticks
        return {topic: [tick[topic] for tick in ticks] for topic in self.topics}

    def clear(self) -> None:
        with self._lock:
            self._latest.clear()
            self._history.clear()

    def clear_history(self) -> None:
        with self._lock:
            self._history.clear()
