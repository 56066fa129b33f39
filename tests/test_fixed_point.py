"""The one fixed-point loop: every registered sampler and update rule is its sequential sampler at
tolerance 0, window 1 is the sequential sampler, inpainting holds in every rule."""

import dataclasses

import pytest
import torch

from paradigms_policy.diffusion.anderson import Anderson
from paradigms_policy.diffusion.fixed_point import LoopSettings, solve_fixed_point
from paradigms_policy.diffusion.inpaint import known_prefix
from paradigms_policy.diffusion.newton import Newton
from paradigms_policy.diffusion.picard import Picard
from paradigms_policy.diffusion.registry import SAMPLERS
from paradigms_policy.diffusion.samplers import make_sampler
from paradigms_policy.diffusion.sequential import draw_noise, sample_sequential
from conftest import ACTION_DIM, HORIZON, fake_denoiser, gmm_denoiser, problem

PARALLEL = [name for name, spec in SAMPLERS.items() if spec.update != "sequential"]
METHODS = {"picard": Picard(), "picard-exact-linear": Picard(exact_linear=True), "anderson": Anderson(),
           "anderson-cumulative": Anderson(exact_linear=False), "newton": Newton(), "newton-chord": Newton(jacobian_every=3)}
KINDS = [("ddpm", 20), ("ddim", 16), ("dpmsolver++", 10)]


def exact(method: LoopSettings, **kw) -> LoopSettings:
    return dataclasses.replace(method, tolerance=0.0, abs_tolerance=None, **kw)


@pytest.mark.parametrize("name", PARALLEL)
def test_every_registered_sampler_equals_its_sequential_sampler_at_tolerance_zero(name):
    sampler = make_sampler(name, tolerance=0.0, abs_tolerance=None)
    g = torch.Generator().manual_seed(0)
    x_init, noise = draw_noise(sampler.rule, (1, HORIZON, ACTION_DIM), generator=g, dtype=torch.float64)
    den = fake_denoiser()
    ref = sample_sequential(den, sampler.rule, x_init, noise)
    init = None
    if sampler.uses_warm_start:  # any guess: the fixed point does not depend on it
        init = ref.trajectory + 0.3 * torch.randn(ref.trajectory.shape, generator=g, dtype=torch.float64)
    res = sampler.sample(den, x_init, noise, init_trajectory=init)
    assert res.stats.converged and res.stats.rounds <= sampler.rule.num_steps
    assert torch.allclose(res.sample, ref.sample, atol=1e-5, rtol=0)
    assert res.stats.rows >= res.stats.nfe >= res.stats.rounds


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("kind,steps", KINDS)
def test_window_one_is_the_sequential_sampler_bit_for_bit(method, kind, steps):
    rule, x_init, noise = problem(kind, steps)
    den = fake_denoiser()
    ref = sample_sequential(den, rule, x_init, noise)
    res = solve_fixed_point(den, rule, x_init, noise, dataclasses.replace(METHODS[method], window=1))
    assert torch.equal(res.sample, ref.sample) and torch.equal(res.trajectory, ref.trajectory)
    assert res.stats.rounds == steps and res.stats.nfe == steps and res.stats.rows == steps


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("kind,steps", KINDS)
def test_every_rule_keeps_inpainted_values_and_reaches_the_inpainted_sample(method, kind, steps):
    rule, x_init, noise = problem(kind, steps)
    values = torch.rand(3, ACTION_DIM, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 2 - 1
    inpaint = known_prefix(values, 1, tuple(x_init.shape))
    den = fake_denoiser()
    ref = sample_sequential(den, rule, x_init, noise, inpaint=inpaint)
    res = solve_fixed_point(den, rule, x_init, noise, exact(METHODS[method], window=8), inpaint=inpaint)
    assert res.stats.converged
    assert torch.allclose(res.sample, ref.sample, atol=1e-6, rtol=0)
    known = inpaint.values[:, 1:4].expand_as(res.trajectory[:, :, 1:4])
    assert torch.equal(res.trajectory[:, :, 1:4], known)


def test_observer_sees_every_round_and_changes_nothing():
    rule, x_init, noise = problem("ddpm", 30)
    den = gmm_denoiser(rule)
    seen = []
    method = Picard(window=30, tolerance=0.1, abs_tolerance=1e-3)
    res = solve_fixed_point(den, rule, x_init, noise, method, observer=lambda k, st: seen.append((k, st.traj[-1].clone())))
    plain = solve_fixed_point(den, rule, x_init, noise, method)
    assert [k for k, _ in seen] == list(range(1, res.stats.rounds + 1))
    assert torch.equal(seen[-1][1], res.sample) and torch.equal(res.sample, plain.sample)


@pytest.mark.parametrize("settings,match", [
    (dict(window=0), "window"), (dict(tolerance=-1.0), "tolerance"), (dict(abs_tolerance=-1.0), "abs_tolerance"),
    (dict(max_rounds=-1), "max_rounds"),
])
def test_loop_settings_are_checked_when_made(settings, match):
    for cls in (Picard, Anderson, Newton):
        with pytest.raises(ValueError, match=match):
            cls(**settings)


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Picard().window = 3


def test_max_abs_test_catches_one_far_off_coordinate():
    from paradigms_policy.diffusion.criteria import ConvergenceCriterion

    delta = torch.zeros(1, 1, HORIZON, ACTION_DIM, dtype=torch.float64)
    delta[0, 0, 2, 1] = 0.1  # RMS 0.1 / sqrt(24) = 0.02
    var = torch.ones(1, dtype=torch.float64)
    assert bool(ConvergenceCriterion(var, 0.0, 0.025).evaluate(delta, 0).converged.all())
    assert not bool(ConvergenceCriterion(var, 0.0, 0.025, max_abs_tolerance=0.05).evaluate(delta, 0).converged.any())
    with pytest.raises(ValueError, match="max_abs_tolerance"):
        Newton(max_abs_tolerance=-1.0)
