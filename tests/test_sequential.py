"""Reference sequential sampler: agreement with a manual diffusers loop, trajectory bookkeeping, input checks."""

from __future__ import annotations

import pytest
import torch

from paradigms_policy.diffusion.sequential import draw_noise, sample_sequential
from paradigms_policy.diffusion.step_rules import make_step_rule

SHAPE = (2, 6, 3)  # B, horizon, action_dim


class FakeDenoiser:
    """Denoiser signature: x [W, B, *event], t Long[W] -> [W, B, *event]; counts calls and window sizes."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        d = SHAPE[1] * SHAPE[2]
        self.w = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
        self.v = torch.randn(d, generator=g, dtype=torch.float64)
        self.windows: list[int] = []

    def single(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """x [B, *event] at scalar timestep t."""
        flat = x.reshape(x.shape[0], -1).double()
        return torch.tanh(flat @ self.w + (t / 100.0) * self.v).reshape(x.shape).to(x.dtype)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 1 + len(SHAPE) and t.dtype == torch.long and t.shape == (x.shape[0],)
        self.windows.append(x.shape[0])
        return torch.stack([self.single(x[w], int(t[w])) for w in range(x.shape[0])])


def test_draw_noise_shapes_and_determinism():
    rule = make_step_rule("ddpm", 10)
    x_init, noise = draw_noise(rule, SHAPE, torch.Generator().manual_seed(1))
    assert x_init.shape == SHAPE and noise.shape == (10,) + SHAPE and noise.dtype == torch.float32
    x2, n2 = draw_noise(rule, SHAPE, torch.Generator().manual_seed(1))
    assert torch.equal(x_init, x2) and torch.equal(noise, n2)
    x3, _ = draw_noise(rule, SHAPE, torch.Generator().manual_seed(2), dtype=torch.float64)
    assert x3.dtype == torch.float64 and not torch.allclose(x3.float(), x_init)
    with pytest.raises(ValueError, match="shape"):
        draw_noise(rule, (2, 0, 3))


@pytest.mark.parametrize("kind,steps", [("ddpm", 100), ("ddim", 16), ("dpmsolver++", 10)])
def test_sample_sequential_matches_manual_diffusers_loop(kind, steps):
    diffusers = pytest.importorskip("diffusers")
    common = dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon")
    if kind == "ddpm":
        sched = diffusers.DDPMScheduler(**common, clip_sample=True)
    elif kind == "ddim":
        sched = diffusers.DDIMScheduler(**common, clip_sample=True, set_alpha_to_one=True, steps_offset=0)
    else:
        sched = diffusers.DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    sched.set_timesteps(steps)
    rule = make_step_rule(kind, steps)
    denoise = FakeDenoiser()

    # draw_noise consumes the generator the way diffusers' DDPM loop does (x_init, then one draw per t > 0).
    x_init, noise = draw_noise(rule, SHAPE, torch.Generator().manual_seed(5), dtype=torch.float64)
    result = sample_sequential(denoise, rule, x_init, noise)

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    assert torch.equal(x, x_init)
    states = [x]
    for t in sched.timesteps:
        kwargs = {"generator": gen} if kind == "ddpm" else {}
        x = sched.step(denoise.single(x, int(t)), t, x, **kwargs).prev_sample
        states.append(x)
    ref = torch.stack(states)

    assert result.trajectory.shape == (steps + 1,) + SHAPE
    assert torch.equal(result.trajectory[0], x_init)
    torch.testing.assert_close(result.sample, result.trajectory[-1], rtol=0, atol=0)
    scale = ref.abs().amax(dim=tuple(range(1, ref.dim())), keepdim=True).clamp(min=1.0)
    assert ((result.trajectory - ref).abs() / scale).max() < 1e-4
    assert result.x0_preds is not None and result.x0_preds.shape == (steps,) + SHAPE
    assert result.stats.rounds == steps and result.stats.nfe == steps and result.stats.converged
    assert result.stats.init == "cold" and not result.stats.deadline_hit
    assert denoise.windows == [1] * steps
    assert result.noise is noise


def test_sample_sequential_float32_stays_float32_and_is_deterministic():
    rule = make_step_rule("ddim", 8)
    x_init, noise = draw_noise(rule, SHAPE, torch.Generator().manual_seed(0))
    a = sample_sequential(FakeDenoiser(), rule, x_init, noise)
    b = sample_sequential(FakeDenoiser(), rule, x_init, noise)
    assert a.sample.dtype == torch.float32 and a.trajectory.dtype == torch.float32
    assert torch.equal(a.trajectory, b.trajectory)
    # x0 predictions are clipped to [-1, 1] by default
    assert a.x0_preds.abs().max() <= 1.0


def test_ddpm_noise_changes_the_sample_but_ddim_ignores_it():
    x_init, noise = draw_noise(make_step_rule("ddpm", 10), SHAPE, torch.Generator().manual_seed(0))
    other = torch.randn_like(noise)
    for kind, should_differ in [("ddpm", True), ("ddim", False)]:
        rule = make_step_rule(kind, 10)
        a = sample_sequential(FakeDenoiser(), rule, x_init, noise).sample
        b = sample_sequential(FakeDenoiser(), rule, x_init, other).sample
        assert (not torch.equal(a, b)) == should_differ


def test_sample_sequential_rejects_bad_inputs():
    rule = make_step_rule("ddpm", 10)
    x_init, noise = draw_noise(rule, SHAPE)
    with pytest.raises(ValueError, match="noise must have shape"):
        sample_sequential(FakeDenoiser(), rule, x_init, noise[:-1])
    with pytest.raises(ValueError, match="noise must have shape"):
        sample_sequential(FakeDenoiser(), rule, x_init[:1], noise)
    bad = x_init.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        sample_sequential(FakeDenoiser(), rule, bad, noise)
    with pytest.raises(ValueError, match="match"):
        sample_sequential(FakeDenoiser(), rule, x_init, noise.double())
    with pytest.raises(ValueError, match="denoiser returned shape"):
        sample_sequential(lambda x, t: x[..., :1], rule, x_init, noise)
