"""Observation encoders: low-dim concatenation order, image encoder shapes, crops, GroupNorm only."""

import pytest
import torch
from torch import nn

from paradigms_policy.model import CropRandomizer, ImageObsEncoder, LowDimObsEncoder, SpatialSoftmax


def test_lowdim_concatenates_in_given_order():
    enc = LowDimObsEncoder({"b": (2,), "a": (1, 3)})
    assert enc.output_dim == 5
    obs = {"a": torch.arange(3.0).reshape(1, 1, 3), "b": torch.tensor([[10.0, 11.0]])}
    torch.testing.assert_close(enc(obs), torch.tensor([[10.0, 11.0, 0.0, 1.0, 2.0]]))


def test_lowdim_errors_name_the_key():
    enc = LowDimObsEncoder({"pos": (3,), "quat": (4,)})
    with pytest.raises(KeyError, match="quat"):
        enc({"pos": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="quat"):
        enc({"pos": torch.zeros(2, 3), "quat": torch.zeros(2, 3)})


META = {
    "agentview_image": {"shape": [3, 72, 72], "type": "rgb"},
    "robot0_eef_pos": {"shape": [3], "type": "low_dim"},
    "wrist_image": {"shape": [3, 68, 68], "type": "rgb"},
}


@pytest.fixture(scope="module")
def image_encoder():
    torch.manual_seed(0)
    return ImageObsEncoder(META, crop_shape=(64, 64), num_kp=8, feature_dim=16)


def _obs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "agentview_image": torch.rand(n, 3, 72, 72, generator=g),
        "robot0_eef_pos": torch.randn(n, 3, generator=g),
        "wrist_image": torch.rand(n, 3, 68, 68, generator=g),
    }


def test_image_encoder_output_shape_and_lowdim_passthrough(image_encoder):
    image_encoder.eval()
    obs = _obs(3)
    with torch.no_grad():
        out = image_encoder(obs)
    assert image_encoder.output_dim == 16 + 3 + 16
    assert out.shape == (3, 35)
    # features follow obs_meta order: camera (16), low-dim (3), camera (16)
    torch.testing.assert_close(out[:, 16:19], obs["robot0_eef_pos"])


def test_eval_is_deterministic_and_train_crops_randomly(image_encoder):
    obs = _obs(2)
    image_encoder.eval()
    with torch.no_grad():
        a, b = image_encoder(obs), image_encoder(obs)
    torch.testing.assert_close(a, b)
    image_encoder.train()
    try:
        torch.manual_seed(1)
        with torch.no_grad():
            c, d = image_encoder(obs), image_encoder(obs)
    finally:
        image_encoder.eval()
    assert not torch.allclose(c[:, :16], d[:, :16])


def test_center_crop_in_eval_and_per_sample_random_crop_in_train():
    crop = CropRandomizer((6, 8), (2, 4))
    image = torch.arange(2 * 1 * 6 * 8, dtype=torch.float32).reshape(2, 1, 6, 8)
    crop.eval()
    torch.testing.assert_close(crop(image), image[:, :, 2:4, 2:6])
    crop.train()
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        out = crop(image)
        assert out.shape == (2, 1, 2, 4)
        for i in range(2):
            # every crop is a contiguous window of its own sample
            top = int(out[i, 0, 0, 0] - image[i, 0, 0, 0]) // 8
            left = int(out[i, 0, 0, 0] - image[i, 0, 0, 0]) % 8
            torch.testing.assert_close(out[i], image[i, :, top : top + 2, left : left + 4])
            seen.add((top, left))
    assert len(seen) > 3


def test_crop_larger_than_image_rejected():
    with pytest.raises(ValueError, match="crop"):
        ImageObsEncoder({"cam": {"shape": [3, 40, 40], "type": "rgb"}}, crop_shape=(48, 48))


def test_too_small_image_rejected():
    """A 1x1 ResNet feature map would make the spatial-softmax keypoints input-independent."""
    with pytest.raises(ValueError, match="cam"):
        ImageObsEncoder({"cam": {"shape": [3, 40, 40], "type": "rgb"}}, crop_shape=(32, 32))


def test_image_features_depend_on_image(image_encoder):
    image_encoder.eval()
    obs_a, obs_b = _obs(2, seed=0), _obs(2, seed=0)
    obs_b["wrist_image"] = torch.rand(2, 3, 68, 68, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a, b = image_encoder(obs_a), image_encoder(obs_b)
    torch.testing.assert_close(a[:, :19], b[:, :19])
    assert (a[:, 19:] - b[:, 19:]).abs().max() > 1e-5


def test_no_batchnorm_anywhere(image_encoder):
    modules = list(image_encoder.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    norms = [m for m in modules if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == m.num_channels // 16 for m in norms)


def test_image_encoder_rejects_wrong_image_shape(image_encoder):
    obs = _obs(1)
    obs["wrist_image"] = torch.rand(1, 3, 72, 72)
    with pytest.raises(ValueError, match="wrist_image"):
        image_encoder(obs)


def test_image_encoder_gradients_reach_backbone():
    torch.manual_seed(0)
    enc = ImageObsEncoder({"cam": {"shape": [3, 40, 40], "type": "rgb"}}, num_kp=4, feature_dim=8)
    enc(dict(cam=torch.rand(1, 3, 40, 40))).sum().backward()
    assert enc.cameras["cam"].backbone.conv1.weight.grad.abs().sum() > 0


def test_spatial_softmax_finds_peak_location():
    pool = SpatialSoftmax(in_channels=1, num_kp=1, temperature=0.01)
    with torch.no_grad():
        pool.nets.weight.fill_(1.0)
        pool.nets.bias.zero_()
    feats = torch.zeros(1, 1, 5, 9)
    feats[0, 0, 4, 0] = 1.0  # bottom-left corner -> (x, y) = (-1, 1)
    torch.testing.assert_close(pool(feats), torch.tensor([[-1.0, 1.0]]), atol=1e-3, rtol=0)
