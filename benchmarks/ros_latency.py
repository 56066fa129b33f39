"""ROS 2 latency of paradigms_policy_node over loopback DDS (two processes, real topics).

1. Overhead: a driver publishes one observation set (the JointState last, which ticks the node:
   ``tick_on_topic``), waits for the chunk, and repeats once per control period. Observation-to-
   chunk latency is measured by the driver (publish -> JointTrajectory received); subtracting the
   node's own sampling time (``policy/cycle_stats``) leaves what ROS, conversion and the node add.
   Goal: p50 <= 3 ms.
2. On time: the node runs as deployed (control timer, latency budget) against sim_robot_node
   (robosuite Lift) for ``--duration`` seconds; a cycle is on time when its chunk is published
   within the budget after the tick (node clock) - goal >= 99% - and the driver also counts
   chunks that reached it before the time their first action is due.

    python benchmarks/ros_latency.py [--checkpoint PATH] [--duration 120] [--out runs/ros_latency.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from paradigms_policy import paths  # noqa: E402
from paradigms_policy.ros.processes import (  # noqa: E402
    POLICY_NODE_MODULE,
    SIM_ROBOT_MODULE,
    apply_env,
    private_ros_env,
    ros_args,
    start_node,
    stop_process,
)

NODE = "/paradigms_policy_node"
FINGERS = ["gripper0_right_finger_joint1", "gripper0_right_finger_joint2"]
OBS_SIZES = {"object": 10, "robot0_eef_pos": 3, "robot0_eef_quat": 4}


def percentiles(values, qs=(50, 90, 99)) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {f"p{q}": float("nan") for q in qs}
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


class Graph:
    """This process's node: subscriptions to the policy's outputs and a lifecycle client."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticStatus
        from rclpy.executors import SingleThreadedExecutor
        from trajectory_msgs.msg import JointTrajectory

        from paradigms_policy.ros.diagnostics import status_values
        from paradigms_policy.ros.lifecycle_client import LifecycleClient

        self.node = rclpy.create_node("ros_latency_benchmark")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.trajectories: list[tuple[float, object]] = []
        self.cycles: list[dict] = []
        self.node.create_subscription(JointTrajectory, "policy/joint_trajectory",
                                      lambda m: self.trajectories.append((time.time(), m)), 100)
        self.node.create_subscription(DiagnosticStatus, "policy/cycle_stats",
                                      lambda m: self.cycles.append(status_values(m)), 100)
        self.lifecycle = LifecycleClient(self.node, self.executor, NODE)

    def spin_until(self, condition, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.0005)
        return condition()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def bring_up(graph: Graph) -> None:
    graph.lifecycle.wait_for_services(120.0)
    graph.lifecycle.require("configure", timeout_s=300.0)
    graph.lifecycle.require("activate")


def take_down(graph: Graph, proc) -> None:
    try:
        graph.lifecycle.shutdown()
        proc.wait(timeout=30)
    except Exception:  # noqa: BLE001 - stop_process below cleans up whatever is left
        pass
    stop_process(proc)


