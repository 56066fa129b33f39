"""Step rules against diffusers' schedulers (test-only dependency), plus batching and input checks."""

from __future__ import annotations

import pytest
import torch

from paradigms_policy.diffusion.step_rules import make_step_rule

diffusers = pytest.importorskip("diffusers")

T_TRAIN = 100
EVENT = (3, 4, 2)  # B, horizon, action_dim
TOL = 1e-5  # relative to max(1, |reference|): unclipped x0 at t=99 reaches ~5e3 (1/sqrt(abar) ~ 2e3)
FREE_TOL = 5e-5  # free-running loop vs diffusers' float32 tables over up to 100 steps (seen: 1.1e-5)


def _close(ours: torch.Tensor, ref: torch.Tensor, tol: float) -> tuple[bool, float]:
    diff = (ours - ref).abs().max().item()
    return diff <= tol * max(1.0, ref.abs().max().item()), diff


class FakeModel:
    """Deterministic float64 'network': fixed random linear map + tanh of (x, timestep)."""

    def __init__(self, dim: int, seed: int = 0, scale: float = 1.5) -> None:
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5
        self.v = torch.randn(dim, generator=g, dtype=torch.float64)
        self.scale = scale

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        """x: [..., B, *event] with any leading dims; t: scalar timestep."""
        flat = x.reshape(*x.shape[:-2], -1)
        tt = torch.as_tensor(t, dtype=torch.float64) / T_TRAIN
        return (self.scale * torch.tanh(flat @ self.w + tt * self.v)).reshape(x.shape)


def _dim() -> int:
    return EVENT[1] * EVENT[2]


def _diffusers_scheduler(kind: str, steps: int, prediction_type: str, clip_sample: bool):
    common = dict(num_train_timesteps=T_TRAIN, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type)
    if kind == "ddpm":
        s = diffusers.DDPMScheduler(**common, clip_sample=clip_sample, variance_type="fixed_small")
    elif kind == "ddim":
        s = diffusers.DDIMScheduler(**common, clip_sample=clip_sample, set_alpha_to_one=True, steps_offset=0)
    else:
        s = diffusers.DPMSolverMultistepScheduler(
            **common, algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True, final_sigmas_type="zero"
        )
    s.set_timesteps(steps)
    return s


def _use_float64_tables(sched) -> None:
    """Replace diffusers' float32 alphas_cumprod by float64 from the same betas (isolates the formulas)."""
    sched.alphas_cumprod = torch.cumprod(1.0 - sched.betas.double(), dim=0)
    if hasattr(sched, "final_alpha_cumprod"):
        sched.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(sched, "one"):
        sched.one = torch.tensor(1.0, dtype=torch.float64)


CASES = [
    # kind, steps, prediction_type, clip_sample, eta
    ("ddpm", 100, "epsilon", True, 0.0),
    ("ddpm", 100, "epsilon", False, 0.0),
    ("ddpm", 100, "sample", True, 0.0),
    ("ddpm", 100, "sample", False, 0.0),
    ("ddpm", 16, "epsilon", True, 0.0),
    ("ddim", 16, "epsilon", True, 0.0),
    ("ddim", 16, "epsilon", True, 0.5),
    ("ddim", 100, "epsilon", True, 0.0),
    ("ddim", 100, "epsilon", False, 0.5),
    ("ddim", 16, "sample", True, 0.5),
    ("ddim", 16, "sample", False, 0.0),
    ("dpmsolver++", 10, "epsilon", False, 0.0),
    ("dpmsolver++", 20, "epsilon", False, 0.0),
    ("dpmsolver++", 20, "sample", False, 0.0),
]


def _run_against_diffusers(kind, steps, prediction_type, clip_sample, eta, float64_tables, tol, free_tol):
    rule = make_step_rule(kind, steps, T_TRAIN, "squaredcos_cap_v2", prediction_type, clip_sample, 1.0, eta)
    sched = _diffusers_scheduler(kind, steps, prediction_type, clip_sample)
    if float64_tables:
        _use_float64_tables(sched)
    assert rule.timesteps.tolist() == sched.timesteps.tolist()
    model = FakeModel(_dim(), seed=1)

    # Same random stream on both sides: x_init first, then one draw per step.
    gen = torch.Generator().manual_seed(7)
    x_init = torch.randn(EVENT, generator=gen, dtype=torch.float64)
    noise = torch.stack([torch.randn(EVENT, generator=gen, dtype=torch.float64) for _ in range(steps)])
    ddpm_gen = torch.Generator().manual_seed(7)
    torch.randn(EVENT, generator=ddpm_gen, dtype=torch.float64)  # skip x_init, as above

    # x_ref: diffusers' loop. Every step of ours is checked from the same input state
    # (teacher forcing: tol applies per step), and an independent free-running loop of
    # ours is checked too (float32 tables in diffusers make it drift slowly; free_tol).
    x_ref, x_free, prev_tf, prev_free = x_init.clone(), x_init.clone(), None, None
    for i, t in enumerate(sched.timesteps):
        idx = torch.tensor([i])
        out_ref = model(x_ref, int(t))
        x_tf, x0_tf = rule.full_step_with_x0(x_ref[None], out_ref[None], idx, noise[i][None], prev_tf)
        out_free = model(x_free, int(rule.timesteps[i]))
        x_free, prev_free = rule.full_step_with_x0(x_free[None], out_free[None], idx, noise[i][None], prev_free)
        x_free = x_free[0]
        prev_tf = x0_tf

        if kind == "ddpm":
            res = sched.step(out_ref, t, x_ref, generator=ddpm_gen)
        elif kind == "ddim":
            res = sched.step(out_ref, t, x_ref, eta=eta, variance_noise=noise[i] if eta > 0 else None)
        else:
            res = sched.step(out_ref, t, x_ref)
        x_ref = res.prev_sample

        if kind != "dpmsolver++":
            ok, diff = _close(x0_tf[0], res.pred_original_sample, tol)
            assert ok, f"x0 differs at step {i}: max abs diff {diff}"
        ok, diff = _close(x_tf[0], x_ref, tol)
        assert ok, f"step {i} (t={int(t)}): max abs diff {diff}, |ref| max {x_ref.abs().max().item()}"
        ok, diff = _close(x_free, x_ref, free_tol)
        assert ok, f"free-running loop, step {i}: max abs diff {diff}, |ref| max {x_ref.abs().max().item()}"
    assert torch.isfinite(x_free).all()


