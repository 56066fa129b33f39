"""The fault action (hold) and what a robot sees of the node's plan (ros/fault_action.py, ros/robot_view.py)."""

from __future__ import annotations

import numpy as np
import pytest

from paradigms_policy.execution import ChunkGeometry, ExecutionModel, ExecutionSettings
from paradigms_policy.ros.fault_action import FaultTracker, hold_actions
from paradigms_policy.ros.robot_view import PlanView, ReceivedPlan, SentLog, parse_input_stamps

DT = 0.05


def test_hold_is_zero_for_deltas_and_the_last_command_for_hold_dims():
    last = np.array([0.3, -0.2, 0.1, 0.0, 0.0, 0.0, 1.0])
    held = hold_actions(last, [6], steps=8)
    assert held.shape == (8, 7)
    assert (held[:, :6] == 0).all() and (held[:, 6] == 1.0).all()
    np.testing.assert_array_equal(hold_actions(last, range(7), 2), [last, last])  # absolute action space
    with pytest.raises(ValueError, match=r"hold_action_dims \[7\]"):
        hold_actions(last, [7], 8)


def test_tracker_holds_once_per_input_fault_and_when_the_plan_runs_out():
    tracker = FaultTracker()
    assert not tracker.hold_due(0.0, 0.0, DT)  # no fault: never
    assert tracker.begin("input", 1.0, "stale")
    assert tracker.hold_due(1.0, covered_until_s=2.0, dt=DT)  # the first hold of an input fault goes out at once
    tracker.held()
    assert not tracker.begin("input", 1.05, "stale")  # the same episode
    assert not tracker.hold_due(1.05, covered_until_s=1.4, dt=DT)
    assert tracker.hold_due(1.3, covered_until_s=1.4, dt=DT)  # less than two periods of plan left
    assert tracker.end("solve") is None and tracker.end().holds == 1
    assert tracker.begin("solve", 2.0, "no round")
    assert not tracker.hold_due(2.0, covered_until_s=2.5, dt=DT)  # a failed solve keeps a robot's good plan
    assert tracker.hold_due(2.45, covered_until_s=2.5, dt=DT)
    assert tracker.begin("input", 2.5, "nan") and tracker.input_fault_since == 2.5


def model() -> ExecutionModel:
    return ExecutionModel(ExecutionSettings(mode="inpaint", start_margin=0.5),
                          ChunkGeometry(horizon=16, action_start=1, n_action_steps=8), dt=DT)


def test_execution_model_knows_the_last_command_and_installs_holds():
    m = model()
    assert m.last_commanded(0.0) is None and m.covered_until(0.0) == 0.0
    chunk = np.stack([np.arange(16.0), np.full(16, -1.0)], axis=1)  # gripper column -1
    m.place(m.request(0.0, 0.0), chunk, arrival=0.0)  # 15 actions from t = 0.025
    assert m.covered_until(0.1) == pytest.approx(0.025 + 15 * DT - 0.5 * DT)
    assert m.last_commanded(0.11).tolist() == [3.0, -1.0]
    assert m.last_commanded(5.0).tolist() == [15.0, -1.0]  # the plan ran out: its last action
    held = hold_actions(m.last_commanded(0.11), [1], 8)
    m.hold(0.1 + 0.5 * DT, held)
    assert m.last_commanded(0.2).tolist() == [0.0, -1.0]
    assert m.covered_until(0.1) == pytest.approx(0.1 + 8 * DT)  # the hold, on its own grid, without a hole
    # after the fault the next solve is planned at once (not at the scheduled time) and knows the hold actions
    assert not m.due(0.16)
    m.replan_now()
    assert m.due(0.16)
    request = m.request(obs_time=0.16, expected_arrival=0.2)
    assert request.shift == 3 and request.known_actions.tolist()[0] == [0.0, -1.0]
    assert not m.due(0.21)  # back on the schedule


def test_sent_log_tells_which_inputs_a_chunk_came_from():
    log = SentLog()
    for i, bad in enumerate([False, True, False]):
        log.record("/a", 10.0 + 0.05 * i, bad)
        log.record("/b", 10.0 + 0.05 * i, False)
    stamps = "/a=10.000500,10.050500;/b=10.000500,10.050500"
    assert parse_input_stamps(stamps) == {"/a": [10.0005, 10.0505], "/b": [10.0005, 10.0505]}
    assert log.bad_inputs_used(stamps) == [("/a", 10.0505)]
    assert log.bad_inputs_used("/a=10.1005,10.1005;/b=10.1005,10.1005") == []


def test_plan_view_finds_holes_on_the_robots_timeline():
    view = PlanView([ReceivedPlan(received_s=0.0, start_s=0.0, points=8, dt=DT)])
    assert view.holes(0.0, 0.4, DT) == []
    assert len(view.holes(0.0, 0.6, DT)) == 4  # 0.4 .. 0.55 uncovered
    view.add(ReceivedPlan(received_s=0.3, start_s=0.35, points=8, dt=DT))  # replaces from 0.35 on
    assert view.holes(0.0, 0.75, DT) == []
    late = PlanView([ReceivedPlan(0.0, 0.0, 4, DT), ReceivedPlan(0.3, 0.3, 4, DT)])  # arrived after 0.2 was due
    assert [round(t, 2) for t in late.holes(0.0, 0.5, DT)] == [0.2, 0.25]
