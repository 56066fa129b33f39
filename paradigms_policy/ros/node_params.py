"""Parameters of the policy node: ONE table (name, type, default, range, description, when it applies).

``PARAM_SPECS`` is the single source of truth: the node declares its parameters from it (with
descriptors), ``PolicyNodeParams.defaults()`` reads its defaults, and ``config/policy.yaml`` is
tested to equal them. The rules (ranges, allowed values, cross-checks, "this one only changes
while unconfigured") are plain functions that the node's set-parameters callback, ``configure``
and the tests all call.

Sampler settings use ``paradigms_policy.sampler_settings.SamplerSettings``; on the ROS side a
setting that is "not set" (the sampler's own default) is written -1, since a ROS parameter has
no null; 0 is a value (a tolerance of 0 is an exact solve).

No rclpy at import (descriptors are built on demand), so the table tests without a ROS graph.
"""

from __future__ import annotations

import array
import math
from dataclasses import dataclass, fields
from typing import Any

from paradigms_policy.execution import MODES as EXECUTION_MODES
from paradigms_policy.execution import REPLAN_POLICIES
from paradigms_policy.ros.fault_action import FAULT_ACTIONS
from paradigms_policy.sampler_settings import DEADLINE_POLICIES, SAMPLER_KINDS, SamplerSettings

INPUT_TYPES = ("joint_state", "image", "float32_multi_array")
NOT_SET = -1  # a sampler setting left to the sampler's own default

# rcl_interfaces/msg/ParameterType values (kept here so the table imports without ROS; a test checks them)
STRING, INTEGER, DOUBLE, BOOL = 4, 2, 3, 1
INTEGER_ARRAY, STRING_ARRAY = 7, 9


@dataclass(frozen=True)
class ParamSpec:
    """One row of the table."""

    name: str
    type: int  # rcl_interfaces ParameterType
    default: Any
    description: str
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None
    choices: tuple[str, ...] | None = None
    configure_only: bool = False  # changes only while unconfigured; takes effect at the next configure
    not_set: Any = None  # the value meaning "not set" (outside the range otherwise allowed)

    @property
    def full_description(self) -> str:
        text = self.description
        if self.not_set is not None:
            text += f" {self.not_set}: not set (the sampler's own default)."
        if self.choices:
            text += f" One of: {', '.join(self.choices)}."
        if self.configure_only:
            text += " Changes only while unconfigured; takes effect at configure."
        return text

    def descriptor(self):
        """rcl_interfaces/ParameterDescriptor of this row (ranges include the not-set value)."""
        from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

        desc = ParameterDescriptor(name=self.name, type=self.type, description=self.full_description)
        if self.float_range is not None:
            low = min(self.float_range[0], self.not_set) if self.not_set is not None else self.float_range[0]
            desc.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(self.float_range[1]),
                                                            step=0.0)]
        if self.int_range is not None:
            low = min(self.int_range[0], self.not_set) if self.not_set is not None else self.int_range[0]
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(self.int_range[1]), step=1)]
        return desc


LIFT_OBS_TOPICS = ("robot/obs/object", "robot/obs/robot0_eef_pos", "robot/obs/robot0_eef_quat",
                   "robot/gripper/joint_states")
LIFT_OBS_KEYS = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
LIFT_OBS_TYPES = ("float32_multi_array", "float32_multi_array", "float32_multi_array", "joint_state")
LIFT_FINGERS = ("gripper0_right_finger_joint1", "gripper0_right_finger_joint2")
LIFT_ACTIONS = ("eef_dx", "eef_dy", "eef_dz", "eef_dax", "eef_day", "eef_daz", "gripper")

