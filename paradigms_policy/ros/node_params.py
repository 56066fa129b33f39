"""Parameters of the policy node: declaration (with descriptors), reading and validation.

Kept apart from the node so that the rules (ranges, allowed values, cross-checks such as
"obs_topics, obs_keys and obs_types have the same length") are plain functions that the
node's ``add_on_set_parameters_callback`` and the tests both call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from paradigms_policy.execution import MODES as EXECUTION_MODES
from paradigms_policy.execution import REPLAN_POLICIES

# the names of paradigms_policy.diffusion.samplers.SAMPLER_NAMES (not imported: no torch at node start-up)
SAMPLER_KINDS = ("ddpm100_sequential", "ddim16_sequential", "dpmsolver10_sequential", *(f"{u}_{r}_{s}" for u in ("picard", "anderson", "newton") for r in ("ddpm100", "ddim16", "dpmsolver10") for s in ("cold", "warm")), "ddpm_sequential", "ddim_sequential", "dpmsolver_sequential", "picard_cold", "picard_warm", "anderson_cold", "anderson_warm", "auto")  # noqa: E501
DEADLINE_POLICIES = ("publish", "ddim_fallback", "keep_previous")

INPUT_TYPES = ("joint_state", "image", "float32_multi_array")

# Parameters that shape the node's topics, model or timer: they take effect at the next configure.
STRUCTURAL = frozenset({
    "checkpoint", "device", "num_threads", "obs_topics", "obs_keys", "obs_types", "joint_names", "action_names",
    "trajectory_topic", "chunk_topic", "cycle_stats_topic", "control_rate_hz", "tick_on_topic",
})


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    type: int  # rcl_interfaces ParameterType
    description: str
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None
    choices: tuple[str, ...] | None = None

    def descriptor(self) -> ParameterDescriptor:
        text = self.description
        if self.choices:
            text += f" One of: {', '.join(self.choices)}."
        if self.name in STRUCTURAL:
            text += " Takes effect at the next configure."
        desc = ParameterDescriptor(name=self.name, type=self.type, description=text)
        if self.float_range is not None:
            desc.floating_point_range = [FloatingPointRange(from_value=float(self.float_range[0]),
                                                            to_value=float(self.float_range[1]), step=0.0)]
        if self.int_range is not None:
            desc.integer_range = [IntegerRange(from_value=int(self.int_range[0]), to_value=int(self.int_range[1]), step=1)]
        return desc


P = ParameterType
PARAM_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("checkpoint", "", P.PARAMETER_STRING,
              "Path of the policy checkpoint (.pt); empty means the shipped checkpoints/lift_lowdim.pt."),
    ParamSpec("device", "cpu", P.PARAMETER_STRING, "Torch device for inference, e.g. cpu or cuda:0."),
    ParamSpec("num_threads", 1, P.PARAMETER_INTEGER,
              "Torch CPU threads of this process; 0 keeps torch's default. One thread avoids OpenMP spin-waiting "
              "when the cores are shared (robot drivers, simulator).", int_range=(0, 256)),
    ParamSpec("sampler", "anderson_warm", P.PARAMETER_STRING, "Diffusion sampler kind.", choices=SAMPLER_KINDS),
    ParamSpec("sampler_steps", 0, P.PARAMETER_INTEGER,
              "Number of denoising steps; 0 keeps the checkpoint's.", int_range=(0, 1000)),
    ParamSpec("sampler_tolerance", 0.0, P.PARAMETER_DOUBLE,
              "Convergence tolerance of the parallel solvers (ParaDiGMS criterion); 0 keeps the sampler's "
              "measured default (Picard 0.1, Anderson 0.01).", float_range=(0.0, 10.0)),
    ParamSpec("sampler_window", 0, P.PARAMETER_INTEGER,
              "Steps evaluated per parallel round; 0 keeps the sampler's default.", int_range=(0, 1000)),
    ParamSpec("anderson_history", 2, P.PARAMETER_INTEGER,
              "Iterates kept by triangular Anderson acceleration.", int_range=(1, 16)),
    ParamSpec("deadline_policy", "ddim_fallback", P.PARAMETER_STRING,
              "What a parallel solve that reaches the deadline publishes.", choices=DEADLINE_POLICIES),
    ParamSpec("latency_budget_ms", 80.0, P.PARAMETER_DOUBLE,
              "Time from the control tick to the published chunk; the solver stops early to meet it.",
              float_range=(1.0, 10000.0)),
    ParamSpec("deadline_margin_ms", 5.0, P.PARAMETER_DOUBLE,
              "Part of the budget kept free after the solve for building and publishing the messages.",
              float_range=(0.0, 1000.0)),
    ParamSpec("deadline_safety_factor", 1.5, P.PARAMETER_DOUBLE,
              "A solver round starts only if this many times its measured duration fits before the deadline "
              "(absorbs round-time jitter on shared CPUs).", float_range=(1.0, 10.0)),
    ParamSpec("control_rate_hz", 10.0, P.PARAMETER_DOUBLE,
              "Control tick rate; also the rate at which the robot executes one action.", float_range=(0.1, 1000.0)),
    ParamSpec("n_action_steps", 0, P.PARAMETER_INTEGER,
              "Control periods between the observations of consecutive solves (DiffusionPolicy's n_action_steps) "
              "with replan=every; 0 keeps the checkpoint's.", int_range=(0, 256)),
    ParamSpec("execution", "inpaint", P.PARAMETER_STRING,
              "How a chunk is placed in time: action j belongs to t_obs + j/control_rate_hz. naive: start at the "
              "first action on arrival; aligned: drop actions whose time has passed; inpaint: aligned, and the "
              "actions committed while solving are known to the solver.", choices=EXECUTION_MODES),
    ParamSpec("replan", "every", P.PARAMETER_STRING,
              "When to start the next solve: every n_action_steps periods, or asap (as soon as the previous "
              "chunk is published).", choices=REPLAN_POLICIES),
    ParamSpec("warm_start", True, P.PARAMETER_BOOL,
              "Start each solve from the previous solution shifted by the executed actions."),
    ParamSpec("max_obs_age_ms", 500.0, P.PARAMETER_DOUBLE,
              "Inputs whose newest message is older than this are stale.", float_range=(1.0, 60000.0)),
    ParamSpec("obs_topics", ["robot/obs/object"], P.PARAMETER_STRING_ARRAY,
              "Input topics; entry i feeds observation key obs_keys[i] with message type obs_types[i]."),
    ParamSpec("obs_keys", ["object"], P.PARAMETER_STRING_ARRAY, "Observation key fed by each input topic."),
    ParamSpec("obs_types", ["float32_multi_array"], P.PARAMETER_STRING_ARRAY,
              "Message type of each input topic.", choices=INPUT_TYPES),
    ParamSpec("joint_names", ["joint1"], P.PARAMETER_STRING_ARRAY,
              "Joint order of JointState inputs (positions are read in this order; other names are errors)."),
    ParamSpec("action_names", ["a0"], P.PARAMETER_STRING_ARRAY,
              "Names of the action dimensions, used as JointTrajectory joint_names."),
    ParamSpec("trajectory_topic", "policy/joint_trajectory", P.PARAMETER_STRING,
              "Output trajectory_msgs/JointTrajectory topic."),
    ParamSpec("chunk_topic", "policy/action_chunk", P.PARAMETER_STRING,
              "Output std_msgs/Float32MultiArray topic with the same chunk [n_action_steps, action_dim]."),
    ParamSpec("cycle_stats_topic", "policy/cycle_stats", P.PARAMETER_STRING,
              "Per-chunk diagnostic_msgs/DiagnosticStatus (latency, sampling time, rounds)."),
    ParamSpec("tick_on_topic", "", P.PARAMETER_STRING,
              "If set to one of obs_topics, each message there triggers the control tick instead of the timer."),
    ParamSpec("seed", -1, P.PARAMETER_INTEGER, "Noise seed for the first solve; -1 draws a random one.",
              int_range=(-1, 2**31 - 1)),
    ParamSpec("log_throttle_s", 2.0, P.PARAMETER_DOUBLE,
              "Minimum seconds between repeated input-error logs per topic.", float_range=(0.0, 3600.0)),
)
SPECS_BY_NAME = {spec.name: spec for spec in PARAM_SPECS}


@dataclass(frozen=True)
class PolicyNodeParams:
    checkpoint: str = ""
    device: str = "cpu"
    num_threads: int = 1
    sampler: str = "anderson_warm"
    sampler_steps: int = 0
    sampler_tolerance: float = 0.0
    sampler_window: int = 0
    anderson_history: int = 2
    deadline_policy: str = "ddim_fallback"
    latency_budget_ms: float = 80.0
    deadline_margin_ms: float = 5.0
    deadline_safety_factor: float = 1.5
    control_rate_hz: float = 10.0
    n_action_steps: int = 0
    execution: str = "inpaint"
    replan: str = "every"
    warm_start: bool = True
    max_obs_age_ms: float = 500.0
    obs_topics: tuple[str, ...] = field(default_factory=tuple)
    obs_keys: tuple[str, ...] = field(default_factory=tuple)
    obs_types: tuple[str, ...] = field(default_factory=tuple)
    joint_names: tuple[str, ...] = field(default_factory=tuple)
    action_names: tuple[str, ...] = field(default_factory=tuple)
    trajectory_topic: str = "policy/joint_trajectory"
    chunk_topic: str = "policy/action_chunk"
    cycle_stats_topic: str = "policy/cycle_stats"
    tick_on_topic: str = ""
    seed: int = -1
    log_throttle_s: float = 2.0

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def budget_s(self) -> float:
        return self.latency_budget_ms * 1e-3

    def sampler_overrides(self) -> dict[str, Any]:
        """Keyword overrides for ``make_sampler`` / ``Policy.set_sampler`` (0 = keep the default)."""
        overrides: dict[str, Any] = {}
        if self.sampler_steps > 0:
            overrides["num_inference_steps"] = self.sampler_steps
        if not self.sampler.endswith("_sequential"):
            if self.sampler_tolerance > 0:
                overrides["tolerance"] = self.sampler_tolerance
            overrides["deadline_policy"] = self.deadline_policy
            if self.sampler_window > 0:
                overrides["window"] = self.sampler_window
        if self.sampler.startswith("anderson"):
            overrides["history"] = self.anderson_history
        return overrides


def check_value(name: str, value: Any) -> str | None:
    """Reason why ``value`` is not acceptable for parameter ``name``, or None."""
    spec = SPECS_BY_NAME.get(name)
    if spec is None:
        return None  # not ours (e.g. use_sim_time)
    if spec.float_range is not None and not (spec.float_range[0] <= float(value) <= spec.float_range[1]):
        return f"{name}={value} is outside [{spec.float_range[0]}, {spec.float_range[1]}]"
    if spec.int_range is not None and not (spec.int_range[0] <= int(value) <= spec.int_range[1]):
        return f"{name}={value} is outside [{spec.int_range[0]}, {spec.int_range[1]}]"
    if spec.choices is not None:
        values = list(value) if isinstance(value, (list, tuple)) else [value]
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
                          ("joint_names", params.joint_names), ("action_names", params.action_names)):
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
    return problems


def declare_parameters(node) -> None:
    """Declare every parameter with its descriptor (values from --params-file / -p override defaults)."""
    for spec in PARAM_SPECS:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())


def read_parameters(node) -> PolicyNodeParams:
    values = {}
    for spec in PARAM_SPECS:
        value = node.get_parameter(spec.name).value
        if spec.type == P.PARAMETER_STRING_ARRAY:
            value = tuple(value or ())
        values[spec.name] = value
    return PolicyNodeParams(**values)


def with_changes(params: PolicyNodeParams, changes: dict[str, Any]) -> PolicyNodeParams:
    """``params`` with some values replaced (as a set-parameters request would)."""
    fixed = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in changes.items() if k in SPECS_BY_NAME}
    return PolicyNodeParams(**{**params.__dict__, **fixed})
