"""``paradigms_policy_node``: a lifecycle node that serves action chunks under a latency budget.

Lifecycle: configure loads the checkpoint, checks it fits the configured inputs and outputs,
builds the sampler, warms it up and refuses a budget that cannot fit one solver round; activate
starts the control tick; deactivate stops publishing; cleanup frees the model. Subscriptions
only store messages; the control tick checks and converts the newest message of every input
(freshness, size, NaN/inf, plausibility limits from the checkpoint's normalizer), and, when a
new chunk is due and every input is good, hands the observation history to the one inference
thread, which solves under the deadline, checks the chunk (finite, inside the action range, at
least one solver round) and publishes a JointTrajectory, the same chunk as a Float32MultiArray
and a per-chunk DiagnosticStatus. Bad inputs or failed solves publish nothing from them; with
``on_input_fault: hold`` the robot is sent a short hold instead (fault_action.py). A failed
solve resets the warm start, so the next tick solves cold. ``/diagnostics`` reports at 1 Hz,
including a failed configure. SIGINT and SIGTERM stop the process cleanly (exit code 0).

Run: ``python -m paradigms_policy.ros.policy_node --ros-args --params-file config/policy.yaml``.
"""

from __future__ import annotations

import gc
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Float32MultiArray
from trajectory_msgs.msg import JointTrajectory

from paradigms_policy.execution import ChunkGeometry, ExecutionModel, ExecutionSettings, LatencyTracker, SolveRequest
from paradigms_policy.ros.conversions import array_to_multiarray, chunk_to_joint_trajectory, nanoseconds_to_time
from paradigms_policy.ros.diagnostics import CycleRecord, CycleStats, diagnostic_array
from paradigms_policy.ros.fault_action import FaultTracker, hold_actions
from paradigms_policy.ros.inference_worker import InferenceWorker
from paradigms_policy.ros.inputs import InputSpec, build_specs, history_to_obs, message_to_obs
from paradigms_policy.ros.limits import ActionLimits, ObservationLimits
from paradigms_policy.ros.log_throttle import LogThrottle
from paradigms_policy.ros.node_params import (
    SPECS_BY_NAME,
    PolicyNodeParams,
    check_budget,
    check_params,
    check_value,
    configure_only_changes,
    declare_parameters,
    read_parameters,
    with_changes,
)
from paradigms_policy.ros.observation_buffer import InputError, ObservationBuffer, Stamped
from paradigms_policy.sampler_settings import SamplerSettings

NODE_NAME = "paradigms_policy_node"
WARMUP_SOLVES = 1
# The inference thread and the executor thread share the GIL. With Python's default 5 ms switch
# interval, a thread that wants the GIL back (the worker after a solve, to publish) can wait up to
# 5 ms for the other to finish running Python; 0.5 ms bounds that hand-over.
GIL_SWITCH_INTERVAL_S = 5e-4
STALE_KINDS = ("stale", "missing")
# a change to any of these is checked against the measured round times (one round must fit the budget)
BUDGET_PARAMS = frozenset({"latency_budget_ms", "deadline_margin_ms", "deadline_safety_factor", "deadline_policy",
                           "sampler", "sampler_steps", "sampler_window", "sampler_tolerance", "sampler_abs_tolerance",
                           "anderson_history", "rounds_per_sync"})


@dataclass(frozen=True)
class Job:
    """Everything the worker needs for one solve, captured on the control tick."""

    obs: dict[str, np.ndarray]  # checked observation history {key: [n_obs_steps, *shape]}
    input_stamps: str  # receive stamps of the messages used, per topic (cycle stats)
    request: SolveRequest  # obs time (newest input), warm-start shift, committed actions
    tick_s: float  # ROS time of the tick
    tick_perf: float  # time.perf_counter() at the tick
    deadline_perf: float  # solver deadline (perf_counter clock)
    params: PolicyNodeParams


