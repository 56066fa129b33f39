"""``paradigms-ros-demo`` (``make demo``): the policy node and a simulated Lift robot as two processes
talking over real ROS 2 topics on loopback. ``--task lift_image`` (``make demo-image``): the robot also
publishes its agentview camera as sensor_msgs/Image and the node runs the image checkpoint from it.

The demo plays lifecycle manager: it starts both nodes with ``--ros-args --params-file``, brings
the policy node up through its ``change_state`` service (configure, activate), lets the robot
run a few episodes (restarting the node with deactivate/activate at each new episode, as
DiffusionPolicy's evaluation resets its policy), then takes the node down (deactivate, cleanup, shutdown) and prints the
success rate and the latency / rounds statistics reported by the node. A private
ROS_DOMAIN_ID and localhost-only discovery keep it off any other ROS graph.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from paradigms_policy import paths
from paradigms_policy.ros.processes import (
    POLICY_NODE_MODULE,
    SIM_ROBOT_MODULE,
    apply_env,
    private_ros_env,
    ros_args,
    start_node,
    stop_process,
)

POLICY_NODE = "/paradigms_policy_node"
# per task: the shipped checkpoint and the policy-node params files read after --params-file
TASK_PRESETS: dict[str, dict] = {
    "lift": {"checkpoint": "lift_lowdim.pt", "params_files": []},
    "lift_image": {"checkpoint": "lift_image.pt", "params_files": ["policy_lift_image.yaml"],
                   "image_topics": ["robot/obs/agentview_image"]},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="paradigms-ros-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="lift", choices=tuple(TASK_PRESETS),
                        help="lift: low-dim Lift; lift_image: Lift from the agentview camera (sensor_msgs/Image topics)")
    parser.add_argument("--checkpoint", default=None,
                        help="policy checkpoint (.pt; default: the task's shipped one, checkpoints/lift_lowdim.pt or "
                             "checkpoints/lift_image.pt)")
    parser.add_argument("--episodes", type=int, default=3, help="Lift episodes to run")
    parser.add_argument("--sampler", default=None, help="sampler kind (default: the params file's)")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME:=VALUE",
                        help="further policy-node parameter overrides, e.g. deadline_safety_factor:=1.2")
    parser.add_argument("--budget-ms", type=float, default=None, help="latency budget (default: the params file's)")
    parser.add_argument("--rate-hz", type=float, default=None,
                        help="control rate of both nodes (default: the params files', Lift's real 20 Hz); a lower rate "
                             "slows the simulated world down, which hides latency: figures are only real at 20 Hz")
    parser.add_argument("--execution", default=None, choices=("naive", "aligned", "inpaint"),
                        help="how late chunks are placed in time (default: the params file's)")
    parser.add_argument("--params-file", default=str(paths.config_dir() / "policy.yaml"))
    parser.add_argument("--sim-params-file", default=str(paths.config_dir() / "sim_robot.yaml"))
    parser.add_argument("--seed", type=int, default=None, help="seed of the first episode (default: sim_robot.yaml's)")
    parser.add_argument("--max-episode-steps", type=int, default=None, help="episode step limit (default: the task's)")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="give up on an episode after this long")
    parser.add_argument("--log-dir", default=None, help="where the nodes' logs go (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    preset = TASK_PRESETS[args.task]
    if args.checkpoint is None:
        args.checkpoint = str(paths.checkpoints_dir() / preset["checkpoint"])
    args.params_files = [args.params_file] + [str(paths.config_dir() / name) for name in preset["params_files"]]
    return args


def image_to_chunk_ms(cycles: list[dict], image_topics: list[str],
                      image_received: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per chunk, ms from its camera image to the chunk's publication (the node's ``arrival_s``), two ways:

    - from the node's receipt of the newest image the chunk used (``input_stamps`` of its cycle stats);
    - from the image's publication: the time this process received the same image (its receive time within
      10 ms of the node's; ``image_received`` maps header stamp ns -> receive time s), i.e. the sim's
      publish time plus one loopback hop.
    All times are ROS system time on one machine.
    """
    received = np.array(sorted(image_received.values()))
    from_node, from_publish = [], []
    for cycle in cycles:
        stamps = dict(part.split("=", 1) for part in cycle.get("input_stamps", "").split(";") if "=" in part)
        newest = [float(stamps[t].split(",")[-1]) for t in image_topics if t in stamps]
        if not newest:
            continue
        node_received, arrival = max(newest), float(cycle["arrival_s"])
        from_node.append((arrival - node_received) * 1e3)
        if received.size:
            nearest = received[np.argmin(np.abs(received - node_received))]
            if abs(nearest - node_received) < 0.010:
                from_publish.append((arrival - nearest) * 1e3)
    return np.asarray(from_node), np.asarray(from_publish)


