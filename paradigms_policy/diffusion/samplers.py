"""Named samplers: a step rule plus a solver with its settings, behind one ``.sample``.

Names: ``ddpm_sequential`` (100 steps), ``ddim_sequential`` (16 steps),
``dpmsolver_sequential`` (10 steps, DPM-Solver++ 2M), and the parallel
``picard_cold``, ``picard_warm``, ``anderson_cold``, ``anderson_warm`` which
solve 100-step DDPM (DiffusionPolicy's settings: squaredcos_cap_v2, epsilon,
clip_sample) to a tolerance. ``*_warm`` differ from ``*_cold`` only in
``uses_warm_start``: the caller (Policy, profiler) keeps a
:class:`WarmStartState` and passes its initial trajectory.

Overrides (``make_sampler(name, **overrides)``): schedule settings from a
checkpoint (``num_train_timesteps``, ``beta_schedule``, ``prediction_type``,
``clip_sample``, ``clip_sample_range``), ``kind`` / ``num_inference_steps``,
solver settings (``window``, ``tolerance``, ``abs_tolerance``, ``max_rounds``,
``history``, ``order_k``, ``lam``) and ``deadline_policy``.

Defaults for the parallel samplers were chosen on the shipped checkpoint
(checkpoints/lift_lowdim.pt, robosuite Lift low-dim, DDPM-100) and its recorded
held-out episodes with benchmarks/lift_solver_study.py: tuned on episodes 0-1
(13 cold + 11 warm solves), confirmed on episodes 2-5 (28 cold + 24 warm
solves); warm = previous cycle shifted by 8 of 16 actions; error = max abs
difference to sequential DDPM-100 with the same noise, normalized units, goal
<= 0.02. Rounds (median) cold/warm, max error cold/warm on episodes 2-5:

- Picard (ParaDiGMS cumulative form): window 32, tolerance 0.1, abs floor 3e-3:
  25/19 rounds, error 0.002/0.009. Window 100 needs the same rounds (24-25/18-20
  on 0-1: a round slides at most ~10 steps anyway) at 2x the cost per round on
  CPU (one batched call: W=32 ~4x, W=100 ~8x a W=1 call, 1 thread); window 16
  needs 27/19 and its warm error reached 0.038. abs floor 0.01 saves one round
  (24.5/18) at error 0.009/0.011: not worth halving the margin; tolerance 0.3
  reached 0.094.
- Anderson (ParaTAA's exact-linear form + triangular mixing, history 2): window
  100, tolerance 0.01, abs floor 1e-3: 13/11 rounds (p90 17/13), error
  0.012/0.014, i.e. about half of Picard's rounds. The exact-linear form needs
  the tight tolerance: at 0.03 / 3e-3 (the toy-task defaults) its error was
  0.031/0.044, at 0.02 / 1e-3 0.033/0.021, at 0.1 0.09-0.16 (its per-round
  change underestimates the remaining error on a trained network). Window 50:
  15/14 rounds, error 0.010, the same CPU wall-clock as window 100 in an
  interleaved run (492/422 vs 521/426 ms, episodes 6-7); 100 keeps the fewer
  rounds, which is what a GPU pays for. History 3 (abs 2e-3): no fewer rounds,
  error 0.037. On CPU Picard warm (W=32) is as fast as Anderson warm (W=100):
  396 vs 426 ms in the same run, since a W=100 call costs ~2x a W=32 call.
- Warm starts help less than hoped: the previous chunk, shifted, is 0.2-0.4
  (kept columns) and 0.3-0.6 (new tail columns) max abs away from the new
  solution at the low-noise end (the conditioning moved 8 env steps and the
  fresh tail noise reaches every column through the convolutions). A third of
  the warm Picard rounds are spent on the last 10 steps (window sliding 1-2
  steps a round); raising the abs floor to 0.02 saves only ~1 round there, so it
  is the dynamics, not the near-zero DDPM variance, that holds the window back.
- deadline policy: ``ddim_fallback`` (see budget.DeadlinePolicy).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .anderson import DEFAULT_HISTORY, DEFAULT_LAMBDA, solve_anderson
from .budget import (DEFAULT_DEADLINE_POLICY, Clock, DeadlinePolicy, RoundTimeEstimator)
from .inpaint import Inpainting
from .picard import solve_picard, validate_solver_inputs
from .sequential import sample_sequential
from .step_rules import make_step_rule
from .types import Denoiser, SampleResult
from .warm_start import WarmStartState

PICARD_WINDOW = 32
PICARD_TOLERANCE = 0.1
PICARD_ABS_TOLERANCE = 3e-3
ANDERSON_WINDOW = 100
ANDERSON_TOLERANCE = 0.01
ANDERSON_ABS_TOLERANCE = 1e-3

_SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "prediction_type", "clip_sample", "clip_sample_range")
_SOLVER_KEYS = ("window", "tolerance", "abs_tolerance", "max_rounds", "exact_linear", "history", "order_k", "lam")

# name -> (solver, step rule kind, steps, warm)
SAMPLER_SPECS: dict[str, tuple[str, str, int, bool]] = {
    "ddpm_sequential": ("sequential", "ddpm", 100, False),
    "ddim_sequential": ("sequential", "ddim", 16, False),
    "dpmsolver_sequential": ("sequential", "dpmsolver++", 10, False),
    "picard_cold": ("picard", "ddpm", 100, False),
    "picard_warm": ("picard", "ddpm", 100, True),
    "anderson_cold": ("anderson", "ddpm", 100, False),
    "anderson_warm": ("anderson", "ddpm", 100, True),
}
SAMPLER_NAMES = tuple(SAMPLER_SPECS)


@dataclass
class Sampler:
    """A configured sampler. Keeps a round-time estimator across calls (deadline guard)."""

    name: str
    rule: Any
    solver: str  # "sequential" | "picard" | "anderson"
    uses_warm_start: bool
    schedule_config: dict[str, Any]
    solver_config: dict[str, Any] = field(default_factory=dict)
    deadline_policy: DeadlinePolicy = DEFAULT_DEADLINE_POLICY
    round_times: RoundTimeEstimator = field(default_factory=RoundTimeEstimator)

    @property
    def window(self) -> int:
        return int(self.solver_config.get("window", 1))

    @property
    def tolerance(self) -> float | None:
        return self.solver_config.get("tolerance")

    @property
    def is_parallel(self) -> bool:
        return self.solver != "sequential"

    def sample(self, denoise: Denoiser, x_init: Tensor, noise: Tensor, *,
               init_trajectory: Tensor | None = None, deadline: float | None = None,
               clock: Clock = time.perf_counter, warm: Tensor | None = None,
               inpaint: Inpainting | None = None) -> SampleResult:
        """Solve one chunk. ``warm`` is an alias of ``init_trajectory``.

        Sequential samplers ignore ``init_trajectory`` and ``deadline`` (they
        always run all steps). Parallel ones stop before a round that would
        overrun ``deadline`` and then apply ``deadline_policy``. ``inpaint``
        holds known entries (inpaint.py) in every solver and fallback alike.
        """
        if warm is not None and init_trajectory is not None:
            raise ValueError("pass the initial trajectory as init_trajectory or warm, not both")
        init = init_trajectory if init_trajectory is not None else warm
        if not self.is_parallel:
            return sample_sequential(denoise, self.rule, x_init, noise, inpaint=inpaint)
        solve = solve_picard if self.solver == "picard" else solve_anderson
        result = solve(denoise, self.rule, x_init, noise, init_trajectory=init, deadline=deadline,
                       clock=clock, round_time_estimator=self.round_times, inpaint=inpaint, **self.solver_config)
        if result.stats.deadline_hit:
            result = self._on_deadline(result, denoise, x_init, init, deadline, clock, inpaint)
        return result

    def _on_deadline(self, result: SampleResult, denoise: Denoiser, x_init: Tensor,
                     init: Tensor | None, deadline: float, clock: Clock,
                     inpaint: Inpainting | None) -> SampleResult:
        policy = DeadlinePolicy(self.deadline_policy)
        applied = DeadlinePolicy.PUBLISH
        if policy is DeadlinePolicy.KEEP_PREVIOUS and init is not None:
            previous = init[-1].to(result.sample)
            result.sample = previous.clone() if inpaint is None else inpaint.bind(self.rule, previous).final(previous)
            applied = policy
        elif policy is DeadlinePolicy.DDIM_FALLBACK:
            per_step = self.round_times.estimate(1)
            steps = 0 if per_step is None or per_step <= 0 else int((deadline - clock()) / per_step)
            steps = min(steps, int(self.rule.num_steps))
            if steps >= 1:
                ddim = ddim_fallback_rule(self.schedule_config, steps)
                zeros = torch.zeros((steps, *x_init.shape), dtype=x_init.dtype, device=x_init.device)
                fallback = sample_sequential(denoise, ddim, x_init, zeros, inpaint=inpaint)
                result.sample = fallback.sample
                result.trajectory[-1] = fallback.sample  # keeps the warm-start guess consistent
                result.stats.rounds += steps
                result.stats.nfe += steps
                applied = policy
        result.stats.fallback = applied.value  # extra attribute: what was published
        return result

    def new_warm_start_state(self) -> WarmStartState:
        """A WarmStartState for this sampler's rule (its tail guess uses the rule)."""
        return WarmStartState(self.rule)

    def warmup(self, denoise: Denoiser, x_init: Tensor, repeats: int = 2) -> None:
        """Measure round times (full window and width 1) before any deadline-bound call."""
        if not self.is_parallel:
            return
        s = int(self.rule.num_steps)
        for w in sorted({1, min(self.window, s)}):
            x = x_init.unsqueeze(0).expand(w, *x_init.shape).contiguous()
            t = self.rule.timesteps[:w].to(x_init.device)
            best = float("inf")
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                with torch.no_grad():
                    denoise(x, t)
                best = min(best, time.perf_counter() - t0)
            self.round_times.seed(w, best)


