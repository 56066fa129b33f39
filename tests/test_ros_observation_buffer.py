"""Observation history assembly with a fake clock, the simulated robot's action queue and the worker thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from paradigms_policy.ros.inference_worker import InferenceWorker
from paradigms_policy.ros.observation_buffer import (
    InputError,
    MissingInputError,
    ObservationBuffer,
    StaleInputError,
)


@pytest.fixture
def buffer() -> ObservationBuffer:
    return ObservationBuffer(["/joints", "/object"], n_obs_steps=2, max_age_s=0.2)


def test_missing_topic_is_named(buffer):
    buffer.store("/joints", "j0", stamp=0.0)
    [problem] = buffer.snapshot(now=0.05)
    assert isinstance(problem, MissingInputError) and problem.kind == "missing"
    assert str(problem) == "/object: no message received yet"


def test_stale_topic_is_named_with_its_age(buffer):
    buffer.store("/joints", "j0", stamp=1.0)
    buffer.store("/object", "o0", stamp=0.5)
    [problem] = buffer.snapshot(now=1.0)
    assert isinstance(problem, StaleInputError) and problem.kind == "stale" and problem.topic == "/object"
    assert str(problem).startswith("/object: stale: newest message is 500 ms old")


def test_every_stale_or_missing_topic_is_reported_not_only_the_first(buffer):
    assert [(p.topic, p.kind) for p in buffer.snapshot(now=0.0)] == [("/joints", "missing"), ("/object", "missing")]
    buffer.store("/joints", "j0", stamp=0.0)
    buffer.store("/object", "o0", stamp=0.0)
    assert [(p.topic, p.kind) for p in buffer.snapshot(now=1.0)] == [("/joints", "stale"), ("/object", "stale")]


def test_only_checked_values_enter_the_history_and_each_message_is_converted_once():
    calls = []

    def convert(topic, message):
        calls.append(message)
        if message == "bad":
            raise InputError(topic, "implausible", kind="out_of_range")
        return message.upper()

    buffer = ObservationBuffer(["/a", "/b"], n_obs_steps=2, max_age_s=1.0, convert=convert)
    buffer.store("/a", "a0", 0.0)
    buffer.store("/b", "b0", 0.0)
    assert buffer.snapshot(0.05) == [] and buffer.snapshot(0.1) == []
    assert calls == ["a0", "b0"]  # the same messages at the second tick: not converted again
    assert [s.message for s in buffer.history()["/a"]] == ["A0", "A0"]
    buffer.store("/b", "bad", 0.12)
    [problem] = buffer.snapshot(0.15)
    assert (problem.topic, problem.kind) == ("/b", "out_of_range")
    with pytest.raises(MissingInputError):
        buffer.history()  # a tick with a bad input clears the history: nothing can be solved from it
    buffer.store("/b", "b1", 0.18)
    assert buffer.snapshot(0.2) == []
    assert [s.message for s in buffer.history()["/b"]] == ["B1", "B1"]  # rebuilt from good ticks only


def test_history_is_one_entry_per_tick_oldest_first_with_edge_padding(buffer):
    buffer.store("/joints", "j0", stamp=0.0)
    buffer.store("/object", "o0", stamp=0.0)
    buffer.snapshot(now=0.1)
    first = buffer.history()
    assert [s.message for s in first["/joints"]] == ["j0", "j0"]  # padded with the first tick
    buffer.store("/joints", "j1", stamp=0.15)
    buffer.store("/joints", "j2", stamp=0.19)  # only the latest before the tick counts
    buffer.snapshot(now=0.2)
    history = buffer.history()
    assert [s.message for s in history["/joints"]] == ["j0", "j2"]
    assert [s.message for s in history["/object"]] == ["o0", "o0"]  # slower sensor: repeated, still fresh
    assert [s.stamp for s in history["/joints"]] == [0.0, 0.19]


def test_stale_input_clears_history_and_recovers_with_fresh_data(buffer):
    buffer.store("/joints", "j0", stamp=0.0)
    buffer.store("/object", "o0", stamp=0.0)
    buffer.snapshot(now=0.1)
    assert all(isinstance(p, StaleInputError) for p in buffer.snapshot(now=0.5))
    with pytest.raises(MissingInputError):
        buffer.history()
    buffer.store("/joints", "j1", stamp=0.6)
    buffer.store("/object", "o1", stamp=0.6)
    buffer.snapshot(now=0.65)
    assert [s.message for s in buffer.history()["/object"]] == ["o1", "o1"]


def test_unknown_topic_and_bad_settings_raise(buffer):
    with pytest.raises(KeyError, match="/nope"):
        buffer.store("/nope", "x", 0.0)
    with pytest.raises(ValueError, match="n_obs_steps"):
        ObservationBuffer(["/a"], n_obs_steps=0, max_age_s=1.0)
    with pytest.raises(ValueError, match="unique"):
        ObservationBuffer(["/a", "/a"], n_obs_steps=1, max_age_s=1.0)


def test_action_queue_runs_one_point_per_tick_in_order_and_drops_missed_points():
    from paradigms_policy.ros.sim_robot_node import ActionQueue

    queue = ActionQueue()
    actions = np.arange(4, dtype=np.float64)[:, None]
    queue.insert_chunk(10.0, np.array([0.0, 0.1, 0.2, 0.3]), actions)
    assert queue.pop_due(9.9, 0.1) == (None, 0)  # not yet within half a period
    ran = [queue.pop_due(t, 0.1)[0][0] for t in (9.96, 10.04, 10.16, 10.24)]  # jittery ticks, phase -0.04
    assert ran == [0.0, 1.0, 2.0, 3.0]
    queue.insert_chunk(10.4, np.array([0.0, 0.1]), actions[:2] + 4)  # continues the run at the same phase
    assert queue.pop_due(10.30, 0.1) == (None, 0)  # its tick (10.4 - 0.04) is more than half a period away
    assert queue.pop_due(10.37, 0.1)[0][0] == 4.0
    queue.insert_chunk(11.0, np.array([0.0, 0.1, 0.2]), actions[:3] + 10)
    action, dropped = queue.pop_due(11.19, 0.1)  # 10.5 (left over) and 11.0 are over 1.5 periods late
    assert action[0] == 11.0 and dropped == 2


def test_action_queue_new_chunk_replaces_the_future_and_never_repeats_a_slot():
    from paradigms_policy.ros.sim_robot_node import ActionQueue

    queue = ActionQueue()
    queue.insert_chunk(10.0, np.arange(4) * 0.1, np.zeros((4, 1)))
    assert queue.pop_due(10.0, 0.1)[0][0] == 0.0
    assert queue.pop_due(10.1, 0.1)[0][0] == 0.0
    skipped = queue.insert_chunk(10.1, np.arange(4) * 0.1, np.ones((4, 1)))  # 10.1 already ran
    assert skipped == 1
    assert queue.times == pytest.approx([10.2, 10.3, 10.4])
    assert queue.pop_due(10.2, 0.1)[0][0] == 1.0


def test_worker_runs_jobs_one_at_a_time_off_the_caller_thread():
    release = threading.Event()
    seen = []

    def handler(job):
        seen.append((job, threading.current_thread().name))
        release.wait(5)

    worker = InferenceWorker(handler, name="test_worker")
    assert worker.submit(1)
    assert not worker.submit(2)  # busy: refused, never queued behind
    release.set()
    assert worker.wait_idle(5)
    assert worker.submit(3)
    assert worker.wait_idle(5)
    worker.stop()
    assert seen == [(1, "test_worker"), (3, "test_worker")]


def test_worker_survives_a_failing_job():
    errors = []

    def handler(job):
        if job == "bad":
            raise RuntimeError("boom")

    worker = InferenceWorker(handler, on_error=errors.append)
    worker.submit("bad")
    worker.wait_idle(5)
    assert worker.submit("good") and worker.wait_idle(5)
    worker.stop()
    assert [str(e) for e in errors] == ["boom"]


def test_action_queue_keeps_the_committed_points_before_a_late_chunks_first_point():
    """A chunk stamped with its observation time starts at its first action not yet due: the old
    chunk's points between the stamp and that first point are what the robot runs meanwhile."""
    from paradigms_policy.ros.sim_robot_node import ActionQueue

    queue = ActionQueue()
    queue.insert_chunk(10.0, np.arange(8) * 0.1, np.zeros((8, 1)))
    assert queue.pop_due(10.0, 0.1)[0][0] == 0.0
    queue.insert_chunk(10.1, np.arange(3, 8) * 0.1, np.ones((5, 1)))  # obs at 10.1, points from 10.4
    assert queue.times == pytest.approx([10.1, 10.2, 10.3, 10.4, 10.5, 10.6, 10.7, 10.8])
    ran = [queue.pop_due(t, 0.1)[0][0] for t in (10.1, 10.2, 10.3, 10.4, 10.5)]
    assert ran == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_data_time_is_the_header_stamp_when_there_is_one():
    from std_msgs.msg import Float32MultiArray
    from sensor_msgs.msg import JointState

    from paradigms_policy.ros.observation_buffer import Stamped

    assert Stamped(Float32MultiArray(), 12.5).data_time == 12.5  # no header: the receive time
    state = JointState()
    assert Stamped(state, 12.5).data_time == 12.5  # zero stamp: the receive time
    state.header.stamp.sec, state.header.stamp.nanosec = 12, 550_000_000
    assert Stamped(state, 12.5).data_time == pytest.approx(12.55)


def test_the_history_keeps_the_header_time_of_converted_messages():
    """The node takes a chunk's observation time from the history, whose entries hold converted values
    (no header): the header stamp must survive the conversion, not fall back to the receive time."""
    from sensor_msgs.msg import JointState

    from paradigms_policy.ros.observation_buffer import ObservationBuffer

    buffer = ObservationBuffer(["/joints"], n_obs_steps=2, max_age_s=1.0,
                               convert=lambda topic, message: np.asarray(message.position, dtype=np.float32))
    state = JointState(position=[0.1, 0.2])
    state.header.stamp.sec, state.header.stamp.nanosec = 12, 550_000_000  # the state of the next tick
    buffer.store("/joints", state, 12.5)  # received one period earlier
    assert buffer.snapshot(12.52) == []
    newest = buffer.history()["/joints"][-1]
    assert isinstance(newest.message, np.ndarray) and newest.stamp == 12.5
    assert newest.data_time == pytest.approx(12.55)
