"""``sim_robot_node``: a simulated robot (robosuite Lift by default) behind ROS 2 topics.

Publishes the task's robomimic low-dim observations at the control rate, one
Float32MultiArray per key on ``<obs_prefix>/<key>``, camera images (task ``lift_image``) as
``sensor_msgs/Image`` (rgb8) on ``<obs_prefix>/<camera>_image``, plus JointStates for the arm and the
gripper; executes received JointTrajectory chunks in time order, one action per control
tick (points whose slot has passed are dropped, never executed late); resets on success or
timeout, logs each episode and publishes it as JSON on ``episode_result_topic``. A trajectory's
header stamp is the time of the observation it was planned from: while an episode waits for its
first chunk, chunks planned before the reset are ignored. JointStates are stamped with the time of
the state they carry: a step simulates the period up to the next tick, so one period ahead; images
carry the same stamp (the time of the state they show) and the camera name as frame_id.

Run: ``python -m paradigms_policy.ros.sim_robot_node --ros-args --params-file config/sim_robot.yaml``.
"""

from __future__ import annotations

import json
import sys
import time
from bisect import bisect_right
from dataclasses import asdict, dataclass

import numpy as np
import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from paradigms_policy.ros.conversions import (
    ConversionError,
    array_to_image,
    array_to_multiarray,
    joint_trajectory_to_chunk,
    nanoseconds_to_time,
    time_to_nanoseconds,
    vector_to_joint_state,
)

NODE_NAME = "sim_robot_node"


@dataclass
class EpisodeResult:
    episode: int
    seed: int
    success: bool
    steps: int
    duration_s: float
    policy_steps: int  # steps that executed a received action
    idle_steps: int  # steps with no action due (robot held still)
    dropped_points: int  # trajectory points whose slot passed before they could run
    late_on_arrival: int  # of those, points already past when their chunk arrived


class ActionQueue:
    """Time-stamped actions (absolute seconds) from received chunks, executed in time order.

    A new chunk replaces the queued points from its start time on; points of the previous chunk
    before that time stay (they run while the new chunk is still in the future). Each tick runs
    the first point of a run on the tick nearest its time, and each following point one tick later
    (keeping that phase, so tick jitter below half a period never skips or repeats a point); a
    point whose time passed more than ``LATE`` periods ago is dropped, never run late. A point at
    or before the last executed time is never run (no slot is executed twice).
    """

    EARLY = 0.5
    LATE = 1.5

    def __init__(self):
        self.times: list[float] = []
        self.actions: list[np.ndarray] = []
        self.last_executed_s = -float("inf")
        self.phase_s = 0.0  # tick time minus point time, fixed when a run of points starts

    def clear(self) -> None:
        self.times, self.actions = [], []
        self.last_executed_s = -float("inf")
        self.phase_s = 0.0

    def insert_chunk(self, start_s: float, offsets_s: np.ndarray, actions: np.ndarray) -> int:
        """Queue a chunk (points at ``start_s + offsets``); returns how many of its points were already past.

        Queued points from the chunk's first point on are replaced; earlier ones (from the
        chunk's stamp up to its first point: the actions committed while it was solved) stay.
        """
        new = [(start_s + float(o), np.asarray(a, dtype=np.float64)) for o, a in zip(offsets_s, actions)]
        if not new:
            return 0
        spacing = float(offsets_s[1] - offsets_s[0]) if len(offsets_s) > 1 else 0.0
        keep = bisect_right(self.times, new[0][0] - 0.5 * spacing - 1e-9)
        fresh = [(t, a) for t, a in new if t > self.last_executed_s + 1e-9]
        self.times = self.times[:keep] + [t for t, _ in fresh]
        self.actions = self.actions[:keep] + [a for _, a in fresh]
        return len(new) - len(fresh)

    def pop_due(self, now_s: float, period_s: float) -> tuple[np.ndarray | None, int]:
        """The action to run at ``now`` (or None: nothing due) and how many missed points were dropped."""
        missed = bisect_right(self.times, now_s - self.LATE * period_s)
        self.times, self.actions = self.times[missed:], self.actions[missed:]
        if not self.times:
            return None, missed
        continuing = self.times[0] - self.last_executed_s < 1.5 * period_s
        if continuing:  # keep the phase the run started with; jitter up to half a period is absorbed
            due = self.times[0] + self.phase_s <= now_s + self.EARLY * period_s
        else:  # start a run on the tick nearest the point's time
            due = self.times[0] <= now_s + self.EARLY * period_s
            if due:
                self.phase_s = now_s - self.times[0]
        if not due:
            return None, missed
        self.last_executed_s = self.times.pop(0)
        return self.actions.pop(0), missed


