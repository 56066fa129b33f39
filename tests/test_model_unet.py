"""ConditionalUnet1D: DiffusionPolicy parameter layout, shapes, conditioning and FiLM semantics."""

import math

import pytest
import torch
from torch.nn import functional as F

from paradigms_policy.model import ConditionalUnet1D
from paradigms_policy.model.conditional_unet1d import ConditionalResidualBlock1D, SinusoidalPosEmb

SMALL = dict(
    input_dim=2,
    global_cond_dim=6,
    down_dims=(16, 32),
    diffusion_step_embed_dim=16,
    kernel_size=3,
    n_groups=4,
    cond_predict_scale=True,
)


def _res_block_keys(prefix, c_in, c_out, cond_dim, k, predict_scale):
    """Keys/shapes of DiffusionPolicy's ConditionalResidualBlock1D (written from its structure)."""
    film = 2 * c_out if predict_scale else c_out
    keys = {
        f"{prefix}.blocks.0.block.0.weight": (c_out, c_in, k),
        f"{prefix}.blocks.0.block.0.bias": (c_out,),
        f"{prefix}.blocks.0.block.1.weight": (c_out,),
        f"{prefix}.blocks.0.block.1.bias": (c_out,),
        f"{prefix}.blocks.1.block.0.weight": (c_out, c_out, k),
        f"{prefix}.blocks.1.block.0.bias": (c_out,),
        f"{prefix}.blocks.1.block.1.weight": (c_out,),
        f"{prefix}.blocks.1.block.1.bias": (c_out,),
        f"{prefix}.cond_encoder.1.weight": (film, cond_dim),
        f"{prefix}.cond_encoder.1.bias": (film,),
    }
    if c_in != c_out:
        keys[f"{prefix}.residual_conv.weight"] = (c_out, c_in, 1)
        keys[f"{prefix}.residual_conv.bias"] = (c_out,)
    return keys


def expected_dp_state_shapes(input_dim, global_cond_dim, down_dims, diffusion_step_embed_dim,
                             kernel_size, n_groups, cond_predict_scale, local_cond_dim=None):
    """The state-dict keys and shapes DiffusionPolicy's ConditionalUnet1D would have."""
    d, k = diffusion_step_embed_dim, kernel_size
    cond = d + (global_cond_dim or 0)
    rb = lambda p, ci, co: _res_block_keys(p, ci, co, cond, k, cond_predict_scale)  # noqa: E731
    keys = {
        "diffusion_step_encoder.1.weight": (4 * d, d),
        "diffusion_step_encoder.1.bias": (4 * d,),
        "diffusion_step_encoder.3.weight": (d, 4 * d),
        "diffusion_step_encoder.3.bias": (d,),
    }
    dims = [input_dim, *down_dims]
    if local_cond_dim is not None:
        keys.update(rb("local_cond_encoder.0", local_cond_dim, down_dims[0]))
        keys.update(rb("local_cond_encoder.1", local_cond_dim, down_dims[0]))
    for i in range(len(down_dims)):
        keys.update(rb(f"down_modules.{i}.0", dims[i], dims[i + 1]))
        keys.update(rb(f"down_modules.{i}.1", dims[i + 1], dims[i + 1]))
        if i < len(down_dims) - 1:
            keys[f"down_modules.{i}.2.conv.weight"] = (dims[i + 1], dims[i + 1], 3)
            keys[f"down_modules.{i}.2.conv.bias"] = (dims[i + 1],)
    keys.update(rb("mid_modules.0", down_dims[-1], down_dims[-1]))
    keys.update(rb("mid_modules.1", down_dims[-1], down_dims[-1]))
    # decoder levels go from the deepest skip back up to down_dims[0]
    for j, i in enumerate(reversed(range(1, len(down_dims)))):
        c_skip, c_out = down_dims[i], down_dims[i - 1]
        keys.update(rb(f"up_modules.{j}.0", 2 * c_skip, c_out))
        keys.update(rb(f"up_modules.{j}.1", c_out, c_out))
        keys[f"up_modules.{j}.2.conv.weight"] = (c_out, c_out, 4)  # ConvTranspose1d: [in, out, k]
        keys[f"up_modules.{j}.2.conv.bias"] = (c_out,)
    c0 = down_dims[0]
    keys.update({
        "final_conv.0.block.0.weight": (c0, c0, k),
        "final_conv.0.block.0.bias": (c0,),
        "final_conv.0.block.1.weight": (c0,),
        "final_conv.0.block.1.bias": (c0,),
        "final_conv.1.weight": (input_dim, c0, 1),
        "final_conv.1.bias": (input_dim,),
    })
    return keys


