"""Shared fixtures: a small synthetic, bimodal demonstration set in the zarr replay-buffer layout, random
checkpoints, and the ROS 2 side of the node tests (a private domain, the policy node as a process, a driver)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import paradigms_policy.sim  # noqa: F401 - chooses software OpenGL before any test imports robosuite


def make_bimodal_episodes(n_episodes: int = 12, length: int = 40, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """A point moves from near the origin to one of two goals (+y or -y), chosen at random per episode.

    Observations: ``pos`` [2] (the point) and ``target`` [3] (x-progress plus a constant cue
    that does NOT reveal the branch), so for the first steps the action distribution is bimodal,
    like human demonstrations going around an obstacle either way. Action [2]: the next position.
    """
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n_episodes):
        branch = rng.choice([-1.0, 1.0])
        s = np.linspace(0.0, 1.0, length + 1)
        path = np.stack([s, branch * np.sin(np.pi * s) * 0.8], axis=1) + rng.normal(0, 0.01, (1, 2))
        pos = path[:-1].astype(np.float32)
        action = path[1:].astype(np.float32)
        target = np.stack([1.0 - s[:-1], np.full(length, 0.5), np.ones(length)], axis=1).astype(np.float32)
        episodes.append({"pos": pos, "target": target, "action": action})
    return episodes


@pytest.fixture
def bimodal_episodes() -> list[dict[str, np.ndarray]]:
    return make_bimodal_episodes()


@pytest.fixture
def bimodal_zarr(tmp_path: Path) -> Path:
    """Path of a zarr replay buffer with 12 bimodal episodes (keys pos, target, action)."""
    from paradigms_policy.data.replay_buffer import ReplayBuffer

    path = tmp_path / "bimodal.zarr"
    buffer = ReplayBuffer.create(path)
    for episode in make_bimodal_episodes():
        buffer.add_episode(episode)
    return path


TINY_TRAIN_OVERRIDES = [
    "model.down_dims=[16,32]",
    "model.diffusion_step_embed_dim=16",
    "model.kernel_size=3",
    "model.n_groups=4",
    "horizon=8",
    "n_obs_steps=2",
    "n_action_steps=4",
    "training.batch_size=32",
    "training.num_threads=1",
    "training.progress=false",
    "optimizer.lr=3e-3",
    "lr_scheduler.warmup_steps=10",
    "dataset.val_ratio=0.2",
]


def tiny_train_overrides(dataset_path: Path, out_dir: Path, overrides: list[str] = ()) -> list[str]:
    """Command-line overrides of config/train.yaml for a tiny network on ``dataset_path``."""
    return [f"dataset.path={dataset_path}", f"out_dir={out_dir}", *TINY_TRAIN_OVERRIDES, *overrides]


def compose_train_config(dataset_path: Path, out_dir: Path, overrides: list[str] = ()):
    """The repo's config/train.yaml with a tiny network and the given overrides (hydra compose, no app run)."""
    from hydra import compose, initialize_config_dir

    from paradigms_policy import paths

    with initialize_config_dir(config_dir=str(paths.config_dir()), version_base="1.3"):
        return compose("train", overrides=tiny_train_overrides(dataset_path, out_dir, overrides))


