"""Latest-message store and observation-history assembly for the control tick.

Subscription callbacks must stay cheap (they share the executor with timers and services),
so they only call ``store`` with the raw message and its receive time. The control tick calls
``snapshot`` once per period: it checks every input is present and fresh, converts the latest
message of each (through ``convert``, which also rejects implausible values; each message is
converted once) and appends them to a history of ``n_obs_steps`` ticks, which is the
observation history DiffusionPolicy was trained on (one observation per control step). Only
checked values ever enter the history, so a bad message can never reach a solve. Pure Python,
no ROS, so it is tested with a fake clock.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence


class InputError(ValueError):
    """An input topic cannot be used right now; ``topic`` names it, ``kind`` says what kind of problem."""

    def __init__(self, topic: str, problem: str, kind: str = "invalid"):
        super().__init__(f"{topic}: {problem}")
        self.topic = topic
        self.problem = problem
        self.kind = kind


class MissingInputError(InputError):
    """No message has been received on the topic yet."""

    def __init__(self, topic: str, problem: str):
        super().__init__(topic, problem, kind="missing")


class StaleInputError(InputError):
    """The newest message on the topic is older than ``max_age_s``."""

    def __init__(self, topic: str, problem: str):
        super().__init__(topic, problem, kind="stale")


@dataclass(frozen=True)
class Stamped:
    """A stored message (or its checked value, in a history) and the time (seconds, node clock) it was received.

    ``described``: the time the data describes, kept when the message is replaced by its checked value
    (which has no header); None reads it from the message.
    """

    message: Any
    stamp: float
    described: float | None = None

    @property
    def data_time(self) -> float:
        """The time the message describes: its header stamp when it has a non-zero one, else its receive time."""
        if self.described is not None:
            return self.described
        header = getattr(self.message, "header", None)
        stamp = getattr(header, "stamp", None)
        if stamp is None or (stamp.sec == 0 and stamp.nanosec == 0):
            return self.stamp
        return stamp.sec + stamp.nanosec * 1e-9


def _identity(topic: str, message: Any) -> Any:
    return message


class ObservationBuffer:
    """Keeps the latest message per topic and a per-tick history of length ``n_obs_steps``."""

    def __init__(self, topics: Sequence[str], n_obs_steps: int, max_age_s: float,
                 convert: Callable[[str, Any], Any] | None = None):
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
        self._convert = convert or _identity  # (topic, message) -> value; raises InputError
        self._converted: dict[str, tuple[Any, Any]] = {}  # topic -> (message, its value): convert each once

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

    def snapshot(self, now: float) -> list[InputError]:
        """One control tick: every problem with the inputs (all topics), or append them to the history.

        On any problem the history is cleared and nothing is appended: a history with a hole
        in it is not the sequence the policy was trained on, so it is rebuilt from fresh ticks
        once the inputs are good again. Returns the problems (empty: the history advanced).
        """
        problems = self.check(now)
        bad = {p.topic for p in problems}
        with self._lock:
            latest = {t: self._latest[t] for t in self.topics if t not in bad}
        values = {}
        for topic, item in latest.items():
            try:
                values[topic] = Stamped(self._converted_value(topic, item.message), item.stamp, item.data_time)
            except InputError as exc:
                problems.append(exc)
        problems.sort(key=lambda p: self.topics.index(p.topic) if p.topic in self.topics else -1)
        with self._lock:
            if problems:
                self._history.clear()
            else:
                self._history.append(values)
        return problems

    def _converted_value(self, topic: str, message: Any) -> Any:
        cached = self._converted.get(topic)
        if cached is not None and cached[0] is message:
            return cached[1]
        value = self._convert(topic, message)  # raises InputError: not cached, re-reported each tick
        self._converted[topic] = (message, value)
        return value

    def set_converter(self, convert: Callable[[str, Any], Any]) -> None:
        """Replace the conversion (e.g. new plausibility limits); values already converted are checked again."""
        self._convert = convert
        self._converted.clear()

    def history(self) -> dict[str, list[Stamped]]:
        """Per topic, ``n_obs_steps`` checked values (``Stamped.message``) oldest first.

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
        self._converted.clear()

    def clear_history(self) -> None:
        with self._lock:
            self._history.clear()
