"""Start ROS 2 nodes as separate processes the way ``ros2 launch`` does (``--ros-args``).

Used by the demo, the latency benchmark and the tests: each gets a private ROS_DOMAIN_ID and
localhost-only discovery, so runs on one machine never see each other or the network.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

POLICY_NODE_MODULE = "paradigms_policy.ros.policy_node"
SIM_ROBOT_MODULE = "paradigms_policy.ros.sim_robot_node"


def private_ros_env(domain_id: int | None = None, log_dir: str | Path | None = None) -> dict[str, str]:
    """os.environ with a private domain (random 1..100 unless given) and localhost-only discovery."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else random.SystemRandom().randint(1, 100))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_STATIC_PEERS", None)
    env["PYTHONUNBUFFERED"] = "1"
    if log_dir is not None:
        env["ROS_LOG_DIR"] = str(log_dir)
    return env


def apply_env(env: dict[str, str]) -> None:
    """Put the ROS variables of ``env`` into this process (before rclpy.init)."""
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR"):
        if key in env:
            os.environ[key] = env[key]
    os.environ.pop("ROS_STATIC_PEERS", None)


def ros_args(params_files: Sequence[str | Path] = (), overrides: dict[str, object] | None = None,
             log_level: str | None = None) -> list[str]:
    """``--ros-args --params-file F -p name:=value ...`` (values rendered as ROS parameter YAML)."""
    args = ["--ros-args"]
    for path in params_files:
        args += ["--params-file", str(path)]
    for name, value in (overrides or {}).items():
        args += ["-p", f"{name}:={_yaml_value(value)}"]
    if log_level:
        args += ["--log-level", log_level]
    return args


def _yaml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return f"'{value}'" if value == "" or value.strip() != value else value
    return repr(value)


def start_node(module: str, args: Sequence[str], env: dict[str, str], log_path: str | Path | None = None,
               cwd: str | Path | None = None) -> subprocess.Popen:
    """``python -m <module> <args>`` in its own process group, output to ``log_path`` (or inherited)."""
    out = open(log_path, "w") if log_path is not None else None  # noqa: SIM115 - owned by the process
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=cwd, stdout=out,
                            stderr=subprocess.STDOUT if out else None, start_new_session=True)


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """SIGINT (clean rclpy shutdown), then SIGTERM, then SIGKILL; returns the exit code."""
    for sig, wait in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()
