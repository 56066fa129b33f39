"""Input topics of the policy node: what each feeds, and turning its messages into observations.

An ``InputSpec`` binds a topic to an observation key, a message type and the shape the policy
expects. ``check_specs_fit_policy`` is what makes ``configure`` fail with a clear reason when
a checkpoint does not fit the configured inputs; ``message_to_obs`` is the per-message check
(encoding, size, joint names, NaN/inf) that keeps bad data away from the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32MultiArray

from paradigms_policy.ros.conversions import (
    ConversionError,
    check_finite,
    image_to_obs,
    joint_state_to_vector,
    multiarray_to_array,
)
from paradigms_policy.ros.limits import ObservationLimits
from paradigms_policy.ros.observation_buffer import InputError, Stamped

MESSAGE_TYPES = {"joint_state": JointState, "image": Image, "float32_multi_array": Float32MultiArray}


@dataclass(frozen=True)
class InputSpec:
    topic: str
    key: str
    kind: str  # one of MESSAGE_TYPES
    shape: tuple[int, ...]  # what the policy expects for one step

    @property
    def message_type(self):
        return MESSAGE_TYPES[self.kind]


def build_specs(topics: Sequence[str], keys: Sequence[str], kinds: Sequence[str],
                shape_meta: Mapping[str, Any], joint_names: Sequence[str]) -> list[InputSpec]:
    """Match the configured inputs to a policy's ``shape_meta``; raise ValueError listing every misfit."""
    obs_meta = shape_meta["obs"]
    problems = []
    unknown = [k for k in keys if k not in obs_meta]
    if unknown:
        problems.append(f"configured obs_keys {unknown} are not inputs of the checkpoint (it has {sorted(obs_meta)})")
    missing = [k for k in obs_meta if k not in keys]
    if missing:
        problems.append(f"checkpoint needs observation key(s) {missing} that no obs_topics entry provides")
    specs = []
    for topic, key, kind in zip(topics, keys, kinds):
        if key not in obs_meta:
            continue
        shape = tuple(int(s) for s in obs_meta[key]["shape"])
        obs_type = obs_meta[key].get("type", "low_dim")
        if kind == "image" and (obs_type != "rgb" or len(shape) != 3):
            problems.append(f"{topic}: image input for key {key!r}, but the checkpoint's {key} is {obs_type} {list(shape)}")
        if kind != "image" and obs_type == "rgb":
            problems.append(f"{topic}: key {key!r} is an rgb image in the checkpoint; its obs_types entry must be image")
        if kind == "joint_state" and shape != (len(joint_names),):
            problems.append(
                f"{topic}: {len(joint_names)} joint_names for key {key!r}, but the checkpoint expects shape {list(shape)}")
        specs.append(InputSpec(topic=topic, key=key, kind=kind, shape=shape))
    if problems:
        raise ValueError("checkpoint does not fit the configured inputs: " + "; ".join(problems))
    return specs


def message_to_obs(spec: InputSpec, message: Any, joint_names: Sequence[str],
                   limits: ObservationLimits | None = None) -> np.ndarray:
    """One message -> float32 observation of ``spec.shape``; raises InputError naming the topic and the problem.

    ``InputError.kind``: ``message`` (cannot be read: size, encoding, joint names), ``not_finite``,
    or what ``limits`` found (``out_of_range``, ``not_unit_norm``).
    """
    try:
        if spec.kind == "joint_state":
            value = joint_state_to_vector(message, joint_names)
        elif spec.kind == "image":
            value = image_to_obs(message, spec.shape)
        else:
            value = multiarray_to_array(message)
            if value.shape != spec.shape:
                if message.layout.dim or value.size != int(np.prod(spec.shape)):
                    raise ConversionError(
                        f"array has shape {list(value.shape)}, key {spec.key!r} expects {list(spec.shape)}")
                value = value.reshape(spec.shape)
    except ConversionError as exc:
        raise InputError(spec.topic, str(exc), kind="message") from exc
    raw = np.asarray(value, dtype=np.float64)  # float32 would turn 1e39 into inf and hide the value
    try:
        check_finite(f"key {spec.key!r}", raw)
    except ConversionError as exc:
        raise InputError(spec.topic, str(exc), kind="not_finite") from exc
    if limits is not None:
        violation = limits.check(spec.key, raw)
        if violation is not None:
            raise InputError(spec.topic, violation.message, kind=violation.kind)
    return raw.astype(np.float32)


def history_to_obs(specs: Sequence[InputSpec], history: Mapping[str, Sequence[Stamped]]) -> dict[str, np.ndarray]:
    """Per-topic histories of checked values -> {key: float32 [n_obs_steps, *shape]}."""
    return {spec.key: np.stack([item.message for item in history[spec.topic]], axis=0) for spec in specs}
