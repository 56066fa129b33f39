"""paradigms-ros-demo end to end: two node processes, lifecycle driven over services, one short episode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("robosuite")
pytestmark = [pytest.mark.ros, pytest.mark.sim]

REPO = Path(__file__).resolve().parent.parent


def test_demo_runs_an_episode_and_reports_statistics(tmp_path, tiny_lift_checkpoint):
    checkpoint = tiny_lift_checkpoint
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "paradigms_policy.ros.demo", "--checkpoint", str(checkpoint), "--episodes", "1",
         "--max-episode-steps", "20", "--budget-ms", "300", "--log-dir", str(tmp_path / "logs"), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["episodes"] == 1 and summary["episode_steps"] == [20]
    assert len(summary["first_chunk_ms"]) == 1  # the cold first chunk, solved while the robot waited
    assert summary.get("chunks", 0) + 1 >= 2  # and budgeted chunks after it
    assert "success rate" in proc.stdout and "first chunk" in proc.stdout and "chunk timing" in proc.stdout
    if "chunks" in summary:
        assert summary["execution"] == "inpaint" and summary["obs_to_arrival_p50_ms"] > 0
    log = (tmp_path / "logs" / "policy_node.log").read_text()
    for transition in ("activated", "deactivated", "cleaned up", "shut down"):
        assert transition in log  # driven through the lifecycle services, down to finalized


def test_demo_refuses_a_missing_checkpoint(tmp_path, capsys):
    from paradigms_policy.ros.demo import main

    assert main(["--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_slow_machine_advice_names_what_to_change():
    from paradigms_policy.ros.demo import slow_machine_advice

    fine = {"episode_steps": [50, 60], "idle_steps": 0, "budget_miss_fraction": 0.0, "obs_to_arrival_p50_ms": 120.0,
            "period_ms": 50.0, "replan_periods": 8}
    assert slow_machine_advice(fine, 200.0) == []
    slow = {**fine, "idle_steps": 30, "budget_miss_fraction": 0.4, "obs_to_arrival_p50_ms": 300.0}
    advice = " ".join(slow_machine_advice(slow, 200.0))
    assert "idled 30 of 110 steps" in advice and "40% of chunks missed the 200 ms budget" in advice
    assert "300 ms after their observation" in advice and "ddim_sequential" in advice