@pytest.mark.parametrize("kind,steps,prediction_type,clip_sample,eta", CASES)
def test_whole_loop_matches_diffusers(kind, steps, prediction_type, clip_sample, eta):
    """diffusers as shipped (float32 tables): agreement to 1e-5 relative to the state's scale."""
    _run_against_diffusers(
        kind, steps, prediction_type, clip_sample, eta, float64_tables=False, tol=TOL, free_tol=FREE_TOL
    )


@pytest.mark.parametrize("kind,steps,prediction_type,clip_sample,eta", [c for c in CASES if c[0] != "dpmsolver++"])
def test_whole_loop_matches_diffusers_with_float64_tables(kind, steps, prediction_type, clip_sample, eta):
    """With diffusers' tables upcast to float64 the formulas agree far below 1e-5 (absolute, for |x| <= 1)."""
    _run_against_diffusers(kind, steps, prediction_type, clip_sample, eta, float64_tables=True, tol=1e-9, free_tol=1e-9)


def test_clipping_is_exercised_by_the_fake_model():
    """Guards the comparisons above: clipping must actually change some x0 predictions."""
    rule = make_step_rule("ddim", 16, clip_sample=True)
    model = FakeModel(_dim(), seed=1)
    x = torch.randn(EVENT, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    raw = (x - rule.tables["sqrt_one_minus_alpha_bar"][0] * model(x, int(rule.timesteps[0]))) / rule.tables[
        "sqrt_alpha_bar"
    ][0]
    assert raw.abs().max() > 1.0


@pytest.mark.parametrize("beta_schedule", ["squaredcos_cap_v2", "linear", "scaled_linear"])
def test_schedule_tables_match_diffusers(beta_schedule):
    rule = make_step_rule("ddpm", T_TRAIN, beta_schedule=beta_schedule)
    sched = diffusers.DDPMScheduler(num_train_timesteps=T_TRAIN, beta_schedule=beta_schedule)
    assert rule.schedule.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(rule.schedule.betas, sched.betas.double(), rtol=0, atol=0)
    torch.testing.assert_close(rule.schedule.alphas_cumprod, sched.alphas_cumprod.double(), rtol=1e-6, atol=1e-9)


def test_ddpm_noise_std_and_error_var_match_diffusers_variance():
    rule = make_step_rule("ddpm", 100)
    sched = _diffusers_scheduler("ddpm", 100, "epsilon", True)
    var = torch.stack([sched._get_variance(int(t)) for t in sched.timesteps]).double()
    torch.testing.assert_close(rule.error_var, var, rtol=1e-4, atol=1e-12)  # float32 cancellation in diffusers
    expected_std = torch.where(rule.timesteps > 0, var.sqrt(), torch.zeros_like(var))
    torch.testing.assert_close(rule.noise_std, expected_std, rtol=1e-4, atol=1e-9)
    assert rule.noise_std[-1] == 0 and (rule.noise_std[:-1] > 0).all()


@pytest.mark.parametrize("kind,eta", [("ddim", 0.0), ("dpmsolver++", 0.0)])
def test_ode_rules_add_no_noise_but_keep_error_var(kind, eta):
    rule = make_step_rule(kind, 15, eta=eta)
    assert not rule.stochastic and (rule.noise_std == 0).all()
    assert (rule.error_var >= 1e-20).all() and (rule.error_var[:-1] > 1e-6).all()
    assert rule.order == (2 if kind == "dpmsolver++" else 1)


def test_dpm_solver_second_order_only_between_first_and_last_step():
    rule = make_step_rule("dpmsolver++", 10)
    assert rule.needs_prev.tolist() == [False] + [True] * 8 + [False]


@pytest.mark.parametrize(
    "kind,eta,prediction_type", [("ddpm", 0.0, "epsilon"), ("ddim", 0.5, "sample"), ("dpmsolver++", 0.0, "epsilon")]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_mixed_indices_equal_per_index_steps(kind, eta, prediction_type, dtype):
    rule = make_step_rule(kind, 20, eta=eta, prediction_type=prediction_type)
    g = torch.Generator().manual_seed(3)
    idx = torch.tensor([5, 0, 19, 5, 11, 1, 18])
    n = idx.shape[0]
    x = torch.randn((n,) + EVENT, generator=g, dtype=dtype) * 2
    out = torch.randn((n,) + EVENT, generator=g, dtype=dtype) * 2
    noise = torch.randn((n,) + EVENT, generator=g, dtype=dtype)
    prev_x0 = torch.randn((n,) + EVENT, generator=g, dtype=dtype)
    batched = rule.full_step(x, out, idx, noise, prev_x0)
    assert batched.dtype == dtype
    for j in range(n):
        single = rule.full_step(x[j : j + 1], out[j : j + 1], idx[j : j + 1], noise[j : j + 1], prev_x0[j : j + 1])
        torch.testing.assert_close(batched[j : j + 1], single, rtol=0, atol=0)
    # Distinct steps really give distinct results (coefficients are gathered per element).
    assert not torch.allclose(batched[0], rule.full_step(x[:1], out[:1], idx[2:3], noise[:1], prev_x0[:1])[0])


def test_step_equals_full_step_without_clipping():
    rule = make_step_rule("ddim", 10, clip_sample=False)
    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(4, 2, 3, generator=g), torch.randn(4, 2, 3, generator=g)
    idx = torch.tensor([0, 3, 7, 9])
    x0 = rule.predict_x0(x, out, idx)
    torch.testing.assert_close(rule.step(x, x0, idx), rule.full_step(x, out, idx), rtol=1e-5, atol=1e-5)


def test_dpm_prev_x0_ignored_on_first_order_steps():
    rule = make_step_rule("dpmsolver++", 10)
    x, x0 = torch.randn(2, 5), torch.randn(2, 5)
    idx = torch.tensor([0, 9])
    a = rule.step(x, x0, idx)
    b = rule.step(x, x0, idx, prev_x0=torch.full_like(x, float("nan")))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[1], x0[1])  # final step (sigma = 0) lands exactly on x0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="kind"):
        make_step_rule("euler", 10)
    with pytest.raises(ValueError, match="prediction_type"):
        make_step_rule("ddpm", 10, prediction_type="v_prediction")
    with pytest.raises(ValueError, match="num_inference_steps"):
        make_step_rule("ddpm", 101)
    with pytest.raises(ValueError, match="beta_schedule"):
        make_step_rule("ddpm", 10, beta_schedule="cosine")
    with pytest.raises(ValueError, match="eta"):
        make_step_rule("ddpm", 10, eta=0.5)
    rule = make_step_rule("ddpm", 10)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="out of range"):
        rule.full_step(x, x, torch.tensor([0, 10]), torch.zeros_like(x))
    with pytest.raises(ValueError, match="idx"):
        rule.full_step(x, x, torch.tensor([0]), torch.zeros_like(x))
    with pytest.raises(ValueError, match="shape"):
        rule.full_step(x, torch.zeros(2, 4), torch.tensor([0, 1]), torch.zeros_like(x))
    with pytest.raises(ValueError, match="noise is required"):
        rule.full_step(x, x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="prev_x0 is required"):
        make_step_rule("dpmsolver++", 10).step(x, x, torch.tensor([0, 1]))


