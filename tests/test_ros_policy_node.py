"""paradigms_policy_node as a process (``--ros-args --params-file config/policy.yaml``), driven over
real ROS 2 topics and lifecycle services from this test process: the normal lifecycle.

Each test module uses a random ROS_DOMAIN_ID with localhost-only discovery (conftest ``ros_session``).
The checkpoint is a tiny random network with the Lift low-dim inputs, so solves take milliseconds.
Bad inputs, failed solves, parameters, diagnostics of a failed configure and signals:
test_ros_node_faults.py and test_ros_node_signals.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from paradigms_policy.ros.conversions import (  # noqa: E402
    duration_to_seconds,
    multiarray_to_array,
    time_to_nanoseconds,
)
from paradigms_policy.ros.diagnostics import status_values  # noqa: E402
from paradigms_policy.ros.node_params import LIFT_ACTIONS, LIFT_FINGERS  # noqa: E402

FINGERS, ACTION_NAMES = list(LIFT_FINGERS), list(LIFT_ACTIONS)
RATE_HZ = 20.0  # config/policy.yaml
BUDGET_MS = 500.0  # the conftest start_policy_node's budget
SETTLE_S = 60.0  # generous waits for a loaded 2-core machine; tests end as soon as the event happens


def test_lifecycle_configure_activate_publish_deactivate_cleanup_shutdown(start_policy_node, tiny_lift_checkpoint,
                                                                          driver, tmp_path):
    log = tmp_path / "policy_node.log"
    proc = start_policy_node(tiny_lift_checkpoint, log)
    lc = driver.lifecycle
    lc.wait_for_services(SETTLE_S)
    assert lc.get_state() == "unconfigured"
    assert not lc.change_state("activate")  # not allowed from unconfigured
    # parameters are validated on change
    results = driver.set_parameters(sampler="bogus_sampler")
    assert not results[0].successful and "bogus_sampler" in results[0].reason
    results = driver.set_parameters(latency_budget_ms=-5.0)
    assert not results[0].successful
    # a checkpoint that does not fit the configured inputs or outputs fails configure with a reason, and
    # /diagnostics says so (ERROR) until the next successful configure
    def diagnosed(level, *fragments):
        return lambda: any(s.level == level and all(f in s.message for f in fragments) for s in driver.diagnostics)

    assert driver.set_parameters(joint_names=FINGERS + ["extra_joint"])[0].successful
    assert not lc.change_state("configure")
    assert lc.get_state() == "unconfigured"
    assert driver.run(5.0, until=diagnosed(DiagnosticStatus.ERROR, "configure failed", "3 joint_names"))
    [refused] = driver.set_parameters(action_names=["dx", "dy", "dz"])  # the gripper (hold dim 6) would be lost
    assert not refused.successful and "hold_action_dims [6] are not dimensions of the 3 action_names" in refused.reason
    results = driver.set_parameters(joint_names=FINGERS, hold_action_dims=[0], action_names=["dx", "dy", "dz"])
    assert all(r.successful for r in results)
    assert not lc.change_state("configure")
    assert driver.run(5.0, until=diagnosed(DiagnosticStatus.ERROR, "configure failed",
                                           "action_names has 3 names, the checkpoint's action has 7 dims"))
    assert all(r.successful for r in driver.set_parameters(action_names=ACTION_NAMES, hold_action_dims=[6]))
    assert lc.change_state("configure")
    assert lc.get_state() == "inactive"
    driver.diagnostics.clear()
    assert driver.run(5.0, until=diagnosed(DiagnosticStatus.OK, "inactive"))
    assert not any("configure failed" in s.message for s in driver.diagnostics)
    # inactive: observations flow but nothing is published
    driver.run(1.0)
    assert driver.trajectories == []
    assert lc.change_state("activate") and lc.get_state() == "active"
    assert driver.run(SETTLE_S, until=lambda: len(driver.trajectories) >= 3 and driver.cycles)
    received_s, trajectory = driver.trajectories[-1]
    assert list(trajectory.joint_names) == ACTION_NAMES
    # the executed slice from the first action whose time has not passed: at least until the next solve
    assert 8 <= len(trajectory.points) <= 15
    times = [duration_to_seconds(p.time_from_start) for p in trajectory.points]
    np.testing.assert_allclose(np.diff(times), 1.0 / RATE_HZ, rtol=1e-6)
    # stamped with the observation's time; the first point at the first action not yet due
    cycle = driver.cycles[-1]
    if cycle["first"] == "0" and len(driver.cycles) == len(driver.trajectories):
        assert time_to_nanoseconds(trajectory.header.stamp) * 1e-9 == pytest.approx(float(cycle["obs_time_s"]), abs=1e-6)
        assert times[0] == pytest.approx(int(cycle["dropped_actions"]) / RATE_HZ, abs=1e-6)
    assert all(len(p.positions) == 7 and all(map(math.isfinite, p.positions)) for p in trajectory.points)
    assert abs(time_to_nanoseconds(trajectory.header.stamp) * 1e-9 - received_s) < 5.0
    # every chunk but the first (the robot waits for it) is stamped on its own observation's grid:
    # t_obs + (first action not yet due) * dt
    for values in [v for v in driver.cycles if v["first"] == "0"]:
        offset = (float(values["chunk_stamp_s"]) - float(values["obs_time_s"])) * RATE_HZ
        assert abs(offset - round(offset)) < 1e-3 and offset >= 0
    # the Float32MultiArray carries the same chunk
    assert driver.run(SETTLE_S, until=lambda: len(driver.chunks) >= 3, publish=False)
    chunk = multiarray_to_array(driver.chunks[0][1])
    assert chunk.shape == (len(driver.trajectories[0][1].points), 7)
    positions = np.array([p.positions for p in driver.trajectories[0][1].points], dtype=np.float32)
    np.testing.assert_array_equal(chunk, positions)
    cycle = driver.cycles[-1]
    assert float(cycle["latency_ms"]) <= BUDGET_MS  # the configured budget (generous: loaded CI machine)
    assert int(cycle["n_executed"]) == 8  # warm start shifted by the periods between the two observations
    # action j belongs to t_obs + j*dt: the published ones start where the chunk arrived, none was lost
    assert int(cycle["dropped_actions"]) + int(cycle["published_actions"]) == 15
    stamp_j = (float(cycle["chunk_stamp_s"]) - float(cycle["obs_time_s"])) * RATE_HZ
    assert abs(stamp_j - round(stamp_j)) < 1e-3 and round(stamp_j) == int(cycle["dropped_actions"])
    assert float(cycle["chunk_stamp_s"]) >= float(cycle["arrival_s"]) - 0.5 / RATE_HZ
    assert cycle["execution"] == "inpaint" and int(cycle["known_actions"]) >= 1
    driver.run(2.5, until=lambda: any(s.name.endswith("inference") and status_values(s).get("cycles", "0") != "0"
                                     for s in driver.diagnostics))
    summary = [status_values(s) for s in driver.diagnostics if s.name.endswith("inference")][-1]
    for key in ("latency_p50_ms", "latency_p99_ms", "rounds_mean", "budget_misses", "converged_fraction",
                "stale_inputs", "warm_start_hit_rate"):
        assert key in summary
    # a sampler change while active takes effect at a following cycle
    assert driver.set_parameters(sampler="picard_warm")[0].successful
    assert driver.run(SETTLE_S, until=lambda: driver.cycles[-1]["sampler"] == "picard_warm")
    # deactivate: no more chunks
    assert lc.change_state("deactivate") and lc.get_state() == "inactive"
    driver.run(0.3)
    count = len(driver.trajectories)
    driver.run(1.5)
    assert len(driver.trajectories) == count
    assert lc.change_state("cleanup") and lc.get_state() == "unconfigured"
    assert lc.change_state("shutdown")
    assert proc.wait(timeout=SETTLE_S) == 0
    text = log.read_text()
    assert "configure failed" in text and "3 joint_names for key 'robot0_gripper_qpos'" in text
