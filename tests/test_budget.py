"""Deadline logic, deterministic: a fake clock advanced by the denoiser by a known cost per call."""

import pytest
import torch

from paradigms_policy.diffusion.anderson import solve_anderson
from paradigms_policy.diffusion.budget import DECAY_AFTER_REFUSED_SOLVE, DeadlineGuard, DeadlinePolicy, RoundTimeEstimator
from paradigms_policy.diffusion.picard import solve_picard
from conftest import FakeClock, fake_denoiser, problem, seeded, timed


@pytest.mark.parametrize("solver", [solve_picard, solve_anderson])
def test_stops_before_the_round_that_would_overrun(solver):
    rule, x_init, noise = problem("ddpm", 20)
    clock = FakeClock()
    # tolerance 0: the window slides one step per round, so every round has width 4 (cost 1.3)
    res = solver(timed(fake_denoiser(), clock), rule, x_init, noise, window=4, tolerance=0.0,
                 deadline=10.0, clock=clock, round_time_estimator=seeded(4))
    assert res.stats.rounds == 7          # 7 * 1.3 = 9.1 <= 10 < 8 * 1.3
    assert clock.now == pytest.approx(9.1)
    assert res.stats.deadline_hit and not res.stats.converged
    assert res.stats.nfe == 28
    assert torch.equal(res.sample, res.trajectory[-1])
    assert len(res.stats.residual_history) == 7 and res.stats.residual_history[-1] > 0
    assert res.stats.wall_time_s == pytest.approx(9.1)


def test_no_deadline_hit_when_it_fits():
    rule, x_init, noise = problem("ddpm", 6)
    clock = FakeClock()
    res = solve_picard(timed(fake_denoiser(), clock), rule, x_init, noise, window=4, tolerance=0.0,
                       deadline=100.0, clock=clock, round_time_estimator=seeded(4))
    assert res.stats.converged and not res.stats.deadline_hit and res.stats.rounds == 6


def test_deadline_already_passed_returns_the_initial_guess():
    rule, x_init, noise = problem("ddpm", 10)
    clock = FakeClock()
    clock.now = 5.0
    res = solve_picard(timed(fake_denoiser(), clock), rule, x_init, noise, window=4, deadline=4.0, clock=clock)
    assert res.stats.rounds == 0 and res.stats.deadline_hit and not res.stats.converged
    assert torch.equal(res.sample, x_init)


def test_first_round_is_measured_when_no_estimate_exists():
    rule, x_init, noise = problem("ddpm", 20)
    clock = FakeClock()
    est = RoundTimeEstimator()
    res = solve_picard(timed(fake_denoiser(), clock), rule, x_init, noise, window=4, tolerance=0.0,
                       deadline=3.0, clock=clock, round_time_estimator=est)
    # round 1 runs blind (1.3 s), then the estimate stops it after round 2 (2.6 + 1.3 > 3)
    assert res.stats.rounds == 2 and res.stats.deadline_hit
    assert est.estimate(4) == pytest.approx(1.3)


def test_estimator_ema_and_fallback_to_other_windows():
    est = RoundTimeEstimator(smoothing=0.5)
    assert est.estimate(4) is None
    est.update(4, 1.0)
    est.update(4, 2.0)
    assert est.estimate(4) == pytest.approx(1.5)
    assert est.estimate(2) == pytest.approx(1.5)   # a smaller window borrows the next larger one
    assert est.estimate(8) == pytest.approx(3.0)   # a larger one scales up linearly
    est.seed(1, 0.25)
    assert est.estimate(1) == 0.25 and est.known_windows() == [1, 4]
    with pytest.raises(ValueError, match="smoothing"):
        RoundTimeEstimator(smoothing=0.0)


def test_a_solve_refused_before_its_first_round_decays_the_estimates():
    rule, x_init, noise = problem("ddpm", 20)
    clock = FakeClock()
    est = RoundTimeEstimator()
    est.seed(4, 10.0)  # one slow round (a load spike) measured earlier
    kwargs = dict(window=4, tolerance=0.0, clock=clock, round_time_estimator=est)
    res = solve_picard(timed(fake_denoiser(), clock), rule, x_init, noise, deadline=clock.now + 3.0, **kwargs)
    assert res.stats.rounds == 0 and res.stats.deadline_hit
    assert est.estimate(4) == pytest.approx(10.0 * DECAY_AFTER_REFUSED_SOLVE)
    while est.estimate(4) > 3.0:  # later solves are refused only until the estimate fits again ...
        solve_picard(timed(fake_denoiser(), clock), rule, x_init, noise, deadline=clock.now + 3.0, **kwargs)
    res = solve_picard(timed(fake_denoiser(), clock), rule, x_init, noise, deadline=clock.now + 3.0, **kwargs)
    assert res.stats.rounds >= 1  # ... then a round runs and is measured (1.3 s each)
    assert est.estimate(4) < 3.0


def test_a_solve_stopped_after_some_rounds_keeps_its_estimates():
    rule, x_init, noise = problem("ddpm", 20)
    clock = FakeClock()
    est = RoundTimeEstimator()
    solve_picard(timed(fake_denoiser(), clock), rule, x_init, noise, window=4, tolerance=0.0,
                 deadline=clock.now + 3.0, clock=clock, round_time_estimator=est)
    assert est.estimate(4) == pytest.approx(1.3)  # measured, not decayed


def test_guard_without_deadline_always_allows():
    guard = DeadlineGuard(None, FakeClock())
    assert guard.allows(100) and guard.time_left() == float("inf") and not guard.hit


def test_nan_deadline_rejected():
    rule, x_init, noise = problem("ddpm", 5)
    with pytest.raises(ValueError, match="deadline"):
        solve_picard(fake_denoiser(), rule, x_init, noise, deadline=float("nan"))


def test_policy_names():
    assert {p.value for p in DeadlinePolicy} == {"publish", "ddim_fallback", "keep_previous"}


def test_cold_stop_before_the_window_reaches_the_end_publishes_the_latest_x0_prediction():
    rule, x_init, noise = problem("ddpm", 20)
    res = solve_picard(fake_denoiser(), rule, x_init, noise, window=4, tolerance=0.0, max_rounds=2)
    # round 2 evaluated steps 1..4: the final state is x0 predicted at step 4, not the initial noise
    assert torch.equal(res.sample, res.x0_preds[4])
    assert torch.equal(res.trajectory[6], res.trajectory[5])
