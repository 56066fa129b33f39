"""Policy-node parameters, input specs and diagnostics: pure functions on message objects."""

from __future__ import annotations

import py_compile
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rcl_interfaces.msg")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from paradigms_policy.ros.conversions import array_to_image, array_to_multiarray, vector_to_joint_state  # noqa: E402
from paradigms_policy.ros.diagnostics import CycleRecord, CycleStats, status_values  # noqa: E402
from paradigms_policy.ros.inputs import InputSpec, build_specs, history_to_obs, message_to_obs  # noqa: E402
from paradigms_policy.ros.node_params import (  # noqa: E402
    PARAM_SPECS,
    PolicyNodeParams,
    check_params,
    check_value,
    with_changes,
)
from paradigms_policy.sampler_settings import SAMPLER_KINDS  # noqa: E402
from paradigms_policy.ros.observation_buffer import InputError, Stamped  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHAPE_META = {"obs": {"object": {"shape": [10], "type": "low_dim"},
                      "robot0_gripper_qpos": {"shape": [2], "type": "low_dim"},
                      "agentview_image": {"shape": [3, 4, 5], "type": "rgb"}},
              "action": {"shape": [7]}}


def yaml_params() -> PolicyNodeParams:
    values = yaml.safe_load((REPO / "config" / "policy.yaml").read_text())["paradigms_policy_node"]["ros__parameters"]
    return with_changes(PolicyNodeParams.defaults(), values)


def test_sampler_kinds_match_the_sampler_registry():
    from paradigms_policy.diffusion.samplers import SAMPLER_NAMES

    assert set(SAMPLER_KINDS) == set(SAMPLER_NAMES)


def test_descriptors_carry_descriptions_and_ranges():
    specs = {s.name: s.descriptor() for s in PARAM_SPECS}
    assert all(d.description for d in specs.values())
    budget = specs["latency_budget_ms"].floating_point_range[0]
    assert budget.from_value > 0
    assert specs["anderson_history"].integer_range[0].from_value == -1  # -1: not set


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("sampler", "bogus", "unknown value"),
        ("latency_budget_ms", 0.0, "outside"),
        ("control_rate_hz", 5000.0, "outside"),
        ("obs_types", ["float32_multi_array", "pointcloud"], "pointcloud"),
        ("device", "tpu", "device"),
    ],
)
def test_single_values_are_checked(name, value, fragment):
    assert fragment in check_value(name, value)


def test_cross_checks_name_the_problem():
    params = yaml_params()
    assert any("same length" in p for p in check_params(with_changes(params, {"obs_keys": ["object"]})))
    assert any("not one of obs_topics" in p for p in check_params(with_changes(params, {"tick_on_topic": "/x"})))
    assert any("repeats" in p for p in check_params(with_changes(params, {"joint_names": ["a", "a"]})))


def test_sampler_overrides_follow_the_kind():
    params = yaml_params()
    anderson = with_changes(params, {"sampler": "anderson_warm", "sampler_window": 8, "sampler_steps": 50,
                                     "anderson_history": 3})
    assert anderson.sampler_settings().overrides() == {"num_inference_steps": 50, "window": 8,
                                                       "history": 3, "deadline_policy": "ddim_fallback"}
    tight = with_changes(params, {"sampler": "picard_warm", "sampler_tolerance": 0.05, "sampler_abs_tolerance": 0.0})
    assert tight.sampler_settings().overrides() == {"tolerance": 0.05, "abs_tolerance": 0.0,
                                                    "deadline_policy": "ddim_fallback"}
    on_device = with_changes(params, {"sampler": "picard_warm", "rounds_per_sync": 8})
    assert on_device.sampler_settings().overrides() == {"rounds_per_sync": 8, "deadline_policy": "ddim_fallback"}
    sequential = with_changes(params, {"sampler": "ddim_sequential", "sampler_tolerance": 0.05})
    assert sequential.sampler_settings().overrides() == {}
    assert sequential.sampler_settings().ignored() == ["tolerance", "deadline_policy"]


def test_build_specs_rejects_a_checkpoint_that_does_not_fit():
    with pytest.raises(ValueError, match=r"needs observation key\(s\) \['agentview_image'\]"):
        build_specs(["/o", "/g"], ["object", "robot0_gripper_qpos"], ["float32_multi_array", "joint_state"],
                    SHAPE_META, ["f1", "f2"])
    with pytest.raises(ValueError, match="3 joint_names for key 'robot0_gripper_qpos'"):
        build_specs(["/o", "/g", "/c"], ["object", "robot0_gripper_qpos", "agentview_image"],
                    ["float32_multi_array", "joint_state", "image"], SHAPE_META, ["f1", "f2", "f3"])
    with pytest.raises(ValueError, match="rgb image in the checkpoint"):
        build_specs(["/o", "/g", "/c"], ["object", "robot0_gripper_qpos", "agentview_image"],
                    ["float32_multi_array", "joint_state", "float32_multi_array"], SHAPE_META, ["f1", "f2"])
    specs = build_specs(["/o", "/g", "/c"], ["object", "robot0_gripper_qpos", "agentview_image"],
                        ["float32_multi_array", "joint_state", "image"], SHAPE_META, ["f1", "f2"])
    assert [s.shape for s in specs] == [(10,), (2,), (3, 4, 5)]


def yuv_image():
    msg = array_to_image(np.zeros((4, 5), np.uint8), "mono8")
    msg.encoding = "yuv422"
    return msg


IMAGE = InputSpec(topic="/camera", key="agentview_image", kind="image", shape=(3, 4, 5))
ARRAY = InputSpec(topic="/object", key="object", kind="float32_multi_array", shape=(10,))