def summarize(results: list[dict], cycles: list[dict], budget_ms: float | None = None,
              image_topics: list[str] = (), image_received: dict[int, float] | None = None) -> dict:
    """Success rate and per-chunk statistics from the episode results and the node's cycle stats (and, with
    camera topics, image -> chunk latency; ``image_received``: image stamp ns -> receive time s here)."""
    summary: dict = {"episodes": len(results), "successes": sum(r["success"] for r in results)}
    summary["success_rate"] = summary["successes"] / len(results) if results else 0.0
    summary["episode_steps"] = [r["steps"] for r in results]
    summary["idle_steps"] = sum(r["idle_steps"] for r in results)
    summary["dropped_points"] = sum(r["dropped_points"] for r in results)
    first = [c for c in cycles if c.get("first") == "1"]  # solved without a deadline while the robot waits
    cycles = [c for c in cycles if c.get("first") != "1"]
    if first:
        summary["first_chunk_ms"] = [float(c["latency_ms"]) for c in first]
    if cycles:
        def column(key: str) -> np.ndarray:
            return np.array([float(c[key]) for c in cycles])

        latency, sampling, rounds = column("latency_ms"), column("sampling_ms"), column("rounds")
        obs_age = (column("arrival_s") - column("obs_time_s")) * 1e3
        summary.update(
            chunks=len(cycles),
            latency_p50_ms=float(np.percentile(latency, 50)), latency_p99_ms=float(np.percentile(latency, 99)),
            sampling_p50_ms=float(np.percentile(sampling, 50)),
            overhead_p50_ms=float(np.percentile(latency - sampling, 50)),
            rounds_mean=float(rounds.mean()), rounds_p50=float(np.percentile(rounds, 50)), rounds_max=int(rounds.max()),
            converged_fraction=float(column("converged").mean()),
            deadline_hit_fraction=float(column("deadline_hit").mean()),
            warm_start_fraction=float(column("warm_started").mean()),
            budget_miss_fraction=float(np.mean(latency > budget_ms)) if budget_ms else None,
            sampler=cycles[-1].get("sampler", "?"),
            execution=cycles[-1].get("execution", "?"),
            obs_to_arrival_p50_ms=float(np.percentile(obs_age, 50)),
            obs_to_arrival_p99_ms=float(np.percentile(obs_age, 99)),
            dropped_on_arrival_mean=float(column("dropped_actions").mean()),
            known_actions_mean=float(column("known_actions").mean()),
            replan_periods=float(np.median([float(c["n_executed"]) for c in cycles if float(c["n_executed"]) > 0]
                                           or [np.nan])),
        )
        from_node, from_publish = image_to_chunk_ms(cycles, image_topics, image_received or {})
        for name, values in (("image_to_chunk", from_node), ("image_published_to_chunk", from_publish)):
            if values.size:
                summary.update({f"{name}_chunks": int(values.size),
                                f"{name}_p50_ms": float(np.percentile(values, 50)),
                                f"{name}_p99_ms": float(np.percentile(values, 99))})
    return summary


