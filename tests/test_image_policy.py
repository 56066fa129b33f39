"""Image policies end to end on CPU at tiny sizes: dataset -> training -> checkpoint -> Policy -> rollout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import compose_train_config


def test_small_conv_encoder_crops_at_random_in_training_and_centre_in_eval():
    from paradigms_policy.model.obs_encoders import ImageObsEncoder

    meta = {"cam": {"shape": [3, 20, 20], "type": "rgb"}, "pos": {"shape": [2], "type": "low_dim"}}
    encoder = ImageObsEncoder(meta, crop_shape=[16, 16], backbone="small_conv", conv_widths=[4, 8], conv_strided=2,
                              num_kp=4, feature_dim=6)
    assert encoder.output_dim == 6 + 2
    obs = {"cam": torch.rand(5, 3, 20, 20), "pos": torch.rand(5, 2)}
    encoder.eval()
    assert torch.equal(encoder(obs), encoder(obs))  # centre crop: deterministic
    assert torch.equal(encoder.crops["cam"](obs["cam"]), obs["cam"][:, :, 2:18, 2:18])
    encoder.train()
    torch.manual_seed(0)
    crops = encoder.crops["cam"](obs["cam"][:1].expand(64, -1, -1, -1))
    assert crops.shape == (64, 3, 16, 16)
    assert len({tuple(c.flatten()[:8].tolist()) for c in crops}) > 1  # different crops of the same image


def test_unknown_backbone_is_refused_by_name():
    from paradigms_policy.model.obs_encoders import ImageObsEncoder

    with pytest.raises(ValueError, match="unknown image backbone 'vit'"):
        ImageObsEncoder({"cam": {"shape": [3, 40, 40], "type": "rgb"}}, backbone="vit")


def test_dataset_keeps_images_uint8_and_serves_float_chw_in_unit_range(image_zarr):
    from paradigms_policy.data.sequence_dataset import SequenceDataset

    dataset = SequenceDataset(image_zarr, horizon=8, obs_keys=["camera_image", "pos"], n_obs_steps=2, n_action_steps=4)
    assert dataset.rgb_keys == ["camera_image"] and dataset._arrays["camera_image"].dtype == np.uint8
    assert dataset.shape_meta["obs"]["camera_image"] == {"shape": [3, 16, 16], "type": "rgb"}
    batch = dataset.get_batch([0, 5])
    image = batch["obs"]["camera_image"]
    assert image.shape == (2, 2, 3, 16, 16) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() == 1.0
    stored = dataset._arrays["camera_image"][dataset.indices[5, 0]]  # [H, W, C] uint8
    assert torch.equal(image[1, 0], torch.from_numpy(stored).permute(2, 0, 1).float() / 255.0)
    normalizer = dataset.get_normalizer()  # DiffusionPolicy's image range: [0, 1] -> [-1, 1], fixed
    assert torch.allclose(normalizer["camera_image"].normalize(torch.tensor([0.0, 0.5, 1.0])),
                          torch.tensor([-1.0, 0.0, 1.0]))


def test_obs_for_policy_converts_only_rgb_keys():
    from paradigms_policy.data.images import obs_for_policy

    frames = np.full((2, 4, 6, 3), 255, dtype=np.uint8)
    out = obs_for_policy({"cam": frames, "pos": np.ones((2, 3))},
                         {"obs": {"cam": {"type": "rgb", "shape": [3, 4, 6]}, "pos": {"type": "low_dim"}}})
    assert out["cam"].shape == (2, 3, 4, 6) and out["cam"].dtype == np.float32 and np.all(out["cam"] == 1.0)
    assert out["pos"] is not None and out["pos"].shape == (2, 3)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A tiny image policy trained for a few steps on the 16x16 image data (random crop 12x12)."""
    from conftest import make_image_episodes
    from paradigms_policy.data.replay_buffer import ReplayBuffer
    from paradigms_policy.train import train

    root = tmp_path_factory.mktemp("image_train")
    buffer = ReplayBuffer.create(root / "images.zarr")
    for episode in make_image_episodes():
        buffer.add_episode(episode)
    buffer.attrs["obs_keys"] = ["camera_image", "pos"]
    cfg = compose_train_config(root / "images.zarr", root / "run", [
        "training.max_steps=6", "training.val_every=3", "training.log_every=3", "training.checkpoint_every=3",
        "obs_encoder.crop_shape=[12,12]", "obs_encoder.backbone=small_conv", "obs_encoder.conv_widths=[4,8]",
        "obs_encoder.conv_strided=2", "obs_encoder.num_kp=4", "obs_encoder.feature_dim=8",
        f"export_path={root / 'slim.pt'}"])
    threads = torch.get_num_threads()
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    return root


