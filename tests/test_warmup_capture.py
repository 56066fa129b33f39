"""Policy.warmup prepares every window size a solve uses: no buffer or CUDA graph is created later.

The parallel solvers shrink their window near the end of the chain, and the deadline fallback
runs one step at a time; a size first seen inside a solve would allocate (and on CUDA capture a
graph) under the deadline. The denoiser's lifetime counters show whether that happened; on CPU
they count buffers, on CUDA graphs too.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from paradigms_policy.policy import load_policy, solver_window_sizes

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[needs_cuda, pytest.mark.cuda])]


@pytest.fixture
def window_spy():
    """Wrap a denoiser's slot lookup; returns (install, seen window sizes)."""
    seen: list[int] = []

    def install(denoiser) -> list[int]:
        lookup = denoiser._slot

        def spy(window: int):
            seen.append(int(window))
            return lookup(window)

        denoiser._slot = spy
        return seen

    return install


def observation_stream(policy, cycles: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{k: rng.normal(size=(policy.n_obs_steps, *s)).astype(np.float32) for k, s in policy.obs_shapes.items()}
            for _ in range(cycles)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sampler,window", [("picard_warm", 8), ("anderson_warm", 6), ("anderson_cold", 7)])
def test_parallel_solves_after_warmup_create_nothing(random_checkpoint, window_spy, device, sampler, window):
    policy = load_policy(random_checkpoint, device=device, sampler=sampler, window=window)
    policy.warmup()
    denoiser = policy.denoiser
    assert denoiser.window_sizes == list(range(1, window + 1)) == solver_window_sizes(policy.sampler, policy.horizon * policy.action_dim)
    created = (denoiser.slots_created, denoiser.graphs_captured)
    if device == "cuda":
        assert denoiser.executor == "cuda_graph" and denoiser.graphs_captured == window
    seen = window_spy(denoiser)
    stats = []
    for cycle, obs in enumerate(observation_stream(policy, 4)):
        stats.append(policy.predict_action(obs, n_executed=policy.n_action_steps, seed=cycle).stats)
    # a deadline too short for the solve: it stops early and the fallback runs step by step
    policy.predict_action(observation_stream(policy, 1, seed=1)[0], seed=9, deadline=time.perf_counter() + 1e-3)
    assert (denoiser.slots_created, denoiser.graphs_captured) == created
    assert window in seen and min(seen) < window  # full windows, and windows shrunk at the chain's end
    assert stats[0].init == "cold"
    if sampler.endswith("_warm"):
        assert all(s.init == "warm" for s in stats[1:])


@pytest.mark.parametrize("device", DEVICES)
def test_sequential_solves_after_warmup_create_nothing(random_checkpoint, device):
    policy = load_policy(random_checkpoint, device=device, sampler="ddim_sequential")
    policy.warmup()
    denoiser = policy.denoiser
    assert denoiser.window_sizes == [1]
    created = (denoiser.slots_created, denoiser.graphs_captured)
    for cycle, obs in enumerate(observation_stream(policy, 2)):
        policy.predict_action(obs, seed=cycle)
    assert (denoiser.slots_created, denoiser.graphs_captured) == created


def test_windows_missed_at_warmup_are_counted(random_checkpoint):
    """The counter catches what the old warm-up ({1, W} only) left to the first solve."""
    policy = load_policy(random_checkpoint, sampler="picard_cold", window=8)
    policy.denoiser.warmup([1, 8], batch=1)
    before = policy.denoiser.slots_created
    assert before == 2
    policy.predict_action(observation_stream(policy, 1)[0], seed=0)
    assert policy.denoiser.slots_created > before
    assert set(policy.denoiser.window_sizes) - {1, 8}


def test_a_new_batch_size_after_warmup_is_counted(random_checkpoint):
    policy = load_policy(random_checkpoint, sampler="picard_cold", window=4)
    policy.warmup(batch=1)
    before = policy.denoiser.slots_created
    obs = {k: np.stack([v, v]) for k, v in observation_stream(policy, 1)[0].items()}  # batch of 2
    policy.predict_action(obs, seed=0)
    assert policy.denoiser.slots_created > before
