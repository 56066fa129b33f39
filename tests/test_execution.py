"""The ROS-free execution model: action times, dropping on arrival, committed actions, shift, re-planning."""

import numpy as np
import pytest

from paradigms_policy.execution import (ActionTimeline, ChunkGeometry, ExecutionModel, ExecutionSettings,
                                        chunk_jumps)

DT = 0.05  # 20 Hz
GEOMETRY = ChunkGeometry(horizon=16, action_start=1, n_action_steps=8)  # DiffusionPolicy: n_obs_steps 2


def chunk(tag: float) -> np.ndarray:
    """[16, 2]: row i = (tag, i), so placed actions show their horizon index."""
    return np.stack([np.full(16, tag), np.arange(16.0)], axis=1)


def model(mode="aligned", **kw) -> ExecutionModel:
    return ExecutionModel(ExecutionSettings(mode=mode, **kw), GEOMETRY, dt=DT)


def test_geometry_follows_diffusion_policy():
    assert GEOMETRY.first_executed == 1 and GEOMETRY.executable == 15
    with pytest.raises(ValueError, match="n_action_steps"):
        ChunkGeometry(horizon=8, action_start=1, n_action_steps=8)


def test_first_chunk_starts_at_its_first_action_when_it_arrives():
    m = model()
    assert m.due(100.0)
    req = m.request(obs_time=100.0, expected_arrival=100.2)
    assert req.first and req.shift is None and len(req.known_actions) == 0
    placed = m.place(req, chunk(1), arrival=100.3)  # the robot waited for it: nothing has passed
    assert placed.dropped == 0 and placed.start_time == pytest.approx(100.3)
    assert m.timeline.action_at(100.3).tolist() == [1, 1]  # horizon index n_obs_steps - 1
    # an observation stamped ahead (the state at the next tick) never starts before its own time
    m.reset()
    early = m.place(m.request(obs_time=200.05, expected_arrival=200.03), chunk(1), arrival=200.02)
    assert early.start_time == pytest.approx(200.05)


def test_aligned_places_action_j_at_obs_time_plus_j_dt_and_drops_the_past():
    m = model()
    m.place(m.request(0.0, 0.0), chunk(1), arrival=0.0)
    assert m.due(8 * DT) and not m.due(7 * DT)  # every n_action_steps periods
    req = m.request(obs_time=8 * DT, expected_arrival=11 * DT)
    assert req.shift == 8 and not req.first
    placed = m.place(req, chunk(2), arrival=8 * DT + 0.13)  # 2.6 periods later
    assert placed.dropped == 3
    assert placed.start_time == pytest.approx(11 * DT)
    assert len(placed.actions) == 15 - 3
    # before the new chunk's start the old one still runs; from it on the new one
    assert m.timeline.action_at(10 * DT).tolist() == [1, 11]
    assert m.timeline.action_at(11 * DT).tolist() == [2, 4]


def test_naive_starts_a_late_chunk_at_its_first_action():
    m = model("naive")
    m.place(m.request(0.0, 0.0), chunk(1), arrival=0.0)
    req = m.request(8 * DT, 11 * DT)
    placed = m.place(req, chunk(2), arrival=8 * DT + 0.13)
    assert placed.dropped == 0
    assert m.timeline.action_at(8 * DT + 0.13).tolist() == [2, 1]


def test_inpaint_knows_the_actions_committed_until_the_expected_arrival():
    m = model("inpaint")
    m.place(m.request(0.0, 0.0), chunk(1), arrival=0.0)
    req = m.request(obs_time=8 * DT, expected_arrival=11 * DT)
    # actions at 8, 9, 10 dt are chunk 1's executed-slice actions 8, 9, 10 (horizon 9, 10, 11)
    assert req.known_actions.tolist() == [[1, 9], [1, 10], [1, 11]]
    # a start margin (robot runs points on the nearest tick) commits one more
    m2 = model("inpaint", start_margin=0.5)
    m2.place(m2.request(0.0, 0.0), chunk(1), arrival=-0.5 * DT)  # first chunk starts half a period after arrival
    assert len(m2.request(8 * DT, 11 * DT).known_actions) == 4


def test_inpaint_leaves_at_least_one_free_action_and_stops_at_a_gap():
    m = model("inpaint")
    m.place(m.request(0.0, 0.0), chunk(1), arrival=0.0)
    assert len(m.request(8 * DT, 100.0).known_actions) == 7  # chunk 1 covers times 0..14 dt only
    m.reset()
    assert not m.started and m.due(0.0) and m.timeline.action_at(0.0) is None


def test_shift_is_the_time_between_observations_in_periods():
    m = model(replan="asap")
    m.place(m.request(1.00, 1.00), chunk(1), arrival=1.00)
    assert m.due(1.01)  # asap: as soon as the previous chunk is placed
    assert m.request(1.0 + 3 * DT + 0.004, 1.3).shift == 3


def test_replan_every_is_capped_by_what_a_chunk_covers():
    m = model(replan_every=10)
    assert m.replan_every(0) == 10 and m.replan_every(4) == 10 and m.replan_every(6) == 9
    assert m.replan_every(8) == 8 and m.idle_per_cycle(8) == 1  # 8 + 8 > 15: one idle period per cycle
    m.check_delay(14)
    with pytest.raises(ValueError, match="leaves nothing to run"):
        m.check_delay(15)
    with pytest.raises(ValueError, match="execution mode"):
        ExecutionSettings(mode="late")


def test_a_chunk_entirely_in_the_past_places_nothing():
    m = model()
    m.place(m.request(0.0, 0.0), chunk(1), arrival=0.0)
    req = m.request(8 * DT, 9 * DT)
    placed = m.place(req, chunk(2), arrival=8 * DT + 20 * DT)
    assert len(placed.actions) == 0 and placed.dropped == 15
    assert m.timeline.action_at(14 * DT).tolist() == [1, 15]


def test_timeline_install_replaces_from_start_and_forgets_the_past():
    tl = ActionTimeline(dt=1.0)
    tl.install(0.0, np.zeros((5, 1)))
    tl.install(2.0, np.ones((5, 1)))
    assert [float(tl.action_at(t)[0]) for t in range(7)] == [0, 0, 1, 1, 1, 1, 1]
    tl.forget_before(3.0)
    assert tl.action_at(1.0) is None and tl.action_at(3.0) is not None
    assert tl.run(3.0, 10.0).shape == (4, 1)


def test_chunk_jumps_split_boundaries_from_inside():
    actions = np.array([[0.0, -1], [0.1, -1], [0.5, 1], [0.6, 1]])
    boundary, inside = chunk_jumps(actions, np.array([0, 0, 1, 1]), dims=[0])
    assert boundary.tolist() == pytest.approx([0.4]) and inside.tolist() == pytest.approx([0.1, 0.1])


def test_cancelled_request_lets_the_next_tick_plan_again():
    m = model()
    m.place(m.request(0.0, 0.0), chunk(1), arrival=0.0)
    req = m.request(8 * DT, 11 * DT)
    assert not m.due(9 * DT)
    m.cancel(req)
    assert m.due(9 * DT) and m.request(9 * DT, 12 * DT).shift == 9


def test_latency_tracker_uses_recent_measurements():
    from paradigms_policy.execution import LatencyTracker

    tracker = LatencyTracker(initial=0.2, window=5)
    assert tracker.expected() == 0.2
    for value in (0.05, 0.06, 0.07, 0.08, 0.5, 0.06, 0.06, 0.06, 0.06, 0.06):
        tracker.add(value)
    assert tracker.expected() == pytest.approx(0.06)  # the 0.5 outlier left the window
