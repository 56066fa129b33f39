"""Policy.warmup prepares the widths a solve uses: no buffer or CUDA graph is created later.

The parallel solvers shrink their window near the end of the chain, and the deadline fallback
runs one step at a time. Both are served by two prepared slots (the widest round, padded for
narrower ones, and width 1), so each sampler needs one graph for its rounds. A width first seen
inside a solve would allocate (and on CUDA capture a graph) under the deadline. The denoiser's
lifetime counters show whether that happened; on CPU they count buffers, on CUDA graphs too.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from paradigms_policy.policy import load_policy, solver_call_widths

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
    assert denoiser.window_sizes == [1, window] == solver_call_widths(policy.sampler, policy.horizon * policy.action_dim)
    created = (denoiser.slots_created, denoiser.graphs_captured)
    if device == "cuda":
        assert denoiser.executor == "cuda_graph" and denoiser.graphs_captured == 2
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


def test_a_warmup_narrower_than_the_rounds_is_counted(random_checkpoint):
    """The counter catches a width nobody prepared: a round wider than every slot allocates one."""
    policy = load_policy(random_checkpoint, sampler="picard_cold", window=8)
    policy.denoiser.warmup([1, 4], batch=1)
    before = policy.denoiser.slots_created
    assert before == 2
    policy.predict_action(observation_stream(policy, 1)[0], seed=0)
    assert policy.denoiser.slots_created == before + 1
    assert policy.denoiser.window_sizes == [1, 4, 8]


def test_newton_rounds_use_one_slot_for_every_width(random_checkpoint, window_spy):
    """Newton's rounds add probe rows (their count shrinks with the window): still one prepared slot."""
    policy = load_policy(random_checkpoint, sampler="newton_ddim16_warm", window=4)
    policy.warmup()
    denoiser = policy.denoiser
    widths = solver_call_widths(policy.sampler, policy.horizon * policy.action_dim)
    assert denoiser.window_sizes == widths and len(widths) == 2
    created = denoiser.slots_created
    seen = window_spy(denoiser)
    for cycle, obs in enumerate(observation_stream(policy, 3)):
        policy.predict_action(obs, n_executed=policy.n_action_steps, seed=cycle)
    assert denoiser.slots_created == created
    assert len(set(seen)) > 2  # several round widths, all served by the prepared slots


def test_a_new_batch_size_after_warmup_is_counted(random_checkpoint):
    policy = load_policy(random_checkpoint, sampler="picard_cold", window=4)
    policy.warmup(batch=1)
    before = policy.denoiser.slots_created
    obs = {k: np.stack([v, v]) for k, v in observation_stream(policy, 1)[0].items()}  # batch of 2
    policy.predict_action(obs, seed=0)
    assert policy.denoiser.slots_created > before
