"""ROS message <-> numpy conversions, done with numpy alone (no cv_bridge).

Every converter checks what it is given and raises ``ConversionError`` (a ``ValueError``)
whose message names the problem, so a node can log it and reject the input instead of
feeding garbage to the policy.
"""

from __future__ import annotations

import array as pyarray
from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint


class ConversionError(ValueError):
    """A message cannot be turned into the array the policy expects."""


# encoding -> (numpy dtype, channels, channel order of colour images or None)
IMAGE_ENCODINGS: dict[str, tuple[np.dtype, int, str | None]] = {
    "rgb8": (np.dtype(np.uint8), 3, "rgb"),
    "bgr8": (np.dtype(np.uint8), 3, "bgr"),
    "rgba8": (np.dtype(np.uint8), 4, "rgba"),
    "bgra8": (np.dtype(np.uint8), 4, "bgra"),
    "mono8": (np.dtype(np.uint8), 1, None),
    "8UC1": (np.dtype(np.uint8), 1, None),
    "mono16": (np.dtype(np.uint16), 1, None),
    "16UC1": (np.dtype(np.uint16), 1, None),
    "32FC1": (np.dtype(np.float32), 1, None),
}


def image_to_array(msg: Image) -> np.ndarray:
    """Decode ``msg.data`` honouring ``encoding``, ``step`` (row padding) and ``is_bigendian``.

    Returns [H, W] for single-channel encodings (uint8 / uint16 / float32) and [H, W, 3] uint8
    RGB for colour encodings (BGR is reordered, alpha dropped), so a camera's byte order does
    not leak into the policy.
    """
    if msg.encoding not in IMAGE_ENCODINGS:
        raise ConversionError(
            f"unsupported image encoding {msg.encoding!r} (supported: {', '.join(IMAGE_ENCODINGS)})"
        )
    dtype, channels, order = IMAGE_ENCODINGS[msg.encoding]
    height, width = int(msg.height), int(msg.width)
    if height <= 0 or width <= 0:
        raise ConversionError(f"image has empty size {height}x{width}")
    row_bytes = width * channels * dtype.itemsize
    step = int(msg.step)
    if step < row_bytes:
        raise ConversionError(
            f"image step {step} is shorter than a row of {width} px x {channels} ch x {dtype.itemsize} B = {row_bytes}"
        )
    raw = _bytes_view(msg.data)
    if raw.size < step * height:
        raise ConversionError(f"image data has {raw.size} bytes, expected step*height = {step * height}")
    rows = raw[: step * height].reshape(height, step)[:, :row_bytes]  # drop row padding
    big = bool(msg.is_bigendian)
    wire_dtype = dtype.newbyteorder(">" if big else "<") if dtype.itemsize > 1 else dtype
    pixels = np.ascontiguousarray(rows).view(wire_dtype).astype(dtype, copy=False)
    pixels = pixels.reshape(height, width, channels)
    if order is None:
        return pixels[:, :, 0].copy()
    if order in ("bgr", "bgra"):
        return pixels[:, :, [2, 1, 0]].copy()
    return pixels[:, :, :3].copy()


def _bytes_view(data) -> np.ndarray:
    """uint8 view of Image.data (bytes, array.array('B') or a list)."""
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def array_to_image(array: np.ndarray, encoding: str = "rgb8", *, row_padding: int = 0,
                   is_bigendian: bool = False) -> Image:
    """Encode [H, W, C] / [H, W] pixels as an Image (used by the sim robot and tests).

    Colour input is taken as RGB and reordered for ``bgr8``/``bgra8``.
    """
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported image encoding {encoding!r}")
    dtype, channels, order = IMAGE_ENCODINGS[encoding]
    pixels = np.asarray(array)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if order is not None:
        if pixels.shape[2] != 3:
            raise ConversionError(f"{encoding} needs RGB input [H, W, 3], got {tuple(array.shape)}")
        if order.startswith("bgr"):
            pixels = pixels[:, :, [2, 1, 0]]
        if channels == 4:
            alpha = np.full(pixels.shape[:2] + (1,), 255, dtype=pixels.dtype)
            pixels = np.concatenate([pixels, alpha], axis=2)
    if pixels.shape[2] != channels:
        raise ConversionError(f"{encoding} needs {channels} channel(s), got {pixels.shape[2]}")
    height, width = pixels.shape[:2]
    wire = pixels.astype(dtype.newbyteorder(">" if is_bigendian else "<") if dtype.itemsize > 1 else dtype)
    rows = wire.reshape(height, width * channels).view(np.uint8)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((height, row_padding), np.uint8)], axis=1)
    msg = Image()
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.is_bigendian = int(is_bigendian)
    msg.step = rows.shape[1]
    msg.data = rows.tobytes()
    return msg


