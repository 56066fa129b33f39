"""Latency budget for the parallel solvers.

A solve may be given an absolute ``deadline`` (in the units of an injectable
``clock``, seconds of ``time.perf_counter`` by default). Before every round the
solver asks a :class:`DeadlineGuard` whether a round of the coming window shape
still fits; if not it stops *before* the round and returns its best iterate with
``stats.deadline_hit = True``. Round times are learned per window shape by a
:class:`RoundTimeEstimator` (an EMA of measured rounds) that outlives a single
solve, so it can be seeded by warm-up before the first deadline.

What a caller does with an unconverged result is a :class:`DeadlinePolicy`;
the samplers implement the mechanism (see ``samplers.py``).
"""

from __future__ import annotations

import enum
import math
import time
from typing import Callable

Clock = Callable[[], float]


class DeadlinePolicy(str, enum.Enum):
    """What to publish when a solve hits its deadline before converging.

    - ``publish``: the unconverged estimate (final state of the current
      trajectory; for a window that never reached the last step, the model's
      latest x0 prediction).
    - ``ddim_fallback`` (default): a short sequential DDIM solve from the same
      ``x_init``, with as many steps as the measured width-1 call time allows
      in the time left; ``publish`` if not even one step fits.
    - ``keep_previous``: the previous cycle's chunk (the final state of the
      warm-start initial trajectory, i.e. the previous sample shifted by the
      executed actions); falls back to ``publish`` on a cold start.

    Default chosen by measurement (benchmarks/solver_sweep.py --policy-study,
    DiffusionPolicy-shaped net on a toy bimodal task, 5 warm cycles, max abs
    error in normalized units vs sequential DDPM-100 with the same noise | vs
    the nearer true chunk of the task): DDIM 8 steps 0.37 | 0.52, DDIM 16 steps
    0.37 | 0.48; publish after 1-8 of ~16 rounds 0.48-0.63 | 0.52-0.85;
    keep_previous 0.80 | 0.86 (converged solve: 0.013 | 0.37). A cut-off
    fixed-point iterate is not a sample of the model; a few DDIM steps are.
    """

    PUBLISH = "publish"
    DDIM_FALLBACK = "ddim_fallback"
    KEEP_PREVIOUS = "keep_previous"


DEFAULT_DEADLINE_POLICY = DeadlinePolicy.DDIM_FALLBACK


class RoundTimeEstimator:
    """Exponential moving average of round wall time, per window size.

    Kept by a sampler across solves (and seeded by warm-up) so that even the
    first deadline-bound solve knows what a round costs.
    """

    def __init__(self, smoothing: float = 0.3, safety_factor: float = 1.0):
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        if safety_factor <= 0.0:
            raise ValueError(f"safety_factor must be > 0, got {safety_factor}")
        self.smoothing = smoothing
        self.safety_factor = safety_factor
        self._seconds: dict[int, float] = {}

    def update(self, window: int, seconds: float) -> None:
        """Fold one measured round of ``window`` parallel steps into the EMA."""
        if seconds < 0:
            raise ValueError(f"round time must be >= 0, got {seconds}")
        old = self._seconds.get(window)
        self._seconds[window] = seconds if old is None else (
            (1.0 - self.smoothing) * old + self.smoothing * seconds)

    def seed(self, window: int, seconds: float) -> None:
        """Set the estimate outright (warm-up measurement)."""
        if seconds < 0:
            raise ValueError(f"round time must be >= 0, got {seconds}")
        self._seconds[window] = float(seconds)

    def decay(self, factor: float) -> None:
        """Scale every stored estimate by ``factor`` (< 1: let a round be tried and measured again)."""
        if not 0.0 < factor <= 1.0:
            raise ValueError(f"decay factor must be in (0, 1], got {factor}")
        for window in self._seconds:
            self._seconds[window] *= factor

    def estimate(self, window: int) -> float | None:
        """Expected seconds of one round of ``window`` steps, or None if unknown.

        An unmeasured window borrows the estimate of the nearest larger measured
        window (a round never costs more with fewer steps), else of the largest
        measured one scaled up linearly (pessimistic).
        """
        if window in self._seconds:
            return self._seconds[window] * self.safety_factor
        if not self._seconds:
            return None
        larger = [w for w in self._seconds if w >= window]
        if larger:
            return self._seconds[min(larger)] * self.safety_factor
        biggest = max(self._seconds)
        return self._seconds[biggest] * window / biggest * self.safety_factor

    def known_windows(self) -> list[int]:
        return sorted(self._seconds)

    def reset(self) -> None:
        self._seconds.clear()


# Estimates change only when a round runs, so one slow round (a load spike) could keep every later
# solve at zero rounds; a solve refused before its first round shrinks them by this factor instead.
DECAY_AFTER_REFUSED_SOLVE = 0.8


class DeadlineGuard:
    """Per-solve gatekeeper: may the next round start without overrunning?"""

    def __init__(self, deadline: float | None, clock: Clock = time.perf_counter,
                 estimator: RoundTimeEstimator | None = None):
        self.deadline = deadline
        self.clock = clock
        self.estimator = estimator if estimator is not None else RoundTimeEstimator()
        self.hit = False
        self.rounds_started = 0

    def fits(self, window: int, rounds: int = 1) -> bool:
        """True if ``rounds`` rounds of ``window`` steps are expected to finish by the deadline (no side effects)."""
        if self.deadline is None:
            return True
        now = self.clock()
        expected = self.estimator.estimate(window)
        return now < self.deadline if expected is None else now + rounds * expected <= self.deadline

    def rounds_that_fit(self, window: int) -> float:
        """How many rounds of ``window`` steps fit before the deadline (inf without a deadline or an estimate)."""
        expected = self.estimator.estimate(window)
        if self.deadline is None or not expected:
            return math.inf
        return max(0.0, (self.deadline - self.clock()) / expected)

    def allows(self, window: int) -> bool:
        """True if a round of ``window`` steps is expected to finish by the deadline.

        Without a deadline always True. With a deadline but no estimate yet the
        round is allowed only if the deadline has not already passed (callers
        are expected to warm up first); the round is then measured.
        """
        if self.deadline is None:
            return True
        expected = self.estimator.estimate(window)
        ok = self.fits(window)
        if not ok:
            self.hit = True
            if self.rounds_started == 0 and expected is not None:
                self.estimator.decay(DECAY_AFTER_REFUSED_SOLVE)
        return ok

    def time_left(self) -> float:
        """Seconds until the deadline (inf without one)."""
        if self.deadline is None:
            return float("inf")
        return self.deadline - self.clock()

    def start_round(self) -> float:
        self.rounds_started += 1
        return self.clock()

    def end_round(self, window: int, started: float, rounds: int = 1) -> None:
        """Fold the time since ``started`` into the estimate, as ``rounds`` rounds of ``window`` steps."""
        self.estimator.update(window, (self.clock() - started) / rounds)


def validate_deadline(deadline: float | None) -> None:
    if deadline is not None and deadline != deadline:  # NaN
        raise ValueError("deadline is NaN")
