"""Timed control cycles: one ``predict_action`` per cycle, then (untimed) its error against sequential."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["CycleRecord", "ReferenceCache", "cycle_seed", "run_cycle", "run_cycles", "warm_up", "allocation_counts"]


@dataclass
class CycleRecord:
    latency_s: float
    rounds: int
    nfe: int
    converged: bool
    deadline_hit: bool
    err_norm: np.ndarray  # [horizon, A] sample - reference, normalized units
    err_action: np.ndarray  # same in action units
    residual_history: list[float] = field(default_factory=list)


def _digest(obs: Mapping[str, np.ndarray], *tensors: torch.Tensor) -> str:
    h = hashlib.sha1()
    for key in sorted(obs):
        h.update(key.encode())
        h.update(np.ascontiguousarray(obs[key]).tobytes())
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class ReferenceCache:
    """Sequential samples keyed by (rule, observations, x_init, noise): computed once, shared.

    Cold samplers draw the same noise at the same cycle, so ddpm_sequential's own samples are
    the references of picard_cold and anderson_cold.
    """

    def __init__(self):
        self._store: dict[tuple[str, str], torch.Tensor] = {}
        self.computed = 0

    def get(self, denoiser, rule, key: str, x_init: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The sequential sample (the denoiser must be bound to this cycle's conditioning)."""
        from paradigms_policy.diffusion.sequential import sample_sequential

        full_key = (repr(rule), key)
        if full_key not in self._store:
            self._store[full_key] = sample_sequential(denoiser, rule, x_init, noise).sample.detach().clone()
            self.computed += 1
        return self._store[full_key]

    def put(self, rule, key: str, sample: torch.Tensor) -> None:
        """Record a sequential sampler's own result as the reference for its inputs."""
        self._store.setdefault((repr(rule), key), sample.detach().clone())


def cycle_seed(seed: int, cycle: int) -> int:
    """The noise seed of a cycle: the same for every sampler, so cold samplers share references."""
    return seed * 100_003 + cycle


def allocation_counts(policy) -> dict[str, int]:
    """The denoiser's lifetime counts of static-buffer sets and CUDA graphs created."""
    return {"slots": int(policy.denoiser.slots_created), "graphs": int(policy.denoiser.graphs_captured)}


def run_cycle(policy, obs: Mapping[str, np.ndarray], new_episode: bool, references: ReferenceCache | None,
              *, seed: int, budget_s: float | None = None) -> CycleRecord:
    """One control cycle: a timed ``predict_action``, then (untimed) its error against sequential.

    The timed span is the whole call (checks, normalization, encoding, warm start, solve,
    unnormalization, the copy back to the host). ``new_episode`` resets the policy, so that
    solve is cold.
    """
    if new_episode:
        policy.reset()
    start = time.perf_counter()
    deadline = None if budget_s is None else start + budget_s
    out = policy.predict_action(obs, n_executed=policy.n_action_steps, deadline=deadline, seed=seed)
    latency = time.perf_counter() - start
    result = out.result
    rule = policy.sampler.rule
    x_init, noise = result.trajectory[0], result.noise
    if references is None:
        reference = result.sample
    else:
        key = _digest(obs, x_init, noise)
        if not policy.sampler.is_parallel:
            references.put(rule, key, result.sample)
        reference = references.get(policy.denoiser, rule, key, x_init, noise)  # still bound to this cycle
    unnormalize = policy.normalizer["action"].unnormalize
    with torch.no_grad():
        diff = (result.sample - reference).cpu()[0]  # [horizon, A]
        diff_action = (unnormalize(result.sample) - unnormalize(reference)).cpu()[0]
    stats = result.stats
    return CycleRecord(
        latency_s=latency,
        rounds=int(stats.rounds),
        nfe=int(stats.nfe),
        converged=bool(stats.converged),
        deadline_hit=bool(stats.deadline_hit),
        err_norm=diff.double().numpy(),
        err_action=diff_action.double().numpy(),
        residual_history=[float(r) for r in (stats.residual_history or [])],
    )


def run_cycles(
    policies: Mapping[str, Any],
    windows: Sequence[Mapping[str, np.ndarray]],
    starts: Sequence[bool],
    references: ReferenceCache | None,
    *,
    seed: int,
    budget_s: float | None = None,
) -> dict[str, list[CycleRecord]]:
    """Every cycle for every sampler, interleaved: cycle 0 for all samplers, then cycle 1, ...

    Cycle c uses the same noise seed for every sampler (cold samplers share their references).
    """
    records: dict[str, list[CycleRecord]] = {name: [] for name in policies}
    for cycle, (obs, new_episode) in enumerate(zip(windows, starts, strict=True)):
        for name, policy in policies.items():
            records[name].append(
                run_cycle(policy, obs, new_episode or cycle == 0, references, seed=cycle_seed(seed, cycle),
                          budget_s=budget_s)
            )
    return records


def warm_up(policy, windows: Sequence[Mapping[str, np.ndarray]], starts: Sequence[bool], *, solves: int,
            seed: int) -> None:
    """Before any timing: ``Policy.warmup`` (buffers and graphs for every window size, round-time
    estimates), then ``solves`` untimed solves with other noise (first-call costs)."""
    policy.warmup()
    for cycle in range(min(int(solves), len(windows))):
        run_cycle(policy, windows[cycle], starts[cycle] or cycle == 0, None, seed=cycle_seed(seed + 7919, cycle))
    policy.reset()
    policy.denoiser.reset_counters()