class SolveFault(RuntimeError):
    """A solve whose chunk must not be published; ``kind`` groups them for log throttling."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class PolicyNode(LifecycleNode):
    """The policy as a ROS 2 managed node (see module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self._params = read_parameters(self)
        self._params_dirty = False
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._execution_lock = threading.RLock()  # the timeline, the fault state and trajectory publishing
        self._configured = False
        self._active = False
        self._stopping = False
        self._config_error = ""
        self._policy = None
        self._specs: list[InputSpec] = []
        self._spec_by_topic: dict[str, InputSpec] = {}
        self._buffer: ObservationBuffer | None = None
        self._limits: ObservationLimits | None = None
        self._action_limits: ActionLimits | None = None
        self._execution: ExecutionModel | None = None
        self._latency: LatencyTracker | None = None
        self._worker: InferenceWorker | None = None
        self._subscriptions_by_topic: dict[str, Any] = {}
        self._publishers_out: list[Any] = []
        self._pub_trajectory = self._pub_chunk = self._pub_cycle = None
        self._timer = None
        self._n_action_steps = 0
        self._sampler_settings: SamplerSettings | None = None
        self._cycle_index = 0
        self._fault = FaultTracker()
        self._input_log = LogThrottle(self._params.log_throttle_s)
        self._solve_log = LogThrottle(self._params.log_throttle_s)
        self.stats = CycleStats()
        self.finalized = threading.Event()
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics)

    # -- parameters ---------------------------------------------------------------------------
    def _on_set_parameters(self, parameters) -> SetParametersResult:
        try:
            return self._check_and_apply(parameters)
        except Exception as exc:  # noqa: BLE001 - a bad request must not take the node down
            return SetParametersResult(successful=False, reason=f"could not check the request: "
                                                                f"{type(exc).__name__}: {exc}")

    def _check_and_apply(self, parameters) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters if p.name in SPECS_BY_NAME}
        reasons = [r for name, value in changes.items() if (r := check_value(name, value)) is not None]
        frozen = configure_only_changes(self._params, changes) if self._configured else []
        if frozen:
            reasons.append(f"{', '.join(frozen)} can only change while the node is unconfigured: "
                           f"{'it takes' if len(frozen) == 1 else 'they take'} effect at configure, and the node is "
                           f"{self._state_label()}. Deactivate and clean up first; nothing was changed")
        if not reasons:
            candidate = with_changes(self._params, changes)
            reasons = check_params(candidate)
            if not reasons and self._policy is not None:
                reasons = self._check_against_policy(candidate, budget=bool(set(changes) & BUDGET_PARAMS))
        if reasons:
            return SetParametersResult(successful=False, reason="; ".join(reasons))
        self._params = with_changes(self._params, changes)
        self._params_dirty = True
        return SetParametersResult(successful=True)

    def _check_against_policy(self, params: PolicyNodeParams, budget: bool) -> list[str]:
        """Runtime parameters that must fit the loaded checkpoint (and, with ``budget``, the measured round times)."""
        policy = self._policy
        reasons = []
        reason = _n_action_steps_problem(params.n_action_steps or policy.n_action_steps, policy)
        if reason:
            reasons.append(reason)
        reasons += _quaternion_problems(params, policy)
        if not budget:
            return reasons
        settings = params.sampler_settings()
        if settings == self._sampler_settings:
            sampler = policy.sampler
        else:
            try:
                sampler = _build_sampler(policy, settings)
            except ValueError as exc:
                return reasons + [f"sampler settings {settings.describe()}: {exc}"]
        reason = _budget_problem(params, sampler, policy.sampler)
        if reason:
            reasons.append(reason)
        return reasons

    # -- lifecycle ----------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - every failure is reported and rolled back
            self._config_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self._config_error = ""
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        params = self._params = read_parameters(self)
        problems = check_params(params)
        if problems:
            raise ValueError("invalid parameters: " + "; ".join(problems))
        from paradigms_policy.policy import load_policy  # torch is imported on configure, not at startup

        if params.num_threads > 0:
            import torch

            torch.set_num_threads(params.num_threads)
        settings = params.sampler_settings()
        if settings.ignored():
            self.get_logger().info(f"{settings.name} does not use {settings.ignored()}: ignored")
        checkpoint = params.checkpoint or None
        self.get_logger().info(f"loading checkpoint {checkpoint or '(shipped default)'} on {params.device}")
        policy = load_policy(checkpoint, device=params.device, sampler=settings.name,
                             trust_checkpoint=params.trust_checkpoint, **settings.overrides())
        self._policy = policy
        self._sampler_settings = settings
        specs = build_specs(params.obs_topics, params.obs_keys, params.obs_types, policy.shape_meta, params.joint_names)
        if len(params.action_names) != policy.action_dim:
            raise ValueError(f"action_names has {len(params.action_names)} names, the checkpoint's action has "
                             f"{policy.action_dim} dims")
        problems = _quaternion_problems(params, policy)
        self._n_action_steps = params.n_action_steps or policy.n_action_steps
        reason = _n_action_steps_problem(self._n_action_steps, policy)
        if reason:
            problems.append(reason)
        if problems:
            raise ValueError("; ".join(problems))
        if params.budget_s >= self._n_action_steps * params.period_s:
            self.get_logger().warning(
                f"latency_budget_ms {params.latency_budget_ms} is not shorter than a chunk "
                f"({self._n_action_steps} actions at {params.control_rate_hz} Hz): the robot will idle between chunks")
        self._specs = specs
        self._spec_by_topic = {s.topic: s for s in specs}
        self._limits, self._action_limits = _make_limits(params, policy)
        self._buffer = ObservationBuffer([s.topic for s in specs], policy.n_obs_steps, params.max_obs_age_ms * 1e-3,
                                         convert=self._convert_input)
        self._execution = ExecutionModel(self._execution_settings(params),
                                         ChunkGeometry.of(policy, self._n_action_steps), dt=params.period_s)
        self._latency = LatencyTracker(initial=params.budget_s)
        self._warm_up(policy)
        reason = _budget_problem(params, policy.sampler, policy.sampler)
        if reason:
            raise ValueError(reason)
        for spec in specs:
            self._subscriptions_by_topic[spec.topic] = self.create_subscription(
                spec.message_type, spec.topic, self._make_input_callback(spec.topic), qos_profile_sensor_data)
        self._pub_trajectory = self.create_lifecycle_publisher(JointTrajectory, params.trajectory_topic, 10)
        self._pub_chunk = self.create_lifecycle_publisher(Float32MultiArray, params.chunk_topic, 10)
        self._pub_cycle = self.create_lifecycle_publisher(DiagnosticStatus, params.cycle_stats_topic, 10)
        self._publishers_out = [self._pub_trajectory, self._pub_chunk, self._pub_cycle]
        self._worker = InferenceWorker(self._run_job, name="paradigms_inference", on_error=self._on_worker_error)
        self._configured = True
        self.get_logger().info(
            f"configured: sampler {settings.describe()}, {len(specs)} inputs, {self._n_action_steps} actions/chunk at "
            f"{params.control_rate_hz} Hz, budget {params.latency_budget_ms} ms, on_input_fault {params.on_input_fault}")

    def _warm_up(self, policy) -> None:
        """Allocate buffers, seed the round-time estimates and run solves before any deadline."""
        started = time.perf_counter()
        for _ in range(WARMUP_SOLVES):
            policy.warmup()
        policy.reset()
        self.get_logger().info(f"warm-up: {WARMUP_SOLVES} solve(s) in {time.perf_counter() - started:.2f} s")

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        params = self._params
        with self._execution_lock:
            self._execution.reset()
            self._fault = FaultTracker()
        self._latency.clear()
        self._buffer.clear_history()
        self._policy.reset()
        self.stats.clear_input_problems()
        self._input_log.clear()
        self._solve_log.clear()
        if not params.tick_on_topic:
            self._timer = self.create_timer(params.period_s, self._tick)
        self._active = True
        self.get_logger().info("activated")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._active = False
        self._stop_timer()
        if self._worker is not None:
            self._worker.wait_idle(timeout=30.0)
        self.get_logger().info("deactivated")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up")
        return super().on_cleanup(state)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._active = False
        self._release()
        self.finalized.set()
        self.get_logger().info("shut down")
        return super().on_shutdown(state)

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._active = False
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def stop(self, reason: str = "") -> None:
        """End of the process (a signal, or the context going away): stop publishing, free everything."""
        self._stopping = True
        self._active = False
        if reason:
            self.get_logger().info(f"{reason}: shutting down")
        if not self.finalized.is_set():
            try:
                self.trigger_shutdown()  # the lifecycle's own shutdown: on_shutdown releases the model
            except Exception:  # noqa: BLE001 - e.g. in a transition or the context already invalid
                pass
        self._release()

    def _state_label(self) -> str:
        return "active" if self._active else "inactive" if self._configured else "unconfigured"

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None

    def _release(self) -> None:
        """Free everything configure created (safe to call on a partly configured node, and twice)."""
        self._active = False
        self._stop_timer()
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        for sub in self._subscriptions_by_topic.values():
            self.destroy_subscription(sub)
        self._subscriptions_by_topic.clear()
        for pub in self._publishers_out:
            self.destroy_lifecycle_publisher(pub)
        self._publishers_out = []
        self._pub_trajectory = self._pub_chunk = self._pub_cycle = None
        self._policy = None
        self._specs, self._spec_by_topic, self._buffer = [], {}, None
        self._limits = self._action_limits = None
        with self._execution_lock:
            self._execution = None
        self._latency = None
        self._configured = False
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _publish(self, publisher, message) -> bool:
        """Publish unless the process is stopping; a publisher whose context went away during shutdown is not an error."""
        if publisher is None or self._stopping:
            return False
        try:
            publisher.publish(message)
            return True
        except Exception:
            if self._stopping or not self.context.ok():
                return False
            raise

    # -- inputs and the control tick ---------------------------------------------------------
    def _make_input_callback(self, topic: str):
        buffer = self._buffer
        clock = self.get_clock()
        ticks = topic == self._params.tick_on_topic

        def store(message) -> None:
            buffer.store(topic, message, clock.now().nanoseconds * 1e-9)
            if ticks:
                self._tick()

        return store

    def _convert_input(self, topic: str, message) -> np.ndarray:
        """Check and convert one message (called by the buffer on the tick, once per message)."""
        return message_to_obs(self._spec_by_topic[topic], message, self._params.joint_names, self._limits)

    def _tick(self) -> None:
        """Control tick (executor thread); an unexpected error is logged (throttled), never fatal."""
        try:
            self._control_tick()
        except Exception as exc:  # noqa: BLE001 - the node keeps running; the next tick tries again
            if not self._stopping and self._solve_log.allow(("tick", type(exc).__name__)):
                self.get_logger().error(f"control tick failed: {type(exc).__name__}: {exc}")

    def _control_tick(self) -> None:
        """Check inputs; if a chunk is due and the worker is free, submit."""
        if not self._active or self._buffer is None or self._stopping:
            return
        if self._params_dirty:
            self._apply_runtime_params()
        now_s = self.get_clock().now().nanoseconds * 1e-9
        tick_perf = time.perf_counter()
        problems = self._buffer.snapshot(now_s)
        if problems:
            self._on_input_fault(problems, now_s)
            return
        self._on_inputs_ok(now_s)
        self._maybe_hold(now_s)  # after failed solves, once the robot's plan runs out
        worker, execution, params = self._worker, self._execution, self._params
        if worker is None or execution is None or worker.busy:
            return
        history = self._buffer.history()
        obs_time = max(items[-1].data_time for items in history.values())  # the newest observation used
        with self._execution_lock:
            if not execution.due(obs_time):  # re-planning counts periods between the solves' observations
                return
            expected_arrival = now_s + min(self._latency.expected(), params.budget_s)
            request = execution.request(obs_time=obs_time, expected_arrival=expected_arrival)
        job = Job(obs=history_to_obs(self._specs, history), input_stamps=_stamps_text(history), request=request,
                  tick_s=now_s, tick_perf=tick_perf,
                  deadline_perf=tick_perf + params.budget_s - params.deadline_margin_s, params=params)
        if not worker.submit(job):
            with self._execution_lock:
                execution.cancel(request)

    def _on_input_fault(self, problems: list[InputError], now_s: float) -> None:
        """Unusable inputs on this tick: report all of them (throttled), start or continue a fault episode."""
        self.stats.set_input_problems({p.topic: (p.problem, p.kind in STALE_KINDS) for p in problems})
        text = "; ".join(f"{p.topic}: {p.problem}" for p in problems)
        with self._execution_lock:
            started = self._fault.begin("input", now_s, text)
        if self._input_log.due([(p.topic, p.kind) for p in problems]):
            action = (" The robot is sent a hold (on_input_fault=hold)." if self._params.on_input_fault == "hold"
                      else "")
            self.get_logger().error(
                f"{len(problems)} input(s) not usable, nothing is published from them: {text}."
                f"{action if started else ''}")
        self._maybe_hold(now_s)

    def _on_inputs_ok(self, now_s: float) -> None:
        with self._execution_lock:
            episode = self._fault.end("input")
            if episode is not None and episode.holds and self._execution is not None:
                self._execution.replan_now()  # the robot holds: solve at once, not at the next scheduled time
        if episode is None:
            return
        self.stats.clear_input_problems()
        if self._input_log.allow(("inputs", "recovered")):
            self.get_logger().info(f"inputs usable again after {now_s - episode.started_s:.2f} s "
                                   f"({episode.holds} hold(s) sent); solving from fresh observations")

    def _maybe_hold(self, now_s: float) -> None:
        """With on_input_fault=hold, send the robot a hold when one is due (see fault_action.py)."""
        params = self._params
        if params.on_input_fault != "hold":
            return
        with self._execution_lock:
            execution = self._execution
            if execution is None or self._fault.episode is None:
                return
            covered_until = execution.covered_until(now_s)
            if not self._fault.hold_due(now_s, covered_until, params.period_s):
                return
            last = execution.last_commanded(now_s)
            if last is None:
                return  # nothing was ever commanded: the robot is not running a plan
            # never shorter than the plan it replaces, a chunk's worth, or a solve started when the inputs are back
            steps = max(self._n_action_steps, math.ceil(params.budget_s / params.period_s) + 2,
                        math.ceil((covered_until - now_s) / params.period_s))
            actions = hold_actions(last, params.hold_dims, steps)
            placement = execution.hold(now_s + 0.5 * params.period_s, actions)  # from the robot's next tick
            stamp = nanoseconds_to_time(int(round(now_s * 1e9)))  # decided now; runs from the next tick
            trajectory = chunk_to_joint_trajectory(actions, params.action_names, stamp=stamp, dt=params.period_s,
                                                   start_offset=placement.start_time - now_s)
            if self._publish(self._pub_trajectory, trajectory):
                self._fault.held()
                self.stats.record_hold()

    def _execution_settings(self, params: PolicyNodeParams) -> ExecutionSettings:
        # an action counts as passed a tenth of a period before its time (robot tick jitter, delivery)
        return ExecutionSettings(mode=params.execution, replan=params.replan, replan_every=self._n_action_steps,
                                 start_margin=0.1)

    def _apply_runtime_params(self) -> None:
        params = self._params
        self._params_dirty = False
        self._input_log.period_s = self._solve_log.period_s = params.log_throttle_s
        policy = self._policy
        if self._buffer is not None:
            self._buffer.max_age_s = params.max_obs_age_ms * 1e-3
        if policy is not None and self._buffer is not None:
            self._limits, self._action_limits = _make_limits(params, policy)
            self._buffer.set_converter(self._convert_input)
        if policy is not None and self._execution is not None:
            self._n_action_steps = params.n_action_steps or policy.n_action_steps
            with self._execution_lock:
                self._execution.settings = self._execution_settings(params)
                self._execution.geometry = ChunkGeometry.of(policy, self._n_action_steps)

    # -- the worker thread --------------------------------------------------------------------
    def _on_worker_error(self, exc: BaseException) -> None:
        self.stats.record_failure(f"{type(exc).__name__}: {exc}")
        self.get_logger().error(f"solve failed: {type(exc).__name__}: {exc}")

    def _run_job(self, job: Job) -> None:
        policy, execution = self._policy, self._execution
        if policy is None or execution is None:
            return
        try:
            published = self._solve_and_publish(job, policy, execution)
        except Exception as exc:  # noqa: BLE001 - a failed solve publishes nothing and the node carries on
            self._on_solve_failure(job, policy, execution, exc)
            return
        if not published:
            with self._execution_lock:
                execution.cancel(job.request)  # nothing was published: the next tick plans again

    def _on_solve_failure(self, job: Job, policy, execution: ExecutionModel, exc: Exception) -> None:
        """Publish nothing, forget the warm start (it may hold the bad values), let the next tick solve cold."""
        kind = exc.kind if isinstance(exc, SolveFault) else type(exc).__name__
        message = str(exc) if isinstance(exc, SolveFault) else f"{type(exc).__name__}: {exc}"
        policy.reset()
        now_s = self.get_clock().now().nanoseconds * 1e-9
        with self._execution_lock:
            execution.cancel(job.request)
            self._fault.begin("solve", now_s, message)
        self.stats.record_failure(message)
        if not self._stopping and self._solve_log.allow(("solve", kind)):
            self.get_logger().error(f"solve failed, nothing published, warm start reset (the next tick solves cold): "
                                    f"{message}")

    def _solve_and_publish(self, job: Job, policy, execution: ExecutionModel) -> bool:
        """Solve, check and publish one chunk; False when it deliberately published nothing."""
        worker_start = time.perf_counter()
        request, params = job.request, job.params
        settings = params.sampler_settings()
        if settings != self._sampler_settings:
            # a new sampler has no round-time estimates: measure them now and solve at the next tick
            policy.set_sampler(settings.name, **settings.overrides())
            self._sampler_settings = settings
            self._warm_up(policy)
            self.get_logger().info(f"sampler set to {settings.describe()}")
            reason = _budget_problem(params, policy.sampler, policy.sampler)
            if reason:
                self.get_logger().error(reason)
            return False
        policy.sampler.round_times.safety_factor = params.deadline_safety_factor
        n_executed = request.shift
        if not params.warm_start or n_executed is None or n_executed >= policy.horizon:
            policy.reset()
            n_executed = None
        warm = n_executed is not None and policy.sampler.uses_warm_start and policy.warm_state.prev is not None
        seed = params.seed + self._cycle_index if params.seed >= 0 else None
        known = request.known_actions if len(request.known_actions) else None
        started = time.perf_counter()
        # the first chunk after activation is solved without a deadline: the robot is idle until it
        # arrives, and a cold solve cut short by the budget is mostly noise
        deadline = None if request.first else job.deadline_perf
        result = policy.predict_action(job.obs, n_executed=n_executed, deadline=deadline, seed=seed,
                                       known_actions=known)
        sampling_s = time.perf_counter() - started
        self._cycle_index += 1
        action_pred = np.asarray(result.action_pred, dtype=np.float64)
        violation = self._action_limits.check(action_pred) if self._action_limits is not None else None
        if violation is not None:
            raise SolveFault(violation.kind, f"the solver's chunk is unusable: {violation.message} "
                                             f"({_input_summary(policy, job.obs)})")
        rounds = int(getattr(result.stats, "rounds", 1))
        if rounds == 0:
            raise SolveFault("no_round", _no_round_message(params, policy.sampler, job.deadline_perf - started))
        if not self._active or self._stopping:
            return False  # deactivated while solving: publish nothing
        with self._execution_lock:
            since = self._fault.input_fault_since
            if since is not None and since >= job.tick_s and params.on_input_fault == "hold":
                return False  # the inputs went bad while solving and the robot holds: do not resume the plan
            arrival_s = self.get_clock().now().nanoseconds * 1e-9
            placement = execution.place(request, action_pred, arrival=arrival_s)
            self._latency.add(arrival_s - job.tick_s)
            if len(placement.actions) == 0:
                raise SolveFault("late", f"the chunk arrived {1e3 * (arrival_s - request.obs_time):.0f} ms after its "
                                         f"observation, after the time of all its actions; nothing published")
            # stamped with the observation's time; the first point runs at the first action not yet due
            stamp = nanoseconds_to_time(int(round(request.obs_time * 1e9)))
            trajectory = chunk_to_joint_trajectory(placement.actions, params.action_names, stamp=stamp,
                                                   dt=params.period_s,
                                                   start_offset=max(0.0, placement.start_time - request.obs_time))
            multiarray = array_to_multiarray(placement.actions.astype(np.float32),
                                             labels=("action_step", "action_dim"))
            if not self._publish(self._pub_trajectory, trajectory):
                return False
            episode = self._fault.end("solve")
        published = time.perf_counter()
        self._publish(self._pub_chunk, multiarray)
        if episode is not None and self._solve_log.allow(("solve", "recovered")):
            self.get_logger().info(f"solving again after {arrival_s - episode.started_s:.2f} s")
        latency_s = published - job.tick_perf
        timings = {"queue_ms": (worker_start - job.tick_perf) * 1e3, "before_solve_ms": (started - worker_start) * 1e3,
                   "after_solve_ms": (published - started - sampling_s) * 1e3}
        stats = result.stats
        record = CycleRecord(
            latency_s=latency_s, sampling_s=sampling_s, rounds=rounds,
            converged=bool(getattr(stats, "converged", True)), deadline_hit=bool(getattr(stats, "deadline_hit", False)),
            budget_missed=latency_s > params.budget_s and not request.first, warm_started=warm)
        self.stats.record_cycle(record)
        self._publish_cycle_stats(job, record, n_executed, placement, arrival_s, result, timings)
        return True

    def _publish_cycle_stats(self, job: Job, record: CycleRecord, n_executed: int | None, placement,
                             arrival_s: float, result, timings: dict[str, float]) -> None:
        now_s = self.get_clock().now().nanoseconds * 1e-9
        status = DiagnosticStatus()
        status.name = f"{self.get_name()}: cycle"
        status.level = DiagnosticStatus.WARN if record.budget_missed else DiagnosticStatus.OK
        status.message = "budget missed" if record.budget_missed else "ok"
        values = {
            "cycle": self._cycle_index,
            "latency_ms": record.latency_s * 1e3,
            "sampling_ms": record.sampling_s * 1e3,
            "input_to_publish_ms": (now_s - job.request.obs_time) * 1e3,
            "rounds": record.rounds,
            "converged": int(record.converged),
            "deadline_hit": int(record.deadline_hit),
            "n_executed": -1 if n_executed is None else n_executed,
            "warm_started": int(record.warm_started),
            "first": int(job.request.first),
            "execution": job.params.execution,
            "known_actions": len(job.request.known_actions),
            "dropped_actions": placement.dropped,
            "published_actions": len(placement.actions),
            "chunk_stamp_s": placement.start_time,
            "obs_time_s": job.request.obs_time,
            "expected_arrival_s": job.request.expected_arrival,
            "arrival_s": arrival_s,
            "sampler": getattr(result, "sampler", job.params.sampler),
            "input_stamps": job.input_stamps,
            **timings,
        }
        status.values = [KeyValue(key=k, value=(f"{v:.6f}" if isinstance(v, float) else str(v))) for k, v in values.items()]
        self._publish(self._pub_cycle, status)

    # -- diagnostics --------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        if self._stopping:
            return
        try:
            status = self.stats.status(f"{self.get_name()}: inference", hardware_id=self._params.device,
                                       state=self._state_label(), config_error=self._config_error)
            self._publish(self._pub_diagnostics, diagnostic_array(status, self.get_clock().now().to_msg()))
        except Exception as exc:  # noqa: BLE001 - diagnostics must never take the node down
            if self._solve_log.allow(("diagnostics", type(exc).__name__)):
                self.get_logger().error(f"diagnostics failed: {type(exc).__name__}: {exc}")