def print_summary(summary: dict, budget_ms: float | None) -> None:
    print("\n=== paradigms_policy ROS 2 demo (policy node + simulated Lift robot over loopback DDS) ===")
    print(f"episodes            {summary['episodes']}  successes {summary['successes']}  "
          f"success rate {summary['success_rate']:.0%}  (steps {summary['episode_steps']})")
    if "chunks" not in summary:
        print("no chunks were published")
        return
    budget = f" (budget {budget_ms:.0f} ms)" if budget_ms else ""
    print(f"sampler             {summary['sampler']}, {summary['chunks']} chunks")
    print(f"latency tick->chunk p50 {summary['latency_p50_ms']:.1f} ms  p99 {summary['latency_p99_ms']:.1f} ms{budget}"
          + (f", {summary['budget_miss_fraction']:.1%} over budget" if summary.get("budget_miss_fraction") is not None
             else ""))
    if summary.get("first_chunk_ms"):
        print(f"first chunk         {summary['first_chunk_ms'][0]:.0f} ms (solved to convergence while the robot waits)")
    print(f"sampling time       p50 {summary['sampling_p50_ms']:.1f} ms  (node overhead p50 "
          f"{summary['overhead_p50_ms']:.2f} ms)")
    print(f"parallel rounds     mean {summary['rounds_mean']:.1f}  p50 {summary['rounds_p50']:.0f}  "
          f"max {summary['rounds_max']}")
    print(f"converged           {summary['converged_fraction']:.0%} of chunks  (deadline reached in "
          f"{summary['deadline_hit_fraction']:.0%})")
    print(f"warm-started        {summary['warm_start_fraction']:.0%} of chunks")
    print(f"robot               {summary['idle_steps']} idle steps, {summary['dropped_points']} late points dropped")
    print(f"chunk timing        {summary['execution']}: observation -> chunk arrival p50 "
          f"{summary['obs_to_arrival_p50_ms']:.0f} ms, p99 {summary['obs_to_arrival_p99_ms']:.0f} ms; "
          f"{summary['dropped_on_arrival_mean']:.1f} actions past on arrival, "
          f"{summary['known_actions_mean']:.1f} committed actions inpainted (mean per chunk)")
    if "image_to_chunk_p50_ms" in summary:
        print(f"camera image        received by the node -> chunk published p50 {summary['image_to_chunk_p50_ms']:.0f} "
              f"ms, p99 {summary['image_to_chunk_p99_ms']:.0f} ms ({summary['image_to_chunk_chunks']} chunks)")
    if "image_published_to_chunk_p50_ms" in summary:
        print(f"                    published by the robot -> chunk published p50 "
              f"{summary['image_published_to_chunk_p50_ms']:.0f} ms, p99 {summary['image_published_to_chunk_p99_ms']:.0f} ms")
    for line in slow_machine_advice(summary, budget_ms):
        print(f"NOTE                {line}")


def slow_machine_advice(summary: dict, budget_ms: float | None) -> list[str]:
    """What to change when this machine cannot keep the robot's rate (empty when it can)."""
    advice = []
    period_ms = summary.get("period_ms", 50.0)
    chunk_ms = period_ms * (summary.get("replan_periods") or 8)
    steps = sum(summary.get("episode_steps", [])) or 1
    if summary["idle_steps"] > 0.05 * steps:
        advice.append(f"the robot idled {summary['idle_steps']} of {steps} steps waiting for chunks: this machine "
                      f"cannot keep the control rate with this sampler")
    if summary.get("budget_miss_fraction") and summary["budget_miss_fraction"] > 0.05:
        advice.append(f"{summary['budget_miss_fraction']:.0%} of chunks missed the {budget_ms:.0f} ms budget")
    if summary["obs_to_arrival_p50_ms"] > chunk_ms / 2:
        advice.append(f"chunks arrive {summary['obs_to_arrival_p50_ms']:.0f} ms after their observation "
                      f"(over half of the {chunk_ms:.0f} ms between re-plans)")
    if advice:
        advice.append("to change: --sampler ddim_sequential (fastest on a CPU), a GPU (device:=cuda), or a larger "
                      "--budget-ms with execution inpaint; see README 'Real time on a CPU'")
    return advice


