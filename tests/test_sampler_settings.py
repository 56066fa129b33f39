"""SamplerSettings: one typed form of sampler settings, where "not set" (None) is distinct from 0."""

from __future__ import annotations

import pytest

from paradigms_policy.sampler_settings import DEADLINE_POLICIES, SAMPLER_SOLVERS, SamplerSettings


def test_kinds_and_deadline_policies_match_the_core():
    from paradigms_policy.diffusion.budget import DeadlinePolicy
    from paradigms_policy.diffusion.registry import ALIASES, AUTO, SAMPLERS

    core = {name: spec.update for name, spec in SAMPLERS.items()}
    core.update({alias: SAMPLERS[target].update for alias, target in ALIASES.items()}, **{AUTO: "auto"})
    assert SAMPLER_SOLVERS == core
    assert set(DEADLINE_POLICIES) == {p.value for p in DeadlinePolicy}


def test_not_set_is_distinct_from_zero():
    assert SamplerSettings("picard_warm").overrides() == {}
    exact = SamplerSettings("picard_warm", tolerance=0.0, abs_tolerance=0.0)
    assert exact.overrides() == {"tolerance": 0.0, "abs_tolerance": 0.0}


def test_overrides_build_the_sampler_they_describe():
    from paradigms_policy.diffusion.samplers import SAMPLERS, make_sampler

    default = make_sampler("picard_warm", **SamplerSettings("picard_warm").overrides())
    assert default.tolerance == SAMPLERS["picard_ddpm100_warm"].settings.tolerance
    settings = SamplerSettings("anderson_warm", steps=20, tolerance=0.0, abs_tolerance=2e-3, window=10, history=3,
                               deadline_policy="publish")
    sampler = make_sampler(settings.name, **settings.overrides())
    assert sampler.rule.num_steps == 20 and sampler.window == 10 and sampler.tolerance == 0.0
    assert sampler.solver_config["abs_tolerance"] == 2e-3 and sampler.solver_config["history"] == 3
    assert sampler.deadline_policy.value == "publish"


def test_settings_a_kind_does_not_use_are_named_not_passed():
    settings = SamplerSettings("ddim_sequential", steps=8, tolerance=0.1, history=2)
    assert settings.overrides() == {"num_inference_steps": 8}
    assert settings.ignored() == ["tolerance", "history"]
    assert SamplerSettings("picard_cold", history=2).ignored() == ["history"]
    assert "picard_cold (history=2)" == SamplerSettings("picard_cold", history=2).describe()


@pytest.mark.parametrize("kwargs, fragment", [
    ({"name": "bogus"}, "unknown sampler 'bogus'"),
    ({"name": "picard_warm", "tolerance": -0.1}, "tolerance must be a finite number >= 0"),
    ({"name": "picard_warm", "abs_tolerance": float("nan")}, "abs_tolerance must be"),
    ({"name": "picard_warm", "window": 0}, "window must be an integer >= 1"),
    ({"name": "anderson_warm", "history": -1}, "history must be an integer >= 0"),
    ({"name": "picard_warm", "deadline_policy": "wait"}, "deadline_policy must be one of"),
])
def test_invalid_settings_are_refused_naming_the_setting(kwargs, fragment):
    with pytest.raises(ValueError, match="invalid sampler settings") as info:
        SamplerSettings(**kwargs)
    assert fragment in str(info.value)


def test_rounds_per_sync_applies_to_picard_and_anderson():
    picard = SamplerSettings(name="picard_warm", rounds_per_sync=4)
    assert picard.overrides() == {"rounds_per_sync": 4} and picard.ignored() == []
    assert SamplerSettings(name="anderson_warm", rounds_per_sync=4).overrides() == {"rounds_per_sync": 4}
    newton = SamplerSettings(name="newton_ddim16_warm", rounds_per_sync=4)
    assert newton.overrides() == {} and newton.ignored() == ["rounds_per_sync"]
    with pytest.raises(ValueError, match="rounds_per_sync must be an integer >= 1"):
        SamplerSettings(name="picard_warm", rounds_per_sync=0)
