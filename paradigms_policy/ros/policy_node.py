"""``paradigms_policy_node``: a lifecycle node that serves action chunks under a latency budget.

Lifecycle: configure loads the checkpoint, checks it fits the configured inputs, builds the
sampler and warms it up; activate starts the control tick; deactivate stops publishing;
cleanup frees the model. Subscriptions only store messages; the control tick snapshots the
observation history and, when a new chunk is due, hands it to the one inference thread, which
solves under the deadline and publishes a JointTrajectory, the same chunk as a
Float32MultiArray and a per-chunk DiagnosticStatus. ``/diagnostics`` reports at 1 Hz.

Run: ``python -m paradigms_policy.ros.policy_node --ros-args --params-file config/policy.yaml``.
"""

from __future__ import annotations

import dataclasses
import gc
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
from std_msgs.msg import Float32MultiArray
from trajectory_msgs.msg import JointTrajectory

from paradigms_policy.execution import ChunkGeometry, ExecutionModel, ExecutionSettings, LatencyTracker, SolveRequest
from paradigms_policy.ros.conversions import (
    array_to_multiarray,
    chunk_to_joint_trajectory,
    nanoseconds_to_time,
)
from paradigms_policy.ros.diagnostics import CycleRecord, CycleStats, diagnostic_array
from paradigms_policy.ros.inference_worker import InferenceWorker
from paradigms_policy.ros.inputs import InputSpec, build_specs, history_to_obs
from paradigms_policy.ros.node_params import (
    STRUCTURAL,
    PolicyNodeParams,
    check_params,
    check_value,
    declare_parameters,
    read_parameters,
    with_changes,
)
from paradigms_policy.ros.observation_buffer import (
    InputError,
    MissingInputError,
    ObservationBuffer,
    Stamped,
    StaleInputError,
)

NODE_NAME = "paradigms_policy_node"
WARMUP_SOLVES = 1
# The inference thread and the executor thread share the GIL. With Python's default 5 ms switch
# interval, a thread that wants the GIL back (the worker after a solve, to publish) can wait up to
# 5 ms for the other to finish running Python; 0.5 ms bounds that hand-over.
GIL_SWITCH_INTERVAL_S = 5e-4


@dataclass(frozen=True)
class Job:
    """Everything the worker needs for one solve, captured on the control tick."""

    history: dict[str, list[Stamped]]
    request: SolveRequest  # obs time (newest input), warm-start shift, committed actions
    tick_s: float  # ROS time of the tick
    tick_perf: float  # time.perf_counter() at the tick
    deadline_perf: float  # solver deadline (perf_counter clock)
    params: PolicyNodeParams