@pytest.mark.parametrize("kind,eta", [("ddpm", 0.0), ("ddim", 0.7)])
def test_deterministic_part_plus_noise_term_is_the_full_step(kind, eta):
    rule = make_step_rule(kind, 12, eta=eta)
    g = torch.Generator().manual_seed(4)
    idx = torch.tensor([0, 4, 11])
    x, out, z = (torch.randn(3, 2, 5, generator=g, dtype=torch.float64) for _ in range(3))
    mean = rule.full_step(x, out, idx, deterministic=True)
    full = rule.full_step(x, out, idx, z)
    torch.testing.assert_close(full, mean + rule.coef("noise_std", idx, x) * z)
    assert rule.coef("noise_std", idx, x).shape == (3, 1, 1)
    assert (rule.coef("noise_std", idx, x)[:2] > 0).all()
    with pytest.raises(ValueError, match="deterministic"):
        rule.full_step(x, out, idx, z, deterministic=True)


def test_dpm_prev_x0_equal_to_x0_forces_first_order():
    rule = make_step_rule("dpmsolver++", 10)
    g = torch.Generator().manual_seed(5)
    x, x0, prev = (torch.randn(1, 4, generator=g, dtype=torch.float64) for _ in range(3))
    idx = torch.tensor([4])
    first = rule.step(x, x0, idx, prev_x0=x0)
    torch.testing.assert_close(first, rule.coef("c_x", idx, x) * x + rule.coef("c_x0", idx, x) * x0)
    assert not torch.allclose(first, rule.step(x, x0, idx, prev_x0=prev))