def torchrun_train(nproc: int, dataset_path: Path, out_dir: Path, overrides: list[str] = (),
                   timeout: float = 600) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=nproc -m paradigms_policy.train`` on the tiny config, this checkout's code."""
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "paradigms_policy.train", *tiny_train_overrides(dataset_path, out_dir, overrides)]
    proc = subprocess.run(args, cwd=out_dir.parent, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """out_dir of a tiny policy trained for 300 steps on the bimodal data (shared by the train/policy tests)."""
    import torch

    from paradigms_policy.data.replay_buffer import ReplayBuffer
    from paradigms_policy.train import train

    root = tmp_path_factory.mktemp("trained")
    buffer = ReplayBuffer.create(root / "bimodal.zarr")
    for episode in make_bimodal_episodes(n_episodes=16):
        buffer.add_episode(episode)
    cfg = compose_train_config(root / "bimodal.zarr", root / "run",
                               ["training.max_steps=300", "training.val_every=100", "training.log_every=25",
                                "training.checkpoint_every=100", f"export_path={root / 'slim.pt'}"])
    threads = torch.get_num_threads()
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    return root / "run"


def make_random_checkpoint(path: Path, *, down_dims=(16, 32), obs_shapes=None, action_dim: int = 2,
                           horizon: int = 8, n_obs_steps: int = 2, n_action_steps: int = 4, seed: int = 0,
                           rgb_keys: tuple[str, ...] = ()) -> Path:
    """An untrained but complete checkpoint (tiny UNet, normalizer fitted on random data) in milliseconds."""
    import torch

    from paradigms_policy.checkpoint import save_checkpoint
    from paradigms_policy.model.normalizer import LinearNormalizer
    from paradigms_policy.training.network import PolicyNetwork, build_obs_encoder, obs_encoder_spec

    torch.manual_seed(seed)
    obs_shapes = obs_shapes or {"pos": [2], "target": [3]}
    shape_meta = {"obs": {k: {"shape": list(s), "type": "rgb" if k in rgb_keys else "low_dim"}
                          for k, s in obs_shapes.items()},
                  "action": {"shape": [action_dim]}}
    spec = obs_encoder_spec(shape_meta)
    obs_dim = build_obs_encoder(spec).output_dim
    model_kwargs = dict(input_dim=action_dim, local_cond_dim=None, global_cond_dim=obs_dim * n_obs_steps,
                        diffusion_step_embed_dim=16, down_dims=list(down_dims), kernel_size=3, n_groups=4,
                        cond_predict_scale=True)
    network = PolicyNetwork(spec, model_kwargs, n_obs_steps)
    rng = np.random.default_rng(seed)
    data = {k: rng.normal(size=(64, *s)).astype(np.float32) for k, s in obs_shapes.items()}
    data["action"] = rng.uniform(-1, 1, size=(64, action_dim)).astype(np.float32)
    normalizer = LinearNormalizer().fit(data)
    return save_checkpoint(
        path, config={"note": "random test checkpoint"}, shape_meta=shape_meta, horizon=horizon,
        n_obs_steps=n_obs_steps, n_action_steps=n_action_steps, model_kwargs=model_kwargs, obs_encoder=spec,
        noise_scheduler={"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2",
                         "prediction_type": "epsilon", "clip_sample": True},
        state_dicts={"ema_model": network.state_dict(), "model": network.state_dict()},
        normalizer=normalizer.state_dict(), training={"global_step": 0, "seed": seed})


@pytest.fixture
def random_checkpoint(tmp_path: Path) -> Path:
    return make_random_checkpoint(tmp_path / "random.pt")


SHIPPED_CHECKPOINTS = {  # file in checkpoints/ -> (obs shapes, action dim) its card states
    "lift_lowdim.pt": ({"robot0_eef_pos": [3], "robot0_eef_quat": [4], "robot0_gripper_qpos": [2], "object": [10]}, 7),
    "can_lowdim.pt": ({"robot0_eef_pos": [3], "robot0_eef_quat": [4], "robot0_gripper_qpos": [2], "object": [14]}, 7),
    "pusht_lowdim.pt": ({"agent_pos": [2], "keypoint": [8, 2]}, 2),
}


@pytest.fixture
def shipped_episode():
    """``shipped_episode(name)`` -> (checkpoint path, held-out episode arrays) of a checkpoint in checkpoints/:
    the ``.episode.npz`` beside it holds real observations of its task (the demos' validation episodes)."""
    from paradigms_policy import paths

    def get(name: str) -> tuple[Path, dict[str, np.ndarray]]:
        path = paths.checkpoints_dir() / name
        assert path.is_file(), f"shipped checkpoint {path} is missing"
        with np.load(path.with_suffix(".episode.npz")) as episode:
            return path, {key: episode[key] for key in episode.files}

    return get


LIFT_OBS_SHAPES = {"robot0_eef_pos": [3], "robot0_eef_quat": [4], "robot0_gripper_qpos": [2], "object": [10]}


@pytest.fixture(scope="session")
def lift_random_checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny policy with Lift's observation keys and 7-d actions (rollouts run, never succeed)."""
    return make_random_checkpoint(tmp_path_factory.mktemp("lift_random") / "lift_random.pt",
                                  obs_shapes=LIFT_OBS_SHAPES, action_dim=7)


@pytest.fixture
def one_torch_thread():
    """torch.set_num_threads(1) for the test (as the Ray workers have), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray (2 CPUs, no dashboard) for one test module, shut down after it; skips if Ray is missing."""
    ray = pytest.importorskip("ray")
    from paradigms_policy.sim.distribute import init_ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
# -- ROS 2: the policy node as a process, driven from this test process -------------------------------------------
# (rclpy is imported lazily: the core tests must run where it is not installed.)

REPO = Path(__file__).resolve().parent.parent
POLICY_PARAMS_FILE = REPO / "config" / "policy.yaml"
POLICY_NODE = "/paradigms_policy_node"
LIFT_OBS_SIZES = {"object": 10, "robot0_eef_pos": 3, "robot0_eef_quat": 4}
LIFT_FINGERS = ["gripper0_right_finger_joint1", "gripper0_right_finger_joint2"]
LIFT_ACTION_NAMES = ["eef_dx", "eef_dy", "eef_dz", "eef_dax", "eef_day", "eef_daz", "gripper"]
NODE_RATE_HZ = 20.0  # config/policy.yaml
NODE_BUDGET_MS = 500.0  # generous for a loaded CI machine; the tiny network solves in milliseconds
SETTLE_S = 60.0  # generous waits; tests end as soon as the event happens


def _save_tiny_lift_like(path: Path, shape_meta: dict, task: str, **encoder) -> Path:
    """Save a random, tiny policy with 7-d actions whose normalizer was fitted on Lift-like data.

    Low-dim keys are fitted on unit quaternions and small values (so the node's plausibility limits
    accept the drivers' good messages); rgb keys get DiffusionPolicy's fixed image range.
    """
    import torch

    from paradigms_policy.checkpoint import save_checkpoint
    from paradigms_policy.data.images import set_image_range
    from paradigms_policy.model.normalizer import LinearNormalizer
    from paradigms_policy.training.network import PolicyNetwork, build_obs_encoder, obs_encoder_spec

    torch.manual_seed(0)
    n_obs_steps, horizon = 2, 16
    spec = obs_encoder_spec(shape_meta, **encoder)
    model_kwargs = dict(input_dim=7, global_cond_dim=build_obs_encoder(spec).output_dim * n_obs_steps,
                        diffusion_step_embed_dim=16, down_dims=[16, 32], kernel_size=3, n_groups=4,
                        cond_predict_scale=True)
    network = PolicyNetwork(spec, model_kwargs, n_obs_steps)
    rng = np.random.default_rng(0)
    data = {k: rng.normal(0.0, 0.3, size=(64, *m["shape"])).astype(np.float32)
            for k, m in shape_meta["obs"].items() if m["type"] == "low_dim"}
    quat = rng.normal(size=(64, 4))
    data["robot0_eef_quat"] = (quat / np.linalg.norm(quat, axis=1, keepdims=True)).astype(np.float32)
    data["action"] = rng.uniform(-1, 1, size=(64, 7)).astype(np.float32)
    normalizer = LinearNormalizer()
    normalizer.fit(data)
    for key, meta in shape_meta["obs"].items():
        if meta["type"] == "rgb":
            set_image_range(normalizer, key)
    return save_checkpoint(
        path, config={"task": task, "horizon": horizon}, shape_meta=shape_meta, horizon=horizon,
        n_obs_steps=n_obs_steps, n_action_steps=8, model_kwargs=model_kwargs, obs_encoder=spec,
        noise_scheduler={"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2",
                         "prediction_type": "epsilon", "clip_sample": True},
        state_dicts={"ema_model": network.state_dict()}, normalizer=normalizer.state_dict(),
        training={"global_step": 0, "seed": 0})


LIFT_LOWDIM_OBS_META = {"object": {"shape": [10], "type": "low_dim"},
                        "robot0_eef_pos": {"shape": [3], "type": "low_dim"},
                        "robot0_eef_quat": {"shape": [4], "type": "low_dim"},
                        "robot0_gripper_qpos": {"shape": [2], "type": "low_dim"}}


def make_tiny_lift_checkpoint(path: Path) -> Path:
    """A random, tiny DiffusionPolicy checkpoint with the Lift low-dim inputs and a 7-d action."""
    return _save_tiny_lift_like(path, {"obs": LIFT_LOWDIM_OBS_META, "action": {"shape": [7]}}, "lift")


@pytest.fixture(scope="session")
def tiny_lift_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_lift_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_lift.pt")


LIFT_IMAGE_OBS_META = {"agentview_image": {"shape": [3, 84, 84], "type": "rgb"},
                       "robot0_eef_pos": {"shape": [3], "type": "low_dim"},
                       "robot0_eef_quat": {"shape": [4], "type": "low_dim"},
                       "robot0_gripper_qpos": {"shape": [2], "type": "low_dim"}}


def make_tiny_lift_image_checkpoint(path: Path) -> Path:
    """A random, tiny image policy with image Lift's inputs (agentview 84x84 + proprioception), 7-d actions.

    The encoder is config/train_lift_image.yaml's kind (small conv, 76x76 crop) at a fraction of its width.
    """
    return _save_tiny_lift_like(path, {"obs": LIFT_IMAGE_OBS_META, "action": {"shape": [7]}}, "lift_image",
                                crop_shape=[76, 76], backbone="small_conv", conv_widths=[8, 16], conv_strided=2,
                                num_kp=8, feature_dim=16)


@pytest.fixture(scope="session")
def tiny_lift_image_checkpoint(tmp_path_factory) -> Path:
    return make_tiny_lift_image_checkpoint(tmp_path_factory.mktemp("ckpt_image") / "tiny_lift_image.pt")


def make_image_episodes(n_episodes: int = 6, length: int = 24, size: int = 16, seed: int = 0) -> list[dict]:
    """Episodes with a camera stream (uint8 [T, H, W, 3], a bright square that moves with the state) and a
    2-d state/action: the image tells where the square is, the action moves it."""
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n_episodes):
        pos = np.cumsum(rng.uniform(-1, 1, size=(length, 2)) * 0.05, axis=0).astype(np.float32)
        images = np.zeros((length, size, size, 3), dtype=np.uint8)
        pix = np.clip(((pos + 1) / 2 * (size - 4)).astype(int), 0, size - 4)
        for t, (r, c) in enumerate(pix):
            images[t, r:r + 4, c:c + 4] = 255
        episodes.append({"camera_image": images, "pos": pos, "action": np.roll(pos, -1, axis=0)})
    return episodes


