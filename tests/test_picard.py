"""Sliding-window Picard solver: exactness against the sequential sampler, rounds, stats."""

import pytest
import torch

from paradigms_policy.diffusion.picard import solve_picard
from paradigms_policy.diffusion.sequential import sample_sequential
from conftest import fake_denoiser, gmm_denoiser, problem


@pytest.mark.parametrize("kind,steps", [("ddpm", 25), ("ddim", 20), ("dpmsolver++", 20), ("ddpm", 100)])
@pytest.mark.parametrize("window", [4, 16])
def test_tight_tolerance_equals_sequential(kind, steps, window):
    rule, x_init, noise = problem(kind, steps)
    denoise = fake_denoiser()
    ref = sample_sequential(denoise, rule, x_init, noise)
    res = solve_picard(denoise, rule, x_init, noise, window=window, tolerance=1e-8, abs_tolerance=None)
    assert res.stats.converged
    assert res.stats.rounds <= steps
    assert torch.allclose(res.sample, ref.sample, atol=1e-5, rtol=0)
    assert torch.allclose(res.trajectory, ref.trajectory, atol=1e-5, rtol=0)
    assert res.stats.nfe >= res.stats.rounds
    assert len(res.stats.residual_history) == res.stats.rounds


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpmsolver++"])
def test_window_one_is_the_sequential_sampler(kind):
    rule, x_init, noise = problem(kind, 12)
    denoise = fake_denoiser()
    ref = sample_sequential(denoise, rule, x_init, noise)
    res = solve_picard(denoise, rule, x_init, noise, window=1, tolerance=0.5)
    assert torch.equal(res.sample, ref.sample)
    assert res.stats.rounds == 12 and res.stats.nfe == 12


def test_one_batched_call_per_round_with_window_shapes():
    rule, x_init, noise = problem("ddpm", 20)
    denoise = fake_denoiser()
    res = solve_picard(denoise, rule, x_init, noise, window=8, tolerance=0.1)
    assert denoise.calls["n"] == res.stats.rounds
    assert sum(denoise.calls["windows"]) == res.stats.nfe
    assert max(denoise.calls["windows"]) <= 8


def test_max_rounds_stops_unconverged():
    rule, x_init, noise = problem("ddpm", 20)
    res = solve_picard(fake_denoiser(), rule, x_init, noise, window=20, tolerance=0.0, max_rounds=3)
    assert res.stats.rounds == 3 and not res.stats.converged and not res.stats.deadline_hit
    assert torch.equal(res.sample, res.trajectory[-1])


def test_init_with_the_solution_converges_in_one_round():
    rule, x_init, noise = problem("ddim", 20)
    denoise = fake_denoiser()
    ref = sample_sequential(denoise, rule, x_init, noise)
    res = solve_picard(denoise, rule, x_init, noise, window=20, tolerance=1e-6, abs_tolerance=1e-9,
                       init_trajectory=ref.trajectory)
    assert res.stats.rounds == 1 and res.stats.converged and res.stats.init == "warm"
    assert torch.allclose(res.sample, ref.sample, atol=1e-9)


@pytest.mark.parametrize("kwargs,match", [
    ({"window": 0}, "window"),
    ({"tolerance": -0.1}, "tolerance"),
    ({"abs_tolerance": -1.0}, "abs_tolerance"),
])
def test_bad_parameters_raise(kwargs, match):
    rule, x_init, noise = problem("ddpm", 5)
    with pytest.raises(ValueError, match=match):
        solve_picard(fake_denoiser(), rule, x_init, noise, **kwargs)


def test_nan_and_shape_errors():
    rule, x_init, noise = problem("ddpm", 5)
    bad = x_init.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x_init"):
        solve_picard(fake_denoiser(), rule, bad, noise)
    bad_noise = noise.clone()
    bad_noise[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="noise"):
        solve_picard(fake_denoiser(), rule, x_init, bad_noise)
    with pytest.raises(ValueError, match="noise must have shape"):
        solve_picard(fake_denoiser(), rule, x_init, noise[:-1])
    with pytest.raises(ValueError, match="init_trajectory"):
        solve_picard(fake_denoiser(), rule, x_init, noise, init_trajectory=noise)


