"""Scripted experts: rotation helpers, per-episode randomization, and successful episodes."""

from __future__ import annotations

import numpy as np
import pytest

from paradigms_policy.sim.experts import (
    LiftExpert,
    draw_style,
    make_expert,
    mat_to_axis_angle,
    quat_to_mat,
    rot_z,
    wrap_quarter_turn,
    yaw_of_quat,
)


@pytest.mark.parametrize("angle", [0.0, 0.3, -1.2, 2.5])
def test_rotation_helpers_agree(angle):
    q = np.array([0.0, 0.0, np.sin(angle / 2), np.cos(angle / 2)])  # xyzw, rotation about z
    np.testing.assert_allclose(quat_to_mat(q), rot_z(angle), atol=1e-12)
    np.testing.assert_allclose(mat_to_axis_angle(rot_z(angle)), [0.0, 0.0, angle], atol=1e-9)
    assert yaw_of_quat(q) == pytest.approx(angle)


def test_axis_angle_near_half_turn_keeps_the_axis():
    flip = quat_to_mat(np.array([1.0, 0.0, 0.0, 0.0]))  # pi about x
    np.testing.assert_allclose(np.abs(mat_to_axis_angle(flip)), [np.pi, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("angle,expected", [(0.1, 0.1), (np.pi / 2 + 0.1, 0.1), (-np.pi / 2 - 0.2, -0.2), (np.pi / 4 + 0.05, -np.pi / 4 + 0.05)])
def test_wrap_quarter_turn(angle, expected):
    assert wrap_quarter_turn(angle) == pytest.approx(expected)


def test_styles_vary_between_episodes_and_repeat_per_seed():
    a, b, a2 = (draw_style(np.random.default_rng(s)) for s in (1, 2, 1))
    assert a.speed == a2.speed and np.array_equal(a.offset_xy, a2.offset_xy)
    assert a.speed != b.speed and not np.array_equal(a.offset_xy, b.offset_xy)
    assert 0.6 <= a.speed <= 1.0 and np.all(np.abs(a.offset_xy) <= 0.006)


def _run(env, expert, seed, steps):
    obs, _ = env.reset(seed=seed)
    actions = []
    for _ in range(steps):
        action = expert.act(obs)
        assert action.shape == (7,) and action.dtype == np.float32
        assert np.all(np.abs(action) <= 1.0)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    return info, np.stack(actions)


@pytest.mark.sim
def test_lift_expert_lifts_the_cube():
    from paradigms_policy.sim.envs import make_task_env

    env = make_task_env("lift")
    expert = make_expert("lift", env, seed=0)
    assert isinstance(expert, LiftExpert)
    info, actions = _run(env, expert, seed=0, steps=env.max_episode_steps)
    env.close()
    assert info["is_success"], f"expert stopped in phase {expert.phase} after {len(actions)} steps"
    assert expert.phase == "lift"
    assert actions[0, 6] == -1.0 and actions[-1, 6] == 1.0  # opens to approach, closed while lifting
    assert len(actions) < 120


@pytest.mark.sim
def test_expert_seed_changes_the_demonstration():
    from paradigms_policy.sim.envs import make_task_env

    env = make_task_env("lift")
    _, first = _run(env, make_expert("lift", env, seed=1), seed=0, steps=15)
    _, again = _run(env, make_expert("lift", env, seed=1), seed=0, steps=15)
    _, other = _run(env, make_expert("lift", env, seed=2), seed=0, steps=15)
    env.close()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 0.05


@pytest.mark.sim
def test_can_expert_places_the_can():
    from paradigms_policy.sim.envs import make_task_env

    env = make_task_env("can")
    expert = make_expert("can", env, seed=0)
    info, actions = _run(env, expert, seed=0, steps=env.max_episode_steps)
    env.close()
    assert info["is_success"], f"expert stopped in phase {expert.phase} after {len(actions)} steps"


def test_unknown_task_has_no_expert():
    with pytest.raises(ValueError, match="no scripted expert"):
        make_expert("stack", env=None)


def test_pusht_expert_is_made_for_pusht():
    from paradigms_policy.sim.pusht_expert import PushTExpert

    expert = make_expert("pusht", env=None, seed=3)
    assert isinstance(expert, PushTExpert) and expert.style == PushTExpert(3).style
