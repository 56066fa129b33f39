"""LinearNormalizer: fitting, exact inversion, constant dims, gaussian mode, state-dict round trip."""

import numpy as np
import pytest
import torch

from paradigms_policy.model import LinearNormalizer


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    obs = rng.uniform(-3.0, 5.0, size=(200, 2, 4)).astype(np.float32)  # [N, T, D]
    obs[..., 2] = 0.25  # a constant dimension
    action = (rng.normal(size=(200, 7)) * np.arange(1, 8)).astype(np.float32)
    return {"obs": obs, "action": action}


@pytest.fixture
def fitted(data):
    return LinearNormalizer().fit(data)


def test_limits_maps_fitted_data_to_unit_range(fitted, data):
    out = fitted.normalize("action", data["action"])
    assert isinstance(out, torch.Tensor) and out.shape == data["action"].shape
    torch.testing.assert_close(out.min(dim=0).values, torch.full((7,), -1.0))
    torch.testing.assert_close(out.max(dim=0).values, torch.full((7,), 1.0))


def test_round_trip_is_exact(fitted, data):
    for key, value in data.items():
        back = fitted.unnormalize(key, fitted.normalize(key, value))
        torch.testing.assert_close(back, torch.from_numpy(value), rtol=1e-6, atol=1e-6)


def test_constant_dim_maps_to_middle_with_unit_scale(fitted, data):
    field = fitted["obs"]
    out = field.normalize(data["obs"])
    assert torch.all(out[..., 2] == 0.0)
    assert field.scale[2] == 1.0
    # a nearby value keeps its distance (unit scale), so unnormalize stays exact off the data too
    torch.testing.assert_close(field.normalize(np.full((1, 4), 0.75, np.float32))[0, 2], torch.tensor(0.5))
    other = out[..., [0, 1, 3]]
    assert other.min() == pytest.approx(-1.0, abs=1e-6) and other.max() == pytest.approx(1.0, abs=1e-6)


def test_custom_output_range(data):
    norm = LinearNormalizer().fit({"a": data["action"]}, output_min=0.0, output_max=2.0)
    out = norm.normalize("a", data["action"])
    assert out.min().item() == pytest.approx(0.0, abs=1e-6)
    assert out.max().item() == pytest.approx(2.0, abs=1e-6)
    const = LinearNormalizer().fit({"c": np.ones((5, 2))}, output_min=0.0, output_max=2.0)
    torch.testing.assert_close(const.normalize("c", np.ones((1, 2))), torch.ones(1, 2))


def test_gaussian_mode(data):
    norm = LinearNormalizer().fit(data, mode="gaussian")
    out = norm.normalize("action", data["action"])
    torch.testing.assert_close(out.mean(dim=0), torch.zeros(7), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=0), torch.ones(7), atol=1e-5, rtol=0)
    obs = norm["obs"].normalize(data["obs"])
    assert torch.all(obs[..., 2] == 0.0)  # constant dim: unit scale, mean removed
    torch.testing.assert_close(norm.unnormalize("obs", obs), torch.from_numpy(data["obs"]), atol=1e-5, rtol=0)


def test_input_stats_are_kept(fitted, data):
    stats = fitted["action"].input_stats()
    a = torch.from_numpy(data["action"])
    torch.testing.assert_close(stats["min"], a.min(dim=0).values)
    torch.testing.assert_close(stats["max"], a.max(dim=0).values)
    torch.testing.assert_close(stats["mean"], a.mean(dim=0))
    torch.testing.assert_close(stats["std"], a.std(dim=0))
    assert set(fitted.input_stats()) == {"obs", "action"}


def test_dict_form_and_torch_input(fitted, data):
    batch = {k: torch.from_numpy(v[:3]) for k, v in data.items()}
    out = fitted.normalize(batch)
    assert set(out) == {"obs", "action"}
    torch.testing.assert_close(out["action"], fitted["action"].normalize(data["action"][:3]))
    back = fitted.unnormalize(out)
    torch.testing.assert_close(back["obs"], batch["obs"], atol=1e-6, rtol=1e-6)


def test_state_dict_round_trip_into_empty_normalizer(fitted, data):
    state = fitted.state_dict()
    # DiffusionPolicy's layout
    assert "params_dict.action.scale" in state and "params_dict.obs.input_stats.std" in state
    fresh = LinearNormalizer()
    fresh.load_state_dict(state)
    assert fresh.keys() == fitted.keys()
    for key, value in data.items():
        torch.testing.assert_close(fresh.normalize(key, value), fitted.normalize(key, value))
    restored = LinearNormalizer.from_state_dict(state)
    torch.testing.assert_close(restored["obs"].input_stats()["mean"], fitted["obs"].input_stats()["mean"])


def test_state_dict_round_trip_as_submodule(fitted, data):
    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.normalizer = LinearNormalizer()
            self.lin = torch.nn.Linear(2, 2)

    src = Holder()
    src.normalizer = fitted
    dst = Holder()
    result = dst.load_state_dict(src.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(dst.normalizer.normalize("action", data["action"]),
                               fitted.normalize("action", data["action"]))


def test_state_dict_with_stray_key_fails_strict(fitted):
    state = fitted.state_dict()
    state["bogus"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="bogus"):
        LinearNormalizer().load_state_dict(state, strict=True)


def test_parameters_are_frozen(fitted):
    assert all(not p.requires_grad for p in fitted.parameters())


def test_missing_key_names_it(fitted):
    with pytest.raises(KeyError, match="gripper"):
        fitted.normalize("gripper", np.zeros((1, 2)))
    with pytest.raises(KeyError, match="gripper"):
        fitted["gripper"]
    with pytest.raises(KeyError, match="gripper"):
        fitted.normalize({"gripper": np.zeros((1, 2))})


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[np.nan, 1.0]]), "NaN"),
        (np.zeros((0, 3)), "empty"),
    ],
)
def test_fit_rejects_bad_data(bad, match):
    with pytest.raises(ValueError, match=match):
        LinearNormalizer().fit({"x": bad})


def test_wrong_last_dim_is_named(fitted):
    with pytest.raises(ValueError, match="action"):
        fitted.normalize("action", np.zeros((2, 6)))


def test_unknown_mode_rejected(data):
    with pytest.raises(ValueError, match="mode"):
        LinearNormalizer().fit(data, mode="minmax")
