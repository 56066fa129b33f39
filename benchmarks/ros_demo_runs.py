"""One ``paradigms-ros-demo`` run as a benchmark row (shared by ros_closed_loop.py and ros_image_latency.py).

Each row runs the demo in its own process (policy node + simulated robot over loopback DDS, wall-clock
time), reads the summary JSON it writes, and adds the success rate's Wilson 95% interval and the wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from paradigms_policy.sim.rollout import wilson_interval  # noqa: E402


def run_demo_row(name: str, demo_args: list[str], out: Path, budget_ms: float | None = None) -> dict | None:
    """Run ``paradigms_policy.ros.demo`` with ``demo_args``; its summary with ``success_ci95`` and ``wall_s``,
    or None (reason on stderr) when the demo failed. Logs go to ``out/logs_<name>``, the summary to ``out/<name>.json``."""
    summary_path = out / f"{name}.json"
    cmd = [sys.executable, "-m", "paradigms_policy.ros.demo", *demo_args, "--log-dir", str(out / f"logs_{name}"),
           "--json", str(summary_path)]
    if budget_ms:
        cmd += ["--budget-ms", str(budget_ms)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    print(proc.stdout[-3000:], flush=True)
    if proc.returncode != 0 or not summary_path.exists():
        print(f"{name}: demo failed (rc {proc.returncode}): {proc.stderr[-2000:]}", file=sys.stderr)
        return None
    summary = json.loads(summary_path.read_text())
    lo, hi = wilson_interval(summary["successes"], summary["episodes"])
    summary.update(success_ci95=[lo, hi], wall_s=time.perf_counter() - started)
    return summary
