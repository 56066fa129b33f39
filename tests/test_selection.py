"""sampler: auto — least expected latency from measured call times and the study's rounds."""

import pytest
import torch

from paradigms_policy.diffusion.anderson import Anderson
from paradigms_policy.diffusion.newton import Newton
from paradigms_policy.diffusion.registry import Measured, SamplerSpec
from paradigms_policy.diffusion.selection import call_time, candidates, choose_sampler, measure_round_times
from paradigms_policy.diffusion.step_rules import make_step_rule
from conftest import ACTION_DIM, HORIZON, fake_denoiser

D = 112  # the shipped checkpoint's event: horizon 16 x 7 actions

SPECS = {
    "ddpm100_sequential": SamplerSpec("sequential", "ddpm100", False, None, Measured(100, 100, 1, 0.0)),
    "ddim16_sequential": SamplerSpec("sequential", "ddim16", False, None, Measured(16, 16, 1, 0.0)),
    "dpmsolver10_sequential": SamplerSpec("sequential", "dpmsolver10", False, None, Measured(10, 10, 1, 0.0)),
    "anderson_ddim16_warm": SamplerSpec("anderson", "ddim16", True, Anderson(window=16), Measured(6, 8, 10, 0.01)),
    "anderson_ddim16_cold": SamplerSpec("anderson", "ddim16", False, Anderson(window=16), Measured(7, 8, 10, 0.01)),
    "newton_ddim16_warm": SamplerSpec("newton", "ddim16", True, Newton(window=16), Measured(3, 4, 12, 0.01)),
    "picard_ddpm100_warm": SamplerSpec("anderson", "ddpm100", True, Anderson(), Measured(11, 14, 60, 0.05)),
}


def cpu_like(w: int) -> float:
    return 1e-3 * (1 + 0.3 * w)  # cost grows with width: a couple of cores


def gpu_like(w: int) -> float:
    return 1e-3 * (1 + w / 5000)  # a wide batch costs about what one row does


def test_candidates_are_sequential_or_warm_within_the_bar_of_validated_rules():
    pool = candidates(specs=SPECS)
    assert "dpmsolver10_sequential" not in pool  # rule not validated in rollouts
    assert "anderson_ddim16_cold" not in pool  # a control loop warm-starts
    assert "picard_ddpm100_warm" not in pool  # error above the bar
    assert {"ddpm100_sequential", "ddim16_sequential", "anderson_ddim16_warm", "newton_ddim16_warm"} == set(pool)


def test_a_cpu_picks_sequential_ddim_and_says_why():
    times = {w: cpu_like(w) for w in (1, 10, 16 + 15 * D)}
    choice = choose_sampler(times, D, specs=SPECS)
    assert choice.name == "ddim16_sequential"
    assert choice.reason.startswith("auto chose ddim16_sequential (16 rounds")
    assert "next anderson_ddim16_warm" in choice.reason and "measured here" in choice.reason
    assert choice.expected_s["ddim16_sequential"] == pytest.approx(16 * cpu_like(1))


def test_a_gpu_picks_the_fewest_rounds():
    times = {w: gpu_like(w) for w in (1, 10, 4096)}
    choice = choose_sampler(times, D, specs=SPECS)
    assert choice.name == "newton_ddim16_warm"
    rows = Newton().rows_per_round(12, D)  # 12 steps per round plus one probe row per coordinate
    assert choice.expected_s[choice.name] == pytest.approx(3 * call_time(times)(rows))


def test_call_time_interpolates_and_extrapolates():
    t = call_time({1: 1.0, 11: 2.0})
    assert t(1) == 1.0 and t(6) == pytest.approx(1.5) and t(22) == pytest.approx(4.0) and t(0) == 1.0
    with pytest.raises(ValueError, match="no round times"):
        call_time({})


def test_no_candidate_raises_with_the_reason():
    with pytest.raises(ValueError, match="error bar"):
        choose_sampler({1: 1e-3}, D, specs={"x": SPECS["picard_ddpm100_warm"]})


def test_measure_round_times_times_each_width_up_to_the_cap():
    rule = make_step_rule("ddim", 16)
    den = fake_denoiser()
    x_init = torch.zeros(1, HORIZON, ACTION_DIM, dtype=torch.float64)
    times = measure_round_times(den, rule, x_init, [1, 4, 100, 10_000], repeats=1, max_rows=500)
    assert sorted(times) == [1, 4, 100] and all(v > 0 for v in times.values())
    assert den.calls["windows"] == [1, 1, 4, 4, 100, 100]  # one untimed first call per width


def test_the_registry_choice_on_this_kind_of_machine_is_consistent():
    """With the shipped figures: a CPU-like cost picks a sequential sampler unless a parallel one is cheaper."""
    times = {w: cpu_like(w) for w in (1, 16, 100, 4096)}
    choice = choose_sampler(times, D)
    assert choice.name in choice.expected_s
    assert choice.expected_s[choice.name] == min(choice.expected_s.values())
