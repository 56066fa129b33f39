"""Warm starts change only where the solver starts: same fixed point, fewer rounds."""

import pytest
import torch

from paradigms_policy.diffusion.anderson import solve_anderson
from paradigms_policy.diffusion.picard import solve_picard
from paradigms_policy.diffusion.sequential import sample_sequential
from paradigms_policy.diffusion.warm_start import WarmStartState, init_from_cheap_solver, shift_for_next_cycle
from conftest import ACTION_DIM, HORIZON, fake_denoiser, gmm_denoiser, problem

N_SHIFT = 2


def consecutive_cycles(kind="ddpm", steps=50, solver=solve_picard, tolerance=0.1, abs_tolerance=1e-3):
    """Cycle 1 solved cold; cycle 2 (time advanced by N_SHIFT actions) solved warm and cold."""
    rule, x_init, noise = problem(kind, steps)
    first = solver(gmm_denoiser(rule, phase=0.0), rule, x_init, noise, window=steps,
                   tolerance=tolerance, abs_tolerance=abs_tolerance)
    state = WarmStartState(rule)
    state.update(first)
    x2, noise2, init2 = state.next(N_SHIFT, x_init.shape, torch.Generator().manual_seed(5))
    denoise2 = gmm_denoiser(rule, phase=N_SHIFT / HORIZON)
    kw = dict(window=steps, tolerance=tolerance, abs_tolerance=abs_tolerance)
    warm = solver(denoise2, rule, x2, noise2, init_trajectory=init2, **kw)
    cold = solver(denoise2, rule, x2, noise2, **kw)
    ref = sample_sequential(denoise2, rule, x2, noise2)
    return warm, cold, ref


@pytest.mark.parametrize("solver", [solve_picard, solve_anderson])
@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_warm_start_reaches_the_cold_fixed_point_exactly(solver, kind):
    warm, cold, ref = consecutive_cycles(kind, 30, solver, tolerance=1e-8, abs_tolerance=None)
    assert warm.stats.converged and cold.stats.converged
    assert torch.allclose(warm.sample, ref.sample, atol=1e-5, rtol=0)
    assert torch.allclose(cold.sample, ref.sample, atol=1e-5, rtol=0)


@pytest.mark.parametrize("solver", [solve_picard, solve_anderson])
def test_warm_start_needs_fewer_rounds_at_working_tolerance(solver):
    warm, cold, ref = consecutive_cycles("ddpm", 100, solver)
    assert warm.stats.init == "warm" and cold.stats.init == "cold"
    assert warm.stats.rounds < cold.stats.rounds
    assert (warm.sample - ref.sample).abs().max() < 0.02
    assert (warm.sample - cold.sample).abs().max() < 0.02


