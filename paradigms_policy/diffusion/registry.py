"""Every named sampler in one table: what it solves, how, its measured defaults and figures.

Names say what they solve: ``<update>_<rule><steps>_<start>`` for the parallel ones
(``anderson_ddpm100_warm``, ``picard_ddim16_cold``, ``newton_dpmsolver10_warm``) and
``<rule><steps>_sequential`` for the sequential references. The first names
(``anderson_warm``, ``ddim_sequential``, ...) stay as aliases. ``auto`` is resolved by
the Policy (selection.py). Settings and figures come from the study named in
``STUDY_SOURCE`` (benchmarks/README.md explains how they were measured).
"""

from __future__ import annotations

from dataclasses import dataclass

from .anderson import Anderson
from .fixed_point import LoopSettings
from .newton import Newton
from .picard import Picard

STUDY_SOURCE = "benchmarks/results/rounds_study/confirm*.json"

# rule tag -> (step rule kind, steps)
RULES: dict[str, tuple[str, int]] = {"ddpm100": ("ddpm", 100), "ddim16": ("ddim", 16), "dpmsolver10": ("dpmsolver++", 10)}
# rules whose sequential sampler was validated in closed-loop rollouts (checkpoints/README.md); auto picks among these
ROLLOUT_VALIDATED = ("ddpm100", "ddim16")
UPDATES = ("picard", "anderson", "newton")
AUTO = "auto"


@dataclass(frozen=True)
class Measured:
    """Study figures on the shipped checkpoint (warm or cold as the sampler starts)."""

    rounds_median: float
    rounds_p90: float
    steps_per_round: float  # mean steps evaluated per round (nfe / rounds); Newton adds probe rows to these
    error_max: float  # max abs vs the sequential sample of the same rule and noise (normalized units)


@dataclass(frozen=True)
class SamplerSpec:
    update: str  # "sequential" or one of UPDATES
    rule: str  # key of RULES
    warm: bool
    settings: LoopSettings | None  # measured defaults (None: sequential)
    measured: Measured | None

    @property
    def kind(self) -> str:
        return RULES[self.rule][0]

    @property
    def steps(self) -> int:
        return RULES[self.rule][1]


# Measured defaults per (update, rule): window, tolerance, abs floor, update settings.
DEFAULT_SETTINGS: dict[tuple[str, str], LoopSettings] = {
    ("picard", "ddpm100"): Picard(window=32, tolerance=0.1, abs_tolerance=3e-3),
    ("picard", "ddim16"): Picard(window=16, tolerance=0.01, abs_tolerance=1e-3),
    ("picard", "dpmsolver10"): Picard(window=10, tolerance=0.1, abs_tolerance=3e-3),
    ("anderson", "ddpm100"): Anderson(window=100, tolerance=0.01, abs_tolerance=1e-3),
    ("anderson", "ddim16"): Anderson(window=16, tolerance=0.01, abs_tolerance=1e-3),
    ("anderson", "dpmsolver10"): Anderson(window=10, tolerance=0.01, abs_tolerance=1e-3),
    ("newton", "ddpm100"): Newton(window=100, tolerance=0.1, abs_tolerance=1e-2, max_abs_tolerance=5e-2),
    ("newton", "ddim16"): Newton(window=16, tolerance=0.1, abs_tolerance=1e-2, max_abs_tolerance=5e-2),
    ("newton", "dpmsolver10"): Newton(window=10, tolerance=0.01, abs_tolerance=1e-3, max_abs_tolerance=5e-2),
}

# (update, rule, warm) -> figures on episodes 2-5 (28 cold, 24 warm cycles; warm figures are the warm solves,
# the error the larger of warm and warm with 3 known actions), from STUDY_SOURCE.
MEASURED: dict[tuple[str, str, bool], Measured] = {
    ("picard", "ddpm100", False): Measured(25, 26, 23.0, 0.0021),
    ("picard", "ddpm100", True): Measured(19, 19.7, 21.1, 0.0385),
    ("anderson", "ddpm100", False): Measured(13, 17, 44.0, 0.0119),
    ("anderson", "ddpm100", True): Measured(11, 13.7, 41.2, 0.0329),
    ("newton", "ddpm100", False): Measured(7, 8, 66.65, 0.0008),
    ("newton", "ddpm100", True): Measured(4, 5.7, 60.03, 0.0097),
    ("picard", "ddim16", False): Measured(10, 11, 8.2, 0.0039),
    ("picard", "ddim16", True): Measured(9.5, 10.7, 8.3, 0.0121),
    ("anderson", "ddim16", False): Measured(8, 9, 8.5, 0.0037),
    ("anderson", "ddim16", True): Measured(8, 9.7, 8.6, 0.0088),
    ("newton", "ddim16", False): Measured(6, 6, 9.15, 0.0007),
    ("newton", "ddim16", True): Measured(4, 4, 11.58, 0.0010),
    ("picard", "dpmsolver10", False): Measured(10, 10, 5.5, 0.0032),
    ("picard", "dpmsolver10", True): Measured(10, 10, 5.5, 0.0034),
    ("anderson", "dpmsolver10", False): Measured(10, 10, 5.5, 0.0032),
    ("anderson", "dpmsolver10", True): Measured(10, 10, 5.5, 0.0034),
    ("newton", "dpmsolver10", False): Measured(6, 6, 7.01, 0.0082),
    ("newton", "dpmsolver10", True): Measured(5, 5, 7.43, 0.0083),
}


def _name(update: str, rule: str, warm: bool | None) -> str:
    return f"{rule}_sequential" if update == "sequential" else f"{update}_{rule}_{'warm' if warm else 'cold'}"


def _build() -> dict[str, SamplerSpec]:
    table: dict[str, SamplerSpec] = {}
    for rule, (_, steps) in RULES.items():
        table[_name("sequential", rule, None)] = SamplerSpec("sequential", rule, False, None,
                                                             Measured(steps, steps, 1, 0.0))
    for update in UPDATES:
        for rule in RULES:
            for warm in (False, True):
                table[_name(update, rule, warm)] = SamplerSpec(update, rule, warm, DEFAULT_SETTINGS[(update, rule)],
                                                               MEASURED.get((update, rule, warm)))
    return table


SAMPLERS: dict[str, SamplerSpec] = _build()
ALIASES: dict[str, str] = {
    "ddpm_sequential": "ddpm100_sequential",
    "ddim_sequential": "ddim16_sequential",
    "dpmsolver_sequential": "dpmsolver10_sequential",
    "picard_cold": "picard_ddpm100_cold",
    "picard_warm": "picard_ddpm100_warm",
    "anderson_cold": "anderson_ddpm100_cold",
    "anderson_warm": "anderson_ddpm100_warm",
}
SAMPLER_NAMES: tuple[str, ...] = (*SAMPLERS, *ALIASES, AUTO)


def canonical_name(name: str) -> str:
    """The registry name behind ``name`` (an alias or a registry name); ValueError otherwise."""
    if name in SAMPLERS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    if name == AUTO:
        raise ValueError("sampler 'auto' is chosen by measurement: use Policy/load_policy(sampler='auto') "
                         "or selection.choose_sampler")
    raise ValueError(f"unknown sampler {name!r}; expected one of {SAMPLER_NAMES}")