def image_to_obs(msg: Image, shape: Sequence[int]) -> np.ndarray:
    """Image -> float32 [C, H, W] in [0, 1] (DiffusionPolicy's rgb convention); checks the size."""
    pixels = image_to_array(msg)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.dtype == np.uint8:
        scaled = pixels.astype(np.float32) / 255.0
    elif pixels.dtype == np.uint16:
        scaled = pixels.astype(np.float32) / 65535.0
    else:
        scaled = pixels.astype(np.float32)
    chw = np.transpose(scaled, (2, 0, 1))
    expected = tuple(int(s) for s in shape)
    if chw.shape != expected:
        raise ConversionError(
            f"image is {chw.shape[2]}x{chw.shape[1]} with {chw.shape[0]} channel(s) ({msg.encoding}); "
            f"the policy expects [C,H,W] = {list(expected)}"
        )
    return chw


def joint_state_to_vector(msg: JointState, joint_names: Sequence[str], field: str = "position") -> np.ndarray:
    """JointState -> float64 [len(joint_names)] in the configured order.

    Joint names the configuration does not list, configured joints the message lacks,
    duplicates and a field shorter than ``name`` are errors: silently reordering or
    zero-filling a robot's state is how a policy ends up driving the wrong joint.
    """
    if field not in ("position", "velocity", "effort"):
        raise ConversionError(f"unknown JointState field {field!r}")
    names = list(msg.name)
    values = np.asarray(getattr(msg, field), dtype=np.float64)
    if len(values) != len(names):
        raise ConversionError(f"JointState has {len(names)} names but {len(values)} {field} values")
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise ConversionError(f"JointState repeats joint name(s) {duplicates}")
    unknown = [n for n in names if n not in joint_names]
    if unknown:
        raise ConversionError(f"JointState has unknown joint(s) {unknown} (configured: {list(joint_names)})")
    missing = [n for n in joint_names if n not in names]
    if missing:
        raise ConversionError(f"JointState lacks joint(s) {missing}")
    index = {n: i for i, n in enumerate(names)}
    return values[[index[n] for n in joint_names]]


def vector_to_joint_state(values: Sequence[float], joint_names: Sequence[str], stamp: Time | None = None) -> JointState:
    if len(values) != len(joint_names):
        raise ConversionError(f"{len(values)} values for {len(joint_names)} joint names")
    msg = JointState()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.name = list(joint_names)
    msg.position = [float(v) for v in values]
    return msg


def multiarray_to_array(msg: Float32MultiArray) -> np.ndarray:
    """Float32MultiArray -> float32 array shaped by ``layout.dim``, honouring strides and data_offset.

    Per std_msgs/MultiArrayLayout, element (i, j, k) is
    ``data[data_offset + dim[1].stride * i + dim[2].stride * j + k]``. No dims means a flat vector.
    """
    data = np.asarray(msg.data, dtype=np.float32)
    dims = list(msg.layout.dim)
    offset = int(msg.layout.data_offset)
    if not dims:
        return data[offset:].copy()
    sizes = [int(d.size) for d in dims]
    strides = [int(d.stride) for d in dims[1:]] + [1]
    dense = [int(np.prod(sizes[axis + 1:])) for axis in range(len(sizes))]
    if strides == dense and offset + int(np.prod(sizes)) <= data.size:  # row-major without padding
        return data[offset:offset + int(np.prod(sizes))].reshape(sizes).copy()
    for axis in range(len(dims) - 1):
        if strides[axis] < sizes[axis + 1] * strides[axis + 1]:
            raise ConversionError(
                f"layout dim {axis + 1} ({dims[axis + 1].label!r}) has stride {strides[axis]}, "
                f"smaller than its extent {sizes[axis + 1] * strides[axis + 1]}"
            )
    if any(s == 0 for s in sizes):
        return np.zeros(sizes, dtype=np.float32)
    last = offset + sum((n - 1) * s for n, s in zip(sizes, strides))
    if last >= data.size:
        raise ConversionError(
            f"layout {sizes} (offset {offset}) needs {last + 1} values, data has {data.size}"
        )
    index = offset + sum(
        np.arange(n).reshape([-1 if a == axis else 1 for a in range(len(sizes))]) * s
        for axis, (n, s) in enumerate(zip(sizes, strides))
    )
    return data[index].astype(np.float32)