def run_demo(args: argparse.Namespace) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from paradigms_policy.ros.diagnostics import status_values
    from paradigms_policy.ros.lifecycle_client import LifecycleClient

    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="paradigms_ros_demo_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    env = private_ros_env(log_dir=log_dir / "ros")
    apply_env(env)
    print(f"ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} (localhost only); node logs in {log_dir}")
    # tick on the robot's state message (published last each step): one history entry per robot step
    overrides: dict = {"checkpoint": str(args.checkpoint), "tick_on_topic": "robot/gripper/joint_states"}
    if args.sampler:
        overrides["sampler"] = args.sampler
    if args.budget_ms:
        overrides["latency_budget_ms"] = float(args.budget_ms)
    if args.execution:
        overrides["execution"] = args.execution
    sim_overrides: dict = {"episodes": args.episodes, "task": args.task}
    if args.rate_hz:
        overrides["control_rate_hz"] = sim_overrides["control_rate_hz"] = float(args.rate_hz)
    if args.seed is not None:
        sim_overrides["seed"] = args.seed
    if args.max_episode_steps:
        sim_overrides["max_episode_steps"] = args.max_episode_steps
    args_policy = ros_args(args.params_files, overrides) + [a for item in args.set for a in ("-p", item)]
    policy = start_node(POLICY_NODE_MODULE, args_policy, env, log_dir / "policy_node.log")
    robot = start_node(SIM_ROBOT_MODULE, ros_args([args.sim_params_file], sim_overrides), env,
                       log_dir / "sim_robot_node.log")
    rclpy.init()
    node = rclpy.create_node("paradigms_ros_demo")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    results: list[dict] = []
    cycles: list[dict] = []
    node.create_subscription(String, "robot/episode_result", lambda m: _on_result(m, results), 10)
    node.create_subscription(DiagnosticStatus, "policy/cycle_stats", lambda m: cycles.append(status_values(m)), 100)
    image_received: dict[int, float] = {}  # camera image stamp (ns, to the us) -> receive time (s, system clock)

    def on_image(message: Image) -> None:
        stamp_ns = round((message.header.stamp.sec * 1_000_000_000 + message.header.stamp.nanosec) / 1000) * 1000
        image_received.setdefault(stamp_ns, node.get_clock().now().nanoseconds * 1e-9)

    for topic in TASK_PRESETS[args.task].get("image_topics", []):
        node.create_subscription(Image, topic, on_image, qos_profile_sensor_data)
    lifecycle = LifecycleClient(node, executor, POLICY_NODE)
    try:
        lifecycle.wait_for_services(60.0)
        print("configure: loading the checkpoint, building the sampler, warming up ...")
        lifecycle.require("configure")
        lifecycle.require("activate")
        print(f"active; running {args.episodes} episode(s)")
        deadline = time.monotonic() + args.timeout_s * max(1, args.episodes)
        restarted = 0
        while len(results) < args.episodes and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1 if restarted == len(results) else 0.0)
            if restarted < len(results) < args.episodes:
                # a new episode: restart the policy (as DiffusionPolicy's evaluation calls policy.reset()),
                # so nothing committed or warm-started from the last episode carries over
                lifecycle.require("deactivate")
                lifecycle.require("activate")
                restarted = len(results)
            for process, name in ((policy, "policy node"), (robot, "sim robot")):
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {process.returncode}; see {log_dir}")
        if len(results) < args.episodes:
            print(f"timed out after {len(results)} of {args.episodes} episodes")
        lifecycle.require("deactivate")
        lifecycle.require("cleanup")
        lifecycle.change_state("shutdown")
        policy.wait(timeout=30)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        stop_process(robot)
        stop_process(policy)
    summary = summarize(results, cycles, budget_ms(args), TASK_PRESETS[args.task].get("image_topics", []),
                        image_received)
    summary["task"] = args.task
    summary["period_ms"] = 1e3 / (args.rate_hz or _params(args.params_file).get("control_rate_hz", 20.0))
    return summary


def budget_ms(args: argparse.Namespace) -> float | None:
    if args.budget_ms:
        return float(args.budget_ms)
    return _params(args.params_file).get("latency_budget_ms")


def _params(path: str) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())["paradigms_policy_node"]["ros__parameters"]


def _on_result(message, results: list[dict]) -> None:
    result = json.loads(message.data)
    results.append(result)
    print(f"  episode {result['episode']} (seed {result['seed']}): {'success' if result['success'] else 'failure'} "
          f"after {result['steps']} steps, {result['duration_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.checkpoint).is_file():
        print(f"checkpoint {args.checkpoint} not found (train one with paradigms-train, or pass --checkpoint)",
              file=sys.stderr)
        return 2
    try:
        summary = run_demo(args)
    except KeyboardInterrupt:
        print("interrupted; nodes stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - report and exit non-zero
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print_summary(summary, budget_ms(args))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0 if summary["episodes"] == args.episodes else 1


if __name__ == "__main__":
    sys.exit(main())
