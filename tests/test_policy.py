"""Policy: predict_action contract (slice, shapes, seeding, warm start) and clear input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paradigms_policy.policy import ObservationError, PolicyCompatibilityError, load_policy


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: more threads only add contention on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def policy(random_checkpoint):
    return load_policy(random_checkpoint, sampler="ddim_sequential")


def _obs(batch: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    return {"pos": rng.normal(size=(*lead, 2, 2)).astype(np.float32),
            "target": rng.normal(size=(*lead, 2, 3)).astype(np.float32)}


def test_metadata_from_checkpoint(policy):
    assert policy.obs_keys == ["pos", "target"]
    assert (policy.horizon, policy.n_obs_steps, policy.n_action_steps, policy.action_dim) == (8, 2, 4, 2)
    assert policy.shape_meta["obs"]["target"]["shape"] == [3]
    assert policy.sampler.rule.num_steps == 16  # ddim_sequential default


def test_executed_slice_starts_at_last_observation(policy):
    result = policy.predict_action(_obs(), seed=1)
    assert result.action.shape == (4, 2) and result.action_pred.shape == (8, 2)
    assert result.sampler == "ddim_sequential" and result.stats.nfe == 16
    np.testing.assert_array_equal(result.action, result.action_pred[1:5])  # [n_obs_steps - 1 : +n_action_steps]
    assert np.isfinite(result.action_pred).all()


def test_actions_are_unnormalized(policy):
    result = policy.predict_action(_obs(), seed=1)
    normalized = result.result.sample[0]
    expected = policy.normalizer["action"].unnormalize(normalized).numpy()
    np.testing.assert_allclose(result.action_pred, expected, rtol=1e-6)
    # clip_sample keeps normalized actions in [-1, 1], i.e. inside the training data's range
    stats = policy.normalizer["action"].input_stats()
    assert np.all(result.action_pred >= stats["min"].numpy() - 1e-5)
    assert np.all(result.action_pred <= stats["max"].numpy() + 1e-5)


def test_same_seed_same_actions_other_seed_other_actions(policy):
    a = policy.predict_action(_obs(), seed=3).action
    b = policy.predict_action(_obs(), seed=3).action
    c = policy.predict_action(_obs(), seed=4).action
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_observations_condition_the_prediction(policy):
    a = policy.predict_action(_obs(seed=0), seed=3).action
    b = policy.predict_action(_obs(seed=1), seed=3).action
    assert not np.allclose(a, b)


def test_batched_input_gives_batched_chunks(policy):
    batched = policy.predict_action(_obs(batch=3), seed=5)
    assert batched.action.shape == (3, 4, 2) and batched.action_pred.shape == (3, 8, 2)
    assert np.isfinite(batched.action).all()


def test_sequential_ddpm_default_and_sampler_switch(random_checkpoint):
    policy = load_policy(random_checkpoint)
    assert policy.sampler_name == "ddpm_sequential" and policy.sampler.rule.num_steps == 100
    policy.set_sampler("dpmsolver_sequential", num_inference_steps=5)
    result = policy.predict_action(_obs(), seed=0)
    assert result.sampler == "dpmsolver_sequential" and result.stats.nfe == 5


def test_warm_start_shifts_previous_solution(random_checkpoint):
    policy = load_policy(random_checkpoint, sampler="picard_warm")
    policy.warmup()
    assert policy.warm_state.prev is None  # warm-up leaves no warm start behind
    first = policy.predict_action(_obs(), seed=0)
    assert policy.warm_state.prev is first.result
    second = policy.predict_action(_obs(), n_executed=4, seed=1)
    # the kept part of the new problem reuses the previous initial noise, shifted by the executed actions
    torch.testing.assert_close(second.result.trajectory[0][:, :4], first.result.trajectory[0][:, 4:])
    assert second.stats.converged
    policy.reset()
    assert policy.warm_state.prev is None
    with pytest.raises(ValueError, match="n_executed"):
        policy.predict_action(_obs(), n_executed=-1)


def test_deadline_in_the_past_returns_unconverged_but_finite(random_checkpoint):
    import time

    policy = load_policy(random_checkpoint, sampler="picard_cold")
    policy.warmup()
    result = policy.predict_action(_obs(), deadline=time.perf_counter() - 1.0, seed=0)
    assert result.stats.deadline_hit and np.isfinite(result.action).all()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda o: o.pop("target"), r"observation 'target' is missing"),
        (lambda o: o.update(pos=np.zeros((2, 3), np.float32)), r"observation 'pos' has shape \[2, 3\]"),
        (lambda o: o.update(pos=np.zeros((1, 2), np.float32)), r"'pos' has shape \[1, 2\]; expected \[n_obs_steps=2, 2\]"),
        (lambda o: o["pos"].__setitem__((1, 0), np.nan), r"observation 'pos' contains NaN \(first at index \[1, 0\]\)"),
        (lambda o: o["target"].__setitem__((0, 2), np.inf), r"observation 'target' contains inf"),
        (lambda o: o.update(pos=np.array([["a", "b"], ["c", "d"]])), r"observation 'pos' is not a numeric array"),
        (lambda o: o.update(pos=np.zeros((3, 2, 2), np.float32)), r"'pos' is batched unlike the others|'target' is not batched"),
    ],
)
def test_bad_observations_name_key_and_problem(policy, mutate, message):
    obs = _obs()
    mutate(obs)
    with pytest.raises(ObservationError, match=message):
        policy.predict_action(obs)


def test_batch_size_mismatch_and_non_dict(policy):
    obs = _obs(batch=2)
    obs["target"] = obs["target"][:1]
    with pytest.raises(ObservationError, match="batch size"):
        policy.predict_action(obs)
    with pytest.raises(ObservationError, match="dict of arrays"):
        policy.predict_action([1, 2, 3])


def test_check_compatible(policy):
    policy.check_compatible({"pos": (2,), "target": [3], "extra": (7,)}, action_dim=2)
    with pytest.raises(PolicyCompatibilityError, match=r"observation 'target' \[3\] is not provided"):
        policy.check_compatible({"pos": (2,)}, action_dim=2)
    with pytest.raises(PolicyCompatibilityError, match=r"'pos' has shape \[4\], the policy needs \[2\]"):
        policy.check_compatible({"pos": (4,), "target": (3,)}, action_dim=2)
    with pytest.raises(PolicyCompatibilityError, match="action has 7 dims, the policy predicts 2"):
        policy.check_compatible({"pos": (2,), "target": (3,)}, action_dim=7)


def test_image_checkpoint_warms_up_and_acts(tmp_path):
    from conftest import make_random_checkpoint

    path = make_random_checkpoint(tmp_path / "image.pt", obs_shapes={"camera": [3, 40, 40], "pos": [2]},
                                  rgb_keys=("camera",))
    policy = load_policy(path, sampler="ddim_sequential", num_inference_steps=4)
    policy.warmup()
    rng = np.random.default_rng(0)
    out = policy.predict_action({"camera": rng.uniform(0, 1, (2, 3, 40, 40)).astype(np.float32),
                                 "pos": rng.normal(size=(2, 2)).astype(np.float32)}, seed=0)
    assert out.action.shape == (policy.n_action_steps, policy.action_dim)
    assert np.isfinite(out.action).all()


def test_auto_sampler_is_chosen_by_measurement_and_says_why(random_checkpoint):
    from paradigms_policy.diffusion.registry import SAMPLERS

    policy = load_policy(random_checkpoint, sampler="auto", deadline_policy="keep_previous", history=3)
    assert policy.requested_sampler == "auto" and policy.sampler_name in SAMPLERS
    reason = policy.sampler_choice_reason
    assert reason.startswith(f"auto chose {policy.sampler_name}") and "ms" in reason
    assert policy.sampler_choice.expected_s[policy.sampler_name] == min(policy.sampler_choice.expected_s.values())
    if not policy.sampler_name.startswith("anderson"):
        assert "['history']" in reason  # an override that does not apply is dropped and named
    policy.warmup()
    result = policy.predict_action(_obs(), seed=0)
    assert result.sampler == policy.sampler_name and np.isfinite(result.action).all()
    named = load_policy(random_checkpoint, sampler="ddim16_sequential")
    assert named.sampler_choice_reason == "sampler 'ddim16_sequential' requested by name"
    with pytest.raises(ValueError, match="unknown sampler"):
        load_policy(random_checkpoint, sampler="fastest")


@pytest.mark.parametrize("sampler", ["ddim_sequential", "picard_warm", "anderson_warm", "newton_ddim16_warm"])
def test_known_actions_are_held_in_the_predicted_chunk(random_checkpoint, sampler):
    policy = load_policy(random_checkpoint, sampler=sampler, num_inference_steps=10)
    known = np.array([[0.3, -0.2], [0.25, -0.1]], dtype=np.float32)
    free = policy.predict_action(_obs(), seed=3)
    held = policy.predict_action(_obs(), seed=3, known_actions=known)
    start = policy.n_obs_steps - 1
    np.testing.assert_allclose(held.action[:2], known, atol=1e-5)
    np.testing.assert_allclose(held.action_pred[start:start + 2], known, atol=1e-5)
    assert not np.allclose(held.action[2:], free.action[2:], atol=1e-4)  # the rest is solved around them


def test_bad_known_actions_are_rejected_with_a_reason(policy):
    with pytest.raises(ValueError, match="known_actions must be"):
        policy.predict_action(_obs(), known_actions=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="known_actions must be"):
        policy.predict_action(_obs(), known_actions=np.zeros((policy.horizon, 2)))
    with pytest.raises(ValueError, match="NaN"):
        policy.predict_action(_obs(), known_actions=np.full((1, 2), np.nan))
