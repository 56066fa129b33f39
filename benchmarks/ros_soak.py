"""Soak test of paradigms_policy_node under a random fault schedule (two processes, loopback DDS).

The node runs as deployed (config/policy.yaml: the shipped Lift checkpoint, anderson_warm, 200 ms
budget, 20 Hz, on_input_fault hold). A driver in this process replays the recorded Lift episodes
(checkpoints/lift_lowdim.episode.npz) at 20 Hz over ROS, looping, and every few seconds injects
one fault drawn at random from every kind the node must survive: finite garbage (quaternion at
-1e30, not unit norm, object at 1e30), one-off bad messages (1e30, NaN), NaN, wrong lengths, bad
JointStates, a stale topic, all topics silent, and parameter changes that must be refused while
active (joint_names, action_names, control_rate_hz, a budget too small for one round).

It reports, against the issue's targets:

- chunks on time: policy chunks published within the latency budget of their tick (>= 99%);
- chunks from bad data: chunks whose inputs (``input_stamps`` in policy/cycle_stats) include a
  message the driver sent bad (0);
- faults survived (the node is up and a chunk from good data follows, or the parameter was
  refused with a reason), recovery time (good data back -> first chunk received) p50/p99;
- log lines per fault (node log lines timed inside the fault's window), holes on the robot's
  timeline after one-off faults, and the node's exit code on SIGINT at the end.

    python benchmarks/ros_soak.py [--duration 600] [--seed 0] [--out benchmarks/results/ros_soak.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from paradigms_policy import paths  # noqa: E402
from paradigms_policy.ros.node_params import LIFT_FINGERS, LIFT_OBS_TOPICS  # noqa: E402
from paradigms_policy.ros.processes import (  # noqa: E402
    POLICY_NODE_MODULE,
    apply_env,
    private_ros_env,
    ros_args,
    start_node,
    stop_process,
)

NODE = "/paradigms_policy_node"
RATE_HZ = 20.0
OBJECT, EEF_POS, QUAT, GRIPPER = LIFT_OBS_TOPICS
KEY_OF = {OBJECT: "object", EEF_POS: "robot0_eef_pos", QUAT: "robot0_eef_quat", GRIPPER: "robot0_gripper_qpos"}
LOG_LINE = re.compile(r"^\[(DEBUG|INFO|WARN|ERROR|FATAL)\] \[(\d+\.\d+)\] \[[^\]]*\]: (.*)$")


@dataclass(frozen=True)
class FaultKind:
    """How to break the inputs (or parameters) for a while."""

    name: str
    topic: str | None  # None: a parameter fault
    duration_s: tuple[float, float]  # drawn uniformly; (0, 0): one message
    issue_item: int  # item of the issue it repeats


FAULT_KINDS = (
    FaultKind("quat_minus_1e30", QUAT, (1.0, 3.0), 1),
    FaultKind("quat_not_unit_norm", QUAT, (0.5, 1.5), 1),
    FaultKind("object_1e30", OBJECT, (0.5, 1.5), 1),
    FaultKind("eef_pos_1e30_once", EEF_POS, (0.0, 0.0), 2),
    FaultKind("object_nan_once", OBJECT, (0.0, 0.0), 2),
    FaultKind("object_nan", OBJECT, (0.5, 1.5), 3),
    FaultKind("object_wrong_length", OBJECT, (0.5, 1.5), 3),
    FaultKind("joint_state_unknown_joint", GRIPPER, (0.5, 1.5), 3),
    FaultKind("joint_state_missing_joint", GRIPPER, (0.5, 1.5), 3),
    FaultKind("eef_pos_stale", EEF_POS, (1.0, 2.5), 3),
    FaultKind("all_topics_silent", "*", (0.5, 1.5), 3),
    FaultKind("param_joint_names_swapped", None, (0.0, 0.0), 4),
    FaultKind("param_action_names_3", None, (0.0, 0.0), 4),
    FaultKind("param_control_rate_10hz", None, (0.0, 0.0), 4),
    FaultKind("param_budget_1ms", None, (0.0, 0.0), 5),
)
PARAM_FAULTS = {
    "param_joint_names_swapped": {"joint_names": list(reversed(LIFT_FINGERS))},
    "param_action_names_3": {"action_names": ["eef_dx", "eef_dy", "eef_dz"]},
    "param_control_rate_10hz": {"control_rate_hz": 10.0},
    "param_budget_1ms": {"latency_budget_ms": 1.0},
}


@dataclass
class FaultRecord:
    kind: str
    start_s: float
    end_s: float = 0.0  # good data back (input faults) or the request answered (parameters)
    window_end_s: float = 0.0  # the next fault's start
    alive_after: bool = True
    refused: bool | None = None  # parameter faults
    reason: str = ""
    recovery_s: float | None = None  # good data back -> first chunk received
    log_lines: int = 0
    error_lines: int = 0
    holes: int | None = None  # one-off faults: control periods without an action around them


@dataclass
class Replay:
    """The recorded Lift episodes, one observation per 20 Hz step, looping."""

    data: dict[str, np.ndarray]
    step: int = 0

    @classmethod
    def load(cls, path: Path) -> "Replay":
        episodes = np.load(path)
        return cls({key: np.asarray(episodes[key], dtype=np.float32) for key in KEY_OF.values()})

    def next(self) -> dict[str, np.ndarray]:
        n = len(self.data["object"])
        obs = {key: values[self.step % n] for key, values in self.data.items()}
        self.step += 1
        return obs


class SoakDriver:
    """Publishes the replay (with faults), records chunks, cycle stats, trajectories and /diagnostics."""

    def __init__(self, replay: Replay):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticStatus
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float32MultiArray
        from trajectory_msgs.msg import JointTrajectory

        from paradigms_policy.ros.diagnostics import status_values
        from paradigms_policy.ros.lifecycle_client import LifecycleClient
        from paradigms_policy.ros.robot_view import PlanView, SentLog

        self.node = rclpy.create_node("ros_soak_driver")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.pubs = {t: self.node.create_publisher(Float32MultiArray, t, qos_profile_sensor_data)
                     for t in (OBJECT, EEF_POS, QUAT)}
        self.pubs[GRIPPER] = self.node.create_publisher(JointState, GRIPPER, qos_profile_sensor_data)
        self.replay = replay
        self.sent = SentLog()
        self.plan = PlanView()
        self.chunk_times: list[float] = []
        self.cycles: list[dict] = []
        self.holds = 0
        self.bad: dict[str, object] = {}  # topic -> "silent" or a function making the bad message
        self.once: dict[str, object] = {}
        self.node.create_subscription(JointTrajectory, "policy/joint_trajectory", self._on_trajectory, 100)
        self.node.create_subscription(Float32MultiArray, "policy/action_chunk",
                                      lambda m: self.chunk_times.append(self.now_s()), 100)
        self.node.create_subscription(DiagnosticStatus, "policy/cycle_stats",
                                      lambda m: self.cycles.append(status_values(m)), 100)
        self.lifecycle = LifecycleClient(self.node, self.executor, NODE)
        self._next_publish = time.monotonic()
        self.load: list[tuple[float, float]] = []  # (time, 1-minute load average): other jobs on the machine
        self._next_load = 0.0

    def now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _on_trajectory(self, msg) -> None:
        from paradigms_policy.ros.conversions import duration_to_seconds, time_to_nanoseconds
        from paradigms_policy.ros.robot_view import ReceivedPlan

        points = np.array([p.positions for p in msg.points])
        if len(points) and (points[:, :6] == 0).all():
            self.holds += 1
        times = [duration_to_seconds(p.time_from_start) for p in msg.points]
        dt = times[1] - times[0] if len(times) > 1 else 1.0 / RATE_HZ
        start = time_to_nanoseconds(msg.header.stamp) * 1e-9 + times[0]
        self.plan.add(ReceivedPlan(self.now_s(), start, len(msg.points), dt))

    def _messages(self) -> dict[str, object]:
        from paradigms_policy.ros.conversions import array_to_multiarray, vector_to_joint_state

        obs = self.replay.next()
        msgs = {topic: array_to_multiarray(obs[KEY_OF[topic]]) for topic in (OBJECT, EEF_POS, QUAT)}
        msgs[GRIPPER] = vector_to_joint_state(obs["robot0_gripper_qpos"].tolist(), LIFT_FINGERS,
                                              self.node.get_clock().now().to_msg())
        return msgs

    def publish(self) -> None:
        msgs = self._messages()
        replaced = {**self.bad, **self.once}
        self.once = {}
        now = self.now_s()
        for topic, good in msgs.items():
            bad = replaced.get(topic, replaced.get("*"))
            if bad == "silent":
                continue
            msg = bad(good) if bad is not None else good
            self.sent.record(topic, now, bad=bad is not None)
            self.pubs[topic].publish(msg)

    def spin(self, seconds: float, until=None) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= self._next_load:
                self.load.append((self.now_s(), os.getloadavg()[0]))
                self._next_load = now + 5.0
            if now >= self._next_publish:
                self.publish()
                self._next_publish = max(self._next_publish + 1.0 / RATE_HZ, now)
            self.executor.spin_once(timeout_sec=max(0.0, min(0.005, self._next_publish - time.monotonic())))
            if until is not None and until():
                return True
        return until is None

    def set_parameters(self, values: dict) -> list:
        from rcl_interfaces.msg import Parameter as ParameterMsg
        from rcl_interfaces.msg import ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        client = self.node.create_client(SetParameters, f"{NODE}/set_parameters")
        client.wait_for_service(timeout_sec=10.0)
        request = SetParameters.Request()
        for name, value in values.items():
            msg = ParameterMsg(name=name)
            if isinstance(value, float):
                msg.value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
            else:
                msg.value = ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=value)
            request.parameters.append(msg)
        future = client.call_async(request)
        end = time.monotonic() + 10.0
        while not future.done() and time.monotonic() < end:
            self.spin(0.01)
        self.node.destroy_client(client)
        return list(future.result().results) if future.done() else []

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def bad_message(kind: str):
    """good message -> bad message, for the input faults."""
    from paradigms_policy.ros.conversions import array_to_multiarray, multiarray_to_array, vector_to_joint_state

    def values(make):
        return lambda good: array_to_multiarray(make(multiarray_to_array(good)).astype(np.float32))

    return {
        "quat_minus_1e30": values(lambda v: np.full_like(v, -1e30)),
        "quat_not_unit_norm": values(lambda v: v * 1.5),
        "object_1e30": values(lambda v: np.full_like(v, 1e30)),
        "eef_pos_1e30_once": values(lambda v: np.full_like(v, 1e30)),
        "object_nan_once": values(lambda v: np.where(np.arange(v.size) == 3, np.nan, v)),
        "object_nan": values(lambda v: np.where(np.arange(v.size) == 3, np.nan, v)),
        "object_wrong_length": values(lambda v: v[:-1]),
        "joint_state_unknown_joint": lambda good: vector_to_joint_state([*good.position, 0.0],
                                                                        [*LIFT_FINGERS, "robot0_joint1"]),
        "joint_state_missing_joint": lambda good: vector_to_joint_state(list(good.position)[:1], LIFT_FINGERS[:1]),
        "eef_pos_stale": "silent",
        "all_topics_silent": "silent",
    }[kind]


def schedule(duration_s: float, rng: random.Random, gap_s: tuple[float, float]) -> list[tuple[float, FaultKind]]:
    """(offset from the start, kind): every kind in a shuffled round, repeated until the run is full."""
    out, t = [], 10.0  # ten seconds of good data first
    while True:
        kinds = list(FAULT_KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            if t + max(kind.duration_s) + 3.0 > duration_s:
                return out
            out.append((t, kind))
            t += max(kind.duration_s) + rng.uniform(*gap_s)


def run_fault(drv: SoakDriver, kind: FaultKind, rng: random.Random, proc) -> FaultRecord:
    record = FaultRecord(kind.name, start_s=drv.now_s())
    if kind.topic is None:
        results = drv.set_parameters(PARAM_FAULTS[kind.name])
        record.refused = bool(results) and not any(r.successful for r in results)
        record.reason = results[0].reason if results else "no answer"
        record.end_s = drv.now_s()
    else:
        make = bad_message(kind.name)
        if kind.duration_s == (0.0, 0.0):
            drv.once = {kind.topic: make}
            drv.spin(1.0 / RATE_HZ)
        else:
            drv.bad = {kind.topic: make}
            drv.spin(rng.uniform(*kind.duration_s))
            drv.bad = {}
        record.end_s = drv.now_s()
    n = len(drv.chunk_times)
    drv.spin(5.0, until=lambda: len(drv.chunk_times) > n or proc.poll() is not None)
    if len(drv.chunk_times) > n:
        record.recovery_s = drv.chunk_times[n] - record.end_s
    record.alive_after = proc.poll() is None
    return record


def attribute_logs(records: list[FaultRecord], log_path: Path) -> None:
    lines = []
    for line in log_path.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if match:
            lines.append((match.group(1), float(match.group(2))))
    for record in records:
        inside = [level for level, t in lines if record.start_s - 0.05 <= t < record.window_end_s]
        record.log_lines = len(inside)
        record.error_lines = sum(level in ("WARN", "ERROR", "FATAL") for level in inside)


def percentile(values, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def by_minute(drv: SoakDriver, cycles: list[dict], records: list[FaultRecord], budget_ms: float) -> list[dict]:
    """On-time chunks, holes after one-off faults and the machine's load average, per minute of the run.

    The load average includes this benchmark (about 1 on this 2-core machine); other jobs show above it.
    """
    if not cycles:
        return []
    start = min(float(c["arrival_s"]) for c in cycles)
    rows: dict[int, dict] = {}
    for c in cycles:
        row = rows.setdefault(int((float(c["arrival_s"]) - start) // 60), {"chunks": 0, "on_time": 0})
        row["chunks"] += 1
        row["on_time"] += float(c["latency_ms"]) <= budget_ms
    out = []
    for minute, row in sorted(rows.items()):
        loads = [load for t, load in drv.load if minute * 60 <= t - start < (minute + 1) * 60]
        holes = sum(r.holes or 0 for r in records if minute * 60 <= r.start_s - start < (minute + 1) * 60)
        out.append({"minute": minute, "load1": float(np.mean(loads)) if loads else None, "chunks": row["chunks"],
                    "on_time_fraction": row["on_time"] / row["chunks"], "holes_after_one_off_faults": holes})
    return out


def summarize(records: list[FaultRecord], drv: SoakDriver, budget_ms: float, duration_s: float,
              exit_code: int | None) -> dict:
    cycles = [c for c in drv.cycles if c.get("first") != "1"]
    latency = np.array([float(c["latency_ms"]) for c in cycles])
    bad = [c for c in drv.cycles if drv.sent.bad_inputs_used(c.get("input_stamps", ""))]
    input_kinds = {k.name for k in FAULT_KINDS if k.topic is not None}
    recoveries = [r.recovery_s for r in records if r.kind in input_kinds and r.recovery_s is not None]
    survived = [r for r in records if r.alive_after and r.recovery_s is not None and r.refused is not False]
    per_kind = {}
    for kind in FAULT_KINDS:
        mine = [r for r in records if r.kind == kind.name]
        rec = [r.recovery_s for r in mine if r.recovery_s is not None]
        per_kind[kind.name] = {
            "issue_item": kind.issue_item, "count": len(mine),
            "survived": sum(r in survived for r in mine),
            "recovery_s_p50": percentile(rec, 50), "recovery_s_max": max(rec) if rec else None,
            "log_lines_mean": float(np.mean([r.log_lines for r in mine])) if mine else None,
            "log_lines_max": max((r.log_lines for r in mine), default=None),
            "holes": sum(r.holes or 0 for r in mine) if kind.duration_s == (0.0, 0.0) and kind.topic else None,
            "refused": sum(bool(r.refused) for r in mine) if kind.topic is None else None,
        }
    return {
        "duration_s": duration_s, "budget_ms": budget_ms, "chunks": len(cycles),
        "on_time_fraction": float(np.mean(latency <= budget_ms)) if len(cycles) else None,
        "latency_ms_p50": percentile(latency, 50), "latency_ms_p99": percentile(latency, 99),
        "rounds_mean": float(np.mean([float(c["rounds"]) for c in cycles])) if cycles else None,
        "chunks_from_bad_data": len(bad),
        "faults": len(records), "faults_survived": len(survived),
        "recovery_s_p50": percentile(recoveries, 50), "recovery_s_p99": percentile(recoveries, 99),
        "log_lines_per_fault_mean": float(np.mean([r.log_lines for r in records])) if records else None,
        "log_lines_per_fault_max": max((r.log_lines for r in records), default=None),
        "error_lines_per_fault_mean": float(np.mean([r.error_lines for r in records])) if records else None,
        "holes_after_one_off_faults": sum(r.holes or 0 for r in records),
        "holds_published": drv.holds, "exit_code_on_sigint": exit_code,
        "by_minute": by_minute(drv, cycles, records, budget_ms),
        "late_chunks": [{k: c.get(k) for k in ("arrival_s", "latency_ms", "sampling_ms", "queue_ms",
                                               "before_solve_ms", "after_solve_ms", "rounds", "warm_started",
                                               "deadline_hit")}
                        for c in cycles if float(c["latency_ms"]) > budget_ms],
        "per_kind": per_kind,
    }


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(summary: dict) -> None:
    s = summary
    print(f"\n== paradigms_policy_node soak: {s['duration_s']:.0f} s at {RATE_HZ:g} Hz, {s['faults']} faults ==")
    rows = [
        ("chunks on time (budget " + format(s["budget_ms"], "g") + " ms)",
         f"{fmt(s['on_time_fraction'], '.2%')} of {s['chunks']}", ">= 99%",
         "met" if (s["on_time_fraction"] or 0) >= 0.99 else "NOT met"),
        ("chunks published from bad data", str(s["chunks_from_bad_data"]), "0",
         "met" if s["chunks_from_bad_data"] == 0 else "NOT met"),
        ("faults survived", f"{s['faults_survived']} / {s['faults']}", "all",
         "met" if s["faults_survived"] == s["faults"] else "NOT met"),
        ("recovery time p50 / p99 (s)", f"{fmt(s['recovery_s_p50'], '.2f')} / {fmt(s['recovery_s_p99'], '.2f')}",
         "< 1 s", "" if s["recovery_s_p99"] is None else "met" if s["recovery_s_p99"] < 1.0 else "NOT met"),
        ("log lines per fault mean / max",
         f"{fmt(s['log_lines_per_fault_mean'], '.1f')} / {fmt(s['log_lines_per_fault_max'], 'd')}", "", ""),
        ("holes after one-off faults (periods)", str(s["holes_after_one_off_faults"]), "0",
         "met" if s["holes_after_one_off_faults"] == 0 else "NOT met"),
        ("exit code on SIGINT", str(s["exit_code_on_sigint"]), "0", ""),
    ]
    for name, value, goal, verdict in rows:
        print(f"{name:40s} {value:>18s}   goal {goal:6s} {verdict}")
    if s.get("by_minute"):
        print(f"\n{'minute':>6s} {'load avg':>8s} {'chunks':>6s} {'on time':>8s} {'holes':>5s}"
              "   (load average includes this run, about 1)")
        for row in s["by_minute"]:
            print(f"{row['minute']:>6d} {fmt(row['load1'], '.2f'):>8s} {row['chunks']:>6d} "
                  f"{row['on_time_fraction']:>8.1%} {row['holes_after_one_off_faults']:>5d}")
    print(f"\n{'fault kind':28s} {'item':>4s} {'n':>3s} {'survived':>8s} {'recov p50/max s':>16s} "
          f"{'log lines mean/max':>18s} {'holes':>5s}")
    for name, k in s["per_kind"].items():
        recovery = "-" if k["recovery_s_p50"] is None else f"{k['recovery_s_p50']:.2f}/{k['recovery_s_max']:.2f}"
        lines = "-" if k["log_lines_mean"] is None else f"{k['log_lines_mean']:.1f}/{k['log_lines_max']}"
        holes = "-" if k["holes"] is None else str(k["holes"])
        print(f"{name:28s} {k['issue_item']:>4d} {k['count']:>3d} {k['survived']:>8d} {recovery:>16s} "
              f"{lines:>18s} {holes:>5s}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of soak (default 10 minutes)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault schedule")
    parser.add_argument("--gap", type=float, nargs=2, default=(3.0, 5.0), help="good data between faults (s)")
    parser.add_argument("--checkpoint", default=str(paths.default_checkpoint()))
    parser.add_argument("--params-file", default=None, help="default: <node-root>/config/policy.yaml")
    parser.add_argument("--no-faults", action="store_true", help="good data only (an on-time baseline)")
    parser.add_argument("--node-root", default=str(REPO),
                        help="checkout whose policy node runs (e.g. another worktree, for an A/B baseline)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ros_soak.json"))
    args = parser.parse_args(argv)
    import rclpy
    import yaml

    node_root = Path(args.node_root).resolve()
    args.params_file = args.params_file or str(node_root / "config" / "policy.yaml")
    episodes = Path(args.checkpoint).with_suffix(".episode.npz")
    if not episodes.is_file():
        print(f"recorded episodes {episodes} not found (the replay needs them)", file=sys.stderr)
        return 2
    budget_ms = float(yaml.safe_load(Path(args.params_file).read_text())
                      ["paradigms_policy_node"]["ros__parameters"]["latency_budget_ms"])
    log_dir = Path(tempfile.mkdtemp(prefix="ros_soak_"))
    env = private_ros_env(log_dir=log_dir / "ros")
    apply_env(env)
    env["PYTHONPATH"] = os.pathsep.join([str(node_root), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave another checkout as it is
    rclpy.init()
    rng = random.Random(args.seed)
    load_start = os.getloadavg()
    node_log = log_dir / "policy_node.log"
    proc = start_node(POLICY_NODE_MODULE, ros_args([args.params_file], {"checkpoint": args.checkpoint}), env,
                      node_log, cwd=node_root)
    drv = SoakDriver(Replay.load(episodes))
    records: list[FaultRecord] = []
    exit_code = None
    try:
        drv.lifecycle.wait_for_services(120.0)
        drv.lifecycle.require("configure", timeout_s=300.0)
        drv.lifecycle.require("activate")
        started = time.monotonic()
        print(f"[soak] node active; {args.duration:.0f} s with faults, logs in {log_dir}", flush=True)
        for offset, kind in [] if args.no_faults else schedule(args.duration, rng, tuple(args.gap)):
            drv.spin(max(0.0, started + offset - time.monotonic()))
            if proc.poll() is not None:
                break
            records.append(run_fault(drv, kind, rng, proc))
            if records[-1].alive_after is False:
                break
        drv.spin(max(0.0, started + args.duration - time.monotonic()))
        end_s = drv.now_s()
        proc.send_signal(signal.SIGINT)  # the clean stop a launch file sends
        exit_code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            stop_process(proc)
        drv.close()
        rclpy.try_shutdown()
    for record, following in zip(records, records[1:] + [None]):
        record.window_end_s = following.start_s if following is not None else end_s
        if record.kind.endswith("_once"):
            holes = drv.plan.holes(record.start_s - 0.3, record.start_s + 1.5, 1.0 / RATE_HZ)
            record.holes = len(holes)
    attribute_logs(records, node_log)
    summary = summarize(records, drv, budget_ms, args.duration, exit_code)
    summary.update(seed=args.seed, checkpoint=args.checkpoint, node_root=str(node_root),
                   faults_injected=not args.no_faults,
                   machine=platform.platform(), cpus=os.cpu_count(),
                   load_average_start=load_start, load_average_end=os.getloadavg(), logs=str(log_dir))
    print_table(summary)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "faults": [asdict(r) for r in records]}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
