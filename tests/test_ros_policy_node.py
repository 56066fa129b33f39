"""paradigms_policy_node as a process (``--ros-args --params-file config/policy.yaml``), driven over
real ROS 2 topics and lifecycle services from this test process.

Each test session uses a random ROS_DOMAIN_ID with localhost-only discovery. The checkpoint is a
tiny random network with the Lift low-dim inputs, so solves take milliseconds.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float32MultiArray  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from paradigms_policy.ros.conversions import (  # noqa: E402
    array_to_multiarray,
    duration_to_seconds,
    multiarray_to_array,
    time_to_nanoseconds,
    vector_to_joint_state,
)
from paradigms_policy.ros.diagnostics import status_values  # noqa: E402
from paradigms_policy.ros.lifecycle_client import LifecycleClient  # noqa: E402
from paradigms_policy.ros.processes import (  # noqa: E402
    POLICY_NODE_MODULE,
    apply_env,
    private_ros_env,
    ros_args,
    start_node,
    stop_process,
)

REPO = Path(__file__).resolve().parent.parent
PARAMS_FILE = REPO / "config" / "policy.yaml"
NODE = "/paradigms_policy_node"
OBS_SHAPES = {"object": 10, "robot0_eef_pos": 3, "robot0_eef_quat": 4}
FINGERS = ["gripper0_right_finger_joint1", "gripper0_right_finger_joint2"]
ACTION_NAMES = ["eef_dx", "eef_dy", "eef_dz", "eef_dax", "eef_day", "eef_daz", "gripper"]
RATE_HZ = 20.0  # from config/policy.yaml
BUDGET_MS = 500.0
SETTLE_S = 60.0  # generous waits for a loaded 2-core machine; tests end as soon as the event happens


def make_tiny_lift_checkpoint(path: Path) -> Path:
    """A random, tiny DiffusionPolicy checkpoint with the Lift low-dim inputs and a 7-d action."""
    import torch

    from paradigms_policy.checkpoint import save_checkpoint
    from paradigms_policy.model.normalizer import LinearNormalizer
    from paradigms_policy.training.network import PolicyNetwork, obs_encoder_spec

    torch.manual_seed(0)
    shape_meta = {"obs": {"object": {"shape": [10], "type": "low_dim"},
                          "robot0_eef_pos": {"shape": [3], "type": "low_dim"},
                          "robot0_eef_quat": {"shape": [4], "type": "low_dim"},
                          "robot0_gripper_qpos": {"shape": [2], "type": "low_dim"}},
                  "action": {"shape": [7]}}
    n_obs_steps, horizon = 2, 16
    spec = obs_encoder_spec(shape_meta)
    model_kwargs = dict(input_dim=7, global_cond_dim=19 * n_obs_steps, diffusion_step_embed_dim=16,
                        down_dims=[16, 32], kernel_size=3, n_groups=4, cond_predict_scale=True)
    network = PolicyNetwork(spec, model_kwargs, n_obs_steps)
    rng = np.random.default_rng(0)
    data = {k: rng.normal(size=(64, *m["shape"])).astype(np.float32) for k, m in shape_meta["obs"].items()}
    data["action"] = rng.uniform(-1, 1, size=(64, 7)).astype(np.float32)
    normalizer = LinearNormalizer()
    normalizer.fit(data)
    return save_checkpoint(
        path, config={"task": "lift", "horizon": horizon}, shape_meta=shape_meta, horizon=horizon,
        n_obs_steps=n_obs_steps, n_action_steps=8, model_kwargs=model_kwargs, obs_encoder=spec,
        noise_scheduler={"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2",
                         "prediction_type": "epsilon", "clip_sample": True},
        state_dicts={"ema_model": network.state_dict()}, normalizer=normalizer.state_dict(),
        training={"global_step": 0, "seed": 0})


class Driver:
    """The test's side of the graph: publishes observations, records what the policy node sends."""

    def __init__(self):
        self.node = rclpy.create_node("policy_node_test_driver")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.pubs = {k: self.node.create_publisher(Float32MultiArray, f"robot/obs/{k}", qos_profile_sensor_data)
                     for k in OBS_SHAPES}
        self.joint_pub = self.node.create_publisher(JointState, "robot/gripper/joint_states", qos_profile_sensor_data)
        self.trajectories: list[tuple[float, JointTrajectory]] = []
        self.chunks: list[Float32MultiArray] = []
        self.cycles: list[DiagnosticStatus] = []
        self.diagnostics: list[DiagnosticStatus] = []
        self.node.create_subscription(JointTrajectory, "policy/joint_trajectory",
                                      lambda m: self.trajectories.append((self.now_s(), m)), 10)
        self.node.create_subscription(Float32MultiArray, "policy/action_chunk", self.chunks.append, 10)
        self.node.create_subscription(DiagnosticStatus, "policy/cycle_stats", self.cycles.append, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diagnostics.extend(m.status), 10)
        self.lifecycle = LifecycleClient(self.node, self.executor, NODE)
        self.bad: dict[str, object] = {}  # topic -> replacement message (or None: stop publishing it)
        self._next_publish = 0.0

    def now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def good_messages(self) -> dict[str, object]:
        msgs: dict[str, object] = {f"robot/obs/{k}": array_to_multiarray(np.full(n, 0.1, np.float32))
                                   for k, n in OBS_SHAPES.items()}
        msgs["robot/gripper/joint_states"] = vector_to_joint_state([0.02, -0.02], FINGERS)
        return msgs

    def publish_observations(self) -> None:
        msgs = {**self.good_messages(), **self.bad}
        for topic, msg in msgs.items():
            if msg is None:
                continue
            (self.joint_pub if topic.endswith("joint_states") else self.pubs[topic.rsplit("/", 1)[1]]).publish(msg)

    def run(self, seconds: float, until=None, publish: bool = True) -> bool:
        """Spin (publishing observations at the control rate) for ``seconds`` or until ``until()``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if publish and time.monotonic() >= self._next_publish:
                self.publish_observations()
                self._next_publish = time.monotonic() + 1.0 / RATE_HZ
            self.executor.spin_once(timeout_sec=0.01)
            if until is not None and until():
                return True
        return until is None

    def set_parameters(self, **values) -> list:
        client = self.node.create_client(SetParameters, f"{NODE}/set_parameters")
        assert client.wait_for_service(timeout_sec=SETTLE_S)
        request = SetParameters.Request()
        for name, value in values.items():
            msg = ParameterMsg(name=name)
            if isinstance(value, str):
                msg.value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
            elif isinstance(value, float):
                msg.value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
            elif isinstance(value, list):
                msg.value = ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=value)
            else:
                msg.value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=int(value))
            request.parameters.append(msg)
        future = client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=SETTLE_S)
        self.node.destroy_client(client)
        return list(future.result().results)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture(scope="module")
def ros_session(tmp_path_factory):
    env = private_ros_env(log_dir=tmp_path_factory.mktemp("ros_logs"))
    apply_env(env)
    rclpy.init()
    yield env
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_lift_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_lift.pt")


def start_policy_node(env, checkpoint: Path, log_path: Path, **overrides):
    # 10 denoising steps keep the random network's cold solves short; the budget is generous for a loaded machine
    args = ros_args([PARAMS_FILE], {"checkpoint": str(checkpoint), "latency_budget_ms": BUDGET_MS, "sampler_steps": 10,
                                    **overrides})
    return start_node(POLICY_NODE_MODULE, args, env, log_path=log_path, cwd=REPO)


@pytest.fixture
def driver(ros_session):
    drv = Driver()
    yield drv
    drv.close()


def test_lifecycle_configure_activate_publish_deactivate_cleanup_shutdown(ros_session, tiny_checkpoint, driver,
                                                                          tmp_path):
    log = tmp_path / "policy_node.log"
    proc = start_policy_node(ros_session, tiny_checkpoint, log)
    try:
        lc = driver.lifecycle
        lc.wait_for_services(SETTLE_S)
        assert lc.get_state() == "unconfigured"
        assert not lc.change_state("activate")  # not allowed from unconfigured
        # parameters are validated on change
        results = driver.set_parameters(sampler="bogus_sampler")
        assert not results[0].successful and "bogus_sampler" in results[0].reason
        results = driver.set_parameters(latency_budget_ms=-5.0)
        assert not results[0].successful
        # a checkpoint that does not fit the configured inputs fails configure with a reason
        assert driver.set_parameters(joint_names=FINGERS + ["extra_joint"])[0].successful
        assert not lc.change_state("configure")
        assert lc.get_state() == "unconfigured"
        assert driver.set_parameters(joint_names=FINGERS)[0].successful
        assert lc.change_state("configure")
        assert lc.get_state() == "inactive"
        # inactive: observations flow but nothing is published
        driver.run(1.0)
        assert driver.trajectories == []
        assert lc.change_state("activate") and lc.get_state() == "active"
        assert driver.run(SETTLE_S, until=lambda: len(driver.trajectories) >= 3 and driver.cycles)
        received_s, trajectory = driver.trajectories[-1]
        assert list(trajectory.joint_names) == ACTION_NAMES
        # the executed slice from the first action whose time has not passed: at least until the next solve
        assert 8 <= len(trajectory.points) <= 15
        times = [duration_to_seconds(p.time_from_start) for p in trajectory.points]
        np.testing.assert_allclose(np.diff(times), 1.0 / RATE_HZ, rtol=1e-6)
        # stamped with the observation's time; the first point at the first action not yet due
        cycle = status_values(driver.cycles[-1])
        if cycle["first"] == "0" and len(driver.cycles) == len(driver.trajectories):
            assert time_to_nanoseconds(trajectory.header.stamp) * 1e-9 == pytest.approx(float(cycle["obs_time_s"]), abs=1e-6)
            assert times[0] == pytest.approx(int(cycle["dropped_actions"]) / RATE_HZ, abs=1e-6)
        assert all(len(p.positions) == 7 and all(map(math.isfinite, p.positions)) for p in trajectory.points)
        assert abs(time_to_nanoseconds(trajectory.header.stamp) * 1e-9 - received_s) < 5.0
        # every chunk but the first (the robot waits for it) is stamped on its own observation's grid:
        # t_obs + (first action not yet due) * dt
        for values in [v for v in map(status_values, driver.cycles) if v["first"] == "0"]:
            offset = (float(values["chunk_stamp_s"]) - float(values["obs_time_s"])) * RATE_HZ
            assert abs(offset - round(offset)) < 1e-3 and offset >= 0
        # the Float32MultiArray carries the same chunk
        assert driver.run(SETTLE_S, until=lambda: len(driver.chunks) >= 3, publish=False)
        chunk = multiarray_to_array(driver.chunks[0])
        assert chunk.shape == (len(driver.trajectories[0][1].points), 7)
        positions = np.array([p.positions for p in driver.trajectories[0][1].points], dtype=np.float32)
        np.testing.assert_array_equal(chunk, positions)
        cycle = status_values(driver.cycles[-1])
        assert float(cycle["latency_ms"]) <= BUDGET_MS  # the configured budget (generous: loaded CI machine)
        assert int(cycle["n_executed"]) == 8  # warm start shifted by the periods between the two observations
        # action j belongs to t_obs + j*dt: the published ones start where the chunk arrived, none was lost
        assert int(cycle["dropped_actions"]) + int(cycle["published_actions"]) == 15
        stamp_j = (float(cycle["chunk_stamp_s"]) - float(cycle["obs_time_s"])) * RATE_HZ
        assert abs(stamp_j - round(stamp_j)) < 1e-3 and round(stamp_j) == int(cycle["dropped_actions"])
        assert float(cycle["chunk_stamp_s"]) >= float(cycle["arrival_s"]) - 0.5 / RATE_HZ
        assert cycle["execution"] == "inpaint" and int(cycle["known_actions"]) >= 1
        driver.run(2.5, until=lambda: any(s.name.endswith("inference") and status_values(s).get("cycles", "0") != "0"
                                         for s in driver.diagnostics))
        summary = [status_values(s) for s in driver.diagnostics if s.name.endswith("inference")][-1]
        for key in ("latency_p50_ms", "latency_p99_ms", "rounds_mean", "budget_misses", "converged_fraction",
                    "stale_inputs", "warm_start_hit_rate"):
            assert key in summary
        # a sampler change while active takes effect at a following cycle
        assert driver.set_parameters(sampler="picard_warm")[0].successful
        assert driver.run(SETTLE_S, until=lambda: status_values(driver.cycles[-1])["sampler"] == "picard_warm")
        # deactivate: no more chunks
        assert lc.change_state("deactivate") and lc.get_state() == "inactive"
        driver.run(0.3)
        count = len(driver.trajectories)
        driver.run(1.5)
        assert len(driver.trajectories) == count
        assert lc.change_state("cleanup") and lc.get_state() == "unconfigured"
        assert lc.change_state("shutdown")
        assert proc.wait(timeout=SETTLE_S) == 0
    finally:
        stop_process(proc)
    text = log.read_text()
    assert "configure failed" in text and "3 joint_names for key 'robot0_gripper_qpos'" in text


@pytest.fixture(scope="module")
def active_node(ros_session, tiny_checkpoint, tmp_path_factory):
    """One active policy node shared by the bad-input cases (image inputs: test_ros_params_and_diagnostics)."""
    log = tmp_path_factory.mktemp("bad_inputs") / "policy_node.log"
    proc = start_policy_node(ros_session, tiny_checkpoint, log, log_throttle_s=0.5)
    drv = Driver()
    drv.lifecycle.wait_for_services(SETTLE_S)
    drv.lifecycle.require("configure")
    drv.lifecycle.require("activate")
    yield proc, drv, log
    drv.close()
    stop_process(proc)


def nan_object():
    values = np.full(10, 0.1, np.float32)
    values[3] = np.nan
    return array_to_multiarray(values)


BAD_INPUTS = {
    "nan": ("robot/obs/object", nan_object, "NaN/inf"),
    "wrong_dims": ("robot/obs/object", lambda: array_to_multiarray(np.zeros(9, np.float32)),
                   "expects [10]"),
    "unknown_joint": ("robot/gripper/joint_states",
                      lambda: vector_to_joint_state([0.0, 0.0, 0.0], FINGERS + ["robot0_joint1"]), "unknown joint"),
    "missing_joint": ("robot/gripper/joint_states", lambda: vector_to_joint_state([0.0], FINGERS[:1]),
                      "lacks joint"),
    "stale_topic": ("robot/obs/robot0_eef_pos", lambda: None, "stale"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_rejected_node_stays_up_and_recovers(active_node, case):
    proc, drv, log = active_node
    topic, make_bad, problem = BAD_INPUTS[case]
    drv.bad = {}
    assert drv.run(SETTLE_S, until=lambda: len(drv.trajectories) > 0), "no chunk from good data"
    drv.bad = {topic: make_bad()}
    drv.run(BUDGET_MS / 1e3 + 1.0)  # a chunk solved from the last good (still fresh) data may still arrive
    before, diag_before = len(drv.trajectories), len(drv.diagnostics)
    drv.run(SETTLE_S, until=lambda: any(s.level == DiagnosticStatus.ERROR and topic in s.message
                                        for s in drv.diagnostics[diag_before:]))
    errors = [s for s in drv.diagnostics[diag_before:] if s.level == DiagnosticStatus.ERROR]
    assert errors and topic in errors[-1].message and problem in errors[-1].message
    drv.run(1.0)
    assert len(drv.trajectories) == before, f"published a chunk from bad input ({case})"
    assert proc.poll() is None
    drv.bad = {}
    assert drv.run(SETTLE_S, until=lambda: len(drv.trajectories) > before), "did not recover on good data"
    assert drv.run(SETTLE_S, until=lambda: drv.diagnostics[-1].level != DiagnosticStatus.ERROR)
    assert problem in log.read_text()
