"""Named samplers: defaults, overrides, validation, deadline policies."""

import pytest
import torch

from paradigms_policy.diffusion.budget import DeadlinePolicy
from paradigms_policy.diffusion.registry import ALIASES, AUTO, RULES, SAMPLERS, canonical_name
from paradigms_policy.diffusion.samplers import SAMPLER_NAMES, WarmStartState, make_sampler
from paradigms_policy.diffusion.sequential import draw_noise, sample_sequential
from paradigms_policy.diffusion.step_rules import make_step_rule
from conftest import FakeClock, seeded, timed
from conftest import ACTION_DIM, HORIZON, fake_denoiser, gmm_denoiser


def draws(sampler, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return draw_noise(sampler.rule, (batch, HORIZON, ACTION_DIM), generator=g, dtype=torch.float64)


def test_names_and_defaults():
    assert {"ddpm_sequential", "ddim_sequential", "picard_cold", "picard_warm", "anderson_cold",
            "anderson_warm"} <= set(SAMPLER_NAMES)
    assert make_sampler("ddim_sequential").rule.num_steps == 16
    ddpm = make_sampler("ddpm_sequential")
    assert ddpm.rule.num_steps == 100 and ddpm.rule.kind == "ddpm" and not ddpm.uses_warm_start
    for name in ("picard_cold", "picard_warm", "anderson_cold", "anderson_warm"):
        s = make_sampler(name)
        assert s.name == name and s.is_parallel
        assert s.rule.kind == "ddpm" and s.rule.num_steps == 100 and s.rule.clip_sample
        assert s.rule.prediction_type == "epsilon"
        assert s.uses_warm_start == name.endswith("_warm")
    assert make_sampler("anderson_cold").solver_config["history"] >= 2
    assert make_sampler("picard_warm").deadline_policy is DeadlinePolicy.DDIM_FALLBACK


def test_registry_names_say_what_they_solve():
    assert set(SAMPLER_NAMES) == set(SAMPLERS) | set(ALIASES) | {AUTO}
    for name, spec in SAMPLERS.items():
        s = make_sampler(name)
        kind, steps = RULES[spec.rule]
        assert (s.rule.kind, s.rule.num_steps) == (kind, steps) and spec.rule in name
        assert s.solver == spec.update and s.is_parallel == (spec.update != "sequential")
        if s.is_parallel:
            assert name == f"{spec.update}_{spec.rule}_{'warm' if spec.warm else 'cold'}"
            assert s.uses_warm_start == spec.warm and s.settings == spec.settings
        else:
            assert name == f"{spec.rule}_sequential" and s.solver_config == {}
    for update in ("picard", "anderson", "newton"):
        for rule in RULES:
            for start in ("cold", "warm"):
                assert f"{update}_{rule}_{start}" in SAMPLERS


def test_aliases_are_the_first_names():
    assert canonical_name("anderson_warm") == "anderson_ddpm100_warm"
    assert canonical_name("ddim_sequential") == "ddim16_sequential"
    alias, full = make_sampler("picard_warm"), make_sampler("picard_ddpm100_warm")
    assert alias.name == "picard_warm" and alias.spec_name == "picard_ddpm100_warm"
    assert alias.settings == full.settings and alias.uses_warm_start
    with pytest.raises(ValueError, match="auto"):
        make_sampler(AUTO)


def test_overrides_from_a_checkpoint():
    s = make_sampler("picard_cold", num_train_timesteps=50, beta_schedule="linear", prediction_type="sample",
                     window=8, tolerance=0.05, num_inference_steps=50)
    assert s.rule.num_steps == 50 and s.rule.prediction_type == "sample"
    assert s.window == 8 and s.tolerance == 0.05
    assert make_sampler("ddim_sequential", num_inference_steps=10).rule.num_steps == 10


@pytest.mark.parametrize("name,overrides,match", [
    ("nope", {}, "unknown sampler"),
    ("picard_cold", {"window": 0}, "window"),
    ("picard_cold", {"tolerance": -1.0}, "tolerance"),
    ("picard_cold", {"history": 3}, "history"),
    ("anderson_cold", {"history": -1}, "history"),
    ("ddpm_sequential", {"window": 4}, "window"),
    ("picard_cold", {"colour": 1}, "colour"),
    ("picard_cold", {"deadline_policy": "pray"}, "pray"),
])
def test_bad_construction(name, overrides, match):
    with pytest.raises(ValueError, match=match):
        make_sampler(name, **overrides)


def test_nan_input_rejected():
    s = make_sampler("picard_cold", num_inference_steps=10)
    x_init, noise = draws(s)
    x_init[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        s.sample(fake_denoiser(), x_init, noise)


@pytest.mark.parametrize("name", ["ddpm_sequential", "ddim_sequential", "dpmsolver_sequential"])
def test_sequential_samplers_are_the_sequential_sampler(name):
    s = make_sampler(name)
    x_init, noise = draws(s)
    den = fake_denoiser()
    assert torch.equal(s.sample(den, x_init, noise).sample, sample_sequential(den, s.rule, x_init, noise).sample)


@pytest.mark.parametrize("name", ["picard_cold", "anderson_cold", "picard_warm", "anderson_warm", "newton_ddpm100_warm",
                                  "newton_ddim16_cold", "anderson_ddim16_warm", "picard_dpmsolver10_warm"])
def test_parallel_samplers_match_sequential_within_tolerance(name):
    s = make_sampler(name)
    x_init, noise = draws(s)
    den = gmm_denoiser(s.rule)
    ref = sample_sequential(den, s.rule, x_init, noise)
    res = s.sample(den, x_init, noise)
    assert res.stats.converged and res.stats.rounds < s.rule.num_steps
    assert (res.sample - ref.sample).abs().max() < 0.02
    # warm alias and init_trajectory give the same solve
    again = s.sample(den, x_init, noise, warm=ref.trajectory)
    assert again.stats.rounds < res.stats.rounds
    with pytest.raises(ValueError, match="not both"):
        s.sample(den, x_init, noise, warm=ref.trajectory, init_trajectory=ref.trajectory)


def deadline_setup(policy):
    s = make_sampler("picard_warm", window=4, tolerance=0.0, abs_tolerance=None, num_inference_steps=20,
                     deadline_policy=policy)
    s.round_times = seeded(1, 4)
    x_init, noise = draws(s)
    return s, x_init, noise


def test_deadline_publish_returns_the_unconverged_estimate():
    s, x_init, noise = deadline_setup("publish")
    clock = FakeClock()
    res = s.sample(timed(fake_denoiser(), clock), x_init, noise, deadline=10.0, clock=clock)
    assert res.stats.rounds == 7 and res.stats.deadline_hit and res.stats.fallback == "publish"
    assert torch.equal(res.sample, res.trajectory[-1])


def test_deadline_keep_previous_returns_the_shifted_previous_chunk():
    s, x_init, noise = deadline_setup(DeadlinePolicy.KEEP_PREVIOUS)
    clock = FakeClock()
    init = torch.randn(21, *x_init.shape, dtype=torch.float64)
    init[0] = x_init
    res = s.sample(timed(fake_denoiser(), clock), x_init, noise, init_trajectory=init, deadline=10.0, clock=clock)
    assert res.stats.deadline_hit and res.stats.fallback == "keep_previous"
    assert torch.equal(res.sample, init[-1])
    # cold start: nothing to keep -> publishes
    cold = s.sample(timed(fake_denoiser(), clock), x_init, noise, deadline=clock.now + 10.0, clock=clock)
    assert cold.stats.fallback == "publish"


def test_deadline_ddim_fallback_sized_to_the_time_left():
    s, x_init, noise = deadline_setup("ddim_fallback")
    clock = FakeClock()
    den = fake_denoiser()
    res = s.sample(timed(den, clock), x_init, noise, deadline=10.0, clock=clock)
    # 7 rounds of width 4 end at 9.1 s; 0.9 s left / 0.4 s per width-1 call -> 2 DDIM steps
    assert res.stats.fallback == "ddim_fallback" and res.stats.rounds == 9 and res.stats.nfe == 30
    assert clock.now == pytest.approx(9.9)
    ddim2 = make_step_rule("ddim", 2)
    expected = sample_sequential(den, ddim2, x_init, torch.zeros(2, *x_init.shape, dtype=torch.float64)).sample
    assert torch.allclose(res.sample, expected, atol=1e-12)
    assert torch.equal(res.trajectory[-1], res.sample)


def test_warmup_seeds_the_round_time_estimates():
    s = make_sampler("picard_cold", window=8)
    x_init, _ = draws(s)
    s.warmup(fake_denoiser(), x_init)
    assert s.round_times.known_windows() == [1, 8]


def test_newton_warmup_times_its_probe_rows():
    s = make_sampler("newton_ddim16_warm")
    x_init, _ = draws(s)
    den = fake_denoiser()
    s.warmup(den, x_init, repeats=1)
    d = HORIZON * ACTION_DIM
    assert s.round_times.known_windows() == [1, 16]  # keyed by window, timed at the call's real width
    assert den.calls["windows"] == [1, 1, 16 + 15 * d, 16 + 15 * d]  # an untimed first call per width
    assert s.call_widths(d) == [1, 16 + 15 * d]


def test_warm_state_reexported():
    s = make_sampler("picard_warm", num_inference_steps=10)
    state = WarmStartState(s.rule)
    assert state.next(2, (1, HORIZON, ACTION_DIM))[2] is None


def test_solver_forms_and_warm_state_factory():
    assert make_sampler("picard_cold").solver_config["exact_linear"] is False
    assert make_sampler("anderson_warm").solver_config["exact_linear"] is True
    s = make_sampler("picard_warm", exact_linear=True, num_inference_steps=10)
    assert s.solver_config["exact_linear"] is True
    state = s.new_warm_start_state()
    assert state.rule is s.rule
