"""PushT scripted expert: block pose from keypoints, the push model against gym-pusht, paths, an episode."""

from __future__ import annotations

import numpy as np
import pytest

from paradigms_policy.sim import pusht_expert as pe


@pytest.mark.parametrize("pose", [[256.0, 256.0, np.pi / 4], [120.0, 380.0, -2.5], [300.0, 150.0, 3.0]])
def test_pose_round_trips_through_keypoints(pose):
    pose = np.array(pose)
    recovered = pe.pose_from_keypoints(pe.keypoints_of(pose))
    np.testing.assert_allclose(recovered[:2], pose[:2], atol=1e-9)
    assert np.isclose(np.cos(recovered[2] - pose[2]), 1.0)
    assert pe.keypoint_error(pose) > 0 or np.allclose(pose, pe.GOAL_POSE)
    assert pe.keypoint_error(pe.GOAL_POSE) == pytest.approx(0.0, abs=1e-9)


def test_pose_from_keypoints_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"keypoints have shape \(9, 2\)"):
        pe.pose_from_keypoints(np.zeros((9, 2)))


def test_contacts_fit_the_pusher_and_sit_on_the_outline():
    centres = pe.CONTACTS_BODY + pe.CONTACT_NORMALS_BODY * pe.PUSHER_RADIUS
    assert len(pe.CONTACTS_BODY) > 100
    np.testing.assert_allclose(np.abs(pe.point_polygon_distance(pe.CONTACTS_BODY, pe.OUTLINE_BODY)), 0.0, atol=1e-9)
    assert np.all(pe.point_polygon_distance(centres, pe.OUTLINE_BODY) >= pe.PUSHER_RADIUS - 0.5)


@pytest.mark.sim
@pytest.mark.parametrize("index", [10, 54, 100])
def test_push_model_matches_gym_pusht(index):
    """Push at a contact for 20 px in the simulator: the predicted pose change is within a few px / degrees."""
    from paradigms_policy.sim.pusht import make_pusht_env

    env = make_pusht_env()
    obs, _ = env.reset(seed=0, options={"reset_to_state": [100.0, 100.0, 250.0, 250.0, 0.3]})
    pose = pe.pose_from_keypoints(obs["keypoint"])
    normal = pe.rot(pose[2]) @ pe.CONTACT_NORMALS_BODY[index]
    start = pe.rot(pose[2]) @ pe.CONTACTS_BODY[index] + pose[:2] + normal * (pe.PUSHER_RADIUS + 1.0)
    obs = env.reset_to_state(np.r_[start, env.get_state()[2:]])
    pose0 = pe.pose_from_keypoints(obs["keypoint"])
    for k in range(1, 11):
        obs, *_ = env.step(start - normal * 2.0 * k)
    for _ in range(5):
        obs, *_ = env.step(start - normal * 20.0)
    env.close()
    moved = float(np.linalg.norm(obs["agent_pos"] - start))
    predicted = pe.push_outcomes(pose0, pe.CONTACTS_BODY[index:index + 1], pe.CONTACT_NORMALS_BODY[index:index + 1],
                                 np.array([moved - 1.0]))[0, 0]
    actual = pe.pose_from_keypoints(obs["keypoint"])
    assert np.linalg.norm(actual[:2] - pose0[:2]) > 5.0  # the block really moved
    np.testing.assert_allclose(predicted[:2], actual[:2], atol=2.5)
    assert abs(predicted[2] - actual[2]) < 0.03


def test_paths_go_around_the_block():
    pose = np.array([256.0, 256.0, 0.0])
    start, goal = np.array([256.0, 150.0]), np.array([256.0, 420.0])  # straight through the T
    assert not pe.segment_clear(start, goal, pose, 0.0)
    hull = pe._inflated_hull(pose, pe.PUSHER_RADIUS + 8.0)
    for path in (pe.plan_path(start, goal, hull), pe.grid_path(start, goal, pose)):
        assert path is not None and np.allclose(path[-1], goal)
        points = [start, *path]
        for a, b in zip(points[:-1], points[1:]):
            assert pe.segment_clear(a, b, pose, 0.0)


def test_expert_styles_vary_and_repeat_per_seed():
    a, b, a2 = (pe.PushTExpert(seed).style for seed in (1, 2, 1))
    assert a == a2 and a != b


@pytest.mark.sim
def test_expert_solves_an_episode():
    from paradigms_policy.sim.pusht import make_pusht_env

    env = make_pusht_env()
    result = pe.run_pusht_expert(env, pe.PushTExpert(1005), seed=5)
    env.close()
    assert result["success"] and result["max_coverage"] > 0.95 and result["length"] < 300
