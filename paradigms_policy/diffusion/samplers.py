"""Named samplers: a step rule plus a fixed-point method with its settings, behind one ``.sample``.

Names, measured defaults and study figures live in registry.py. ``*_warm`` samplers
differ from ``*_cold`` only in ``uses_warm_start``: the caller (Policy, profiler) keeps a
:class:`WarmStartState` and passes its initial trajectory.

Overrides (``make_sampler(name, **overrides)``): schedule settings from a checkpoint
(``num_train_timesteps``, ``beta_schedule``, ``prediction_type``, ``clip_sample``,
``clip_sample_range``), ``kind`` / ``num_inference_steps``, any field of the sampler's
settings object (``window``, ``tolerance``, ``abs_tolerance``, ``max_rounds``, ``history``,
``fd_step``, ...) and ``deadline_policy``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .budget import DEFAULT_DEADLINE_POLICY, Clock, DeadlinePolicy, RoundTimeEstimator
from .device_rounds import DeviceRounds, make_device_rounds
from .fixed_point import LoopSettings, solve_fixed_point
from .inpaint import Inpainting
from .registry import ALIASES, AUTO, SAMPLER_NAMES, SAMPLERS, SamplerSpec, canonical_name
from .selection import measure_round_times
from .sequential import sample_sequential
from .step_rules import make_step_rule
from .types import Denoiser, SampleResult
from .warm_start import WarmStartState

__all__ = ["Sampler", "make_sampler", "SAMPLER_NAMES", "SAMPLERS", "ALIASES", "AUTO", "WarmStartState",
           "ddim_fallback_rule"]

_SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "prediction_type", "clip_sample", "clip_sample_range")


@dataclass
class Sampler:
    """A configured sampler. Keeps a round-time estimator across calls (deadline guard)."""

    name: str
    rule: Any
    solver: str  # "sequential" | "picard" | "anderson" | "newton"
    uses_warm_start: bool
    schedule_config: dict[str, Any]
    settings: LoopSettings | None = None
    deadline_policy: DeadlinePolicy = DEFAULT_DEADLINE_POLICY
    round_times: RoundTimeEstimator = field(default_factory=RoundTimeEstimator)
    spec_name: str = ""  # the registry name (differs from ``name`` for aliases)
    # device-resident rounds (settings.rounds_per_sync set): static buffers, captured graphs on CUDA
    device_rounds: DeviceRounds | None = field(default=None, repr=False)
    round_runner: Any = field(default=None, repr=False)
    device_rounds_built: int = 0  # lifetime count: a solve after warm-up should never build them
    last_rounds: int | None = None  # the previous device-resident solve's rounds (block-size hint)

    @property
    def on_device_rounds(self) -> bool:
        """True when solves run the device-resident rounds (device_rounds.py) instead of the host loop."""
        return getattr(self.settings, "rounds_per_sync", None) is not None

    @property
    def solver_config(self) -> dict[str, Any]:
        """The settings as a dict ({} for sequential samplers)."""
        return {} if self.settings is None else dataclasses.asdict(self.settings)

    @property
    def window(self) -> int:
        return 1 if self.settings is None else int(self.settings.window)

    @property
    def tolerance(self) -> float | None:
        return None if self.settings is None else self.settings.tolerance

    @property
    def is_parallel(self) -> bool:
        return self.settings is not None

    def call_widths(self, event_numel: int) -> list[int]:
        """Widths of the batched calls a solve makes at full window and at width 1."""
        if self.settings is None:
            return [1]
        full = min(self.window, int(self.rule.num_steps))
        return sorted({1, self.settings.rows_per_round(full, event_numel)})

    def sample(self, denoise: Denoiser, x_init: Tensor, noise: Tensor, *,
               init_trajectory: Tensor | None = None, deadline: float | None = None,
               clock: Clock = time.perf_counter, warm: Tensor | None = None,
               inpaint: Inpainting | None = None) -> SampleResult:
        """Solve one chunk. ``warm`` is an alias of ``init_trajectory``.

        Sequential samplers ignore ``init_trajectory`` and ``deadline`` (they always run
        all steps). Parallel ones stop before a round that would overrun ``deadline`` and
        then apply ``deadline_policy``. ``inpaint`` holds known entries in every solver
        and fallback alike.
        """
        if warm is not None and init_trajectory is not None:
            raise ValueError("pass the initial trajectory as init_trajectory or warm, not both")
        init = init_trajectory if init_trajectory is not None else warm
        if self.settings is None:
            return sample_sequential(denoise, self.rule, x_init, noise, inpaint=inpaint)
        if self.on_device_rounds:
            rounds = self.prepare_device_rounds(denoise, x_init)
            result = rounds.solve(x_init, noise, init_trajectory=init, deadline=deadline, clock=clock,
                                  round_time_estimator=self.round_times, inpaint=inpaint,
                                  run_rounds=self.round_runner, rounds_hint=self.last_rounds)
            if result.stats.converged:
                self.last_rounds = result.stats.rounds
        else:
            result = solve_fixed_point(denoise, self.rule, x_init, noise, self.settings, init_trajectory=init,
                                       deadline=deadline, clock=clock, round_time_estimator=self.round_times,
                                       inpaint=inpaint)
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
                result.stats.rows += steps
                applied = policy
        result.stats.fallback = applied.value  # extra attribute: what was published
        return result

    def prepare_device_rounds(self, denoise: Denoiser, like: Tensor) -> DeviceRounds:
        """The device-resident rounds for samples shaped like ``like`` (built, and on CUDA captured, once).

        Captured when ``denoise`` is a CUDA-graph denoiser (``executor == "cuda_graph"``): its
        network call is recorded inside the round graphs. Its slots must exist already
        (``BatchedDenoiser.warmup``): nothing may be allocated during a capture.
        """
        rounds = self.device_rounds
        if (rounds is not None and rounds.denoise is denoise and rounds.shape == tuple(like.shape)
                and rounds.traj.device == like.device and rounds.traj.dtype == like.dtype):
            return rounds
        rounds = make_device_rounds(self.rule, self.settings, denoise, like)
        runner = None
        if getattr(denoise, "executor", "eager") == "cuda_graph":
            from ..runtime.round_graph import RoundGraph  # CUDA only

            zeros = torch.zeros((int(self.rule.num_steps), *like.shape), dtype=like.dtype, device=like.device)
            rounds.load(torch.zeros_like(like), zeros)  # a valid problem to capture on
            runner = RoundGraph(rounds.round, int(self.settings.rounds_per_sync), like.device)
            runner.capture()
        self.device_rounds, self.round_runner = rounds, runner
        self.device_rounds_built += 1
        self.last_rounds = None
        return rounds

    def new_warm_start_state(self) -> WarmStartState:
        """A WarmStartState for this sampler's rule (its tail guess uses the rule)."""
        return WarmStartState(self.rule)

    def warmup(self, denoise: Denoiser, x_init: Tensor, repeats: int = 2) -> None:
        """Measure round times (full window and width 1) before any deadline-bound call."""
        if not self.is_parallel:
            return
        s = int(self.rule.num_steps)
        windows = sorted({1, min(self.window, s)})
        rows = {w: self.settings.rows_per_round(w, int(x_init[0].numel())) for w in windows}
        times = measure_round_times(denoise, self.rule, x_init, rows.values(), repeats, max_rows=max(rows.values()))
        for w in windows:
            self.round_times.seed(w, times[rows[w]])
        if self.on_device_rounds:  # build (capture) now; a solve then measures whole device rounds
            self.prepare_device_rounds(denoise, x_init)
            zeros = torch.zeros((int(self.rule.num_steps), *x_init.shape), dtype=x_init.dtype, device=x_init.device)
            for _ in range(repeats):
                self.sample(denoise, x_init, zeros)
            self.last_rounds = None


