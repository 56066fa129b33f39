"""Message <-> numpy conversions, on message objects only (no ROS graph)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")

from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float32MultiArray, MultiArrayDimension  # noqa: E402

from paradigms_policy.ros.conversions import (  # noqa: E402
    ConversionError,
    array_to_image,
    array_to_multiarray,
    chunk_to_joint_trajectory,
    duration_to_seconds,
    image_to_array,
    image_to_obs,
    joint_state_to_vector,
    joint_trajectory_to_chunk,
    multiarray_to_array,
    nanoseconds_to_time,
    time_to_nanoseconds,
)


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)


def raw_image(height, width, encoding, step, data: bytes, bigendian=0) -> Image:
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian = height, width, encoding, step, bigendian
    msg.data = data
    return msg


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("padding", [0, 3])
def test_colour_encodings_decode_to_rgb(rgb, encoding, padding):
    msg = array_to_image(rgb, encoding, row_padding=padding)
    assert msg.step == rgb.shape[1] * len(encoding.rstrip("8")) + padding
    np.testing.assert_array_equal(image_to_array(msg), rgb)


def test_bgr8_bytes_are_reordered():
    # one pixel, bytes B=1 G=2 R=3
    msg = raw_image(1, 1, "bgr8", 3, bytes([1, 2, 3]))
    np.testing.assert_array_equal(image_to_array(msg)[0, 0], [3, 2, 1])


def test_row_padding_is_skipped():
    # 2x2 mono8 with step 4: two padding bytes (99) per row must not leak into pixels
    msg = raw_image(2, 2, "mono8", 4, bytes([1, 2, 99, 99, 3, 4, 99, 99]))
    np.testing.assert_array_equal(image_to_array(msg), [[1, 2], [3, 4]])


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_16bit_endianness(encoding):
    little = raw_image(1, 2, encoding, 4, np.array([258, 772], "<u2").tobytes(), bigendian=0)
    big = raw_image(1, 2, encoding, 4, np.array([258, 772], ">u2").tobytes(), bigendian=1)
    np.testing.assert_array_equal(image_to_array(little), [[258, 772]])
    np.testing.assert_array_equal(image_to_array(big), [[258, 772]])


def test_32fc1_big_endian_round_trip():
    depth = np.array([[0.5, 1.25], [2.0, -3.5]], dtype=np.float32)
    msg = array_to_image(depth, "32FC1", is_bigendian=True, row_padding=2)
    out = image_to_array(msg)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, depth)


@pytest.mark.parametrize(
    "msg, match",
    [
        (raw_image(2, 2, "yuv422", 4, bytes(8)), "unsupported image encoding"),
        (raw_image(2, 2, "rgb8", 5, bytes(10)), "step 5 is shorter"),
        (raw_image(2, 2, "rgb8", 6, bytes(7)), "expected step\\*height = 12"),
        (raw_image(0, 2, "rgb8", 6, b""), "empty size"),
    ],
)
def test_bad_images_raise(msg, match):
    with pytest.raises(ConversionError, match=match):
        image_to_array(msg)


def test_image_to_obs_is_chw_unit_range_and_checks_size(rgb):
    obs = image_to_obs(array_to_image(rgb, "bgr8"), (3, 4, 5))
    assert obs.shape == (3, 4, 5) and obs.dtype == np.float32
    np.testing.assert_allclose(obs[:, 1, 2], rgb[1, 2] / 255.0)
    with pytest.raises(ConversionError, match=r"expects \[C,H,W\] = \[3, 8, 8\]"):
        image_to_obs(array_to_image(rgb, "rgb8"), (3, 8, 8))
    with pytest.raises(ConversionError, match="1 channel"):
        image_to_obs(array_to_image(rgb[:, :, 0], "mono8"), (3, 4, 5))


def joint_state(names, positions) -> JointState:
    msg = JointState()
    msg.name, msg.position = list(names), list(positions)
    return msg


def test_joint_state_is_reordered_to_configured_names():
    msg = joint_state(["b", "c", "a"], [2.0, 3.0, 1.0])
    np.testing.assert_array_equal(joint_state_to_vector(msg, ["a", "b", "c"]), [1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    "names, positions, match",
    [
        (["a", "b", "x"], [1, 2, 3], r"unknown joint\(s\) \['x'\]"),
        (["a", "b"], [1, 2], r"lacks joint\(s\) \['c'\]"),
        (["a", "b", "c"], [1, 2], "3 names but 2 position values"),
        (["a", "a", "c"], [1, 2, 3], "repeats joint name"),
    ],
)
def test_joint_state_errors_name_the_joints(names, positions, match):
    with pytest.raises(ConversionError, match=match):
        joint_state_to_vector(joint_state(names, positions), ["a", "b", "c"])


def test_multiarray_round_trip_with_layout():
    values = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    msg = array_to_multiarray(values, labels=("a", "b", "c"))
    assert [d.size for d in msg.layout.dim] == [2, 3, 4]
    assert [d.stride for d in msg.layout.dim] == [24, 12, 4]
    np.testing.assert_array_equal(multiarray_to_array(msg), values)


def test_multiarray_honours_padding_strides_and_offset():
    # 2x2 matrix stored with a row stride of 3 (one padding value) after an offset of 1
    msg = Float32MultiArray()
    msg.layout.dim = [MultiArrayDimension(label="rows", size=2, stride=6),
                      MultiArrayDimension(label="cols", size=2, stride=3)]
    msg.layout.data_offset = 1
    msg.data = [-1.0, 1.0, 2.0, -9.0, 3.0, 4.0, -9.0]
    np.testing.assert_array_equal(multiarray_to_array(msg), [[1.0, 2.0], [3.0, 4.0]])


def test_multiarray_without_dims_is_flat_and_short_data_raises():
    msg = Float32MultiArray()
    msg.data = [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(multiarray_to_array(msg), [1.0, 2.0, 3.0])
    msg.layout.dim = [MultiArrayDimension(label="x", size=4, stride=4)]
    with pytest.raises(ConversionError, match="needs 4 values, data has 3"):
        multiarray_to_array(msg)


def test_chunk_to_joint_trajectory_has_one_increasing_point_per_action():
    chunk = np.arange(12, dtype=np.float64).reshape(4, 3)
    stamp = nanoseconds_to_time(1_700_000_000_123_456_789)
    msg = chunk_to_joint_trajectory(chunk, ["x", "y", "z"], stamp=stamp, dt=0.05)
    assert time_to_nanoseconds(msg.header.stamp) == 1_700_000_000_123_456_789
    assert len(msg.points) == 4 and list(msg.joint_names) == ["x", "y", "z"]
    times = [duration_to_seconds(p.time_from_start) for p in msg.points]
    np.testing.assert_allclose(times, [0.0, 0.05, 0.10, 0.15])
    back, back_times = joint_trajectory_to_chunk(msg, ["z", "x", "y"])
    np.testing.assert_array_equal(back, chunk[:, [2, 0, 1]])
    np.testing.assert_allclose(back_times, times)
    late = chunk_to_joint_trajectory(chunk, ["x", "y", "z"], stamp=stamp, dt=0.05, start_offset=0.15)
    np.testing.assert_allclose([duration_to_seconds(p.time_from_start) for p in late.points], [0.15, 0.2, 0.25, 0.3])
    with pytest.raises(ConversionError, match="start_offset"):
        chunk_to_joint_trajectory(chunk, ["x", "y", "z"], stamp=stamp, dt=0.05, start_offset=-0.1)


@pytest.mark.parametrize(
    "chunk, names, match",
    [
        (np.zeros((2, 3)), ["a", "b"], "3 dims but 2 joint names"),
        (np.full((2, 2), np.nan), ["a", "b"], "NaN or inf"),
        (np.zeros(3), ["a"], r"must be \[N, A\]"),
    ],
)
def test_chunk_to_joint_trajectory_rejects_bad_chunks(chunk, names, match):
    with pytest.raises(ConversionError, match=match):
        chunk_to_joint_trajectory(chunk, names, stamp=nanoseconds_to_time(0), dt=0.1)