@pytest.mark.parametrize(
    "config",
    [
        SMALL,
        dict(SMALL, local_cond_dim=3),
        dict(SMALL, cond_predict_scale=False, down_dims=(16, 32, 48), kernel_size=5),
        dict(SMALL, global_cond_dim=None),
    ],
    ids=["small", "local_cond", "three_levels_bias_only", "no_global"],
)
def test_state_dict_matches_diffusion_policy_layout(config):
    expected = expected_dp_state_shapes(**config)
    model = ConditionalUnet1D(**config)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert actual == expected

    torch.manual_seed(1)
    foreign = {k: torch.randn(shape) for k, shape in expected.items()}
    fresh = ConditionalUnet1D(**config)
    result = fresh.load_state_dict(foreign, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, foreign[k])


def test_state_dict_with_wrong_key_fails_strict_load():
    model = ConditionalUnet1D(**SMALL)
    state = model.state_dict()
    state["down_modules.0.0.cond_encoder.2.weight"] = state.pop("down_modules.0.0.cond_encoder.1.weight")
    with pytest.raises(RuntimeError):
        ConditionalUnet1D(**SMALL).load_state_dict(state, strict=True)


@pytest.fixture
def small_model():
    torch.manual_seed(0)
    return ConditionalUnet1D(**SMALL).eval()


@pytest.mark.parametrize("horizon", [4, 8, 16])
def test_output_shape(small_model, horizon):
    x = torch.randn(3, horizon, 2)
    out = small_model(x, torch.tensor([0, 5, 99]), global_cond=torch.randn(3, 6))
    assert out.shape == (3, horizon, 2)
    assert torch.isfinite(out).all()


def test_timestep_forms_agree(small_model):
    x = torch.randn(4, 8, 2)
    cond = torch.randn(4, 6)
    with torch.no_grad():
        as_int = small_model(x, 7, global_cond=cond)
        as_scalar = small_model(x, torch.tensor(7), global_cond=cond)
        as_batch = small_model(x, torch.full((4,), 7, dtype=torch.long), global_cond=cond)
        other = small_model(x, 8, global_cond=cond)
    torch.testing.assert_close(as_int, as_scalar)
    torch.testing.assert_close(as_int, as_batch)
    assert not torch.allclose(as_int, other)


