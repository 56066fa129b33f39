"""Triangular Anderson solver: same fixed point as sequential/Picard, bounded rounds, safeguards."""

import pytest
import torch

from paradigms_policy.diffusion.anderson import AndersonHistory, anderson_update, solve_anderson
from paradigms_policy.diffusion.linear_forms import windowed_sum
from paradigms_policy.diffusion.picard import solve_picard
from paradigms_policy.diffusion.sequential import sample_sequential
from conftest import fake_denoiser, gmm_denoiser, problem


@pytest.mark.parametrize("kind,steps", [("ddpm", 25), ("ddim", 20), ("dpmsolver++", 20), ("ddpm", 100)])
@pytest.mark.parametrize("window,history", [(8, 2), (30, 3)])
def test_tight_tolerance_equals_sequential(kind, steps, window, history):
    rule, x_init, noise = problem(kind, steps)
    denoise = fake_denoiser()
    ref = sample_sequential(denoise, rule, x_init, noise)
    res = solve_anderson(denoise, rule, x_init, noise, window=window, tolerance=1e-8, abs_tolerance=None, history=history)
    assert res.stats.converged
    assert res.stats.rounds <= steps
    assert torch.allclose(res.sample, ref.sample, atol=1e-5, rtol=0)
    assert denoise.calls["n"] - steps == res.stats.rounds  # sequential reference used `steps` calls


def test_history_zero_is_picard():
    rule, x_init, noise = problem("ddpm", 30)
    denoise = fake_denoiser()
    a = solve_anderson(denoise, rule, x_init, noise, window=10, tolerance=0.1, history=0, exact_linear=False)
    p = solve_picard(denoise, rule, x_init, noise, window=10, tolerance=0.1)
    assert a.stats.rounds == p.stats.rounds
    assert torch.allclose(a.trajectory, p.trajectory, atol=1e-12)


def test_realistic_problem_needs_about_half_the_rounds_of_paradigms_picard():
    rule, x_init, noise = problem("ddpm", 100)
    denoise = gmm_denoiser(rule)
    ref = sample_sequential(denoise, rule, x_init, noise)
    kw = dict(window=100, tolerance=0.1, abs_tolerance=1e-3)
    p = solve_picard(denoise, rule, x_init, noise, **kw)
    a = solve_anderson(denoise, rule, x_init, noise, history=2, **kw)
    assert a.stats.converged and a.stats.rounds <= 0.7 * p.stats.rounds
    assert (a.sample - ref.sample).abs().max() < 0.02


def test_windowed_sum_orders():
    r = torch.arange(1.0, 6.0).reshape(5, 1)
    assert windowed_sum(r, 10).flatten().tolist() == [1, 3, 6, 10, 15]
    assert windowed_sum(r, 2).flatten().tolist() == [1, 3, 5, 7, 9]
    assert windowed_sum(r, 1).flatten().tolist() == [1, 2, 3, 4, 5]


def test_history_depth_is_triangular():
    h = AndersonHistory(history=3, num_states=10, batch=1, dim=2, device="cpu")
    z = torch.zeros(6, 1, 2)
    h.push(1, z, z)            # round 0: states 1..6
    h.push(2, z[:5], z[:5])    # round 1: states 2..6
    h.push(3, z, z)            # round 2: states 3..8
    depth = h.depth(3, 6)      # states 3..8 in the current round
    assert depth.tolist() == [2, 2, 2, 2, 0, 0]


def test_anderson_step_solves_a_linear_fixed_point_exactly():
    """On an affine map x -> A x + c, one type-II Anderson step with the full history is exact."""
    torch.manual_seed(0)
    d = 3
    a = 0.5 * torch.randn(d, d, dtype=torch.float64)
    c = torch.randn(d, dtype=torch.float64)
    xs = [torch.randn(d, dtype=torch.float64)]
    for _ in range(d):
        xs.append(a @ xs[-1] + c)  # Picard iterates
    res = [a @ x + c - x for x in xs]
    x = xs[-1].reshape(1, 1, d)
    r = res[-1].reshape(1, 1, d)
    dx = torch.stack([(xs[-1 - i] - xs[-2 - i]).reshape(1, 1, d) for i in range(d)])
    dr = torch.stack([(res[-1 - i] - res[-2 - i]).reshape(1, 1, d) for i in range(d)])
    x_new, gain = anderson_update(x, r, dx, dr, torch.tensor([d]), lam=0.0)
    exact = torch.linalg.solve(torch.eye(d, dtype=torch.float64) - a, c)
    assert torch.allclose(x_new.flatten(), exact, atol=1e-8)
    assert bool(gain.all())


def test_bad_anderson_parameters():
    rule, x_init, noise = problem("ddpm", 5)
    with pytest.raises(ValueError, match="history"):
        solve_anderson(fake_denoiser(), rule, x_init, noise, history=-1)
    with pytest.raises(ValueError, match="order_k"):
        solve_anderson(fake_denoiser(), rule, x_init, noise, order_k=0)
    with pytest.raises(ValueError, match="window"):
        solve_anderson(fake_denoiser(), rule, x_init, noise, window=0)
    with pytest.raises(ValueError, match="tolerance"):
        solve_anderson(fake_denoiser(), rule, x_init, noise, tolerance=-1.0)


def test_discounted_windowed_sum_matches_direct_sums():
    torch.manual_seed(0)
    r = torch.randn(6, 2, dtype=torch.float64)
    a = torch.rand(6, dtype=torch.float64)
    for k in (1, 2, 3, 6):
        out = windowed_sum(r, k, a)
        for t in range(6):
            direct = sum(torch.prod(a[s + 1:t + 1]) * r[s] for s in range(max(0, t - k + 1), t + 1))
            assert torch.allclose(out[t], direct, atol=1e-12)