# -- helpers (no node state) ------------------------------------------------------------------
def _make_limits(params: PolicyNodeParams, policy) -> tuple[ObservationLimits, ActionLimits]:
    """Plausibility limits of the low-dim inputs and of the chunk, from the checkpoint's normalizer."""
    stats = policy.normalizer.input_stats()
    low_dim = [k for k, meta in policy.shape_meta["obs"].items() if meta.get("type", "low_dim") != "rgb"]
    limits = ObservationLimits.from_stats(stats, params.obs_limit_margin, keys=low_dim,
                                          unit_norm_keys=params.quaternion_keys,
                                          unit_norm_tolerance=params.unit_norm_tolerance)
    return limits, ActionLimits.from_stats(stats["action"], params.action_limit_margin, params.action_names)


def _n_action_steps_problem(requested: int, policy) -> str | None:
    start = getattr(policy, "action_start", policy.n_obs_steps - 1)  # index of the first executed action
    longest = policy.horizon - start
    if requested > longest:
        return (f"n_action_steps={requested} exceeds what the checkpoint predicts after the observation steps "
                f"(horizon {policy.horizon} - first executed step {start} = {longest})")
    return None


def _quaternion_problems(params: PolicyNodeParams, policy) -> list[str]:
    return [f"unit_norm_keys: key {key!r} has shape {list(policy.obs_shapes[key])} in the checkpoint; a quaternion has "
            f"4 values" for key in params.quaternion_keys if key in policy.obs_shapes and policy.obs_shapes[key][-1:] != (4,)]


