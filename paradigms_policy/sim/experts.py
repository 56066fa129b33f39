"""Scripted experts producing OSC_POSE delta actions for Lift and Can.

Each expert is a small phase machine (approach, descend, grasp, lift, ...) driven by a P
controller on the end-effector pose read from robomimic low-dim observations. Per episode it
draws its own speed, approach offsets, hover height, pauses and action noise, so demonstrations
vary the way human ones do instead of repeating one trajectory.

Action layout (robosuite OSC_POSE, delta): [dx, dy, dz, rx, ry, rz, gripper] in [-1, 1];
position deltas scale to 5 cm, rotation deltas (axis-angle, world frame) to 0.5 rad; gripper
-1 opens, +1 closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

POS_SCALE = 0.05  # metres per unit action (controller output_max)
ROT_SCALE = 0.5  # radians per unit action
OPEN, CLOSE = -1.0, 1.0


# -- small rotation helpers (quaternions are xyzw, as robosuite returns them) --------------------
def quat_to_mat(q: np.ndarray) -> np.ndarray:
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def mat_to_axis_angle(m: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle) of a rotation matrix."""
    cos = np.clip((np.trace(m) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-8:
        return np.zeros(3)
    axis = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
    norm = np.linalg.norm(axis)
    if norm < 1e-8:  # angle ~ pi: axis from the symmetric part
        axis = np.sqrt(np.clip((np.diag(m) + 1.0) / 2.0, 0.0, None))
        norm = np.linalg.norm(axis)
    return axis / norm * angle


def yaw_of_quat(q: np.ndarray) -> float:
    m = quat_to_mat(q)
    return float(np.arctan2(m[1, 0], m[0, 0]))


def wrap_quarter_turn(angle: float) -> float:
    """Wrap to [-pi/4, pi/4): a cube looks the same every quarter turn about z."""
    return float((angle + np.pi / 4) % (np.pi / 2) - np.pi / 4)


class Expert(Protocol):
    """What demo recording needs from an expert: an action for each observation of one episode."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


# -- expert machinery ------------------------------------------------------------------------------
@dataclass
class Style:
    """Per-episode randomization of how the expert moves."""

    speed: float  # max |action| on position dims
    gain: float  # P gain on position error (1.0 = aim the OSC goal exactly at the target)
    offset_xy: np.ndarray  # grasp offset from the object centre [m]
    hover: float  # height above the object before descending [m]
    grasp_dz: float  # grasp height relative to the object centre [m]
    close_steps: int  # steps holding still while the gripper closes
    lift_height: float  # how high to lift / carry [m]
    noise_std: float  # gaussian action noise on arm dims
    pauses: dict[str, int] = field(default_factory=dict)  # phase -> idle steps before it


def draw_style(rng: np.random.Generator) -> Style:
    phases = ("descend", "grasp", "lift", "carry", "lower", "release")
    return Style(
        speed=float(rng.uniform(0.6, 1.0)),
        gain=float(rng.uniform(0.8, 1.2)),
        offset_xy=rng.uniform(-0.006, 0.006, size=2),
        hover=float(rng.uniform(0.04, 0.10)),
        grasp_dz=float(rng.uniform(-0.012, 0.0)),
        close_steps=int(rng.integers(8, 15)),
        lift_height=float(rng.uniform(0.10, 0.18)),
        noise_std=float(rng.uniform(0.0, 0.08)),
        pauses={p: int(rng.integers(0, 5)) if rng.random() < 0.4 else 0 for p in phases},
    )


@dataclass
class Phase:
    name: str
    target: Callable[[dict], np.ndarray]  # obs -> eef position target
    gripper: float
    done: Callable[[dict, int], bool]  # (obs, steps in phase) -> advance?
    timeout: int
    max_speed: float | None = None  # cap on the style's speed (e.g. while carrying a load)


class ScriptedExpert:
    """Runs phases in order; subclasses build them from the first observation of an episode."""

    def __init__(self, seed: int | None = None) -> None:
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.style = draw_style(self.rng)
        self.phases: list[Phase] | None = None
        self.phase_index = 0
        self.phase_steps = 0
        self.pause_left = 0
        self.target_rot: np.ndarray | None = None
        self.gripper = OPEN
        self.eef_history: list[np.ndarray] = []

    @property
    def phase(self) -> str:
        if self.phases is None:
            return "start"
        return self.phases[min(self.phase_index, len(self.phases) - 1)].name

    def build(self, obs: dict[str, np.ndarray]) -> list[Phase]:
        raise NotImplementedError

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self.phases is None:
            self.phases = self.build(obs)
        self.eef_history = (self.eef_history + [obs["robot0_eef_pos"].astype(np.float64)])[-6:]
        phase = self.phases[min(self.phase_index, len(self.phases) - 1)]
        if self.phase_index < len(self.phases) - 1 and (
            phase.done(obs, self.phase_steps) or self.phase_steps >= phase.timeout
        ):
            self.phase_index += 1
            self.phase_steps = 0
            phase = self.phases[self.phase_index]
            self.pause_left = self.style.pauses.get(phase.name, 0)
        self.phase_steps += 1
        self.gripper = phase.gripper
        if self.pause_left > 0:
            self.pause_left -= 1
            return self._action(obs, obs["robot0_eef_pos"].astype(np.float64), phase.gripper)
        speed = self.style.speed if phase.max_speed is None else min(self.style.speed, phase.max_speed)
        return self._action(obs, phase.target(obs), phase.gripper, speed)

    def _action(self, obs: dict[str, np.ndarray], target: np.ndarray, gripper: float,
                speed: float | None = None) -> np.ndarray:
        eef = obs["robot0_eef_pos"].astype(np.float64)
        speed = self.style.speed if speed is None else speed
        pos = np.clip(self.style.gain * (target - eef) / POS_SCALE, -speed, speed)
        rot_err = mat_to_axis_angle(self.target_rot @ quat_to_mat(obs["robot0_eef_quat"]).T)
        rot = np.clip(rot_err / ROT_SCALE, -0.5, 0.5)
        arm = np.concatenate([pos, rot]) + self.rng.normal(0.0, self.style.noise_std, size=6)
        return np.clip(np.concatenate([arm, [gripper]]), -1.0, 1.0).astype(np.float32)

    def stalled(self, window: int = 5, tol: float = 0.0015) -> bool:
        """The end effector barely moved over the last ``window`` steps (blocked by contact or reach)."""
        if len(self.eef_history) <= window:
            return False
        return bool(np.linalg.norm(self.eef_history[-1] - self.eef_history[-1 - window]) < tol)

    def _near_or_stalled(self, target_fn: Callable[[dict], np.ndarray], tol: float, stall_tol: float = 0.04):
        """Phase end: within ``tol`` of the target, or stuck within ``stall_tol`` of it."""

        def done(obs: dict, steps: int) -> bool:
            err = float(np.linalg.norm(target_fn(obs) - obs["robot0_eef_pos"]))
            return err < tol or (steps > 5 and err < stall_tol and self.stalled())

        return done

    def rot_error(self, obs: dict[str, np.ndarray]) -> float:
        return float(np.linalg.norm(mat_to_axis_angle(self.target_rot @ quat_to_mat(obs["robot0_eef_quat"]).T)))


def _near(target_fn: Callable[[dict], np.ndarray], tol: float) -> Callable[[dict, int], bool]:
    return lambda obs, _: bool(np.linalg.norm(target_fn(obs) - obs["robot0_eef_pos"]) < tol)


def _after(steps: int) -> Callable[[dict, int], bool]:
    return lambda _obs, n: n >= steps


class LiftExpert(ScriptedExpert):
    """Approach above the cube (turning to its yaw), descend, close the gripper, lift."""

    def build(self, obs: dict[str, np.ndarray]) -> list[Phase]:
        s = self.style
        cube0 = obs["object"][:3].astype(np.float64)
        eef_rot = quat_to_mat(obs["robot0_eef_quat"])
        turn = wrap_quarter_turn(yaw_of_quat(obs["object"][3:7]) - float(np.arctan2(eef_rot[1, 0], eef_rot[0, 0])))
        self.target_rot = rot_z(turn) @ eef_rot

        def cube(o: dict) -> np.ndarray:
            return o["object"][:3].astype(np.float64)

        above = lambda o: cube(o) + np.r_[s.offset_xy, s.hover]  # noqa: E731
        at_grasp = lambda o: cube(o) + np.r_[s.offset_xy, s.grasp_dz]  # noqa: E731
        lift_to = cube0 + np.r_[s.offset_xy, s.grasp_dz + s.lift_height]

        def aligned_above(o: dict, _n: int) -> bool:
            return bool(np.linalg.norm(above(o) - o["robot0_eef_pos"]) < 0.012 and self.rot_error(o) < 0.08)

        hold: dict[str, np.ndarray] = {}

        def hold_pos(o: dict) -> np.ndarray:
            hold.setdefault("pos", o["robot0_eef_pos"].astype(np.float64).copy())
            return hold["pos"]

        return [
            Phase("approach", above, OPEN, aligned_above, timeout=80),
            Phase("descend", at_grasp, OPEN, _near(at_grasp, 0.007), timeout=50),
            Phase("grasp", hold_pos, CLOSE, _after(s.close_steps), timeout=s.close_steps),
            Phase("lift", lambda o: lift_to, CLOSE, _after(10_000), timeout=10_000),
        ]


def can_target_region(robosuite_env) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) corners [x, y, z] of the target bin quadrant of PickPlaceCan's can.

    Mirrors robosuite's ``PickPlace.not_in_bin`` bounds; the low corner is the one nearest the robot.
    """
    env = robosuite_env
    name = getattr(env, "obj_to_use", "can").lower()
    bin_id = env.object_to_id[name]
    x_low, y_low = float(env.bin2_pos[0]), float(env.bin2_pos[1])
    if bin_id in (0, 2):
        x_low -= env.bin_size[0] / 2
    if bin_id < 2:
        y_low -= env.bin_size[1] / 2
    z = float(env.bin2_pos[2])
    return np.array([x_low, y_low, z]), np.array([x_low + env.bin_size[0] / 2, y_low + env.bin_size[1] / 2, z + 0.1])


class CanExpert(ScriptedExpert):
    """Pick the can from above, carry it over the target bin quadrant, lower, release, retreat.

    The drop point is drawn in the part of the quadrant nearest the robot: the far corner is at
    the edge of the Panda's reach with the gripper pointing down.
    """

    def __init__(self, target_low: np.ndarray, target_high: np.ndarray, seed: int | None = None) -> None:
        self.target_low = np.asarray(target_low, dtype=np.float64)
        self.target_high = np.asarray(target_high, dtype=np.float64)
        super().__init__(seed)

    def build(self, obs: dict[str, np.ndarray]) -> list[Phase]:
        s = self.style
        self.target_rot = quat_to_mat(obs["robot0_eef_quat"])  # a can is round: keep the start yaw
        floor = self.target_low[2]
        carry_z = floor + float(self.rng.uniform(0.17, 0.22))
        drop_xy = self.target_low[:2] + self.rng.uniform([0.04, 0.05], [0.09, 0.10])
        release_z = floor + float(self.rng.uniform(0.10, 0.12))
        grasp_dz = float(self.rng.uniform(0.0, 0.015))  # lower and the fingertips hit the bin floor
        hover = float(self.rng.uniform(0.08, 0.12))  # fingertips clear the can's top (~5 cm above its centre)

        def can(o: dict) -> np.ndarray:
            # robosuite 1.5 orders the can's object-state as: to-eef pos [3], to-eef quat [4], pos [3], quat [4]
            return o["object"][7:10].astype(np.float64)

        above = lambda o: can(o) + np.r_[s.offset_xy, hover]  # noqa: E731
        at_grasp = lambda o: can(o) + np.r_[s.offset_xy, grasp_dz]  # noqa: E731
        hold: dict[str, np.ndarray] = {}

        def hold_pos(o: dict) -> np.ndarray:
            hold.setdefault("pos", o["robot0_eef_pos"].astype(np.float64).copy())
            return hold["pos"]

        def up(o: dict) -> np.ndarray:
            return np.r_[hold["pos"][:2], carry_z]

        over_bin = np.r_[drop_xy, carry_z]
        lower_to = np.r_[drop_xy, release_z]
        retreat = np.r_[drop_xy, carry_z]
        return [
            Phase("approach", above, OPEN, self._near_or_stalled(above, 0.012), timeout=100),
            Phase("descend", at_grasp, OPEN, self._near_or_stalled(at_grasp, 0.007), timeout=50),
            Phase("grasp", hold_pos, CLOSE, _after(s.close_steps), timeout=s.close_steps),
            Phase("lift", up, CLOSE, self._near_or_stalled(up, 0.03), timeout=60, max_speed=0.8),
            Phase("carry", lambda o: over_bin, CLOSE, self._near_or_stalled(lambda o: over_bin, 0.02), timeout=100,
                  max_speed=0.7),
            Phase("lower", lambda o: lower_to, CLOSE, self._near_or_stalled(lambda o: lower_to, 0.015), timeout=50,
                  max_speed=0.7),
            Phase("release", lambda o: lower_to, OPEN, _after(8), timeout=8),
            Phase("retreat", lambda o: retreat, OPEN, _after(10_000), timeout=10_000),
        ]


def make_expert(task: str, env, seed: int | None = None) -> Expert:
    """Expert for ``task`` ("lift", "can" or "pusht"); ``env`` is the env it will drive."""
    key = task.lower()
    if key == "pusht":
        from paradigms_policy.sim.pusht_expert import PushTExpert

        return PushTExpert(seed)
    if key == "lift":
        return LiftExpert(seed)
    if key == "can":
        return CanExpert(*can_target_region(env.unwrapped_robosuite), seed=seed)
    raise ValueError(f"no scripted expert for task {task!r}; expected 'lift', 'can' or 'pusht'")
