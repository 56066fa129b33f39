"""The policy node's one table of parameters (ros/node_params.py): config/policy.yaml equals its defaults,
sampler settings keep "not set" apart from 0, configure-only parameters, and the budget check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from paradigms_policy.ros.node_params import (
    CONFIGURE_ONLY,
    NOT_SET,
    PARAM_SPECS,
    PolicyNodeParams,
    check_budget,
    check_params,
    check_value,
    configure_only_changes,
    params_table_names,
    with_changes,
)

REPO = Path(__file__).resolve().parent.parent


def test_config_file_equals_the_table_defaults_value_and_type():
    values = yaml.safe_load((REPO / "config" / "policy.yaml").read_text())["paradigms_policy_node"]["ros__parameters"]
    assert list(values) == [spec.name for spec in PARAM_SPECS]  # same names, same order as the table
    for spec in PARAM_SPECS:
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        assert values[spec.name] == default and type(values[spec.name]) is type(default), spec.name


def test_one_table_gives_the_typed_parameters_and_valid_defaults():
    assert params_table_names() == [spec.name for spec in PARAM_SPECS]
    defaults = PolicyNodeParams.defaults()
    assert check_params(defaults) == []
    assert (defaults.latency_budget_ms, defaults.control_rate_hz, defaults.max_obs_age_ms) == (200.0, 20.0, 250.0)
    assert all(spec.description for spec in PARAM_SPECS)
    assert "Changes only while unconfigured" in next(s for s in PARAM_SPECS if s.name == "joint_names").full_description


def test_table_types_are_rcl_parameter_types_and_descriptors_build():
    pytest.importorskip("rcl_interfaces.msg")
    from rcl_interfaces.msg import ParameterType

    assert {s.type for s in PARAM_SPECS} <= {ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_INTEGER,
                                             ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_BOOL,
                                             ParameterType.PARAMETER_INTEGER_ARRAY,
                                             ParameterType.PARAMETER_STRING_ARRAY}
    for spec in PARAM_SPECS:
        descriptor = spec.descriptor()
        assert descriptor.type == spec.type and descriptor.description == spec.full_description
    tolerance = next(s for s in PARAM_SPECS if s.name == "sampler_tolerance").descriptor()
    assert tolerance.floating_point_range[0].from_value == -1.0  # the not-set value is inside the ROS range


def test_the_table_imports_without_rclpy():
    code = ("import sys; import paradigms_policy.ros.node_params, paradigms_policy.ros.limits, "
            "paradigms_policy.ros.fault_action, paradigms_policy.ros.log_throttle; "
            "assert 'rclpy' not in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_sampler_settings_not_set_is_minus_one_and_zero_is_exact():
    params = PolicyNodeParams.defaults()
    assert params.sampler_settings().tolerance is None and params.sampler_tolerance == NOT_SET
    exact = with_changes(params, {"sampler_tolerance": 0.0, "sampler_abs_tolerance": 0.0})
    assert exact.sampler_settings().overrides() == {"tolerance": 0.0, "abs_tolerance": 0.0,
                                                    "deadline_policy": "ddim_fallback"}
    assert check_value("sampler_tolerance", -1.0) is None and check_value("sampler_tolerance", 0.0) is None
    assert "or -1 (not set)" in check_value("sampler_tolerance", -0.5)
    assert "or -1 (not set)" in check_value("sampler_steps", 0)


@pytest.mark.parametrize("changes, fragment", [
    ({"unit_norm_keys": ["object_quat"]}, "unit_norm_keys ['object_quat'] are not in obs_keys"),
    ({"hold_action_dims": [7]}, "hold_action_dims [7] are not dimensions of the 7 action_names"),
    ({"hold_action_dims": [6, 6]}, "hold_action_dims repeats [6]"),
    ({"on_input_fault": "freeze"}, "unknown value(s) ['freeze']"),
    ({"obs_limit_margin": -2.0}, "obs_limit_margin=-2.0 is outside"),
])
def test_new_parameters_are_checked(changes, fragment):
    assert any(fragment in p for p in check_params(with_changes(PolicyNodeParams.defaults(), changes)))


def test_configure_only_parameters_are_named_when_they_would_change():
    params = PolicyNodeParams.defaults()
    assert {"control_rate_hz", "joint_names", "action_names", "checkpoint", "obs_topics"} <= CONFIGURE_ONLY
    assert not {"latency_budget_ms", "sampler", "obs_limit_margin", "on_input_fault"} & CONFIGURE_ONLY
    swapped = list(reversed(params.joint_names))
    assert configure_only_changes(params, {"joint_names": swapped, "control_rate_hz": 10.0,
                                           "latency_budget_ms": 100.0}) == ["control_rate_hz", "joint_names"]
    assert configure_only_changes(params, {"joint_names": list(params.joint_names), "control_rate_hz": 20}) == []


def test_a_budget_that_cannot_fit_one_measured_round_is_refused_with_the_round_time():
    params = with_changes(PolicyNodeParams.defaults(), {"latency_budget_ms": 1.0})
    reason = check_budget(params, round_s=0.040, width_one_s=0.009, window=100)
    assert "latency_budget_ms=1 cannot fit one solver round of anderson_warm" in reason
    assert "a one-step round (ddim_fallback) measured 9.0 ms" in reason and "Use at least 19 ms" in reason
    publish = with_changes(params, {"deadline_policy": "publish"})
    assert "a 100-step round measured 40.0 ms" in check_budget(publish, 0.040, 0.009, 100)
    assert check_budget(with_changes(params, {"latency_budget_ms": 19.0}), 0.040, 0.009, 100) is None
    assert check_budget(params, None, None, 100) is None  # nothing measured: the solve-time guard decides