class SimRobotNode(Node):
    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self._declare()
        p = self._param
        from paradigms_policy.sim.envs import is_image_space, make_task_env  # robosuite loads here, not at import

        self.task = p("task")
        self.seed = int(p("seed"))
        self.period_s = 1.0 / float(p("control_rate_hz"))
        self.max_episodes = int(p("episodes"))
        self.wait_for_policy = bool(p("wait_for_policy"))
        self.exit_when_done = bool(p("exit_when_done"))
        self.action_names = list(p("action_names"))
        self.hold_dims = [int(d) for d in p("idle_hold_dims")]
        self.env = make_task_env(self.task, seed=self.seed)
        if int(p("max_episode_steps")) > 0:
            self.env.max_episode_steps = int(p("max_episode_steps"))
        self.action_dim = int(np.prod(self.env.action_space.shape))
        if len(self.action_names) != self.action_dim:
            raise ValueError(f"action_names has {len(self.action_names)} names, task {self.task} has "
                             f"{self.action_dim} action dims")
        prefix = p("obs_prefix").rstrip("/")
        spaces = self.env.observation_space.spaces
        self.image_keys = [key for key, space in spaces.items() if is_image_space(space)]
        self.obs_pubs = {key: self.create_publisher(Float32MultiArray, f"{prefix}/{key}", qos_profile_sensor_data)
                         for key in spaces if key not in self.image_keys}
        self.image_pubs = {key: self.create_publisher(Image, f"{prefix}/{key}", qos_profile_sensor_data)
                           for key in self.image_keys}
        self.arm_joints, self.gripper_joints = _joint_names(self.env)
        self.arm_pub = self.create_publisher(JointState, p("joint_states_topic"), qos_profile_sensor_data)
        self.gripper_pub = self.create_publisher(JointState, p("gripper_joint_states_topic"), qos_profile_sensor_data)
        self.result_pub = self.create_publisher(String, p("episode_result_topic"), 10)
        self.create_subscription(JointTrajectory, p("trajectory_topic"), self._on_trajectory, 10)
        self.queue = ActionQueue()
        self.results: list[EpisodeResult] = []
        self.done = False
        self._start_episode()
        self.timer = self.create_timer(self.period_s, self._tick)
        self.get_logger().info(
            f"{self.task}: {len(self.obs_pubs)} obs and {len(self.image_pubs)} image topics under {prefix}/, action dim {self.action_dim}, "
            f"{1 / self.period_s:.1f} Hz, episodes {self.max_episodes or 'unlimited'}")

    # -- parameters ---------------------------------------------------------------------------
    def _declare(self) -> None:
        def desc(text, frange=None, irange=None):
            d = ParameterDescriptor(description=text)
            if frange:
                d.floating_point_range = [FloatingPointRange(from_value=frange[0], to_value=frange[1], step=0.0)]
            if irange:
                d.integer_range = [IntegerRange(from_value=irange[0], to_value=irange[1], step=1)]
            return d

        for name, default, d in (
            ("task", "lift", desc("Simulated task: lift, can or lift_image (Lift + agentview camera images).")),
            ("seed", 0, desc("Seed of the first episode; episode i uses seed + i.", irange=(0, 2**31 - 1))),
            ("control_rate_hz", 20.0, desc("Env steps per second (one action each).", frange=(0.1, 1000.0))),
            ("episodes", 0, desc("Episodes to run before idling; 0 runs forever.", irange=(0, 100000))),
            ("max_episode_steps", 0, desc("Steps before an episode times out; 0 keeps the task's.",
                                          irange=(0, 1000000))),
            ("exit_when_done", False, desc("Exit the process after the last episode (episodes > 0).")),
            ("wait_for_policy", True, desc("Hold the sim at each episode start until the first chunk arrives.")),
            ("obs_prefix", "robot/obs", desc("Observations are published on <obs_prefix>/<key>.")),
            ("joint_states_topic", "robot/joint_states", desc("Arm JointState topic.")),
            ("gripper_joint_states_topic", "robot/gripper/joint_states", desc("Gripper JointState topic.")),
            ("trajectory_topic", "policy/joint_trajectory", desc("Action chunks (JointTrajectory) to execute.")),
            ("episode_result_topic", "robot/episode_result", desc("Episode results as JSON (std_msgs/String).")),
            ("action_names", ["eef_dx", "eef_dy", "eef_dz", "eef_dax", "eef_day", "eef_daz", "gripper"],
             desc("Order of the action dimensions in received trajectories.")),
            ("idle_hold_dims", [6], desc("Action dims that keep their last value when no action is due "
                                         "(others are 0: hold still).")),
        ):
            self.declare_parameter(name, default, d)

    def _param(self, name: str):
        return self.get_parameter(name).value

    # -- episode loop --------------------------------------------------------------------------
    def _start_episode(self) -> None:
        episode = len(self.results)
        self.episode_seed = self.seed + episode
        self.obs, _ = self.env.reset(seed=self.episode_seed)
        self.queue.clear()
        self.last_action = np.zeros(self.action_dim)
        self.steps = self.policy_steps = self.idle_steps = self.dropped = self.late_on_arrival = 0
        self.started = None if self.wait_for_policy else time.monotonic()
        self.reset_s = self.get_clock().now().nanoseconds * 1e-9
        self.success = False

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            chunk, offsets = joint_trajectory_to_chunk(msg, self.action_names)
        except ConversionError as exc:
            self.get_logger().error(f"rejected trajectory: {exc}", throttle_duration_sec=2.0)
            return
        if not np.isfinite(chunk).all():
            self.get_logger().error("rejected trajectory with NaN/inf", throttle_duration_sec=2.0)
            return
        start_s = time_to_nanoseconds(msg.header.stamp) * 1e-9
        if self.started is None and start_s < self.reset_s:
            return  # planned from an observation of the previous episode: wait for one of this episode
        late = self.queue.insert_chunk(start_s, offsets, chunk)
        self.dropped += late
        self.late_on_arrival += late
        if self.started is None:
            self.started = time.monotonic()

    def _tick(self) -> None:
        now_s = self.get_clock().now().nanoseconds * 1e-9
        if self.done or self.started is None:
            self._publish_obs()
            return
        action, dropped = self.queue.pop_due(now_s, self.period_s)
        self.dropped += dropped
        if action is None:
            action = np.zeros(self.action_dim)
            action[self.hold_dims] = self.last_action[self.hold_dims]
            self.idle_steps += 1
        else:
            self.policy_steps += 1
        self.last_action = action
        self.obs, _, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        self.success = self.success or bool(info.get("is_success", False))
        if terminated or truncated:
            self._finish_episode()
        self._publish_obs()

    def _finish_episode(self) -> None:
        result = EpisodeResult(
            episode=len(self.results), seed=self.episode_seed, success=self.success, steps=self.steps,
            duration_s=time.monotonic() - self.started, policy_steps=self.policy_steps,
            idle_steps=self.idle_steps, dropped_points=self.dropped, late_on_arrival=self.late_on_arrival)
        self.results.append(result)
        self.get_logger().info(
            f"episode {result.episode} (seed {result.seed}): {'SUCCESS' if result.success else 'failure'} in "
            f"{result.steps} steps, {result.duration_s:.1f} s; idle {result.idle_steps}, dropped {result.dropped_points} "
            f"({result.late_on_arrival} already past on arrival)")
        self.result_pub.publish(String(data=json.dumps(asdict(result))))
        if self.max_episodes and len(self.results) >= self.max_episodes:
            n_success = sum(r.success for r in self.results)
            self.get_logger().info(f"{len(self.results)} episodes done: {n_success} successes")
            self.done = True
        self._start_episode()

    def _publish_obs(self) -> None:
        # a step simulates the period up to the next tick, so the state published now is the state at
        # the next tick, the one the next action acts on: stamped with that time
        stamp = nanoseconds_to_time(self.get_clock().now().nanoseconds + int(round(self.period_s * 1e9)))
        for key, pub in self.obs_pubs.items():
            pub.publish(array_to_multiarray(self.obs[key], labels=(key,)))
        for key, pub in self.image_pubs.items():
            image = array_to_image(self.obs[key], "rgb8")
            image.header.stamp = stamp
            image.header.frame_id = key.removesuffix("_image")  # the camera
            pub.publish(image)
        if self.arm_joints:
            qpos = _joint_positions(self.env)
            self.arm_pub.publish(vector_to_joint_state(qpos[0], self.arm_joints, stamp))
            self.gripper_pub.publish(vector_to_joint_state(qpos[1], self.gripper_joints, stamp))


def _joint_names(env) -> tuple[list[str], list[str]]:
    robosuite_env = getattr(env, "unwrapped_robosuite", None)
    if robosuite_env is None:
        return [], []
    robot = robosuite_env.robots[0]
    return list(robot.robot_joints), list(robot.gripper["right"].joints)


def _joint_positions(env) -> tuple[np.ndarray, np.ndarray]:
    robosuite_env = env.unwrapped_robosuite
    robot = robosuite_env.robots[0]
    qpos = robosuite_env.sim.data.qpos
    return qpos[robot._ref_joint_pos_indexes].copy(), qpos[robot._ref_gripper_joint_pos_indexes["right"]].copy()


def main(args: list[str] | None = None) -> int:
    """Entry point ``sim_robot_node``."""
    rclpy.init(args=args if args is not None else sys.argv)
    node = SimRobotNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok() and not (node.done and node.exit_when_done):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.env.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