def test_gmm_denoiser_matches_its_mixture():
    """Sanity check of the test network: DDPM-100 samples land near one of the two modes."""
    rule, x_init, noise = problem("ddpm", 100, batch=4)
    res = sample_sequential(gmm_denoiser(rule), rule, x_init, noise)
    assert res.sample.abs().max() <= 1.0 + 1e-9
    assert res.sample.std() > 0.2


@pytest.mark.parametrize("kind,steps", [("ddpm", 100), ("ddim", 50)])
def test_realistic_problem_converges_in_far_fewer_rounds(kind, steps):
    rule, x_init, noise = problem(kind, steps)
    denoise = gmm_denoiser(rule)
    ref = sample_sequential(denoise, rule, x_init, noise)
    res = solve_picard(denoise, rule, x_init, noise, window=32, tolerance=0.1, abs_tolerance=1e-3)
    assert res.stats.converged and res.stats.rounds < steps // 2
    assert (res.sample - ref.sample).abs().max() < 0.02
    assert res.stats.step_errors.shape == (steps,)


@pytest.mark.parametrize("kind,steps", [("ddpm", 30), ("ddim", 20), ("dpmsolver++", 20)])
def test_exact_linear_form_has_the_same_fixed_point(kind, steps):
    rule, x_init, noise = problem(kind, steps)
    denoise = fake_denoiser()
    ref = sample_sequential(denoise, rule, x_init, noise)
    res = solve_picard(denoise, rule, x_init, noise, window=8, tolerance=1e-8, abs_tolerance=None, exact_linear=True)
    assert res.stats.rounds <= steps
    assert torch.allclose(res.sample, ref.sample, atol=1e-5, rtol=0)
    one = solve_picard(denoise, rule, x_init, noise, window=1, exact_linear=True)
    assert torch.equal(one.sample, ref.sample)


def test_exact_linear_form_needs_fewer_rounds_on_long_windows():
    rule, x_init, noise = problem("ddpm", 100)
    denoise = gmm_denoiser(rule)
    kw = dict(window=100, tolerance=0.1, abs_tolerance=1e-3)
    cumulative = solve_picard(denoise, rule, x_init, noise, **kw)
    exact = solve_picard(denoise, rule, x_init, noise, exact_linear=True, **kw)
    assert exact.stats.rounds < 0.7 * cumulative.stats.rounds


def test_transfer_matrix_is_the_linear_recursion():
    """y_0 = g_0, y_i = a_i y_{i-1} + g_i, including a zero coefficient (last DDPM step)."""
    from paradigms_policy.diffusion.linear_forms import apply_transfer, transfer_matrix

    g = torch.Generator().manual_seed(3)
    a = torch.rand(7, generator=g, dtype=torch.float64)
    a[4] = 0.0
    rhs = torch.randn(7, 2, 3, generator=g, dtype=torch.float64)
    expected = rhs.clone()
    for i in range(1, 7):
        expected[i] = a[i] * expected[i - 1] + rhs[i]
    assert torch.allclose(apply_transfer(transfer_matrix(a), rhs), expected, atol=1e-12)


def test_convergence_measure_is_the_change_of_the_cumulative_update():
    """The criterion's cumulative residual equals the state change of ParaDiGMS's update."""
    from paradigms_policy.diffusion.linear_forms import cumulative_residual, picard_states

    g = torch.Generator().manual_seed(5)
    states = torch.randn(7, 2, 3, generator=g, dtype=torch.float64)  # x_begin .. x_begin+6
    stepped = torch.randn(6, 2, 3, generator=g, dtype=torch.float64)  # F_j(x_j), j = begin..begin+5
    change = picard_states(stepped, states[:-1]) - states[1:]
    assert torch.allclose(cumulative_residual(stepped, states[1:]), change, atol=1e-12)
    # the exact-linear update changes less (discounted), which is why it is not the measure
    a = torch.full((6,), 0.5, dtype=torch.float64)
    linear_change = picard_states(stepped, states[:-1], a) - states[1:]
    assert not torch.allclose(linear_change, change)
