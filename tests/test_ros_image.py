"""The image policy over ROS: sim_robot_node publishes its camera as sensor_msgs/Image, and the policy node
runs an image checkpoint live from it (paradigms-ros-demo --task lift_image, two processes)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("robosuite")
pytestmark = [pytest.mark.ros, pytest.mark.sim]

REPO = Path(__file__).resolve().parent.parent


def test_sim_robot_publishes_rgb8_camera_images_stamped_like_its_joint_states(tmp_path):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    from paradigms_policy.ros.conversions import image_to_array, time_to_nanoseconds
    from paradigms_policy.ros.processes import SIM_ROBOT_MODULE, apply_env, private_ros_env, ros_args, start_node, stop_process

    env = private_ros_env(log_dir=tmp_path / "ros")
    apply_env(env)
    args = ros_args([REPO / "config" / "sim_robot.yaml"], {"task": "lift_image"})
    proc = start_node(SIM_ROBOT_MODULE, args, env, log_path=tmp_path / "sim.log", cwd=REPO)
    rclpy.init()
    node = rclpy.create_node("sim_robot_image_test")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    images: list[Image] = []
    gripper: list[JointState] = []
    node.create_subscription(Image, "robot/obs/agentview_image", images.append, qos_profile_sensor_data)
    node.create_subscription(JointState, "robot/gripper/joint_states", gripper.append, qos_profile_sensor_data)
    try:
        end = time.monotonic() + 90.0
        while time.monotonic() < end and not (len(images) >= 3 and len(gripper) >= 3):
            executor.spin_once(timeout_sec=0.05)
        assert len(images) >= 3 and len(gripper) >= 3, (tmp_path / "sim.log").read_text()[-2000:]
        image = images[-1]
        assert (image.encoding, image.height, image.width, image.header.frame_id) == ("rgb8", 84, 84, "agentview")
        pixels = image_to_array(image)
        assert pixels.shape == (84, 84, 3) and pixels.dtype == np.uint8 and pixels.std() > 5  # a rendered scene
        image_stamps = {time_to_nanoseconds(m.header.stamp) for m in images}
        joint_stamps = {time_to_nanoseconds(m.header.stamp) for m in gripper}
        assert image_stamps & joint_stamps  # one step's image and joint states carry the same (observation) time
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        stop_process(proc)


def test_image_demo_publishes_chunks_computed_from_the_camera(tmp_path, tiny_lift_image_checkpoint):
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "paradigms_policy.ros.demo", "--task", "lift_image",
         "--checkpoint", str(tiny_lift_image_checkpoint), "--episodes", "1", "--max-episode-steps", "20",
         "--sampler", "ddim_sequential", "--budget-ms", "400", "--log-dir", str(tmp_path / "logs"), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["task"] == "lift_image" and summary["episodes"] == 1 and summary["episode_steps"] == [20]
    assert summary.get("chunks", 0) >= 1
    # every budgeted chunk was solved from a camera image the node received (its cycle stats list the image topic)
    assert summary["image_to_chunk_chunks"] == summary["chunks"] and summary["image_to_chunk_p50_ms"] > 0
    assert "camera image" in proc.stdout
    assert "configured" in (tmp_path / "logs" / "policy_node.log").read_text()