class PolicyNode(LifecycleNode):
    """The policy as a ROS 2 managed node (see module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self._params = read_parameters(self)
        self._params_dirty = False
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._lock = threading.Lock()
        self._configured = False
        self._active = False
        self._policy = None
        self._specs: list[InputSpec] = []
        self._buffer: ObservationBuffer | None = None
        self._execution: ExecutionModel | None = None
        self._latency: LatencyTracker | None = None
        self._worker: InferenceWorker | None = None
        self._subscriptions_by_topic: dict[str, Any] = {}
        self._publishers_out: list[Any] = []
        self._pub_trajectory = self._pub_chunk = self._pub_cycle = None
        self._timer = None
        self._n_action_steps = 0
        self._sampler_settings: tuple | None = None
        self._cycle_index = 0
        self._last_log: dict[str, tuple[float, str]] = {}
        self.stats = CycleStats()
        self.finalized = threading.Event()
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics)

    # -- parameters ---------------------------------------------------------------------------
    def _on_set_parameters(self, parameters) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters}
        reasons = [r for name, value in changes.items() if (r := check_value(name, value)) is not None]
        if not reasons:
            reasons = check_params(with_changes(self._params, changes))
        if not reasons and self._policy is not None and "n_action_steps" in changes:
            reason = self._check_n_action_steps(int(changes["n_action_steps"]))
            if reason:
                reasons.append(reason)
        if reasons:
            return SetParametersResult(successful=False, reason="; ".join(reasons))
        self._params = with_changes(self._params, changes)
        self._params_dirty = True
        structural = sorted(set(changes) & STRUCTURAL)
        if structural and self._configured:
            self.get_logger().info(f"{structural} will take effect at the next configure")
        return SetParametersResult(successful=True)

    def _check_n_action_steps(self, requested: int) -> str | None:
        policy = self._policy
        start = getattr(policy, "action_start", policy.n_obs_steps - 1)  # index of the first executed action
        longest = policy.horizon - start
        if requested > longest:
            return (f"n_action_steps={requested} exceeds what the checkpoint predicts after the observation steps "
                    f"(horizon {policy.horizon} - first executed step {start} = {longest})")
        return None

    # -- lifecycle ----------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - every failure is reported and rolled back
            self.get_logger().error(f"configure failed: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
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
        checkpoint = params.checkpoint or None
        self.get_logger().info(f"loading checkpoint {checkpoint or '(shipped default)'} on {params.device}")
        policy = load_policy(checkpoint, device=params.device, sampler=params.sampler,
                             trust_checkpoint=params.trust_checkpoint, **params.sampler_overrides())
        self._policy = policy
        self._sampler_settings = (params.sampler, tuple(sorted(params.sampler_overrides().items())))
        specs = build_specs(params.obs_topics, params.obs_keys, params.obs_types, policy.shape_meta, params.joint_names)
        if len(params.action_names) != policy.action_dim:
            raise ValueError(f"action_names has {len(params.action_names)} names, the checkpoint's action has "
                             f"{policy.action_dim} dims")
        self._n_action_steps = params.n_action_steps or policy.n_action_steps
        reason = self._check_n_action_steps(self._n_action_steps)
        if reason:
            raise ValueError(reason)
        if params.budget_s >= self._n_action_steps * params.period_s:
            self.get_logger().warning(
                f"latency_budget_ms {params.latency_budget_ms} is not shorter than a chunk "
                f"({self._n_action_steps} actions at {params.control_rate_hz} Hz): the robot will idle between chunks")
        self._specs = specs
        self._buffer = ObservationBuffer([s.topic for s in specs], policy.n_obs_steps, params.max_obs_age_ms * 1e-3)
        self._execution = ExecutionModel(self._execution_settings(params),
                                         ChunkGeometry.of(policy, self._n_action_steps), dt=params.period_s)
        self._latency = LatencyTracker(initial=params.budget_s)
        for spec in specs:
            self._subscriptions_by_topic[spec.topic] = self.create_subscription(
                spec.message_type, spec.topic, self._make_input_callback(spec.topic), qos_profile_sensor_data)
        self._pub_trajectory = self.create_lifecycle_publisher(JointTrajectory, params.trajectory_topic, 10)
        self._pub_chunk = self.create_lifecycle_publisher(Float32MultiArray, params.chunk_topic, 10)
        self._pub_cycle = self.create_lifecycle_publisher(DiagnosticStatus, params.cycle_stats_topic, 10)
        self._publishers_out = [self._pub_trajectory, self._pub_chunk, self._pub_cycle]
        self._warm_up(policy)
        self._worker = InferenceWorker(self._run_job, name="paradigms_inference", on_error=self._on_worker_error)
        self._configured = True
        self.get_logger().info(
            f"configured: sampler {params.sampler} {params.sampler_overrides()}, {len(specs)} inputs, "
            f"{self._n_action_steps} actions/chunk at {params.control_rate_hz} Hz, budget {params.latency_budget_ms} ms")

    def _warm_up(self, policy) -> None:
        """Allocate buffers, seed the round-time estimates and run solves before any deadline."""
        started = time.perf_counter()
        for _ in range(WARMUP_SOLVES):
            policy.warmup()
        policy.reset()
        self.get_logger().info(f"warm-up: {WARMUP_SOLVES} solve(s) in {time.perf_counter() - started:.2f} s")

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        params = self._params
        self._execution.reset()
        self._latency.clear()
        self._buffer.clear_history()
        self._policy.reset()
        self.stats.clear_input_problems()
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

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None

    def _release(self) -> None:
        """Free everything configure created (safe to call on a partly configured node)."""
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
        self._specs, self._buffer, self._execution, self._latency = [], None, None, None
        self._configured = False
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

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

    def _tick(self) -> None:
        """Control tick (executor thread): snapshot inputs; if a chunk is due and the worker is free, submit."""
        if not self._active or self._buffer is None:
            return
        now_s = self.get_clock().now().nanoseconds * 1e-9
        tick_perf = time.perf_counter()
        try:
            self._buffer.snapshot(now_s)
        except InputError as exc:
            self._report_input_problem(exc, stale=isinstance(exc, (StaleInputError, MissingInputError)))
            return
        if self._params_dirty:
            self._apply_runtime_params()
        worker, execution = self._worker, self._execution
        if worker is None or worker.busy:
            return
        history = self._buffer.history()
        obs_time = max(items[-1].stamp for items in history.values())  # the newest observation used
        if not execution.due(obs_time):  # re-planning counts periods between the solves' observations
            return
        params = self._params
        expected_arrival = now_s + min(self._latency.expected(), params.budget_s)
        request = execution.request(obs_time=obs_time, expected_arrival=expected_arrival)
        margin = min(params.deadline_margin_ms * 1e-3, 0.5 * params.budget_s)  # messages and publishing
        job = Job(history=history, request=request, tick_s=now_s, tick_perf=tick_perf,
                  deadline_perf=tick_perf + params.budget_s - margin, params=params)
        if not worker.submit(job):
            execution.cancel(request)

    def _execution_settings(self, params: PolicyNodeParams) -> ExecutionSettings:
        # the robot runs each point on its nearest tick: an action counts as passed half a period early
        return ExecutionSettings(mode=params.execution, replan=params.replan, replan_every=self._n_action_steps,
                                 start_margin=0.5)

    def _apply_runtime_params(self) -> None:
        params = self._params
        self._params_dirty = False
        if self._buffer is not None:
            self._buffer.max_age_s = params.max_obs_age_ms * 1e-3
        if self._policy is not None and self._execution is not None:
            self._n_action_steps = params.n_action_steps or self._policy.n_action_steps
            self._execution.settings = self._execution_settings(params)
            self._execution.geometry = ChunkGeometry.of(self._policy, self._n_action_steps)

    def _report_input_problem(self, exc: InputError, stale: bool) -> None:
        self.stats.set_input_problem(exc.topic, exc.problem, stale=stale)
        now = time.monotonic()
        last_time, last_text = self._last_log.get(exc.topic, (-1e9, ""))
        if exc.problem != last_text or now - last_time >= self._params.log_throttle_s:
            self._last_log[exc.topic] = (now, exc.problem)
            self.get_logger().error(f"input {exc.topic}: {exc.problem}; not publishing until it is fixed")

    # -- the worker thread --------------------------------------------------------------------
    def _on_worker_error(self, exc: BaseException) -> None:
        self.stats.record_failure(f"{type(exc).__name__}: {exc}")
        self.get_logger().error(f"solve failed: {type(exc).__name__}: {exc}")

    def _run_job(self, job: Job) -> None:
        policy, execution = self._policy, self._execution
        if policy is None or execution is None:
            return
        request = job.request
        try:
            self._solve_and_publish(job, policy, execution)
        except BaseException:
            execution.cancel(request)  # nothing was published: the next tick plans again
            raise

    def _solve_and_publish(self, job: Job, policy, execution: ExecutionModel) -> None:
        worker_start = time.perf_counter()
        request = job.request
        try:
            obs = history_to_obs(self._specs, job.history, job.params.joint_names)
        except InputError as exc:
            self._report_input_problem(exc, stale=False)
            self._buffer.clear_history()
            execution.cancel(request)
            return
        self.stats.clear_input_problems()
        params = job.params
        settings = (params.sampler, tuple(sorted(params.sampler_overrides().items())))
        if settings != self._sampler_settings:
            # a new sampler has no round-time estimates: measure them now and solve at the next tick
            policy.set_sampler(params.sampler, **params.sampler_overrides())
            self._sampler_settings = settings
            self._warm_up(policy)
            self.get_logger().info(f"sampler set to {params.sampler} {params.sampler_overrides()}")
            execution.cancel(request)
            return
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
        result = policy.predict_action(obs, n_executed=n_executed, deadline=deadline, seed=seed, known_actions=known)
        sampling_s = time.perf_counter() - started
        self._cycle_index += 1
        action_pred = np.asarray(result.action_pred, dtype=np.float64)
        if not np.isfinite(action_pred).all():
            raise FloatingPointError("the solver produced NaN/inf actions; nothing published")
        rounds = int(getattr(result.stats, "rounds", 1))
        if rounds == 0 and not warm:
            # a cold solve stopped before its first round holds only the initial noise: never publish that;
            # the next solve is planned as a first chunk (no deadline) so the node cannot stay stuck here
            execution.reset()
            raise TimeoutError(f"latency budget {params.latency_budget_ms:g} ms left no time for one solver round "
                               f"on a cold start; nothing published (raise latency_budget_ms or shrink sampler_window)")
        if not self._active:
            return  # deactivated while solving: publish nothing
        arrival_s = self.get_clock().now().nanoseconds * 1e-9
        placement = execution.place(request, action_pred, arrival=arrival_s)
        self._latency.add(arrival_s - job.tick_s)
        if len(placement.actions) == 0:
            raise TimeoutError(f"the chunk arrived {1e3 * (arrival_s - request.obs_time):.0f} ms after its observation, "
                               f"after the time of all its actions; nothing published")
        # stamped with the observation's time; the first point runs at the first action not yet due
        stamp = nanoseconds_to_time(int(round(request.obs_time * 1e9)))
        trajectory = chunk_to_joint_trajectory(placement.actions, params.action_names, stamp=stamp, dt=params.period_s,
                                               start_offset=placement.start_time - request.obs_time)
        multiarray = array_to_multiarray(placement.actions.astype(np.float32), labels=("action_step", "action_dim"))
        self._pub_trajectory.publish(trajectory)
        published = time.perf_counter()
        self._pub_chunk.publish(multiarray)
        latency_s = published - job.tick_perf
        timings = {"queue_ms": (worker_start - job.tick_perf) * 1e3, "before_solve_ms": (started - worker_start) * 1e3,
                   "after_solve_ms": (published - started - sampling_s) * 1e3}
        stats = result.stats
        record = CycleRecord(
            latency_s=latency_s, sampling_s=sampling_s, rounds=int(getattr(stats, "rounds", 0)),
            converged=bool(getattr(stats, "converged", True)), deadline_hit=bool(getattr(stats, "deadline_hit", False)),
            budget_missed=latency_s > params.budget_s and not request.first, warm_started=warm)
        self.stats.record_cycle(record)
        self._publish_cycle_stats(job, record, n_executed, placement, arrival_s, result, timings)

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
            **timings,
        }
        status.values = [KeyValue(key=k, value=(f"{v:.6f}" if isinstance(v, float) else str(v))) for k, v in values.items()]
        self._pub_cycle.publish(status)

    # -- diagnostics --------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        status = self.stats.status(f"{self.get_name()}: inference", hardware_id=self._params.device,
                                   active=self._active)
        if not self._configured:
            status.message = "unconfigured" if status.message == "ok" else status.message
        self._pub_diagnostics.publish(diagnostic_array(status, self.get_clock().now().to_msg()))


def main(args: list[str] | None = None) -> int:
    """Entry point ``paradigms_policy_node`` (also ``python -m paradigms_policy.ros.policy_node``)."""
    rclpy.init(args=args if args is not None else sys.argv)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    node = PolicyNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok() and not node.finalized.is_set():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._release()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
