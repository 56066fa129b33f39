"""Plausibility limits from a checkpoint's normalizer statistics (ros/limits.py) and the input check using them."""

from __future__ import annotations

import numpy as np
import pytest

from paradigms_policy.ros.limits import ActionLimits, ObservationLimits, RangeLimits

STATS = {
    "pos": {"min": np.array([0.0, -1.0]), "max": np.array([1.0, 1.0])},
    "quat": {"min": np.array([-1.0, -1.0, -1.0, 0.5]), "max": np.array([1.0, 1.0, 1.0, 1.0])},
    "flat": {"min": np.array([0.3]), "max": np.array([0.3])},  # constant in training
}


def limits(margin=1.0, **kw) -> ObservationLimits:
    return ObservationLimits.from_stats(STATS, margin, unit_norm_keys=["quat"], **kw)


def test_training_range_widened_by_the_margin_on_each_side():
    lim = limits(0.5).ranges["pos"]
    np.testing.assert_allclose(lim.low, [-0.5, -2.0])
    np.testing.assert_allclose(lim.high, [1.5, 2.0])
    assert limits().check("pos", np.array([1.99, -2.99])) is None
    flat = limits(1.0).ranges["flat"]  # a constant dimension gets a width of 2 (normalized units)
    np.testing.assert_allclose([flat.low[0], flat.high[0]], [-1.7, 2.3])


def test_finite_garbage_is_rejected_naming_key_value_and_range():
    violation = limits().check("quat", np.full(4, -1e30))
    assert violation.kind == "out_of_range"
    assert "key 'quat' dim 0 = -1e+30 is outside the plausible range [-3, 3]" in violation.message
    assert "training range [-1, 1]" in violation.message and "4 of 4 value(s) outside" in violation.message
    history = np.zeros((2, 2))
    history[1, 1] = 5.0
    assert "dim 1 at [1] = 5" in limits().check("pos", history).message


def test_quaternions_must_have_unit_norm():
    assert limits().check("quat", np.array([0.0, 0.0, 0.0, 1.0])) is None
    violation = limits().check("quat", np.array([0.5, 0.5, 0.5, 1.0]))
    assert violation.kind == "not_unit_norm" and "norm 1.323" in violation.message
    assert limits(unit_norm_tolerance=0.5).check("quat", np.array([0.5, 0.5, 0.5, 1.0])) is None


def test_a_negative_margin_turns_the_range_check_off_but_not_the_norm_check():
    off = limits(-1.0)
    assert off.check("pos", np.array([1e30, 0.0])) is None
    assert off.check("quat", np.full(4, 1e3)).kind == "not_unit_norm"


def test_non_finite_values_and_bad_ranges():
    assert limits().check("pos", np.array([np.nan, 0.0])).kind == "not_finite"
    with pytest.raises(ValueError, match="min <= max"):
        RangeLimits.widen("x", [1.0], [0.0], 1.0)


def test_action_limits_refuse_non_finite_and_out_of_range_chunks_naming_the_action():
    actions = ActionLimits([-1.0, -1.0], [1.0, 1.0], 0.1, names=["dx", "gripper"])
    chunk = np.zeros((16, 2))
    assert actions.check(chunk) is None
    chunk[3, 1] = 1.5
    assert "action 'gripper' (dim 1) at [3] = 1.5 is outside the plausible range [-1.2, 1.2]" in actions.check(chunk).message
    chunk[0, 0] = np.inf
    assert actions.check(chunk).kind == "not_finite"
    assert ActionLimits([-1.0], [1.0], -1.0).check(np.full((2, 1), 50.0)) is None  # disabled: only NaN/inf


def test_the_shipped_checkpoints_recorded_episodes_pass_its_limits():
    """Good data must not be rejected: every observation of the held-out Lift episodes is plausible."""
    from paradigms_policy import paths
    from paradigms_policy.checkpoint import build_normalizer, load_checkpoint

    checkpoint = load_checkpoint(paths.default_checkpoint(), map_location="cpu")
    stats = build_normalizer(checkpoint).input_stats()
    keys = list(checkpoint["shape_meta"]["obs"])
    obs_limits = ObservationLimits.from_stats(stats, 1.0, keys=keys, unit_norm_keys=["robot0_eef_quat"])
    episodes = np.load(paths.default_checkpoint().with_suffix(".episode.npz"))
    for key in keys:
        for step in episodes[key]:
            assert obs_limits.check(key, step) is None, key
    action_limits = ActionLimits.from_stats(stats["action"], 0.1)
    assert action_limits.check(episodes["action"]) is None
    quat = obs_limits.check("robot0_eef_quat", np.full(4, -1e30))
    assert quat is not None and "'robot0_eef_quat'" in quat.message


def test_message_to_obs_rejects_implausible_values_with_the_topic_and_kind():
    pytest.importorskip("std_msgs.msg")
    from paradigms_policy.ros.conversions import array_to_multiarray
    from paradigms_policy.ros.inputs import InputSpec, message_to_obs
    from paradigms_policy.ros.observation_buffer import InputError

    spec = InputSpec(topic="robot/obs/quat", key="quat", kind="float32_multi_array", shape=(4,))
    ok = message_to_obs(spec, array_to_multiarray(np.array([0, 0, 0, 1], np.float32)), [], limits())
    assert ok.dtype == np.float32 and ok.tolist() == [0, 0, 0, 1]
    with pytest.raises(InputError) as info:
        message_to_obs(spec, array_to_multiarray(np.full(4, -1e30, np.float32)), [], limits())
    assert info.value.topic == "robot/obs/quat" and info.value.kind == "out_of_range"
    with pytest.raises(InputError) as info:
        message_to_obs(spec, array_to_multiarray(np.array([0, np.nan, 0, 1], np.float32)), [], limits())
    assert info.value.kind == "not_finite"
    with pytest.raises(InputError) as info:
        message_to_obs(spec, array_to_multiarray(np.zeros(3, np.float32)), [], limits())
    assert info.value.kind == "message"
