"""LogThrottle: one line per key per period, whatever the text says."""

from paradigms_policy.ros.log_throttle import LogThrottle


def test_one_line_per_key_per_period_with_a_fake_clock():
    now = [0.0]
    throttle = LogThrottle(2.0, clock=lambda: now[0])
    lines = 0
    for tick in range(40):  # a stale topic on every 20 Hz tick for 2 s
        now[0] = tick * 0.05
        lines += bool(throttle.due([("/a", "stale")]))
    assert lines == 1
    now[0] = 2.0
    assert throttle.allow(("/a", "stale"))


def test_a_line_covers_several_keys_and_a_new_kind_is_due_at_once():
    throttle = LogThrottle(1.0, clock=lambda: 0.0)
    assert throttle.due([("/a", "stale"), ("/b", "stale")]) == [("/a", "stale"), ("/b", "stale")]
    assert throttle.due([("/a", "stale"), ("/b", "stale")]) == []
    assert throttle.due([("/a", "stale"), ("/a", "not_finite")]) == [("/a", "not_finite")]
    assert LogThrottle(0.0, clock=lambda: 0.0).allow("x") and LogThrottle(0.0, clock=lambda: 0.0).allow("x")
