"""The node's solve guard, in-process: a chunk with no solver round, non-finite values or values outside the
action range is never published, the warm start is reset and the next solve is planned again (cold).

Zero-round solves happen on a loaded machine (a round that no longer fits the time left), which a
test cannot provoke on cue from outside the process; here the real node (configured with a tiny
checkpoint, no executor spinning) runs jobs directly, with the policy's result altered.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

from rclpy.parameter import Parameter  # noqa: E402

from paradigms_policy.ros.policy_node import Job, PolicyNode  # noqa: E402


@pytest.fixture
def node(ros_session, tiny_lift_checkpoint):
    node = PolicyNode(node_name="solve_guard_node", parameter_overrides=[
        Parameter("checkpoint", value=str(tiny_lift_checkpoint)), Parameter("sampler_steps", value=10),
        Parameter("latency_budget_ms", value=500.0)])
    node.trigger_configure()
    node.trigger_activate()
    published = []
    node._pub_trajectory.publish = published.append  # a spy: what would reach the robot
    node.published = published
    yield node
    node.stop()
    node.destroy_node()


def good_obs() -> dict[str, np.ndarray]:
    return {"object": np.full((2, 10), 0.1, np.float32), "robot0_eef_pos": np.full((2, 3), 0.1, np.float32),
            "robot0_eef_quat": np.tile(np.float32([0, 0, 0, 1]), (2, 1)),
            "robot0_gripper_qpos": np.tile(np.float32([0.02, -0.02]), (2, 1))}


def job(node, obs, obs_time: float) -> Job:
    now = time.perf_counter()
    request = node._execution.request(obs_time=obs_time, expected_arrival=obs_time + 0.1)
    return Job(obs=obs, input_stamps="", request=request, tick_s=obs_time, tick_perf=now, deadline_perf=now + 0.5,
               params=node._params)


def run_cycle(node, obs=None, alter=None) -> bool:
    """One control cycle at the node's current time; True if something was published."""
    policy = node._policy
    real = policy.predict_action
    if alter is not None:
        policy.predict_action = lambda *a, **k: alter(real(*a, **k))
    before = len(node.published)
    try:
        node._run_job(job(node, obs if obs is not None else good_obs(), node.get_clock().now().nanoseconds * 1e-9))
    finally:
        policy.predict_action = real
    return len(node.published) > before


def no_rounds(result):
    result.stats.rounds = 0  # what a solve refused before its first round returns: the initial guess
    return result


def scaled(result):
    result.action_pred = result.action_pred * 10.0
    return result


@pytest.mark.parametrize("alter, fragment", [
    (no_rounds, "no solver round fit in the"),
    (scaled, "outside the plausible range"),
])
def test_an_unusable_solve_publishes_nothing_resets_the_warm_start_and_replans(node, alter, fragment):
    assert run_cycle(node)  # the first chunk (cold, no deadline)
    assert node._policy.warm_state.prev is not None
    previous_obs_time = node._execution.last_obs_time
    failures = node.stats.failed_solves
    time.sleep(0.45)  # the next chunk is due
    assert not run_cycle(node, alter=alter)
    assert node.stats.failed_solves == failures + 1 and fragment in node.stats._last_failure
    assert node._policy.warm_state.prev is None  # the warm start is reset
    assert node._execution.last_obs_time == previous_obs_time  # the request was cancelled: the next tick plans
    assert node._fault.episode is not None and node._fault.episode.kind == "solve"
    assert run_cycle(node)  # the next tick solves (cold) and publishes
    assert node._fault.episode is None


def test_a_nan_solve_cannot_poison_the_next_solves(node):
    assert run_cycle(node)
    bad = good_obs()
    bad["robot0_eef_pos"][1] = 1e30  # past the limits (this path skips them): the solver produces NaN
    time.sleep(0.1)
    assert not run_cycle(node, obs=bad)
    assert "NaN/inf" in node.stats._last_failure and "robot0_eef_pos" in node.stats._last_failure
    for _ in range(3):  # good data a few periods later (a warm start would be used): every solve publishes
        time.sleep(0.1)
        assert run_cycle(node)
    assert node.stats.failed_solves == 1