S = ParamSpec
PARAM_SPECS: tuple[ParamSpec, ...] = (
    # -- model -----------------------------------------------------------------------------------
    S("checkpoint", STRING, "", "Path of the policy checkpoint: ours (.pt), a DiffusionPolicy workspace .ckpt or a "
      "LeRobot diffusion pretrained_model/ directory (recognized by content); empty means the shipped "
      "checkpoints/lift_lowdim.pt.", configure_only=True),
    S("trust_checkpoint", BOOL, False, "Fully unpickle a checkpoint that needs more than the safe allow-list "
      "(OmegaConf, containers, tensors). Unpickling runs code from the file: only for files you trust.",
      configure_only=True),
    S("device", STRING, "cpu", "Torch device for inference, e.g. cpu or cuda:0.", configure_only=True),
    S("num_threads", INTEGER, 1, "Torch CPU threads of this process; 0 keeps torch's default. One thread avoids "
      "OpenMP spin-waiting when the cores are shared (robot drivers, simulator).", int_range=(0, 256),
      configure_only=True),
    # -- sampler (paradigms_policy.sampler_settings.SamplerSettings) ------------------------------
    S("sampler", STRING, "anderson_warm", "Diffusion sampler kind.", choices=SAMPLER_KINDS),
    S("sampler_steps", INTEGER, NOT_SET, "Number of denoising steps (the sampler's own: 100 for the DDPM-based "
      "samplers, 16 for ddim_sequential, 10 for dpmsolver_sequential).", int_range=(1, 1000), not_set=NOT_SET),
    S("sampler_tolerance", DOUBLE, float(NOT_SET), "Relative (ParaDiGMS) convergence tolerance of the parallel "
      "solvers; 0 solves exactly. Default: Picard 0.1, Anderson 0.01.", float_range=(0.0, 10.0), not_set=NOT_SET),
    S("sampler_abs_tolerance", DOUBLE, float(NOT_SET), "Absolute RMS floor of the parallel solvers' criterion "
      "(normalized action units); 0: none. Default: Picard 3e-3, Anderson 1e-3.", float_range=(0.0, 10.0),
      not_set=NOT_SET),
    S("sampler_window", INTEGER, NOT_SET, "Steps evaluated per parallel round (default: Picard 32, Anderson 100).",
      int_range=(1, 1000), not_set=NOT_SET),
    S("anderson_history", INTEGER, NOT_SET, "Iterates kept by triangular Anderson acceleration (default 2).",
      int_range=(0, 16), not_set=NOT_SET),
    S("rounds_per_sync", INTEGER, NOT_SET, "Picard and Anderson samplers: run whole rounds on the device and read the "
      "convergence flags after at most this many rounds (on CUDA captured as graphs); -1: the host loop.",
      int_range=(1, 64), not_set=NOT_SET),
    S("deadline_policy", STRING, "ddim_fallback", "What a parallel solve that reaches the deadline publishes.",
      choices=DEADLINE_POLICIES),
    # -- timing ----------------------------------------------------------------------------------
    S("latency_budget_ms", DOUBLE, 200.0, "Time from the control tick to the published chunk; the solver stops "
      "early to meet it. A budget too small for one measured solver round is refused.", float_range=(1.0, 10000.0)),
    S("deadline_margin_ms", DOUBLE, 5.0, "Part of the budget kept free after the solve for building and publishing "
      "the messages.", float_range=(0.0, 1000.0)),
    S("deadline_safety_factor", DOUBLE, 1.5, "A solver round starts only if this many times its measured duration "
      "fits before the deadline (absorbs round-time jitter on shared CPUs).", float_range=(1.0, 10.0)),
    S("control_rate_hz", DOUBLE, 20.0, "Control tick rate; also the rate at which the robot executes one action "
      "(the spacing of trajectory points).", float_range=(0.1, 1000.0), configure_only=True),
    S("n_action_steps", INTEGER, 0, "Control periods between the observations of consecutive solves "
      "(DiffusionPolicy's n_action_steps) with replan=every; 0 keeps the checkpoint's.", int_range=(0, 256)),
    S("execution", STRING, "inpaint", "How a chunk is placed in time: action j belongs to t_obs + j/control_rate_hz. "
      "naive: start at the first action on arrival; aligned: drop actions whose time has passed; inpaint: aligned, "
      "and the actions committed while solving are known to the solver.", choices=EXECUTION_MODES),
    S("replan", STRING, "every", "When to start the next solve: every n_action_steps periods, or asap (as soon as "
      "the previous chunk is published).", choices=REPLAN_POLICIES),
    S("warm_start", BOOL, True, "Start each solve from the previous solution shifted by the executed actions."),
    S("seed", INTEGER, -1, "Noise seed for the first solve; -1 draws a random one.", int_range=(-1, 2**31 - 1)),
    # -- inputs ----------------------------------------------------------------------------------
    S("max_obs_age_ms", DOUBLE, 250.0, "Inputs whose newest message is older than this are stale.",
      float_range=(1.0, 60000.0)),
    S("obs_topics", STRING_ARRAY, LIFT_OBS_TOPICS, "Input topics; entry i feeds observation key obs_keys[i] with "
      "message type obs_types[i].", configure_only=True),
    S("obs_keys", STRING_ARRAY, LIFT_OBS_KEYS, "Observation key fed by each input topic.", configure_only=True),
    S("obs_types", STRING_ARRAY, LIFT_OBS_TYPES, "Message type of each input topic.", choices=INPUT_TYPES,
      configure_only=True),
    S("joint_names", STRING_ARRAY, LIFT_FINGERS, "Joint order of JointState inputs (positions are read in this "
      "order; other names are errors). Checked against the checkpoint's input size at configure.",
      configure_only=True),
    S("tick_on_topic", STRING, "", "If set to one of obs_topics, each message there triggers the control tick "
      "(one history entry per robot step) instead of the timer.", configure_only=True),
    S("obs_limit_margin", DOUBLE, 1.0, "Plausibility limits: an input outside the checkpoint's training range "
      "(normalizer min/max) widened by this many times its width on each side is rejected like NaN. Negative: no "
      "range check (NaN/inf are always rejected).", float_range=(-1.0, 1000.0)),
    S("unit_norm_keys", STRING_ARRAY, ("robot0_eef_quat",), "Observation keys that are quaternions and must have "
      "unit norm; [''] for none (a params file cannot hold an empty list)."),
    S("unit_norm_tolerance", DOUBLE, 0.05, "Allowed |norm - 1| of unit_norm_keys.", float_range=(1e-6, 1.0)),
    S("log_throttle_s", DOUBLE, 2.0, "At most one log line per topic per this many seconds for the same kind of "
      "problem (and per kind of solver failure).", float_range=(0.0, 3600.0)),
    # -- outputs ---------------------------------------------------------------------------------
    S("action_names", STRING_ARRAY, LIFT_ACTIONS, "Names of the action dimensions, used as JointTrajectory "
      "joint_names; their number must equal the checkpoint's action size (checked at configure).",
      configure_only=True),
    S("action_limit_margin", DOUBLE, 0.1, "A chunk outside the checkpoint's action training range widened by this "
      "many times its width is not published (and the warm start is reset); negative: only NaN/inf are refused.",
      float_range=(-1.0, 1000.0)),
    S("on_input_fault", STRING, "hold", "What the robot is sent while inputs are bad or stale (and when failed "
      "solves leave it without a plan): none publishes nothing (the robot runs out its current plan); hold "
      "publishes a short trajectory that holds it (see hold_action_dims).", choices=FAULT_ACTIONS),
    S("hold_action_dims", INTEGER_ARRAY, (6,), "Action dimensions that keep their last commanded value in a hold; "
      "the others are 0, which holds still in a delta action space (e.g. OSC_POSE deltas). For an absolute action "
      "space (joint positions) list every dimension. [-1] for none.", int_range=(-1, 1023)),
    S("trajectory_topic", STRING, "policy/joint_trajectory", "Output trajectory_msgs/JointTrajectory topic (policy "
      "chunks and holds).", configure_only=True),
    S("chunk_topic", STRING, "policy/action_chunk", "Output std_msgs/Float32MultiArray topic with the same chunk "
      "[points, action_dim] (policy chunks only).", configure_only=True),
    S("cycle_stats_topic", STRING, "policy/cycle_stats", "Per-chunk diagnostic_msgs/DiagnosticStatus (latency, "
      "sampling time, rounds, the input stamps used).", configure_only=True),
)
del S
SPECS_BY_NAME = {spec.name: spec for spec in PARAM_SPECS}
CONFIGURE_ONLY = frozenset(spec.name for spec in PARAM_SPECS if spec.configure_only)