def measure_overhead(args, env, log_dir: Path) -> dict:
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float32MultiArray

    from paradigms_policy.ros.conversions import array_to_multiarray, vector_to_joint_state

    overrides = {"checkpoint": args.checkpoint, "tick_on_topic": "robot/gripper/joint_states", "n_action_steps": 1,
                 "latency_budget_ms": args.overhead_budget_ms}
    if args.sampler:
        overrides["sampler"] = args.sampler
    proc = start_node(POLICY_NODE_MODULE, ros_args([args.params_file], overrides), env, log_dir / "overhead_node.log")
    graph = Graph()
    pubs = {k: graph.node.create_publisher(Float32MultiArray, f"robot/obs/{k}", qos_profile_sensor_data)
            for k in OBS_SIZES}
    joints = graph.node.create_publisher(JointState, "robot/gripper/joint_states", qos_profile_sensor_data)
    rng = np.random.default_rng(0)
    samples = []
    try:
        bring_up(graph)
        period = 1.0 / args.rate_hz
        end = time.monotonic() + args.overhead_duration
        while time.monotonic() < end:
            started = time.monotonic()
            for key, size in OBS_SIZES.items():
                pubs[key].publish(array_to_multiarray(rng.normal(0, 0.1, size).astype(np.float32)))
            n_traj, n_cycle = len(graph.trajectories), len(graph.cycles)
            graph.spin_until(lambda: False, 0.002)  # let the arrays land before the ticking JointState
            sent = time.time()
            joints.publish(vector_to_joint_state([0.02, -0.02], FINGERS, graph.node.get_clock().now().to_msg()))
            if graph.spin_until(lambda: len(graph.trajectories) > n_traj and len(graph.cycles) > n_cycle, 5.0):
                received = graph.trajectories[n_traj][0]
                cycle = graph.cycles[n_cycle]
                latency_ms = (received - sent) * 1e3
                inbound_ms = (float(cycle["obs_time_s"]) - sent) * 1e3  # same host clock
                samples.append((latency_ms, float(cycle["sampling_ms"]), float(cycle["rounds"]),
                                float(cycle["queue_ms"]), float(cycle["before_solve_ms"]),
                                float(cycle["after_solve_ms"]), inbound_ms))
            graph.spin_until(lambda: False, max(0.0, period - (time.monotonic() - started)))
    finally:
        take_down(graph, proc)
        graph.close()
    arr = np.array(samples) if samples else np.zeros((0, 7))
    latency, sampling = arr[:, 0], arr[:, 1]
    return {"cycles": len(samples), "obs_to_chunk_ms": percentiles(latency), "sampling_ms": percentiles(sampling),
            "overhead_ms": percentiles(latency - sampling), "rounds_mean": float(arr[:, 2].mean()) if samples else None,
            # inside the node: tick -> worker thread, conversion before the solve, messages + publish after it
            "node_queue_ms": percentiles(arr[:, 3]), "node_before_solve_ms": percentiles(arr[:, 4]),
            "node_after_solve_ms": percentiles(arr[:, 5]),
            # driver publish -> the node's subscription callback (DDS in + the node's executor)
            "inbound_ms": percentiles(arr[:, 6])}


def measure_on_time(args, env, log_dir: Path) -> dict:
    overrides = {"checkpoint": args.checkpoint}
    if args.sampler:
        overrides["sampler"] = args.sampler
    if args.budget_ms:
        overrides["latency_budget_ms"] = args.budget_ms
    robot_overrides = {}
    if args.control_rate_hz:
        overrides["control_rate_hz"] = robot_overrides["control_rate_hz"] = args.control_rate_hz
    proc = start_node(POLICY_NODE_MODULE, ros_args([args.params_file], overrides), env, log_dir / "on_time_node.log")
    robot = start_node(SIM_ROBOT_MODULE, ros_args([args.sim_params_file], robot_overrides), env,
                       log_dir / "sim_robot.log")
    graph = Graph()
    try:
        bring_up(graph)
        graph.cycles.clear()
        graph.trajectories.clear()
        graph.spin_until(lambda: proc.poll() is not None or robot.poll() is not None, args.duration)
        if proc.poll() is not None or robot.poll() is not None:
            raise RuntimeError(f"a node exited early; see {log_dir}")
    finally:
        take_down(graph, proc)
        stop_process(robot)
        graph.close()
    from paradigms_policy.ros.conversions import time_to_nanoseconds

    # the first chunk after activation is solved without a deadline (the robot waits for it): not a budgeted cycle
    first = [c for c in graph.cycles if c.get("first") == "1"]
    cycles = [c for c in graph.cycles if c.get("first") != "1"]
    latency = np.array([float(c["latency_ms"]) for c in cycles])
    budget = float(args.budget_ms or _params_value(args.params_file, "latency_budget_ms"))
    # robot-side view: did the chunk reach a subscriber before its first action is due?
    early = [received <= time_to_nanoseconds(m.header.stamp) * 1e-9 for received, m in graph.trajectories]
    return {
        "duration_s": args.duration, "budget_ms": budget, "cycles": len(cycles),
        "control_rate_hz": float(args.control_rate_hz or _params_value(args.params_file, "control_rate_hz")),
        "first_chunk_ms": [float(c["latency_ms"]) for c in first],
        "on_time_fraction": float(np.mean(latency <= budget)) if len(cycles) else float("nan"),
        "arrived_before_start_fraction": float(np.mean(early)) if early else float("nan"),
        "latency_ms": percentiles(latency), "sampling_ms": percentiles([float(c["sampling_ms"]) for c in cycles]),
        "rounds_mean": float(np.mean([float(c["rounds"]) for c in cycles])) if cycles else None,
        "converged_fraction": float(np.mean([int(c["converged"]) for c in cycles])) if cycles else None,
        "warm_start_fraction": float(np.mean([int(c["warm_started"]) for c in cycles])) if cycles else None,
        "sampler": cycles[-1]["sampler"] if cycles else None,
    }


