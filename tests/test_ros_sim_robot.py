"""sim_robot_node as a process (robosuite Lift): publishes observations, executes received chunks,
reports episodes, and exits after its episodes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("robosuite")
pytestmark = [pytest.mark.ros, pytest.mark.sim]

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float32MultiArray, String  # noqa: E402

from paradigms_policy.ros.conversions import (  # noqa: E402
    chunk_to_joint_trajectory,
    multiarray_to_array,
    nanoseconds_to_time,
)
from paradigms_policy.ros.processes import (  # noqa: E402
    SIM_ROBOT_MODULE,
    apply_env,
    private_ros_env,
    ros_args,
    start_node,
    stop_process,
)
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ACTION_NAMES = ["eef_dx", "eef_dy", "eef_dz", "eef_dax", "eef_day", "eef_daz", "gripper"]


def test_sim_robot_publishes_executes_chunks_and_reports_episodes(tmp_path):
    env = private_ros_env(log_dir=tmp_path / "ros")
    apply_env(env)
    rate = 20.0
    args = ros_args([REPO / "config" / "sim_robot.yaml"],
                    {"control_rate_hz": rate, "max_episode_steps": 30, "episodes": 2, "exit_when_done": True})
    proc = start_node(SIM_ROBOT_MODULE, args, env, log_path=tmp_path / "sim.log", cwd=REPO)
    rclpy.init()
    node = rclpy.create_node("sim_robot_test")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    obs: dict[str, list] = {}
    gripper: list[JointState] = []
    arm: list[JointState] = []
    results: list[dict] = []
    for key in ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"):
        node.create_subscription(Float32MultiArray, f"robot/obs/{key}",
                                 lambda m, k=key: obs.setdefault(k, []).append(multiarray_to_array(m)),
                                 qos_profile_sensor_data)
    node.create_subscription(JointState, "robot/gripper/joint_states", gripper.append, qos_profile_sensor_data)
    node.create_subscription(JointState, "robot/joint_states", arm.append, qos_profile_sensor_data)
    node.create_subscription(String, "robot/episode_result", lambda m: results.append(json.loads(m.data)), 10)
    trajectory_pub = node.create_publisher(JointTrajectory, "policy/joint_trajectory", 10)

    def spin_until(condition, timeout_s=90.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and not condition():
            executor.spin_once(timeout_sec=0.02)
        return condition()

    try:
        # waiting for the policy: observations flow, the episode clock has not started
        assert spin_until(lambda: len(obs) == 4 and gripper and arm)
        assert obs["object"][-1].shape == (10,) and obs["robot0_eef_quat"][-1].shape == (4,)
        assert list(gripper[-1].name) == ["gripper0_right_finger_joint1", "gripper0_right_finger_joint2"]
        np.testing.assert_allclose(np.array(gripper[-1].position), obs["robot0_gripper_qpos"][-1], atol=1e-6)
        assert len(arm[-1].name) == 7
        start_pos = obs["robot0_eef_pos"][-1].copy()
        n_before = len(obs["robot0_eef_pos"])
        # a chunk that moves the end effector up (+z), starting now, 40 points long
        chunk = np.zeros((40, 7))
        chunk[:, 2] = 1.0
        stamp = nanoseconds_to_time(node.get_clock().now().nanoseconds + 50_000_000)
        trajectory_pub.publish(chunk_to_joint_trajectory(chunk, ACTION_NAMES, stamp=stamp, dt=1.0 / rate))
        assert spin_until(lambda: len(results) >= 1), "no episode result"
        first = results[0]
        assert first["steps"] == 30 and first["success"] is False and first["episode"] == 0
        assert first["policy_steps"] > 0  # the chunk was executed (a loaded machine may drop late points)
        assert first["policy_steps"] + first["idle_steps"] == 30
        assert first["policy_steps"] + first["dropped_points"] <= 40  # no point runs twice
        heights = [p[2] for p in obs["robot0_eef_pos"][n_before:]]
        assert max(heights) > start_pos[2] + 0.05  # the +z chunk lifted the end effector
        # episode 1 starts from a reset and waits for the policy again. A chunk planned from an observation
        # of episode 0 (stamped 1 s ago, its points still ahead) is ignored; then a short fresh chunk starts it
        now_ns = node.get_clock().now().nanoseconds
        trajectory_pub.publish(chunk_to_joint_trajectory(chunk, ACTION_NAMES, stamp=nanoseconds_to_time(now_ns - 10**9),
                                                         dt=1.0 / rate, start_offset=1.05))
        spin_until(lambda: False, 0.3)
        trajectory_pub.publish(chunk_to_joint_trajectory(
            chunk[:5], ACTION_NAMES, stamp=nanoseconds_to_time(node.get_clock().now().nanoseconds), dt=1.0 / rate))
        assert spin_until(lambda: len(results) >= 2)
        assert results[1]["episode"] == 1 and results[1]["seed"] == first["seed"] + 1
        assert results[1]["idle_steps"] >= 25 and results[1]["policy_steps"] <= 5  # only the fresh 5 points ran
        assert proc.wait(timeout=30) == 0  # exit_when_done after 2 episodes
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        stop_process(proc)
    assert "episode 0 (seed 100000): failure in 30 steps" in (tmp_path / "sim.log").read_text()
