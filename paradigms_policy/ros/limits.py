"""Plausibility limits of observations and actions, derived from a checkpoint's normalizer statistics.

A finite value can still be garbage (a driver publishing -1e30 for a quaternion): the policy
then sees inputs hundreds of orders of magnitude away from anything it was trained on, and
its chunk is meaningless or not finite. Each key's limits are the training range (the
normalizer's recorded min/max, per last axis) widened by ``margin`` times its width on each
side; a dimension that was constant in training (width below the normalizer's 1e-4) gets a
width of 2, i.e. its normalized value may move by ``2 * margin`` as well. Keys declared as
quaternions must also have unit norm within a tolerance. A negative margin disables the range
checks (NaN/inf are still rejected elsewhere).

Plain numpy, no ROS: the node builds these at configure and checks every message with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

CONSTANT_WIDTH = 1e-4  # the normalizer's range_eps: narrower ranges count as constant
CONSTANT_DIM_WIDTH = 2.0  # width given to a constant dimension (unit normalizer scale: 2 normalized units)


@dataclass(frozen=True)
class Violation:
    """Why a value is implausible: ``kind`` for throttling, ``message`` for people."""

    kind: str  # "out_of_range" | "not_unit_norm" | "not_finite"
    message: str


@dataclass(frozen=True)
class RangeLimits:
    """Per-dimension [low, high] of one key (last axis), with the training range they came from."""

    name: str
    train_min: np.ndarray
    train_max: np.ndarray
    low: np.ndarray
    high: np.ndarray
    margin: float

    @classmethod
    def widen(cls, name: str, train_min, train_max, margin: float) -> "RangeLimits":
        lo = np.asarray(train_min, dtype=np.float64).reshape(-1)
        hi = np.asarray(train_max, dtype=np.float64).reshape(-1)
        if lo.shape != hi.shape or not (np.isfinite(lo).all() and np.isfinite(hi).all()) or (hi < lo).any():
            raise ValueError(f"{name}: training range must be finite with min <= max, got {lo.tolist()}, {hi.tolist()}")
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
        width = hi - lo
        width = np.where(width < CONSTANT_WIDTH, CONSTANT_DIM_WIDTH, width)
        return cls(name, lo, hi, lo - margin * width, hi + margin * width, float(margin))

    def check(self, values: np.ndarray, labels: Sequence[str] | None = None) -> Violation | None:
        """The first value outside the limits (values [..., D]), or None."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape[-1:] != self.low.shape:
            raise ValueError(f"{self.name}: last axis must be {self.low.shape[0]}, got shape {list(values.shape)}")
        if not np.isfinite(values).all():
            count = int((~np.isfinite(values)).sum())
            return Violation("not_finite", f"{self.name} contains {count} NaN/inf value(s)")
        outside = (values < self.low) | (values > self.high)
        if not outside.any():
            return None
        where = tuple(int(i) for i in np.argwhere(outside)[0])
        dim = where[-1]
        label = f"{labels[dim]!r} (dim {dim})" if labels is not None and dim < len(labels) else f"dim {dim}"
        position = f" at {list(where[:-1])}" if len(where) > 1 else ""
        return Violation("out_of_range", (
            f"{self.name} {label}{position} = {values[where]:.4g} is outside the plausible range "
            f"[{self.low[dim]:.4g}, {self.high[dim]:.4g}] (training range [{self.train_min[dim]:.4g}, "
            f"{self.train_max[dim]:.4g}] widened by margin {self.margin:g} x its width); "
            f"{int(outside.sum())} of {outside.size} value(s) outside"))


class ObservationLimits:
    """Limits of every low-dim observation key, plus unit-norm checks for quaternion keys."""

    def __init__(self, ranges: Mapping[str, RangeLimits], unit_norm_keys: Sequence[str] = (),
                 unit_norm_tolerance: float = 0.05):
        if not (math.isfinite(unit_norm_tolerance) and unit_norm_tolerance > 0):
            raise ValueError(f"unit_norm_tolerance must be a positive number, got {unit_norm_tolerance!r}")
        self.ranges = dict(ranges)
        self.unit_norm_keys = tuple(unit_norm_keys)
        self.unit_norm_tolerance = float(unit_norm_tolerance)

    @classmethod
    def from_stats(cls, stats: Mapping[str, Mapping[str, object]], margin: float, *,
                   keys: Sequence[str] | None = None, unit_norm_keys: Sequence[str] = (),
                   unit_norm_tolerance: float = 0.05) -> "ObservationLimits":
        """From ``Policy.normalizer.input_stats()`` ({key: {min, max, ...}}); ``margin < 0``: no range checks.

        ``keys`` restricts the checked keys (e.g. leave out images, whose range the encoding bounds).
        """
        ranges = {}
        if margin >= 0:
            for key in (keys if keys is not None else stats):
                s = stats[key]
                ranges[key] = RangeLimits.widen(f"key {key!r}", _numpy(s["min"]), _numpy(s["max"]), margin)
        return cls(ranges, unit_norm_keys, unit_norm_tolerance)

    def check(self, key: str, value: np.ndarray) -> Violation | None:
        """Why ``value`` (one step [*shape] or a history [n, *shape]) of ``key`` is implausible, or None."""
        value = np.asarray(value, dtype=np.float64)
        limits = self.ranges.get(key)
        if limits is not None:
            found = limits.check(value)
            if found is not None:
                return found
        if key in self.unit_norm_keys:
            norms = np.linalg.norm(value.reshape(-1, value.shape[-1]), axis=-1)
            worst = float(norms[np.argmax(np.abs(norms - 1.0))])
            if not abs(worst - 1.0) <= self.unit_norm_tolerance:
                return Violation("not_unit_norm", (
                    f"key {key!r} has norm {worst:.4g}; a quaternion must have unit norm "
                    f"(|norm - 1| <= unit_norm_tolerance {self.unit_norm_tolerance:g})"))
        return None


class ActionLimits:
    """Limits of a predicted chunk: finite and inside the action's training range widened by ``margin``."""

    def __init__(self, train_min, train_max, margin: float, names: Sequence[str] | None = None):
        self.disabled = margin < 0
        self.names = list(names) if names is not None else None
        self.range = RangeLimits.widen("action", train_min, train_max, max(margin, 0.0))

    @classmethod
    def from_stats(cls, stats: Mapping[str, object], margin: float, names: Sequence[str] | None = None) -> "ActionLimits":
        return cls(_numpy(stats["min"]), _numpy(stats["max"]), margin, names)

    def check(self, chunk: np.ndarray) -> Violation | None:
        """Why the chunk [..., A] must not be published, or None."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if not np.isfinite(chunk).all():
            count = int((~np.isfinite(chunk)).sum())
            return Violation("not_finite", f"the chunk contains {count} NaN/inf value(s)")
        if self.disabled:
            return None
        return self.range.check(chunk, self.names)


def _numpy(value) -> np.ndarray:
    """A tensor or array-like as float64 numpy (torch tensors are detached and moved to the CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)