@pytest.fixture
def image_zarr(tmp_path: Path) -> Path:
    """A small zarr replay buffer with a 16x16 camera key, a 2-d low-dim key and 2-d actions."""
    from paradigms_policy.data.replay_buffer import ReplayBuffer

    path = tmp_path / "images.zarr"
    buffer = ReplayBuffer.create(path)
    for episode in make_image_episodes():
        buffer.add_episode(episode)
    buffer.attrs["obs_keys"] = ["camera_image", "pos"]
    return path


@pytest.fixture(scope="module")
def ros_session(tmp_path_factory):
    """rclpy in this process on a private ROS domain (localhost only); yields the env for node processes."""
    rclpy = pytest.importorskip("rclpy")
    from paradigms_policy.ros.processes import apply_env, private_ros_env

    env = private_ros_env(log_dir=tmp_path_factory.mktemp("ros_logs"))
    apply_env(env)
    rclpy.init()
    yield env
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def start_policy_node(ros_session):
    """``start_policy_node(checkpoint, log_path, **overrides)``: the node as a process (config/policy.yaml +
    overrides, 10 denoising steps, a generous budget); every process started is stopped at the module's end."""
    from paradigms_policy.ros.processes import POLICY_NODE_MODULE, ros_args, start_node, stop_process

    started = []

    def start(checkpoint: Path, log_path: Path, **overrides):
        args = ros_args([POLICY_PARAMS_FILE], {"checkpoint": str(checkpoint), "latency_budget_ms": NODE_BUDGET_MS,
                                               "sampler_steps": 10, **overrides})
        proc = start_node(POLICY_NODE_MODULE, args, ros_session, log_path=log_path, cwd=REPO)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_process(proc)