@pytest.mark.parametrize(
    "spec, message, fragment",
    [
        (IMAGE, array_to_image(np.zeros((8, 8, 3), np.uint8)), "expects [C,H,W] = [3, 4, 5]"),
        (IMAGE, array_to_image(np.zeros((4, 5), np.uint8), "mono8"), "1 channel"),
        (IMAGE, yuv_image(), "unsupported image encoding 'yuv422'"),
        (ARRAY, array_to_multiarray(np.full(10, np.inf, np.float32)), "NaN/inf"),
        (ARRAY, array_to_multiarray(np.zeros((2, 5), np.float32)), "expects [10]"),
    ],
)
def test_bad_messages_raise_input_error_naming_the_topic(spec, message, fragment):
    with pytest.raises(InputError) as info:
        message_to_obs(spec, message, [])
    assert info.value.topic == spec.topic and fragment in str(info.value)


def test_checked_messages_stack_into_observation_histories():
    image = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
    joints = InputSpec(topic="/g", key="robot0_gripper_qpos", kind="joint_state", shape=(2,))
    history = {
        "/camera": [Stamped(array_to_image(image, "bgr8"), 0.0)] * 2,
        "/object": [Stamped(array_to_multiarray(np.arange(10, dtype=np.float32)), 0.0),
                    Stamped(array_to_multiarray(np.arange(10, dtype=np.float32) + 1), 0.1)],
        "/g": [Stamped(vector_to_joint_state([2.0, 1.0], ["f2", "f1"]), 0.0)] * 2,
    }
    checked = {topic: [Stamped(message_to_obs(spec, item.message, ["f1", "f2"]), item.stamp) for item in items]
               for spec in (IMAGE, ARRAY, joints) for topic, items in history.items() if topic == spec.topic}
    obs = history_to_obs([IMAGE, ARRAY, joints], checked)
    assert obs["agentview_image"].shape == (2, 3, 4, 5)
    np.testing.assert_allclose(obs["agentview_image"][1, :, 0, 0], image[0, 0] / 255.0)
    np.testing.assert_array_equal(obs["object"][:, 0], [0.0, 1.0])
    np.testing.assert_array_equal(obs["robot0_gripper_qpos"], [[1.0, 2.0], [1.0, 2.0]])


def record(latency_s=0.01, missed=False, converged=True, rounds=4, warm=True):
    return CycleRecord(latency_s=latency_s, sampling_s=latency_s / 2, rounds=rounds, converged=converged,
                       deadline_hit=not converged, budget_missed=missed, warm_started=warm)


def test_diagnostics_ok_when_healthy_with_statistics():
    stats = CycleStats()
    for i in range(100):
        stats.record_cycle(record(latency_s=0.001 * (i + 1)))
    status = stats.status("policy", "cpu", state="active")
    values = status_values(status)
    assert status.level == DiagnosticStatus.OK
    assert float(values["latency_p50_ms"]) == pytest.approx(50.5, rel=1e-3)
    assert float(values["latency_p99_ms"]) == pytest.approx(99.01, rel=1e-3)
    assert float(values["warm_start_hit_rate"]) == 1.0
    assert float(values["rounds_mean"]) == 4.0


def test_diagnostics_warn_on_budget_misses_and_error_on_bad_input_until_cleared():
    stats = CycleStats()
    for i in range(10):
        stats.record_cycle(record(missed=i < 2, converged=i % 3 != 0))
    status = stats.status("policy", "cpu", state="active")
    assert status.level == DiagnosticStatus.WARN and "missed the latency budget" in status.message
    stats.set_input_problem("/object", "key 'object' contains 1 NaN/inf value(s)", stale=False)
    status = stats.status("policy", "cpu", state="active")
    assert status.level == DiagnosticStatus.ERROR and "/object" in status.message and "NaN" in status.message
    assert status_values(status)["input_errors"] == "1"
    stats.clear_input_problems()
    assert stats.status("policy", "cpu", state="active").level == DiagnosticStatus.WARN


def test_diagnostics_error_on_failed_solve():
    stats = CycleStats()
    stats.record_failure("RuntimeError: out of memory")
    status = stats.status("policy", "cpu", state="active")
    assert status.level == DiagnosticStatus.ERROR and "out of memory" in status.message


def test_diagnostics_name_the_lifecycle_state_and_a_failed_configure_until_it_succeeds():
    stats = CycleStats()
    status = stats.status("policy", "cpu", state="unconfigured")
    assert status.level == DiagnosticStatus.OK and status.message == "unconfigured"
    assert status_values(status)["state"] == "unconfigured"
    failed = stats.status("policy", "cpu", state="unconfigured", config_error="action_names has 3 names")
    assert failed.level == DiagnosticStatus.ERROR
    assert failed.message == "configure failed: action_names has 3 names; unconfigured"
    assert stats.status("policy", "cpu", state="inactive").message == "inactive"


@pytest.mark.parametrize("name", ["policy.launch.py", "sim_demo.launch.py"])
def test_launch_files_compile(name, tmp_path):
    py_compile.compile(str(REPO / "launch" / name), cfile=str(tmp_path / "out.pyc"), doraise=True)


@pytest.mark.parametrize("name", ["policy.launch.py", "sim_demo.launch.py"])
def test_launch_files_load_where_launch_ros_exists(name):
    pytest.importorskip("launch_ros")
    import importlib.util

    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument

    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), REPO / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    arguments = {a.name for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    assert {"params_file", "checkpoint", "namespace"} <= arguments