@dataclass(frozen=True)
class PolicyNodeParams:
    """A full, typed parameter set (field names = PARAM_SPECS names; defaults live in the table only)."""

    checkpoint: str
    trust_checkpoint: bool
    device: str
    num_threads: int
    sampler: str
    sampler_steps: int
    sampler_tolerance: float
    sampler_abs_tolerance: float
    sampler_window: int
    anderson_history: int
    rounds_per_sync: int
    deadline_policy: str
    latency_budget_ms: float
    deadline_margin_ms: float
    deadline_safety_factor: float
    control_rate_hz: float
    n_action_steps: int
    execution: str
    replan: str
    warm_start: bool
    seed: int
    max_obs_age_ms: float
    obs_topics: tuple[str, ...]
    obs_keys: tuple[str, ...]
    obs_types: tuple[str, ...]
    joint_names: tuple[str, ...]
    tick_on_topic: str
    obs_limit_margin: float
    unit_norm_keys: tuple[str, ...]
    unit_norm_tolerance: float
    log_throttle_s: float
    action_names: tuple[str, ...]
    action_limit_margin: float
    on_input_fault: str
    hold_action_dims: tuple[int, ...]
    trajectory_topic: str
    chunk_topic: str
    cycle_stats_topic: str

    @classmethod
    def defaults(cls) -> "PolicyNodeParams":
        return cls(**{spec.name: _normalize(spec, spec.default) for spec in PARAM_SPECS})

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def budget_s(self) -> float:
        return self.latency_budget_ms * 1e-3

    @property
    def deadline_margin_s(self) -> float:
        """Time kept free after the solve (at most half the budget)."""
        return min(self.deadline_margin_ms * 1e-3, 0.5 * self.budget_s)

    @property
    def quaternion_keys(self) -> tuple[str, ...]:
        return tuple(k for k in self.unit_norm_keys if k)

    @property
    def hold_dims(self) -> tuple[int, ...]:
        return tuple(d for d in self.hold_action_dims if d >= 0)

    def sampler_settings(self) -> SamplerSettings:
        """The typed sampler settings (-1 -> None: not set)."""
        def opt(value):
            return None if value == NOT_SET else value

        return SamplerSettings(name=self.sampler, steps=opt(self.sampler_steps), tolerance=opt(self.sampler_tolerance),
                               abs_tolerance=opt(self.sampler_abs_tolerance), window=opt(self.sampler_window),
                               history=opt(self.anderson_history), rounds_per_sync=opt(self.rounds_per_sync),
                               deadline_policy=self.deadline_policy)