def _build_sampler(policy, settings: SamplerSettings):
    """The sampler ``settings`` would give this policy (to check it before switching)."""
    from paradigms_policy.diffusion.samplers import make_sampler
    from paradigms_policy.policy import SCHEDULE_KEYS

    schedule = {key: policy.noise_scheduler[key] for key in SCHEDULE_KEYS if key in policy.noise_scheduler}
    return make_sampler(settings.name, **{**schedule, **settings.overrides()})


def _round_times(sampler, measured) -> tuple[float | None, float | None, int]:
    """(first round, one-step round) seconds for ``sampler`` from ``measured``'s estimates (no safety factor)."""
    window = min(int(sampler.window), int(sampler.rule.num_steps))
    times = measured.round_times
    factor = times.safety_factor or 1.0

    def raw(w: int) -> float | None:
        estimate = times.estimate(w)
        return None if estimate is None else estimate / factor

    return raw(window), raw(1), window


def _budget_problem(params: PolicyNodeParams, sampler, measured) -> str | None:
    """Why the budget cannot fit one round of ``sampler`` (round times measured by ``measured``), or None."""
    if not sampler.is_parallel or not measured.is_parallel:
        return None  # sequential samplers ignore the deadline; no round times to judge a parallel one by
    first, one, window = _round_times(sampler, measured)
    return check_budget(params, first, one, window)