class PolicyNodeDriver:
    """The test's side of the graph: publishes Lift observations at 20 Hz, records what the policy node sends.

    ``bad`` maps a topic to a replacement message (or None: stop publishing it) until changed;
    ``inject_once(topic, msg)`` replaces the next message on a topic only. Every published
    observation is logged in ``sent`` (good or bad) so that a chunk's ``input_stamps`` tell
    whether it was computed from bad data.
    """

    def __init__(self, name: str = "policy_node_test_driver"):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float32MultiArray
        from trajectory_msgs.msg import JointTrajectory

        from paradigms_policy.ros.diagnostics import status_values
        from paradigms_policy.ros.lifecycle_client import LifecycleClient
        from paradigms_policy.ros.robot_view import SentLog

        self.node = rclpy.create_node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.pubs = {f"robot/obs/{k}": self.node.create_publisher(Float32MultiArray, f"robot/obs/{k}",
                                                                  qos_profile_sensor_data) for k in LIFT_OBS_SIZES}
        self.pubs["robot/gripper/joint_states"] = self.node.create_publisher(
            JointState, "robot/gripper/joint_states", qos_profile_sensor_data)
        self.trajectories: list[tuple[float, JointTrajectory]] = []
        self.chunks: list[tuple[float, Float32MultiArray]] = []
        self.cycles: list[dict[str, str]] = []
        self.diagnostics: list[DiagnosticStatus] = []
        self.node.create_subscription(JointTrajectory, "policy/joint_trajectory",
                                      lambda m: self.trajectories.append((self.now_s(), m)), 100)
        self.node.create_subscription(Float32MultiArray, "policy/action_chunk",
                                      lambda m: self.chunks.append((self.now_s(), m)), 100)
        self.node.create_subscription(DiagnosticStatus, "policy/cycle_stats",
                                      lambda m: self.cycles.append(status_values(m)), 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.diagnostics.extend(m.status), 10)
        self.lifecycle = LifecycleClient(self.node, self.executor, POLICY_NODE)
        self.bad: dict[str, object] = {}
        self._once: dict[str, object] = {}
        self.sent = SentLog()
        self.good_value = 0.1
        self._next_publish = 0.0

    def now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def good_messages(self) -> dict[str, object]:
        from paradigms_policy.ros.conversions import array_to_multiarray, vector_to_joint_state

        msgs: dict[str, object] = {f"robot/obs/{k}": array_to_multiarray(np.full(n, self.good_value, np.float32))
                                   for k, n in LIFT_OBS_SIZES.items()}
        msgs["robot/obs/robot0_eef_quat"] = array_to_multiarray(np.array([0.0, 0.0, 0.0, 1.0], np.float32))
        msgs["robot/gripper/joint_states"] = vector_to_joint_state([0.02, -0.02], LIFT_FINGERS)
        return msgs

    def inject_once(self, topic: str, message: object) -> None:
        self._once[topic] = message

    def publish_observations(self) -> None:
        msgs = self.good_messages()
        replaced = {**self.bad, **self._once}
        self._once = {}
        now = self.now_s()
        for topic, good in msgs.items():
            msg = replaced.get(topic, good)
            if msg is None:
                continue
            self.sent.record(topic, now, bad=topic in replaced)
            self.pubs[topic].publish(msg)

    def run(self, seconds: float, until=None, publish: bool = True) -> bool:
        """Spin (publishing observations at the control rate) for ``seconds`` or until ``until()``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            now = time.monotonic()
            if publish and now >= self._next_publish:
                self.publish_observations()
                # a fixed 20 Hz grid (not "now + period"), so the rate does not drift below the node's
                self._next_publish = max(self._next_publish + 1.0 / NODE_RATE_HZ, now)
            self.executor.spin_once(timeout_sec=0.005)
            if until is not None and until():
                return True
        return until is None

    def set_parameters(self, **values) -> list:
        from rcl_interfaces.msg import Parameter as ParameterMsg
        from rcl_interfaces.msg import ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        client = self.node.create_client(SetParameters, f"{POLICY_NODE}/set_parameters")
        assert client.wait_for_service(timeout_sec=SETTLE_S)
        request = SetParameters.Request()
        for name, value in values.items():
            msg = ParameterMsg(name=name)
            if isinstance(value, bool):
                msg.value = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
            elif isinstance(value, str):
                msg.value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
            elif isinstance(value, float):
                msg.value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
            elif isinstance(value, list) and value and isinstance(value[0], int):
                msg.value = ParameterValue(type=ParameterType.PARAMETER_INTEGER_ARRAY, integer_array_value=value)
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
def make_driver(ros_session):
    """``make_driver(name)``: a PolicyNodeDriver in this process (closed at the module's end)."""
    drivers = []

    def make(name: str = "policy_node_test_driver") -> PolicyNodeDriver:
        drivers.append(PolicyNodeDriver(name))
        return drivers[-1]

    yield make
    for drv in drivers:
        drv.close()


@pytest.fixture
def driver(ros_session):
    drv = PolicyNodeDriver()
    yield drv
    drv.close()
# --------------------------------------------------------------------------- diffusion solver helpers
# Small deterministic problems shared by the solver tests (``from conftest import problem, ...``).
HORIZON, ACTION_DIM = 8, 3


def fake_denoiser(seed: int = 0, dtype=torch.float64, shift: float = 0.0):
    """Small deterministic nonlinear 'network': mixes the horizon and the action dims.

    `shift` plays the role of the observation conditioning.
    """
    g = torch.Generator().manual_seed(seed)
    mix_t = torch.randn(HORIZON, HORIZON, generator=g, dtype=dtype) / HORIZON**0.5
    mix_a = torch.randn(ACTION_DIM, ACTION_DIM, generator=g, dtype=dtype) / ACTION_DIM**0.5
    calls = {"n": 0, "windows": []}

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # x: [W,B,H,A], t: Long[W]
        calls["n"] += 1
        calls["windows"].append(x.shape[0])
        tt = (t.to(dtype) / 100.0).reshape(-1, 1, 1, 1)
        h = torch.einsum("hk,wbka,ac->wbhc", mix_t, x, mix_a)
        return 0.8 * torch.tanh(h + tt + shift) + 0.3 * x * torch.cos(3 * tt)

    denoise.calls = calls
    return denoise


def gmm_denoiser(rule, phase: float = 0.0, std: float = 0.1):
    """Exact epsilon of a two-mode Gaussian mixture of smooth trajectories (a 'perfect network').

    The modes are smooth functions of absolute action time; ``phase`` shifts time, so a
    later control cycle sees the same curves advanced along the horizon.
    """
    abar = rule.schedule.alphas_cumprod
    calls = {"n": 0, "windows": []}

    def means(dtype):
        h = torch.arange(HORIZON, dtype=dtype) / HORIZON + phase
        a = torch.arange(ACTION_DIM, dtype=dtype)
        up = 0.6 * torch.sin(3 * h[:, None] + a[None, :])
        down = -0.5 * torch.cos(2 * h[:, None] + a[None, :])
        return torch.stack([up, down])  # [K=2, H, A]

    def denoise(x, t):  # x: [W,B,H,A]
        calls["n"] += 1
        calls["windows"].append(x.shape[0])
        ab = abar[t].to(x.dtype).reshape(-1, 1, 1, 1, 1)  # [W,1,1,1,1] over [W,B,K,H,A]
        mu = means(x.dtype)[None, None]
        var = ab * std**2 + (1 - ab)
        d = x.unsqueeze(2) - ab.sqrt() * mu
        w = torch.softmax(-(d**2 / var).sum((-1, -2)) / 2, dim=2)[..., None, None]
        x0 = (w * (mu + ab.sqrt() * std**2 / var * d)).sum(2)
        return (x - ab[:, :, 0].sqrt() * x0) / (1 - ab[:, :, 0]).sqrt()

    denoise.calls = calls
    return denoise


def problem(kind: str, steps: int, batch: int = 2, seed: int = 1):
    """(rule, x_init [B,H,A], noise [S,B,H,A]) in float64 for a rule of ``kind`` with ``steps`` steps."""
    from paradigms_policy.diffusion.sequential import draw_noise
    from paradigms_policy.diffusion.step_rules import make_step_rule

    rule = make_step_rule(kind, steps)
    g = torch.Generator().manual_seed(seed)
    x_init, noise = draw_noise(rule, (batch, HORIZON, ACTION_DIM), generator=g, dtype=torch.float64)
    return rule, x_init, noise


# Deterministic deadlines: a fake clock advanced by the denoiser by a known cost per call.
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cost(w: int) -> float:
    return 0.1 + 0.3 * w  # seconds per batched call of width w


def timed(denoise, clock):
    def call(x, t):
        clock.now += cost(x.shape[0])
        return denoise(x, t)
    return call


def seeded(*windows):
    from paradigms_policy.diffusion.budget import RoundTimeEstimator

    est = RoundTimeEstimator()
    for w in windows:
        est.seed(w, cost(w))
    return est


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


class RobomimicStyleReader:
    """A reader that touches an HDF5 file exactly the way robomimic 0.3.0 does, with default arguments.

    Follows robomimic's documented dataset layout and the access pattern of
    ``robomimic.utils.dataset.SequenceDataset`` (hdf5_cache_mode=None, load_next_obs=True,
    frame_stack=1, seq_length=1, padding on) and ``FileUtils.get_env_metadata_from_dataset`` /
    ``get_shape_metadata_from_dataset``. It exists because robomimic itself cannot be installed
    here (it pulls a CUDA torch); every h5py access below is one robomimic makes, so a file this
    reader rejects is one robomimic would reject.
    """

    def __init__(self, path, obs_keys, dataset_keys=("actions", "rewards", "dones"), *, filter_by_attribute=None,
                 frame_stack: int = 1, seq_length: int = 1, load_next_obs: bool = True) -> None:
        import h5py

        self.obs_keys, self.dataset_keys = tuple(obs_keys), tuple(dataset_keys)
        self.frame_stack, self.seq_length, self.load_next_obs = frame_stack, seq_length, load_next_obs
        self.file = h5py.File(path, "r", swmr=True, libver="latest")  # SequenceDataset.hdf5_file
        if filter_by_attribute is not None:
            demos = [elem.decode("utf-8") for elem in np.array(self.file[f"mask/{filter_by_attribute}"][:])]
        else:
            demos = list(self.file["data"].keys())
        self.demos = [demos[i] for i in np.argsort([int(elem[5:]) for elem in demos])]
        self.index: list[tuple[str, int]] = []  # (demo, index in demo); pad_frame_stack/pad_seq_length on
        self.lengths: dict[str, int] = {}
        for ep in self.demos:
            length = int(self.file[f"data/{ep}"].attrs["num_samples"])
            self.lengths[ep] = length
            self.index += [(ep, i) for i in range(max(length, 1))]

    def env_meta(self) -> dict:
        import json

        return json.loads(self.file["data"].attrs["env_args"])

    def shape_meta(self) -> dict:
        demo_id = list(self.file["data"].keys())[0]
        demo = self.file[f"data/{demo_id}"]
        return {"ac_dim": self.file[f"data/{demo_id}/actions"].shape[1],
                "all_shapes": {k: demo[f"obs/{k}"].shape[1:] for k in sorted(demo["obs"])}}

    def __len__(self) -> int:
        return len(self.index)

    def _sequence(self, ep: str, t: int, keys) -> dict:
        length = self.lengths[ep]
        stack = self.frame_stack - 1
        begin, end = max(0, t - stack), min(length, t + self.seq_length)
        pad_before, pad_after = max(0, stack - t), max(0, t + self.seq_length - length)
        out = {}
        for key in keys:
            data = self.file[f"data/{ep}/{key}"][begin:end]
            out[key] = np.concatenate([np.repeat(data[:1], pad_before, 0), data, np.repeat(data[-1:], pad_after, 0)])
        return out

    def __getitem__(self, index: int) -> dict:
        ep, t = self.index[index]
        item = self._sequence(ep, t, self.dataset_keys)
        prefixes = ("obs", "next_obs") if self.load_next_obs else ("obs",)
        for prefix in prefixes:
            seq = self._sequence(ep, t, [f"{prefix}/{k}" for k in self.obs_keys])
            item[prefix] = {k.split("/")[1]: v for k, v in seq.items()}
        return item

    def close(self) -> None:
        self.file.close()


@pytest.fixture
def robomimic_reader():
    """Factory: ``robomimic_reader(path, obs_keys, ...)`` -> RobomimicStyleReader, closed after the test."""
    readers = []

    def make(*args, **kwargs) -> RobomimicStyleReader:
        readers.append(RobomimicStyleReader(*args, **kwargs))
        return readers[-1]

    yield make
    for reader in readers:
        reader.close()
