"""One typed form of a sampler's settings, shared by the core, the profiler and the ROS node.

``SamplerSettings`` names a sampler and the settings a user may override. ``None`` means "not
set" (the sampler's measured default applies, see ``diffusion/samplers.py``); any value,
including 0, is used as given (tolerance 0 means an exact solve). ``overrides()`` gives the
keyword arguments of ``make_sampler(name, **overrides)`` / ``Policy.set_sampler`` /
``load_policy``, leaving out settings the sampler kind does not use (``ignored()`` names them).

Torch-free, so the node can check settings before torch is imported (``configure``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

# name -> update rule of diffusion.registry (explicit names, the old names as aliases, and auto);
# a test keeps the two in step (importing the registry needs torch)
SAMPLER_SOLVERS: dict[str, str] = {
    "ddpm100_sequential": "sequential",
    "ddim16_sequential": "sequential",
    "dpmsolver10_sequential": "sequential",
    "picard_ddpm100_cold": "picard",
    "picard_ddpm100_warm": "picard",
    "picard_ddim16_cold": "picard",
    "picard_ddim16_warm": "picard",
    "picard_dpmsolver10_cold": "picard",
    "picard_dpmsolver10_warm": "picard",
    "anderson_ddpm100_cold": "anderson",
    "anderson_ddpm100_warm": "anderson",
    "anderson_ddim16_cold": "anderson",
    "anderson_ddim16_warm": "anderson",
    "anderson_dpmsolver10_cold": "anderson",
    "anderson_dpmsolver10_warm": "anderson",
    "newton_ddpm100_cold": "newton",
    "newton_ddpm100_warm": "newton",
    "newton_ddim16_cold": "newton",
    "newton_ddim16_warm": "newton",
    "newton_dpmsolver10_cold": "newton",
    "newton_dpmsolver10_warm": "newton",
    "ddpm_sequential": "sequential",
    "ddim_sequential": "sequential",
    "dpmsolver_sequential": "sequential",
    "picard_cold": "picard",
    "picard_warm": "picard",
    "anderson_cold": "anderson",
    "anderson_warm": "anderson",
    "auto": "auto",
}
SAMPLER_KINDS = tuple(SAMPLER_SOLVERS)
DEADLINE_POLICIES = ("publish", "ddim_fallback", "keep_previous")  # values of diffusion.budget.DeadlinePolicy

# setting -> (make_sampler keyword, solvers that use it)
_APPLIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "steps": ("num_inference_steps", ("sequential", "picard", "anderson", "newton")),
    "tolerance": ("tolerance", ("picard", "anderson", "newton")),
    "abs_tolerance": ("abs_tolerance", ("picard", "anderson", "newton")),
    "window": ("window", ("picard", "anderson", "newton")),
    "history": ("history", ("anderson",)),
    "rounds_per_sync": ("rounds_per_sync", ("picard", "anderson")),
    "deadline_policy": ("deadline_policy", ("picard", "anderson", "newton")),
}


@dataclass(frozen=True)
class SamplerSettings:
    """A sampler kind and its overrides; None = not set (the sampler's default), 0 is a value."""

    name: str
    steps: int | None = None  # denoising steps (make_sampler's num_inference_steps)
    tolerance: float | None = None  # relative (ParaDiGMS) tolerance; 0 = exact
    abs_tolerance: float | None = None  # absolute RMS floor (ParaTAA's tol1); 0 = none
    window: int | None = None  # steps per parallel round
    history: int | None = None  # Anderson iterates kept
    rounds_per_sync: int | None = None  # Picard/Anderson: device-resident rounds, flags read every <= K rounds
    deadline_policy: str | None = None  # what a parallel solve stopped by its deadline returns

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("invalid sampler settings: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Every invalid value, as sentences naming the setting (empty when valid)."""
        out = []
        if self.name not in SAMPLER_SOLVERS:
            out.append(f"unknown sampler {self.name!r}; expected one of {list(SAMPLER_KINDS)}")
        for name, low in (("steps", 1), ("window", 1), ("history", 0), ("rounds_per_sync", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                out.append(f"{name} must be an integer >= {low} or None (not set), got {value!r}")
        for name in ("tolerance", "abs_tolerance"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value < 0):
                out.append(f"{name} must be a finite number >= 0 (0: exact) or None (not set), got {value!r}")
        if self.deadline_policy is not None and self.deadline_policy not in DEADLINE_POLICIES:
            out.append(f"deadline_policy must be one of {list(DEADLINE_POLICIES)} or None, got {self.deadline_policy!r}")
        return out

    @property
    def solver(self) -> str:
        return SAMPLER_SOLVERS[self.name]

    @property
    def is_parallel(self) -> bool:
        return self.solver != "sequential"

    def overrides(self) -> dict[str, Any]:
        """Keyword overrides for ``make_sampler(self.name, **overrides)``: the set values this kind uses."""
        out: dict[str, Any] = {}
        for setting, (keyword, solvers) in _APPLIES.items():
            value = getattr(self, setting)
            if value is not None and self.solver in solvers:
                out[keyword] = value
        return out

    def ignored(self) -> list[str]:
        """Settings that are set but do not apply to this sampler kind (e.g. a tolerance for a sequential one)."""
        return [s for s, (_, solvers) in _APPLIES.items() if getattr(self, s) is not None and self.solver not in solvers]

    def describe(self) -> str:
        """``anderson_warm (tolerance=0.01, window=100)``: the name and what is set."""
        set_values = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                      if f.name != "name" and getattr(self, f.name) is not None]
        return f"{self.name} ({', '.join(set_values)})" if set_values else f"{self.name} (defaults)"