def ddim_fallback_rule(schedule_config: dict[str, Any], steps: int):
    return make_step_rule("ddim", steps, **schedule_config)


def make_sampler(name: str, **overrides: Any) -> Sampler:
    """Build a named sampler (registry name or alias); unknown names or override keys raise ValueError."""
    spec: SamplerSpec = SAMPLERS[canonical_name(name)]
    overrides = dict(overrides)
    kind = overrides.pop("kind", spec.kind)
    steps = int(overrides.pop("num_inference_steps", spec.steps))
    policy = DeadlinePolicy(overrides.pop("deadline_policy", DEFAULT_DEADLINE_POLICY))
    schedule = {k: overrides.pop(k) for k in _SCHEDULE_KEYS if k in overrides}
    settings = spec.settings
    if settings is not None:
        fields = {f.name for f in dataclasses.fields(settings)}
        solver_overrides = {k: overrides.pop(k) for k in list(overrides) if k in fields}
        settings = dataclasses.replace(settings, **solver_overrides)  # validates in __post_init__
    if overrides:
        known = set(_SCHEDULE_KEYS) | {"kind", "num_inference_steps", "deadline_policy"}
        wrong = sorted(overrides)
        hint = "" if settings is not None else " (a sequential sampler takes no solver settings)"
        raise ValueError(f"override(s) {wrong} do not apply to sampler {name!r}{hint}; "
                         f"it takes {sorted(known | (set() if settings is None else fields))}")
    rule = make_step_rule(kind, steps, **schedule)
    return Sampler(name=name, rule=rule, solver=spec.update, uses_warm_start=spec.warm, schedule_config=schedule,
                   settings=settings, deadline_policy=policy, spec_name=canonical_name(name))
