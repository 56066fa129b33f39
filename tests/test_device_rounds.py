"""Device-resident rounds (Picard, Anderson): one read of the flags per block of rounds, same solve as the host loop.

K = 1 (a read after every round) must reproduce the host loop's Picard solve; larger blocks
must change nothing (rounds after convergence are no-ops); the CUDA-graph capture of whole
rounds must match the eager rounds to 1e-5 (skipped without a GPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paradigms_policy.diffusion.anderson import Anderson
from paradigms_policy.diffusion.device_rounds import PicardDeviceRounds, block_size, make_device_rounds
from paradigms_policy.diffusion.inpaint import known_prefix
from paradigms_policy.diffusion.picard import Picard
from paradigms_policy.diffusion.fixed_point import solve_fixed_point
from paradigms_policy.diffusion.sequential import sample_sequential
from paradigms_policy.policy import load_policy
from conftest import FakeClock, fake_denoiser, problem, seeded, timed

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def device_solve(denoise, rule, x_init, noise, settings, **kwargs):
    return make_device_rounds(rule, settings, denoise, x_init).solve(x_init, noise, **kwargs)


def with_rounds(settings, k: int = 1):
    """The same settings running device-resident rounds, reading the flags every ``k`` rounds."""
    return type(settings)(**{**settings.__dict__, "rounds_per_sync": k})


def assert_same_solve(got, ref, atol: float = 1e-12):
    """Same rounds and statistics; states equal to float64 rounding (a padded window is a differently
    shaped batch, and batched kernels may sum in another order)."""
    assert got.stats.rounds == ref.stats.rounds
    assert got.stats.nfe == ref.stats.nfe
    assert got.stats.converged == ref.stats.converged
    torch.testing.assert_close(got.sample, ref.sample, atol=atol, rtol=0)
    torch.testing.assert_close(got.trajectory, ref.trajectory, atol=atol, rtol=0)
    torch.testing.assert_close(got.stats.step_errors, ref.stats.step_errors, atol=atol, rtol=1e-9)
    np.testing.assert_allclose(got.stats.residual_history, ref.stats.residual_history, atol=atol, rtol=1e-9)


@pytest.mark.parametrize("kind,steps,window", [("ddpm", 25, 8), ("ddim", 16, 5), ("dpmsolver++", 12, 4),
                                               ("ddpm", 20, 20), ("ddim", 10, 32)])
@pytest.mark.parametrize("exact_linear", [False, True])
def test_a_read_after_every_round_is_the_host_loop(kind, steps, window, exact_linear):
    rule, x_init, noise = problem(kind, steps)
    host = Picard(window=window, tolerance=0.05, abs_tolerance=1e-4, exact_linear=exact_linear)
    ref = solve_fixed_point(fake_denoiser(), rule, x_init, noise, host)
    got = device_solve(fake_denoiser(), rule, x_init, noise, with_rounds(host))
    assert ref.stats.converged and ref.stats.rounds > 1
    assert_same_solve(got, ref)


@pytest.mark.parametrize("kind", ["ddpm", "dpmsolver++"])
def test_warm_start_inpainting_and_round_cap_match_the_host_loop(kind):
    rule, x_init, noise = problem(kind, 20)
    previous = sample_sequential(fake_denoiser(shift=0.2), rule, x_init, noise).trajectory
    inpaint = known_prefix(torch.full((2, 3), 0.25, dtype=torch.float64), 1, tuple(x_init.shape))
    for max_rounds in (None, 3):
        host = Picard(window=6, tolerance=0.02, abs_tolerance=1e-4, max_rounds=max_rounds)
        kwargs = dict(init_trajectory=previous, inpaint=inpaint)
        ref = solve_fixed_point(fake_denoiser(), rule, x_init, noise, host, **kwargs)
        got = device_solve(fake_denoiser(), rule, x_init, noise, with_rounds(host), **kwargs)
        assert_same_solve(got, ref)
        assert got.stats.init == "warm"
        assert torch.equal(got.sample[:, 1:3], inpaint.values[:, 1:3])
    assert not got.stats.converged and got.stats.rounds == 3  # the capped solve finishes unconverged


@pytest.mark.parametrize("block", [2, 4, 8])
def test_bigger_blocks_change_nothing_but_the_reads(block):
    rule, x_init, noise = problem("ddpm", 30)
    one = Picard(window=10, tolerance=0.05, abs_tolerance=1e-4, rounds_per_sync=1)
    ref = device_solve(fake_denoiser(), rule, x_init, noise, one)
    denoise = fake_denoiser()
    rounds = PicardDeviceRounds(rule, Picard(**{**one.__dict__, "rounds_per_sync": block}), denoise, x_init)
    reads = []
    original_read = rounds.read
    rounds.read = lambda: reads.append(1) or original_read()
    got = rounds.solve(x_init, noise)
    assert_same_solve(got, ref)
    assert len(reads) < ref.stats.rounds  # fewer host reads than rounds
    assert denoise.calls["n"] >= ref.stats.rounds  # the block's rounds past convergence ran, as no-ops
    assert set(denoise.calls["windows"]) == {10}  # one fixed width: converged rows are evaluated and masked


def test_a_second_solve_reuses_the_buffers_and_the_hint_limits_the_block():
    rule, x_init, noise = problem("ddim", 16)
    settings = Picard(window=16, tolerance=0.05, abs_tolerance=1e-4, rounds_per_sync=8)
    rounds = PicardDeviceRounds(rule, settings, fake_denoiser(), x_init)
    buffers = rounds.traj.data_ptr(), rounds.x0.data_ptr()
    first = rounds.solve(x_init, noise)
    ran = []
    second = rounds.solve(x_init, noise, run_rounds=lambda n: ran.append(n) or rounds.run_eagerly(n),
                          rounds_hint=first.stats.rounds)
    assert (rounds.traj.data_ptr(), rounds.x0.data_ptr()) == buffers
    assert torch.equal(second.sample, first.sample) and second.stats.rounds == first.stats.rounds
    assert sum(ran) <= max(first.stats.rounds, 1) + 1 and max(ran) <= 8
    assert first.trajectory.data_ptr() != rounds.traj.data_ptr()  # results do not alias the buffers


def test_block_size_respects_deadline_hint_and_cap():
    assert block_size(8, float("inf"), 0, None) == 8
    assert block_size(8, 5.5, 0, None) == 4  # only 5 rounds fit: a power of two below
    assert block_size(8, float("inf"), 3, 10) == 4  # 7 rounds expected to remain
    assert block_size(8, float("inf"), 12, 10) == 1  # past the hint: one round at a time
    assert block_size(1, 100, 0, 50) == 1


def test_the_deadline_stops_between_blocks():
    rule, x_init, noise = problem("ddpm", 40)
    clock = FakeClock()
    settings = Picard(window=8, tolerance=1e-6, abs_tolerance=None, rounds_per_sync=4)
    res = device_solve(timed(fake_denoiser(), clock), rule, x_init, noise, settings, deadline=6.0, clock=clock,
                       round_time_estimator=seeded(8))
    assert res.stats.deadline_hit and not res.stats.converged
    assert clock.now <= 6.0 + 1e-9  # blocks never ran past the deadline (2.5 s per round: 2 rounds)
    assert res.stats.rounds == 2 and torch.isfinite(res.sample).all()


def test_bad_settings_and_shapes_are_refused():
    rule, x_init, noise = problem("ddim", 10)
    with pytest.raises(ValueError, match="rounds_per_sync"):
        Picard(rounds_per_sync=0)
    with pytest.raises(ValueError, match="rounds_per_sync"):
        PicardDeviceRounds(rule, Picard(), fake_denoiser(), x_init)
    with pytest.raises(ValueError, match="newton has no device-resident rounds"):
        from paradigms_policy.diffusion.newton import Newton
        Newton(rounds_per_sync=2)
    rounds = PicardDeviceRounds(rule, Picard(window=4, rounds_per_sync=2), fake_denoiser(), x_init)
    with pytest.raises(ValueError, match="shape"):
        rounds.solve(x_init[:1], noise[:, :1])


@pytest.mark.parametrize("kind,steps,window", [("ddpm", 30, 30), ("ddpm", 30, 8), ("ddim", 16, 16),
                                               ("dpmsolver++", 12, 5)])
@pytest.mark.parametrize("exact_linear,order_k,history", [(True, None, 2), (False, None, 2), (True, 3, 1),
                                                          (False, 4, 3), (True, None, 0)])
def test_anderson_rounds_on_the_device_are_the_host_loop(kind, steps, window, exact_linear, order_k, history):
    rule, x_init, noise = problem(kind, steps)
    host = Anderson(window=window, tolerance=0.01, abs_tolerance=1e-5, history=history, order_k=order_k,
                    exact_linear=exact_linear)
    ref = solve_fixed_point(fake_denoiser(), rule, x_init, noise, host)
    got = device_solve(fake_denoiser(), rule, x_init, noise, with_rounds(host))
    assert ref.stats.converged and ref.stats.rounds > 2
    assert_same_solve(got, ref, atol=1e-10)
    blocks = device_solve(fake_denoiser(), rule, x_init, noise, with_rounds(host, 4))
    assert_same_solve(blocks, got, atol=0.0)


def test_anderson_device_rounds_warm_inpainted_and_capped():
    rule, x_init, noise = problem("ddpm", 40)
    previous = sample_sequential(fake_denoiser(shift=0.2), rule, x_init, noise).trajectory
    inpaint = known_prefix(torch.full((2, 3), -0.4, dtype=torch.float64), 1, tuple(x_init.shape))
    for max_rounds in (None, 4):
        host = Anderson(window=40, tolerance=0.01, abs_tolerance=1e-5, max_rounds=max_rounds)
        kwargs = dict(init_trajectory=previous, inpaint=inpaint)
        ref = solve_fixed_point(fake_denoiser(), rule, x_init, noise, host, **kwargs)
        got = device_solve(fake_denoiser(), rule, x_init, noise, with_rounds(host), **kwargs)
        assert_same_solve(got, ref, atol=1e-10)
        assert torch.equal(got.sample[:, 1:3], inpaint.values[:, 1:3])


@pytest.mark.parametrize("sampler", ["picard_warm", "anderson_warm"])
def test_policy_with_device_rounds_builds_everything_at_warmup(random_checkpoint, sampler):
    """After warm-up a device-rounds policy allocates nothing: no new buffers, slots or graphs."""
    host = load_policy(random_checkpoint, sampler=sampler, window=8)
    policy = load_policy(random_checkpoint, sampler=sampler, window=8, rounds_per_sync=4)
    policy.warmup()
    assert policy.sampler.on_device_rounds and policy.sampler.device_rounds_built == 1
    created = policy.denoiser.slots_created
    rng = np.random.default_rng(0)
    for cycle in range(3):
        obs = {k: rng.normal(size=(policy.n_obs_steps, *s)).astype(np.float32) for k, s in policy.obs_shapes.items()}
        got = policy.predict_action(obs, n_executed=policy.n_action_steps, seed=cycle)
        ref = host.predict_action(obs, n_executed=host.n_action_steps, seed=cycle)
        assert got.stats.rounds == ref.stats.rounds and got.stats.init == ref.stats.init
        np.testing.assert_allclose(got.action, ref.action, atol=1e-5)
    assert policy.sampler.device_rounds_built == 1 and policy.denoiser.slots_created == created


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("sampler", ["picard_warm", "anderson_warm"])
@pytest.mark.parametrize("kind", ["ddpm", "dpmsolver++"])
def test_captured_rounds_match_eager_rounds_on_cuda(random_checkpoint, kind, sampler):
    """Whole rounds captured as CUDA graphs (blocks of 1, 2, 4) against the same rounds run eagerly."""
    eager = load_policy(random_checkpoint, device="cuda", executor="eager", sampler=sampler, window=8,
                        rounds_per_sync=4, kind=kind, num_inference_steps=20)
    graph = load_policy(random_checkpoint, device="cuda", executor="cuda_graph", sampler=sampler, window=8,
                        rounds_per_sync=4, kind=kind, num_inference_steps=20)
    for policy in (eager, graph):
        policy.warmup()
    assert graph.sampler.round_runner is not None and graph.sampler.round_runner.graphs_captured == 3
    captured = (graph.denoiser.graphs_captured, graph.sampler.round_runner.graphs_captured)
    rng = np.random.default_rng(0)
    for cycle in range(3):
        obs = {k: rng.normal(size=(graph.n_obs_steps, *s)).astype(np.float32) for k, s in graph.obs_shapes.items()}
        a = eager.predict_action(obs, n_executed=eager.n_action_steps, seed=cycle)
        b = graph.predict_action(obs, n_executed=graph.n_action_steps, seed=cycle)
        assert a.stats.rounds == b.stats.rounds
        np.testing.assert_allclose(b.action, a.action, atol=1e-5)
    assert (graph.denoiser.graphs_captured, graph.sampler.round_runner.graphs_captured) == captured
    assert graph.sampler.round_runner.replays > 0
