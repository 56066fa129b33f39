"""Log throttling by what a line is about, not by its text.

A problem logged on every control tick floods the log (20 lines a second), and throttling on
the exact text does not help when the text carries a changing number (a stale topic's age).
``LogThrottle`` lets a line through for a key (e.g. ``(topic, "stale")``) at most once per
``period_s``; a line may cover several keys (all inputs that went stale together) and is let
through when any of them is due, so every problem is still named. Plain Python, injectable clock.
"""

from __future__ import annotations

import time
from typing import Callable, Hashable, Iterable


class LogThrottle:
    """At most one line per key per ``period_s`` (``period_s = 0``: every line)."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic):
        if not period_s >= 0:
            raise ValueError(f"period_s must be >= 0, got {period_s!r}")
        self.period_s = float(period_s)
        self._clock = clock
        self._last: dict[Hashable, float] = {}

    def due(self, keys: Hashable | Iterable[Hashable], now: float | None = None) -> list[Hashable]:
        """The keys (of a tuple/list of them, or one key) due for a line now; they are marked as logged.

        The caller logs one line when the answer is not empty (naming all its problems).
        """
        now = self._clock() if now is None else now
        keys = list(keys) if isinstance(keys, (list, set, frozenset)) else [keys]
        due = [k for k in keys if now - self._last.get(k, -float("inf")) >= self.period_s]
        for key in due:
            self._last[key] = now
        return due

    def allow(self, key: Hashable, now: float | None = None) -> bool:
        """Whether one line about ``key`` may go out now (and mark it)."""
        return bool(self.due([key], now))

    def clear(self) -> None:
        self._last.clear()
