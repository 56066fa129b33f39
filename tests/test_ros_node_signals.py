"""SIGINT and SIGTERM stop the policy node cleanly in every lifecycle state: exit code 0, no traceback.

rclpy's own signal handlers shut the context down at once, so a callback running at that moment
(a /diagnostics publication, a control tick) failed with "publisher's context is invalid" and exit
code 1. Here each try starts the node as a process, drives it to a state (or into a transition),
and sends the signal aimed at its 1 Hz diagnostics timer (just before the next publication, learnt
from the previous one); while active, the 20 Hz control tick and the inference thread run too.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

from paradigms_policy.ros.lifecycle_client import TRANSITIONS  # noqa: E402

SETTLE_S = 60.0
TRIES = [  # (state, signal)
    ("unconfigured", signal.SIGINT), ("unconfigured", signal.SIGTERM),
    ("configuring", signal.SIGTERM),
    ("inactive", signal.SIGTERM), ("inactive", signal.SIGINT),
    ("active", signal.SIGTERM), ("active", signal.SIGTERM), ("active", signal.SIGINT),
]


def aim_at_diagnostics(drv, rng: random.Random) -> None:
    """Spin until a /diagnostics message arrives, then until just before the next one is due."""
    n = len(drv.diagnostics)
    assert drv.run(5.0, until=lambda: len(drv.diagnostics) > n), "no /diagnostics from the node"
    drv.run(1.0 - rng.uniform(0.0, 0.015))


@pytest.mark.parametrize("state, sig", TRIES, ids=[f"{s}-{g.name}" for s, g in TRIES])
def test_a_signal_in_any_state_exits_cleanly(state, sig, start_policy_node, make_driver, tiny_lift_checkpoint,
                                             tmp_path):
    rng = random.Random()
    log = tmp_path / "policy_node.log"
    proc = start_policy_node(tiny_lift_checkpoint, log)
    drv = make_driver(f"signal_driver_{state}_{sig.name}_{rng.randrange(10**6)}")
    drv.lifecycle.wait_for_services(SETTLE_S)
    if state == "configuring":
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        request.transition.id = TRANSITIONS["configure"]
        drv.lifecycle._change.call_async(request)  # no wait: the signal lands while configure runs
        drv.run(rng.uniform(0.05, 0.5))
    elif state != "unconfigured":
        drv.lifecycle.require("configure")
        if state == "active":
            drv.lifecycle.require("activate")
            assert drv.run(SETTLE_S, until=lambda: len(drv.chunks) >= 1)
    if state != "configuring":
        aim_at_diagnostics(drv, rng)
    os.kill(proc.pid, sig)
    started = time.monotonic()
    while proc.poll() is None and time.monotonic() - started < SETTLE_S:
        drv.run(0.05, publish=state == "active")
    text = log.read_text()
    assert proc.returncode == 0, f"exit code {proc.returncode}:\n{text[-3000:]}"
    assert "Traceback" not in text and "context is invalid" not in text, text[-3000:]
    assert f"received {sig.name}: shutting down" in text