def test_shift_layout():
    rule, x_init, noise = problem("ddpm", 10)
    prev = sample_sequential(fake_denoiser(), rule, x_init, noise)
    x2, n2, init = shift_for_next_cycle(prev, 3, torch.Generator().manual_seed(0))  # no rule
    assert x2.shape == x_init.shape and n2.shape == noise.shape and init.shape == prev.trajectory.shape
    assert torch.equal(x2[:, :-3], x_init[:, 3:])
    assert torch.equal(n2[:, :, :-3], noise[:, :, 3:])
    assert torch.equal(init[0], x2)
    assert torch.equal(init[1:, :, :-3], prev.trajectory[1:, :, 3:])
    # without a rule the tail of the guessed states repeats each state's last kept action column
    assert torch.equal(init[1:, :, -3:], prev.trajectory[1:, :, -1:].expand(-1, -1, 3, -1))
    # tail of x_init / noise: fresh draws, not copies of the old columns
    assert not torch.equal(x2[:, -3:], x_init[:, -3:])
    assert not torch.allclose(x2[:, -3:], x2[:, -4:-3].expand(-1, 3, -1))
    assert not torch.equal(n2[:, :, -3:], noise[:, :, -3:])
    x_same, n_same, init_same = shift_for_next_cycle(prev, 0)
    assert torch.equal(x_same, x_init) and torch.equal(init_same, prev.trajectory)
    x_new, n_new, none = shift_for_next_cycle(prev, HORIZON)
    assert none is None and x_new.shape == x_init.shape and not torch.equal(x_new, x_init)


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpmsolver++"])
def test_tail_rollout_is_the_rule_with_frozen_x0(kind):
    """With a rule, the tail is the sequential rule run with the old x0 predictions held fixed."""
    rule, x_init, noise = problem(kind, 12)
    prev = sample_sequential(fake_denoiser(), rule, x_init, noise)
    x2, n2, init = shift_for_next_cycle(prev, 3, torch.Generator().manual_seed(0), rule=rule)
    assert torch.equal(init[0], x2) and torch.equal(init[1:, :, :-3], prev.trajectory[1:, :, 3:])
    x0_last = prev.x0_preds[:, :, -1:].expand(-1, -1, 3, -1)
    x, prev_x0 = x2[:, -3:].unsqueeze(0), None
    for j in range(rule.num_steps):
        idx = torch.tensor([j])
        x = rule.step(x, x0_last[j:j + 1], idx, n2[j:j + 1, :, -3:], prev_x0=prev_x0)
        prev_x0 = x0_last[j:j + 1]
        assert torch.allclose(init[j + 1, :, -3:], x[0], atol=1e-10)


def test_shift_is_reproducible_with_a_generator():
    rule, x_init, noise = problem("ddpm", 10)
    prev = sample_sequential(fake_denoiser(), rule, x_init, noise)
    a = shift_for_next_cycle(prev, 2, torch.Generator().manual_seed(3))
    b = shift_for_next_cycle(prev, 2, torch.Generator().manual_seed(3))
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_state_cold_then_warm_and_shape_errors():
    rule, x_init, noise = problem("ddpm", 10)
    state = WarmStartState(rule)
    x0, n0, init0 = state.next(2, (2, HORIZON, ACTION_DIM), dtype=torch.float64)
    assert init0 is None and x0.shape == (2, HORIZON, ACTION_DIM) and n0.shape == (10, 2, HORIZON, ACTION_DIM)
    prev = sample_sequential(fake_denoiser(), rule, x0, n0)
    state.update(prev)
    _, _, init1 = state.next(2, (2, HORIZON, ACTION_DIM))
    assert init1 is not None
    with pytest.raises(ValueError, match="shape"):
        state.next(2, (3, HORIZON, ACTION_DIM))
    # the (prev, n_shift, generator) call form, used by the profiler
    other = WarmStartState()
    _, _, init2 = other.next(prev, 2, torch.Generator().manual_seed(0))
    assert init2.shape == prev.trajectory.shape
    rule2, x_b, n_b = problem("ddpm", 10, batch=1)
    bigger = sample_sequential(fake_denoiser(), rule2, x_b, n_b)
    with pytest.raises(ValueError, match="shape"):
        other.next(bigger, 2)
    state.reset()
    assert state.next(2, (3, HORIZON, ACTION_DIM))[2] is None
    with pytest.raises(ValueError, match="n_shift"):
        shift_for_next_cycle(prev, -1)


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_cheap_solver_init_same_fixed_point(kind):
    rule, x_init, noise = problem(kind, 40)
    denoise = gmm_denoiser(rule)
    init = init_from_cheap_solver(denoise, rule, x_init, noise, coarse_steps=4)
    assert denoise.calls["n"] == 4
    assert init.shape == (41, *x_init.shape) and torch.equal(init[0], x_init)
    ref = sample_sequential(denoise, rule, x_init, noise)
    res = solve_picard(denoise, rule, x_init, noise, window=40, tolerance=1e-8, abs_tolerance=None, init_trajectory=init)
    assert torch.allclose(res.sample, ref.sample, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="coarse_steps"):
        init_from_cheap_solver(denoise, rule, x_init, noise, coarse_steps=0)