def _normalize(spec: ParamSpec, value: Any) -> Any:
    """A ROS value as PolicyNodeParams holds it (arrays as tuples)."""
    if spec.type in (STRING_ARRAY, INTEGER_ARRAY):
        return tuple(value or ())
    if spec.type == DOUBLE and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _as_list(value: Any) -> list:
    """A parameter value as a list of its elements (rclpy gives integer arrays as array.array)."""
    return list(value) if isinstance(value, (list, tuple, array.array)) else [value]


def check_value(name: str, value: Any) -> str | None:
    """Reason why ``value`` is not acceptable for parameter ``name``, or None."""
    spec = SPECS_BY_NAME.get(name)
    if spec is None:
        return None  # not ours (e.g. use_sim_time)
    if spec.not_set is not None and value == spec.not_set:
        return None
    unset = f" or {spec.not_set} (not set)" if spec.not_set is not None else ""
    if spec.float_range is not None:
        if not (isinstance(value, (int, float)) and math.isfinite(value)
                and spec.float_range[0] <= float(value) <= spec.float_range[1]):
            return f"{name}={value} is outside [{spec.float_range[0]}, {spec.float_range[1]}]{unset}"
    if spec.int_range is not None:
        values = _as_list(value)
        bad = [v for v in values if not spec.int_range[0] <= int(v) <= spec.int_range[1]]
        if bad:
            return f"{name}={value} is outside [{spec.int_range[0]}, {spec.int_range[1]}]{unset}"
    if spec.choices is not None:
        values = _as_list(value)
        bad = [v for v in values if v not in spec.choices]
        if bad:
            return f"{name} has unknown value(s) {bad}; expected one of {list(spec.choices)}"
    if name == "device" and not (value == "cpu" or str(value).startswith("cuda")):
        return f"device must be 'cpu' or 'cuda[:N]', got {value!r}"
    return None


