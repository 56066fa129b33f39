"""Newton update: finite-difference Jacobians in the same batched call, exact on affine chains,
fewer rounds from a warm start, probes only for free coordinates."""

import pytest
import torch

from paradigms_policy.diffusion.anderson import solve_anderson
from paradigms_policy.diffusion.inpaint import known_prefix
from paradigms_policy.diffusion.newton import Newton, solve_newton
from paradigms_policy.diffusion.picard import solve_picard
from paradigms_policy.diffusion.sequential import draw_noise, sample_sequential
from paradigms_policy.diffusion.step_rules import make_step_rule
from paradigms_policy.diffusion.warm_start import WarmStartState
from conftest import ACTION_DIM, HORIZON, gmm_denoiser, problem

D = HORIZON * ACTION_DIM


def affine_denoiser(seed: int = 0):
    """eps(x, t) = M_t x + c_t: every step is affine in its state, so one Newton round solves the chain."""
    g = torch.Generator().manual_seed(seed)
    m = 0.9 * torch.eye(D, dtype=torch.float64) + 0.3 * torch.randn(D, D, generator=g, dtype=torch.float64) / D
    c = torch.randn(D, generator=g, dtype=torch.float64)

    def denoise(x, t):
        s = (t.to(x.dtype) / 100.0).reshape(-1, 1, 1)
        flat = x.reshape(x.shape[0], x.shape[1], D)
        return (flat @ m.T * (1 + s) + 0.1 * c).reshape(x.shape)

    return denoise


@pytest.mark.parametrize("kind,steps", [("ddpm", 30), ("ddim", 16), ("dpmsolver++", 12)])
def test_one_round_solves_an_affine_chain(kind, steps):
    rule = make_step_rule(kind, steps, clip_sample=False)
    g = torch.Generator().manual_seed(1)
    x_init, noise = draw_noise(rule, (2, HORIZON, ACTION_DIM), generator=g, dtype=torch.float64)
    den = affine_denoiser()
    ref = sample_sequential(den, rule, x_init, noise)
    res = solve_newton(den, rule, x_init, noise, window=steps, tolerance=1e-6, abs_tolerance=1e-9)
    # round 1 solves the linear chain (DPM-Solver++ 2M included: the x0_{j-1} dependence is in the model);
    # round 2 confirms it
    assert res.stats.rounds == 2 and res.stats.converged
    assert torch.allclose(res.sample, ref.sample, atol=1e-8, rtol=0)


def test_rows_are_the_window_plus_one_probe_per_coordinate():
    rule, x_init, noise = problem("ddim", 16)
    calls = []
    den = gmm_denoiser(rule)

    def counting(x, t):
        calls.append(x.shape[0])
        return den(x, t)

    res = solve_newton(counting, rule, x_init, noise, window=16, tolerance=0.0, abs_tolerance=None, max_rounds=1)
    assert calls == [16 + 15 * D] and res.stats.rows == 16 + 15 * D and res.stats.nfe == 16
    assert Newton().rows_per_round(16, D) == 16 + 15 * D


def test_known_coordinates_are_not_probed():
    rule, x_init, noise = problem("ddim", 16)
    inpaint = known_prefix(torch.zeros(3, ACTION_DIM, dtype=torch.float64), 1, tuple(x_init.shape))
    res = solve_newton(gmm_denoiser(rule), rule, x_init, noise, window=16, tolerance=0.0, abs_tolerance=None,
                       max_rounds=1, inpaint=inpaint)
    assert res.stats.rows == 16 + 15 * (D - 3 * ACTION_DIM)


def warm_problem(steps: int, kind: str = "ddpm"):
    rule, x_init, noise = problem(kind, steps)
    first = sample_sequential(gmm_denoiser(rule), rule, x_init, noise)
    state = WarmStartState(rule)
    state.update(first)
    x2, noise2, init2 = state.next(2, x_init.shape, torch.Generator().manual_seed(5))
    den = gmm_denoiser(rule, phase=2 / HORIZON)
    return rule, den, x2, noise2, init2, sample_sequential(den, rule, x2, noise2)


@pytest.mark.parametrize("kind,steps", [("ddpm", 100), ("ddim", 16)])
def test_warm_newton_needs_fewer_rounds_than_picard_and_anderson(kind, steps):
    rule, den, x_init, noise, init, ref = warm_problem(steps, kind)
    kw = dict(window=steps, init_trajectory=init)
    newton = solve_newton(den, rule, x_init, noise, **kw)
    picard = solve_picard(den, rule, x_init, noise, **kw)
    anderson = solve_anderson(den, rule, x_init, noise, **kw)
    assert newton.stats.converged and (newton.sample - ref.sample).abs().max() < 0.02
    assert newton.stats.rounds < anderson.stats.rounds and newton.stats.rounds < picard.stats.rounds


def test_chord_rounds_reuse_the_jacobians():
    rule, den, x_init, noise, init, ref = warm_problem(16, "ddim")
    full = solve_newton(den, rule, x_init, noise, window=16, init_trajectory=init)
    chord = solve_newton(den, rule, x_init, noise, window=16, init_trajectory=init, jacobian_every=100)
    assert chord.stats.rows < full.stats.rows
    assert (chord.sample - ref.sample).abs().max() < 0.02


@pytest.mark.parametrize("kwargs,match", [({"fd_step": 0.0}, "fd_step"), ({"jacobian_every": 0}, "jacobian_every")])
def test_bad_newton_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Newton(**kwargs)