def _params_value(params_file: str, name: str):
    import yaml

    return yaml.safe_load(Path(params_file).read_text())["paradigms_policy_node"]["ros__parameters"][name]


def print_table(report: dict) -> None:
    o, t = report.get("overhead"), report.get("on_time")
    print("\n== paradigms_policy_node over loopback DDS ==")
    if o:
        print(f"{'observation -> chunk (driver)':34s} p50 {o['obs_to_chunk_ms']['p50']:8.2f} ms   "
              f"p99 {o['obs_to_chunk_ms']['p99']:8.2f} ms   ({o['cycles']} cycles)")
        print(f"{'  sampling (inside the node)':34s} p50 {o['sampling_ms']['p50']:8.2f} ms   "
              f"p99 {o['sampling_ms']['p99']:8.2f} ms")
        print(f"{'  latency minus sampling':34s} p50 {o['overhead_ms']['p50']:8.2f} ms   "
              f"p99 {o['overhead_ms']['p99']:8.2f} ms   goal p50 <= 3 ms: "
              f"{'met' if o['overhead_ms']['p50'] <= 3.0 else 'NOT met'}")
        print(f"{'    in the node: queue/convert/publish':34s} p50 {o['node_queue_ms']['p50']:.2f} / "
              f"{o['node_before_solve_ms']['p50']:.2f} / {o['node_after_solve_ms']['p50']:.2f} ms")
        print(f"{'    DDS in (publish -> callback)':34s} p50 {o['inbound_ms']['p50']:.2f} ms")
    if t:
        print(f"{'on-time cycles (' + format(t['budget_ms'], '.0f') + ' ms @ ' + format(t['control_rate_hz'], 'g') + ' Hz)':34s} "
              f"{t['on_time_fraction']:8.2%}   over {t['duration_s']:.0f} s, {t['cycles']} chunks   goal >= 99%: "
              f"{'met' if t['on_time_fraction'] >= 0.99 else 'NOT met'}")
        print(f"{'  tick -> publish latency':34s} p50 {t['latency_ms']['p50']:8.2f} ms   "
              f"p99 {t['latency_ms']['p99']:8.2f} ms")
        print(f"{'  chunks arriving before their start':34s} {t['arrived_before_start_fraction']:8.2%}")
        print(f"{'  rounds mean / converged / warm':34s} {t['rounds_mean']:.1f} / {t['converged_fraction']:.0%} / "
              f"{t['warm_start_fraction']:.0%}   ({t['sampler']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(paths.default_checkpoint()))
    parser.add_argument("--params-file", default=str(REPO / "config" / "policy.yaml"))
    parser.add_argument("--sim-params-file", default=str(REPO / "config" / "sim_robot.yaml"))
    parser.add_argument("--sampler", default=None, help="sampler kind (default: the params file's)")
    parser.add_argument("--budget-ms", type=float, default=None, help="on-time run budget (default: params file)")
    parser.add_argument("--overhead-budget-ms", type=float, default=100.0,
                        help="budget of the overhead run (its solves only need to finish; overhead excludes them)")
    parser.add_argument("--control-rate-hz", type=float, default=None,
                        help="control rate of both nodes in the on-time run (default: the params files')")
    parser.add_argument("--rate-hz", type=float, default=20.0, help="overhead run request rate")
    parser.add_argument("--overhead-duration", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=120.0, help="on-time run length (s)")
    parser.add_argument("--skip", choices=["overhead", "on_time"], default=None)
    parser.add_argument("--out", default=str(REPO / "runs" / "ros_latency.json"))
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        print(f"checkpoint {args.checkpoint} not found", file=sys.stderr)
        return 2
    import rclpy

    log_dir = Path(tempfile.mkdtemp(prefix="ros_latency_"))
    env = private_ros_env(log_dir=log_dir / "ros")
    apply_env(env)
    rclpy.init()
    report: dict = {"checkpoint": args.checkpoint, "machine": platform.platform(), "python": sys.version.split()[0],
                    "logs": str(log_dir)}
    try:
        if args.skip != "overhead":
            report["overhead"] = measure_overhead(args, env, log_dir)
        if args.skip != "on_time":
            report["on_time"] = measure_on_time(args, env, log_dir)
    finally:
        rclpy.try_shutdown()
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