def array_to_multiarray(array: np.ndarray, labels: Sequence[str] | None = None) -> Float32MultiArray:
    """Dense row-major array -> Float32MultiArray with a full layout (sizes, strides, labels)."""
    values = np.ascontiguousarray(array, dtype=np.float32)
    if labels is not None and len(labels) != values.ndim:
        raise ConversionError(f"{len(labels)} labels for a {values.ndim}-d array")
    msg = Float32MultiArray()
    stride = int(values.size)
    for axis, size in enumerate(values.shape):
        dim = MultiArrayDimension()
        dim.label = labels[axis] if labels is not None else f"dim{axis}"
        dim.size = int(size)
        dim.stride = stride
        msg.layout.dim.append(dim)
        stride = stride // size if size else 0
    msg.layout.data_offset = 0
    msg.data = pyarray.array("f", values.ravel().tobytes())  # array.array skips per-element checks
    return msg


def seconds_to_duration(seconds: float) -> Duration:
    nanoseconds = int(round(seconds * 1e9))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def duration_to_seconds(duration: Duration) -> float:
    return duration.sec + duration.nanosec * 1e-9


def nanoseconds_to_time(nanoseconds: int) -> Time:
    return Time(sec=int(nanoseconds // 1_000_000_000), nanosec=int(nanoseconds % 1_000_000_000))


def time_to_nanoseconds(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def chunk_to_joint_trajectory(actions: np.ndarray, joint_names: Sequence[str], *, stamp: Time,
                              dt: float, frame_id: str = "", start_offset: float = 0.0) -> JointTrajectory:
    """Action chunk [N, A] -> JointTrajectory: point i = action i, applied at stamp + start_offset + i*dt.

    time_from_start is strictly increasing (start_offset, + dt, ...), so a receiver can execute the
    points in time order and drop the ones whose time has passed. The node stamps a chunk with its
    observation's time and starts it at the first action whose time has not passed.
    """
    chunk = np.asarray(actions, dtype=np.float64)
    if chunk.ndim != 2:
        raise ConversionError(f"action chunk must be [N, A], got shape {chunk.shape}")
    if chunk.shape[1] != len(joint_names):
        raise ConversionError(f"action chunk has {chunk.shape[1]} dims but {len(joint_names)} joint names")
    if not np.isfinite(chunk).all():
        raise ConversionError("action chunk contains NaN or inf")
    if dt <= 0:
        raise ConversionError(f"dt must be positive, got {dt}")
    if not start_offset >= 0:
        raise ConversionError(f"start_offset must be >= 0, got {start_offset}")
    msg = JointTrajectory()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.joint_names = list(joint_names)
    for i, row in enumerate(chunk):
        point = JointTrajectoryPoint()
        point.positions = pyarray.array("d", row.tobytes())  # array.array skips per-element checks
        point.time_from_start = seconds_to_duration(start_offset + i * dt)
        msg.points.append(point)
    return msg


def joint_trajectory_to_chunk(msg: JointTrajectory, joint_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """JointTrajectory -> (actions [N, A] float64, times_from_start [N] seconds).

    With ``joint_names`` the columns are reordered to that order (unknown/missing names raise).
    """
    names = list(msg.joint_names)
    rows = [list(p.positions) for p in msg.points]
    if any(len(r) != len(names) for r in rows):
        raise ConversionError(f"trajectory points must each have {len(names)} positions")
    chunk = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names))
    times = np.asarray([duration_to_seconds(p.time_from_start) for p in msg.points])
    if times.size > 1 and np.any(np.diff(times) <= 0):
        raise ConversionError("trajectory time_from_start must be strictly increasing")
    if joint_names is not None:
        unknown = [n for n in names if n not in joint_names]
        missing = [n for n in joint_names if n not in names]
        if unknown or missing:
            raise ConversionError(f"trajectory joint names differ: unknown {unknown}, missing {missing}")
        chunk = chunk[:, [names.index(n) for n in joint_names]]
    return chunk, times


def check_finite(name: str, values: np.ndarray) -> None:
    """Raise naming ``name`` when ``values`` holds NaN or inf."""
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise ConversionError(f"{name} contains {bad} NaN/inf value(s)")