def check_params(params: PolicyNodeParams) -> list[str]:
    """Every problem with a full parameter set (single values and how they fit together)."""
    problems = [p for spec in PARAM_SPECS if (p := check_value(spec.name, getattr(params, spec.name))) is not None]
    lengths = {len(params.obs_topics), len(params.obs_keys), len(params.obs_types)}
    if len(lengths) != 1:
        problems.append(
            f"obs_topics ({len(params.obs_topics)}), obs_keys ({len(params.obs_keys)}) and obs_types "
            f"({len(params.obs_types)}) must have the same length")
    if not params.obs_topics:
        problems.append("obs_topics is empty: the policy needs at least one input")
    for label, values in (("obs_topics", params.obs_topics), ("obs_keys", params.obs_keys),
                          ("joint_names", params.joint_names), ("action_names", params.action_names),
                          ("hold_action_dims", params.hold_dims)):
        duplicates = sorted({v for v in values if list(values).count(v) > 1})
        if duplicates:
            problems.append(f"{label} repeats {duplicates}")
    if "joint_state" in params.obs_types and not params.joint_names:
        problems.append("a joint_state input needs joint_names")
    if params.tick_on_topic and params.tick_on_topic not in params.obs_topics:
        problems.append(f"tick_on_topic {params.tick_on_topic!r} is not one of obs_topics")
    for name in ("trajectory_topic", "chunk_topic", "cycle_stats_topic"):
        if not getattr(params, name):
            problems.append(f"{name} is empty")
    unknown = [k for k in params.quaternion_keys if k not in params.obs_keys]
    if unknown:
        problems.append(f"unit_norm_keys {unknown} are not in obs_keys {list(params.obs_keys)}")
    too_big = [d for d in params.hold_dims if d >= len(params.action_names)]
    if too_big:
        problems.append(f"hold_action_dims {too_big} are not dimensions of the {len(params.action_names)} "
                        f"action_names")
    try:
        params.sampler_settings()
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def configure_only_changes(current: PolicyNodeParams, changes: dict[str, Any]) -> list[str]:
    """Names of configure-only parameters that ``changes`` would really change (same value: not a change)."""
    return sorted(name for name, value in changes.items()
                  if name in CONFIGURE_ONLY and _normalize(SPECS_BY_NAME[name], value) != getattr(current, name))


def check_budget(params: PolicyNodeParams, round_s: float | None, width_one_s: float | None, window: int) -> str | None:
    """Why the budget cannot fit one solver round, or None.

    ``round_s`` is the measured time of the first round (``window`` steps), ``width_one_s`` that
    of a one-step call (what ddim_fallback needs for its first step); both without the safety factor.
    Unknown times (nothing measured yet) pass: the solve-time guard still refuses to publish
    a chunk that got no round.
    """
    needed_round = round_s
    if params.deadline_policy == "ddim_fallback" and width_one_s is not None:
        needed_round = width_one_s if round_s is None else min(round_s, width_one_s)
    if needed_round is None or not math.isfinite(needed_round):
        return None
    needed = needed_round * params.deadline_safety_factor
    usable = params.budget_s - params.deadline_margin_s
    if usable >= needed:
        return None
    which = f"a {window}-step round" if needed_round == round_s else "a one-step round (ddim_fallback)"
    smallest = needed + min(params.deadline_margin_ms * 1e-3, needed)  # margin is capped at half the budget
    return (f"latency_budget_ms={params.latency_budget_ms:g} cannot fit one solver round of {params.sampler}: "
            f"{usable * 1e3:.1f} ms are left after deadline_margin_ms, but {which} measured {needed_round * 1e3:.1f} ms "
            f"(x deadline_safety_factor {params.deadline_safety_factor:g} = {needed * 1e3:.1f} ms); a chunk without a "
            f"model evaluation is never published. Use at least {math.ceil(smallest * 1e3)} ms")


def declare_parameters(node) -> None:
    """Declare every parameter with its descriptor (values from --params-file / -p override defaults)."""
    for spec in PARAM_SPECS:
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        node.declare_parameter(spec.name, default, spec.descriptor())


def read_parameters(node) -> PolicyNodeParams:
    return PolicyNodeParams(**{spec.name: _normalize(spec, node.get_parameter(spec.name).value) for spec in PARAM_SPECS})


def with_changes(params: PolicyNodeParams, changes: dict[str, Any]) -> PolicyNodeParams:
    """``params`` with some values replaced (as a set-parameters request would)."""
    fixed = {k: _normalize(SPECS_BY_NAME[k], v) for k, v in changes.items() if k in SPECS_BY_NAME}
    return PolicyNodeParams(**{**params.__dict__, **fixed})


def params_table_names() -> list[str]:
    """Field names of PolicyNodeParams (a test checks they equal the table's)."""
    return [f.name for f in fields(PolicyNodeParams)]