def ddim_fallback_rule(schedule_config: dict[str, Any], steps: int):
    return make_step_rule("ddim", steps, **schedule_config)


def make_sampler(name: str, **overrides: Any) -> Sampler:
    """Build a named sampler; unknown names or override keys raise ValueError."""
    if name not in SAMPLER_SPECS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {SAMPLER_NAMES}")
    solver, kind, steps, warm = SAMPLER_SPECS[name]
    overrides = dict(overrides)
    kind = overrides.pop("kind", kind)
    steps = int(overrides.pop("num_inference_steps", steps))
    policy = DeadlinePolicy(overrides.pop("deadline_policy", DEFAULT_DEADLINE_POLICY))
    schedule = {k: overrides.pop(k) for k in _SCHEDULE_KEYS if k in overrides}
    solver_cfg: dict[str, Any] = {}
    if solver != "sequential":
        anderson = solver == "anderson"
        solver_cfg = {"window": ANDERSON_WINDOW if anderson else PICARD_WINDOW,
                      "tolerance": ANDERSON_TOLERANCE if anderson else PICARD_TOLERANCE,
                      "abs_tolerance": ANDERSON_ABS_TOLERANCE if anderson else PICARD_ABS_TOLERANCE,
                      "max_rounds": None,
                      # Picard: ParaDiGMS's cumulative form; Anderson: ParaTAA's exact-linear form
                      "exact_linear": solver == "anderson"}
        if solver == "anderson":
            solver_cfg.update(history=DEFAULT_HISTORY, order_k=None, lam=DEFAULT_LAMBDA)
        for k in _SOLVER_KEYS:
            if k in overrides:
                if k not in solver_cfg:
                    raise ValueError(f"override {k!r} does not apply to sampler {name!r}")
                solver_cfg[k] = overrides.pop(k)
    if overrides:
        raise ValueError(f"unknown override(s) for sampler {name!r}: {sorted(overrides)}")
    rule = make_step_rule(kind, steps, **schedule)
    if solver_cfg:
        _validate_solver_config(rule, solver_cfg)
    return Sampler(name=name, rule=rule, solver=solver, uses_warm_start=warm, schedule_config=schedule,
                   solver_config=solver_cfg, deadline_policy=policy)


def _validate_solver_config(rule, cfg: dict[str, Any]) -> None:
    """Fail at construction, not inside the first control cycle."""
    x = torch.zeros(1, 1)
    validate_solver_inputs(rule, x, torch.zeros(rule.num_steps, 1, 1), cfg["window"], None, cfg["max_rounds"])
    from .criteria import check_tolerances
    check_tolerances(cfg["tolerance"], cfg["abs_tolerance"])
    if "history" in cfg and (not isinstance(cfg["history"], int) or cfg["history"] < 0):
        raise ValueError(f"history must be an integer >= 0, got {cfg['history']!r}")