def test_training_an_image_policy_writes_a_checkpoint_that_predicts_from_images(image_run):
    from paradigms_policy.checkpoint import load_checkpoint
    from paradigms_policy.policy import load_policy

    state = load_checkpoint(image_run / "slim.pt")
    assert state["obs_encoder"]["type"] == "image" and state["obs_encoder"]["crop_shape"] == [12, 12]
    assert state["shape_meta"]["obs"]["camera_image"] == {"shape": [3, 16, 16], "type": "rgb"}
    assert np.isfinite([r["train_loss"] for r in state["training"]["losses"] if "train_loss" in r]).all()
    policy = load_policy(image_run / "slim.pt", sampler="ddim_sequential")
    assert not policy.network.training  # eval: the centre crop
    rng = np.random.default_rng(0)
    obs = {"camera_image": rng.uniform(0, 1, size=(2, 3, 16, 16)).astype(np.float32),
           "pos": rng.normal(size=(2, 2)).astype(np.float32)}
    first = policy.predict_action(obs, seed=3).action
    again = load_policy(image_run / "run" / "checkpoints" / "final.pt", sampler="ddim_sequential")
    assert np.allclose(again.predict_action(obs, seed=3).action, first, atol=1e-5)  # save/load round trip
    other = dict(obs, camera_image=1.0 - obs["camera_image"])
    policy.reset()
    assert not np.allclose(policy.predict_action(other, seed=3).action, first)  # the image matters


def test_training_refuses_a_crop_larger_than_the_images(image_zarr, tmp_path):
    from paradigms_policy.train import train

    cfg = compose_train_config(image_zarr, tmp_path / "run", ["training.max_steps=1", "obs_encoder.crop_shape=[20,20]",
                                                               "obs_encoder.backbone=small_conv"])
    with pytest.raises(ValueError, match=r"crop_shape \[20, 20\] is larger than image 'camera_image' of 16x16"):
        train(cfg)


@pytest.mark.sim
def test_lift_image_env_renders_upright_uint8_frames_and_a_rollout_feeds_them(tiny_lift_image_checkpoint):
    pytest.importorskip("robosuite")
    from paradigms_policy.policy import load_policy
    from paradigms_policy.sim.envs import check_policy_fits_task, env_shape_meta, make_task_env
    from paradigms_policy.sim.rollout import run_episode

    env = make_task_env("lift_image", seed=100_000)
    try:
        obs, _ = env.reset(seed=100_000)
        frame = obs["agentview_image"]
        assert frame.dtype == np.uint8 and frame.shape == (84, 84, 3)
        assert env_shape_meta(env)["obs"]["agentview_image"] == {"shape": [3, 84, 84], "type": "rgb"}
        # upright: the table (bright) fills the bottom of agentview's frame, the robot base is at the top
        assert frame[-10:].mean() > frame[:10].mean()
        policy = load_policy(tiny_lift_image_checkpoint, sampler="ddim_sequential")
        check_policy_fits_task(policy.shape_meta, env)
        result = run_episode(env, policy, 100_000, max_steps=10)
        assert result.length == 10 and len(result.latency_ms) >= 2
    finally:
        env.close()


@pytest.mark.sim
def test_shipped_image_checkpoint_acts_on_rendered_frames(one_torch_thread):
    """checkpoints/lift_image.pt loads with its card's inputs and predicts an in-range chunk from two rendered
    observations of image Lift; the chunk depends on the camera frame."""
    pytest.importorskip("robosuite")
    from paradigms_policy import paths
    from paradigms_policy.checkpoint import load_checkpoint
    from paradigms_policy.data.images import obs_for_policy
    from paradigms_policy.policy import load_policy
    from paradigms_policy.sim.envs import check_policy_fits_task, make_task_env

    path = paths.checkpoints_dir() / "lift_image.pt"
    checkpoint = load_checkpoint(path)
    assert {k: v["shape"] for k, v in checkpoint["shape_meta"]["obs"].items()} == {
        "agentview_image": [3, 84, 84], "robot0_eef_pos": [3], "robot0_eef_quat": [4], "robot0_gripper_qpos": [2]}
    policy = load_policy(path, sampler="ddim_sequential")
    env = make_task_env("lift_image", seed=100_000)
    try:
        check_policy_fits_task(policy.shape_meta, env)
        first, _ = env.reset(seed=100_000)
        second, *_ = env.step(np.zeros(7))
    finally:
        env.close()
    window = obs_for_policy({k: np.stack([first[k], second[k]]) for k in policy.obs_keys}, policy.shape_meta)
    out = policy.predict_action(window, seed=0)
    low = checkpoint["normalizer"]["params_dict.action.input_stats.min"].numpy()
    high = checkpoint["normalizer"]["params_dict.action.input_stats.max"].numpy()
    assert out.action.shape == (8, 7) and np.all(np.isfinite(out.action_pred))
    assert np.all((out.action_pred >= low - 0.01 * (high - low) - 1e-4) & (out.action_pred <= high + 0.01 * (high - low) + 1e-4))
    policy.reset()
    blank = dict(window, agentview_image=np.zeros_like(window["agentview_image"]))
    assert not np.allclose(policy.predict_action(blank, seed=0).action, out.action, atol=1e-3)