def _no_round_message(params: PolicyNodeParams, sampler, left_s: float) -> str:
    first, one, window = _round_times(sampler, sampler)
    measured = "unmeasured" if first is None else f"{first * 1e3:.1f} ms ({window} steps)"
    return (f"no solver round fit in the {max(left_s, 0.0) * 1e3:.1f} ms left of latency_budget_ms "
            f"{params.latency_budget_ms:g} (one round: {measured}, x deadline_safety_factor "
            f"{params.deadline_safety_factor:g}): the chunk would be the previous solution without a model "
            f"evaluation; nothing published")


def _input_summary(policy, obs: dict[str, np.ndarray]) -> str:
    """Which input was furthest from the training data (normalized units), to name it in a solver error."""
    worst_key, worst = "", -1.0
    for key, value in obs.items():
        try:
            normalized = policy.normalizer[key].normalize(value).abs().max().item()
        except Exception:  # noqa: BLE001 - a summary must not raise
            continue
        if not np.isfinite(normalized):
            normalized = float("inf")
        if normalized > worst:
            worst_key, worst = key, normalized
    if not worst_key:
        return "inputs: none summarised"
    return (f"inputs were within the plausibility limits; the largest was key {worst_key!r} at {worst:.3g} normalized "
            f"units (training data lies in [-1, 1])")


def _stamps_text(history: dict[str, list[Stamped]]) -> str:
    """``topic=t0,t1;...``: receive stamps (node clock, s) of the messages a solve uses."""
    return ";".join(f"{topic}=" + ",".join(f"{item.stamp:.6f}" for item in items) for topic, items in history.items())


def main(args: list[str] | None = None) -> int:
    """Entry point ``paradigms_policy_node`` (also ``python -m paradigms_policy.ros.policy_node``).

    SIGINT and SIGTERM only set a flag (rclpy's own handlers would invalidate the context while a
    callback may still be publishing); the spin loop then ends, the node shuts down through its
    lifecycle, and the context is shut down last. Exit code 0 in any state.
    """
    stop = threading.Event()
    received: list[str] = []

    def request_stop(signum, frame) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    node = executor = None
    try:
        node = PolicyNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and not node.finalized.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.05)
    except ExternalShutdownException:
        pass
    finally:
        if node is not None:
            node.stop(f"received {received[0]}" if received else "")
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