def test_batch_elements_are_independent(small_model):
    x = torch.randn(4, 8, 2)
    cond = torch.randn(4, 6)
    t = torch.tensor([1, 20, 40, 90])
    with torch.no_grad():
        whole = small_model(x, t, global_cond=cond)
        parts = torch.cat([small_model(x[i : i + 1], t[i : i + 1], global_cond=cond[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(whole, parts, rtol=1e-5, atol=1e-5)


def test_global_cond_changes_output(small_model):
    x = torch.randn(2, 8, 2)
    cond = torch.randn(2, 6)
    with torch.no_grad():
        a = small_model(x, 3, global_cond=cond)
        b = small_model(x, 3, global_cond=cond + 0.5)
    assert (a - b).abs().max() > 1e-4


def test_local_cond_changes_output():
    torch.manual_seed(0)
    model = ConditionalUnet1D(**dict(SMALL, local_cond_dim=3)).eval()
    x, g = torch.randn(2, 8, 2), torch.randn(2, 6)
    lc = torch.randn(2, 8, 3)
    with torch.no_grad():
        a = model(x, 3, local_cond=lc, global_cond=g)
        b = model(x, 3, local_cond=lc + 1.0, global_cond=g)
    assert a.shape == (2, 8, 2)
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sample=torch.randn(2, 8, 3), global_cond=torch.randn(2, 6)), "sample"),
        (dict(sample=torch.randn(2, 7, 2), global_cond=torch.randn(2, 6)), "horizon"),
        (dict(sample=torch.randn(2, 8, 2), global_cond=None), "global_cond"),
        (dict(sample=torch.randn(2, 8, 2), global_cond=torch.randn(2, 5)), "global_cond"),
        (dict(sample=torch.randn(2, 8, 2), global_cond=torch.randn(2, 6), local_cond=torch.randn(2, 8, 1)), "local_cond"),
    ],
)
def test_bad_input_is_named(small_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_model(timestep=1, **kwargs)


def test_bad_timestep_shape_is_named(small_model):
    with pytest.raises(ValueError, match="timestep"):
        small_model(torch.randn(2, 8, 2), torch.zeros(3, dtype=torch.long), global_cond=torch.randn(2, 6))


def test_sinusoidal_embedding_values():
    emb = SinusoidalPosEmb(8)(torch.tensor([0.0, 2.0]))
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    freqs = torch.tensor([10000 ** (-i / 3) for i in range(4)])
    torch.testing.assert_close(emb[1], torch.cat([torch.sin(2 * freqs), torch.cos(2 * freqs)]))


@pytest.mark.parametrize("predict_scale", [True, False])
def test_residual_block_film_semantics(predict_scale):
    """First half of the FiLM output scales, second half shifts (checkpoint compatibility)."""
    torch.manual_seed(0)
    block = ConditionalResidualBlock1D(3, 8, cond_dim=5, kernel_size=3, n_groups=2,
                                       cond_predict_scale=predict_scale).eval()
    x, cond = torch.randn(2, 3, 6), torch.randn(2, 5)
    sd = block.state_dict()

    def conv_gn_mish(h, i):
        p = f"blocks.{i}.block."
        h = F.conv1d(h, sd[p + "0.weight"], sd[p + "0.bias"], padding=1)
        return F.mish(F.group_norm(h, 2, sd[p + "1.weight"], sd[p + "1.bias"]))

    film = F.linear(F.mish(cond), sd["cond_encoder.1.weight"], sd["cond_encoder.1.bias"])
    h = conv_gn_mish(x, 0)
    if predict_scale:
        h = film[:, :8, None] * h + film[:, 8:, None]
    else:
        h = h + film[:, :, None]
    h = conv_gn_mish(h, 1)
    expected = h + F.conv1d(x, sd["residual_conv.weight"], sd["residual_conv.bias"])
    with torch.no_grad():
        torch.testing.assert_close(block(x, cond), expected)


def test_default_config_parameter_count():
    """DiffusionPolicy's lowdim config (down_dims 256-512-1024, embed 256, k=5) is ~65M params."""
    model = ConditionalUnet1D(input_dim=7, global_cond_dim=2 * 19, down_dims=(64, 128, 256),
                              diffusion_step_embed_dim=128, kernel_size=5, n_groups=8,
                              cond_predict_scale=True)
    n = sum(p.numel() for p in model.parameters())
    # computed from the expected layout, independent of the module code
    expected = sum(math.prod(s) for s in expected_dp_state_shapes(
        7, 38, (64, 128, 256), 128, 5, 8, True).values())
    assert n == expected


def test_second_local_encoder_does_not_affect_output():
    """As in DiffusionPolicy (and its trained checkpoints), only local_cond_encoder[0] is used."""
    torch.manual_seed(0)
    model = ConditionalUnet1D(**dict(SMALL, local_cond_dim=3)).eval()
    x, g, lc = torch.randn(2, 8, 2), torch.randn(2, 6), torch.randn(2, 8, 3)
    with torch.no_grad():
        before = model(x, 3, local_cond=lc, global_cond=g)
        for p in model.local_cond_encoder[1].parameters():
            p.add_(1.0)
        after = model(x, 3, local_cond=lc, global_cond=g)
        for p in model.local_cond_encoder[0].parameters():
            p.add_(1.0)
        changed = model(x, 3, local_cond=lc, global_cond=g)
    torch.testing.assert_close(before, after)
    assert (before - changed).abs().max() > 1e-4
