"""Inpainting: known entries held through every solver; parallel equals sequential at tolerance 0."""

import pytest
import torch

from paradigms_policy.diffusion.anderson import solve_anderson
from paradigms_policy.diffusion.inpaint import Inpainting, known_prefix
from paradigms_policy.diffusion.picard import solve_picard
from paradigms_policy.diffusion.samplers import make_sampler
from paradigms_policy.diffusion.sequential import sample_sequential
from paradigms_policy.diffusion.warm_start import shift_for_next_cycle
from conftest import ACTION_DIM, HORIZON, fake_denoiser, problem


def known_first_rows(x_init: torch.Tensor, rows: int = 3, first: int = 1, noised: bool = False) -> Inpainting:
    g = torch.Generator().manual_seed(7)
    values = torch.rand(rows, ACTION_DIM, generator=g, dtype=x_init.dtype) * 2 - 1
    return known_prefix(values, first, tuple(x_init.shape), noise=x_init if noised else None)


@pytest.mark.parametrize("kind,steps", [("ddpm", 30), ("ddim", 16), ("dpmsolver++", 10)])
@pytest.mark.parametrize("solver", ["picard", "anderson"])
@pytest.mark.parametrize("exact_linear", [False, True])
@pytest.mark.parametrize("noised", [False, True])
def test_parallel_inpainted_equals_sequential_inpainted(kind, steps, solver, exact_linear, noised):
    rule, x_init, noise = problem(kind, steps)
    inpaint = known_first_rows(x_init, noised=noised)
    denoise = fake_denoiser()
    ref = sample_sequential(denoise, rule, x_init, noise, inpaint=inpaint)
    plain = sample_sequential(denoise, rule, x_init, noise)
    solve = solve_picard if solver == "picard" else solve_anderson
    res = solve(denoise, rule, x_init, noise, window=8, tolerance=0.0, abs_tolerance=None,
                exact_linear=exact_linear, inpaint=inpaint)
    assert res.stats.converged
    assert torch.allclose(res.sample, ref.sample, atol=1e-6, rtol=0)
    # the known rows hold their per-state values (the clean ones, or the forward-noised ones), the final
    # state the clean values, and the rest differs from the plain sample
    expected = inpaint.bind(rule, x_init).values[:, :, 1:4].expand_as(res.trajectory[:, :, 1:4])
    assert torch.equal(res.trajectory[:, :, 1:4], expected)
    assert torch.equal(ref.sample[:, 1:4], inpaint.values[:, 1:4])
    if noised:  # state 0 at (nearly) pure noise: the known rows are mostly the initial noise there
        abar0 = float(rule.tables["alpha_bar"][0])
        assert torch.allclose(res.trajectory[0, :, 1:4], abar0 ** 0.5 * inpaint.values[:, 1:4]
                              + (1 - abar0) ** 0.5 * x_init[:, 1:4])
    assert not torch.allclose(ref.sample[:, 4:], plain.sample[:, 4:], atol=1e-3)


def test_window_one_picard_with_inpainting_is_the_sequential_sampler():
    rule, x_init, noise = problem("ddpm", 20)
    inpaint = known_first_rows(x_init)
    ref = sample_sequential(fake_denoiser(), rule, x_init, noise, inpaint=inpaint)
    res = solve_picard(fake_denoiser(), rule, x_init, noise, window=1, tolerance=0.0, inpaint=inpaint)
    assert torch.equal(res.sample, ref.sample)


def test_warm_started_inpainted_solve_reaches_the_same_fixed_point():
    rule, x_init, noise = problem("ddpm", 30)
    prev = solve_anderson(fake_denoiser(), rule, x_init, noise, window=30, tolerance=0.0, abs_tolerance=None)
    x1, n1, init = shift_for_next_cycle(prev, 3, torch.Generator().manual_seed(3), rule)
    inpaint = known_prefix(prev.sample[0, 3:6], 0, tuple(x1.shape))  # the shifted old actions are known
    ref = sample_sequential(fake_denoiser(shift=0.1), rule, x1, n1, inpaint=inpaint)
    warm = solve_anderson(fake_denoiser(shift=0.1), rule, x1, n1, window=30, tolerance=0.0, abs_tolerance=None,
                          init_trajectory=init, inpaint=inpaint)
    assert torch.allclose(warm.sample, ref.sample, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["ddim_sequential", "picard_warm", "anderson_warm"])
def test_named_samplers_and_deadline_fallback_keep_known_values(name):
    sampler = make_sampler(name, num_inference_steps=12, deadline_policy="ddim_fallback")
    g = torch.Generator().manual_seed(0)
    x_init = torch.randn(1, HORIZON, ACTION_DIM, generator=g)
    noise = torch.randn(12, 1, HORIZON, ACTION_DIM, generator=g)
    inpaint = known_first_rows(x_init)
    denoise = fake_denoiser(dtype=torch.float32)
    res = sampler.sample(denoise, x_init, noise, inpaint=inpaint)
    assert torch.equal(res.sample[:, 1:4], inpaint.values[:, 1:4])
    if sampler.is_parallel:  # no round fits the deadline: the DDIM fallback must hold the known rows too
        sampler.round_times.seed(min(sampler.window, 12), 10.0)  # no full round fits the deadline
        sampler.round_times.seed(1, 1e-3)  # but sequential DDIM steps do
        res = sampler.sample(denoise, x_init, noise, inpaint=inpaint, deadline=1.0, clock=lambda: 0.0)
        assert res.stats.deadline_hit and res.stats.fallback == "ddim_fallback"
        assert torch.equal(res.sample[:, 1:4], inpaint.values[:, 1:4])


def test_bad_inpainting_is_rejected_with_a_reason():
    rule, x_init, noise = problem("ddpm", 10)
    with pytest.raises(ValueError, match="horizon"):
        known_prefix(torch.zeros(HORIZON, ACTION_DIM, dtype=x_init.dtype), 2, tuple(x_init.shape))
    with pytest.raises(ValueError, match="NaN"):
        known_prefix(torch.full((2, ACTION_DIM), float("nan"), dtype=x_init.dtype), 0, tuple(x_init.shape))
    other = known_prefix(torch.zeros(2, ACTION_DIM + 1, dtype=x_init.dtype), 0, (2, HORIZON, ACTION_DIM + 1))
    with pytest.raises(ValueError, match="inpainting is for shape"):
        sample_sequential(fake_denoiser(), rule, x_init, noise, inpaint=other)
