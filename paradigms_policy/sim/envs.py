"""robosuite tasks created from robomimic-style env metadata, wrapped as gymnasium envs.

robomimic's own env wrapper imports ``mujoco_py`` and cannot be used with robosuite 1.5, so
this module creates the robosuite env itself from the same metadata robomimic stores in a
dataset's ``data.attrs["env_args"]`` ({"env_name", "env_version", "type", "env_kwargs"}) and
exposes robomimic's low-dim observation keys.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from paradigms_policy.compat import observation_mismatches
from paradigms_policy.sim.rendering import use_software_gl

ROBOSUITE_ENV_TYPE = 1  # robomimic's EnvType.ROBOSUITE_TYPE

# robomimic low-dim keys -> robosuite observation names
LOW_DIM_KEYS: tuple[str, ...] = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos", "object")
_ROBOSUITE_OBS_NAME = {"object": "object-state"}


class TaskMismatchError(ValueError):
    """A policy's observation keys/shapes or action dimension do not fit the task's env."""


@dataclass(frozen=True)
class TaskSpec:
    env_name: str  # robosuite environment class name
    max_episode_steps: int  # rollout / demo step limit (chosen from expert episode lengths)
    object_dim: int  # size of robomimic's "object" key
    expert: str = ""  # scripted expert's task name ("" -> the task's own name)
    cameras: tuple[str, ...] = ()  # robosuite cameras rendered as obs "<camera>_image" (uint8 [H, W, 3])
    camera_size: int = 84  # square image side in pixels (robomimic's image datasets: 84)


TASKS: dict[str, TaskSpec] = {
    "lift": TaskSpec(env_name="Lift", max_episode_steps=200, object_dim=10),
    "can": TaskSpec(env_name="PickPlaceCan", max_episode_steps=400, object_dim=14),
    # image Lift: the same env, also rendering the agentview camera (software OpenGL, see use_software_gl)
    "lift_image": TaskSpec(env_name="Lift", max_episode_steps=200, object_dim=10, expert="lift",
                           cameras=("agentview",)),
}
ALL_TASKS: tuple[str, ...] = (*TASKS, "pusht")


def camera_obs_key(camera: str) -> str:
    """robomimic's observation key of a camera's RGB image."""
    return f"{camera}_image"


def osc_pose_controller_config() -> dict:
    """robosuite 1.5 composite (BASIC) config with the OSC_POSE delta arm controller robomimic datasets use.

    Same layout as ``load_composite_controller_config(robot="Panda")`` returns (arms flattened
    into ``body_parts``), written out so the metadata does not depend on robosuite's files.
    """
    arm = {
        "type": "OSC_POSE",
        "input_max": 1,
        "input_min": -1,
        "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
        "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
        "kp": 150,
        "damping_ratio": 1,
        "impedance_mode": "fixed",
        "kp_limits": [0, 300],
        "damping_ratio_limits": [0, 10],
        "position_limits": None,
        "orientation_limits": None,
        "uncouple_pos_ori": True,
        "input_type": "delta",
        "input_ref_frame": "base",
        "interpolation": None,
        "ramp_ratio": 0.2,
        "gripper": {"type": "GRIP"},
    }
    return {"type": "BASIC", "body_parts": {"right": arm}}


def task_env_meta(name: str) -> dict:
    """robomimic env metadata for a robosuite task ("lift", "can" or "lift_image")."""
    spec = _task_spec(name)
    use_software_gl()
    import robosuite

    meta = {
        "env_name": spec.env_name,
        "env_version": robosuite.__version__,
        "type": ROBOSUITE_ENV_TYPE,
        "env_kwargs": {
            "robots": ["Panda"],
            "controller_configs": osc_pose_controller_config(),
            "has_renderer": False,
            "has_offscreen_renderer": False,
            "use_camera_obs": False,
            "use_object_obs": True,
            "reward_shaping": False,
            "reward_scale": 1.0,
            "control_freq": 20,
            "horizon": spec.max_episode_steps,
            "ignore_done": True,
            "hard_reset": False,
            "seed": 0,  # seeds model construction (Lift's cube size); episodes are seeded by reset(seed)
        },
    }
    if spec.cameras:  # as robomimic's image datasets store them
        meta["env_kwargs"].update({
            "has_offscreen_renderer": True,
            "use_camera_obs": True,
            "camera_names": list(spec.cameras),
            "camera_heights": spec.camera_size,
            "camera_widths": spec.camera_size,
            "camera_depths": False,
        })
    return meta


def _task_spec(name: str) -> TaskSpec:
    key = name.lower()
    if key not in TASKS:
        raise ValueError(f"unknown robosuite task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[key]


def _controller_config_for_robosuite(env_kwargs: dict) -> dict:
    """Accept both robosuite <=1.4 part configs (old robomimic datasets) and 1.5 composite configs."""
    config = env_kwargs.get("controller_configs")
    if config is None:
        return osc_pose_controller_config()
    from robosuite.controllers.composite.composite_controller_factory import (
        refactor_composite_controller_config,
    )

    robots = env_kwargs.get("robots", ["Panda"])
    robot = robots[0] if isinstance(robots, (list, tuple)) else robots
    config = copy.deepcopy(config)
    if "control_delta" in config and "input_type" not in config:  # robosuite <= 1.4 key
        config["input_type"] = "delta" if config.pop("control_delta") else "absolute"
    return refactor_composite_controller_config(config, robot, ["right"])


class RobosuiteLowDimEnv(gym.Env):
    """gymnasium view of a robosuite env with robomimic low-dim observation keys (and camera images).

    With ``use_camera_obs`` in the env kwargs, each camera of ``camera_names`` adds the key
    ``<camera>_image``: uint8 [H, W, 3], upright (robosuite renders OpenGL's bottom-up rows;
    robomimic flips them, and so do we), as robomimic's image datasets store it.

    ``reset(seed=s)`` reseeds robosuite's own generator (placement, robot init noise) in place,
    so the same seed gives the same initial object placement and observation. An episode is
    ``terminated`` when the task succeeds (robomimic rollouts stop there) and ``truncated``
    after ``max_episode_steps``.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        env_meta: Mapping[str, Any],
        *,
        max_episode_steps: int | None = None,
        obs_keys: tuple[str, ...] = LOW_DIM_KEYS,
        terminate_on_success: bool = True,
        construction_seed: int = 0,
    ) -> None:
        use_software_gl()
        import robosuite

        _validate_env_meta(env_meta)
        self.env_meta = copy.deepcopy(dict(env_meta))
        kwargs = dict(self.env_meta["env_kwargs"])
        kwargs["controller_configs"] = _controller_config_for_robosuite(kwargs)
        kwargs.setdefault("ignore_done", True)
        # robosuite draws model-level randomness (e.g. Lift's cube size) from env.rng while building
        # the model; without a seed every process would get a different cube
        kwargs.setdefault("seed", construction_seed)
        self.cameras: tuple[str, ...] = ()
        if kwargs.get("use_camera_obs"):
            names = kwargs.get("camera_names", ["agentview"])
            self.cameras = tuple([names] if isinstance(names, str) else names)
        self._env = robosuite.make(self.env_meta["env_name"], **kwargs)
        self.max_episode_steps = int(max_episode_steps or kwargs.get("horizon", 500))
        self.terminate_on_success = terminate_on_success
        self.obs_keys = tuple(obs_keys) + tuple(camera_obs_key(c) for c in self.cameras
                                                if camera_obs_key(c) not in obs_keys)

        raw = self._env.reset()
        missing = [k for k in self.obs_keys if _ROBOSUITE_OBS_NAME.get(k, k) not in raw]
        if missing:
            raise KeyError(f"robosuite env {self.env_meta['env_name']} has no observation(s) {missing}")
        self.observation_space = gym.spaces.Dict(
            {
                k: gym.spaces.Box(0, 255, shape=np.shape(raw[k]), dtype=np.uint8) if self._is_image(k) else
                gym.spaces.Box(-np.inf, np.inf, shape=np.shape(raw[_ROBOSUITE_OBS_NAME.get(k, k)]), dtype=np.float32)
                for k in self.obs_keys
            }
        )
        low, high = self._env.action_spec
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=np.shape(low), dtype=np.float32)
        # single-arm robosuite actions: an end-effector motion and, last, the gripper open/close command;
        # the gripper holds its last command when no action is due, and its jumps are intended
        self.hold_action_dims = (self.action_space.shape[0] - 1,)
        self.continuous_action_dims = list(range(self.action_space.shape[0] - 1))
        self._steps = 0
        self._max_reward = 0.0

    # -- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # robosuite's samplers and robots hold references to env.rng: reseed that same object
            self._env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        raw = self._env.reset()
        self._steps = 0
        self._max_reward = 0.0
        return self._obs(raw), {"is_success": False}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action has shape {action.shape}, expected {self.action_space.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or inf: {action}")
        raw, reward, _, _ = self._env.step(np.clip(action, -1.0, 1.0))
        self._steps += 1
        success = bool(self._env._check_success())
        self._max_reward = max(self._max_reward, float(reward))
        terminated = success and self.terminate_on_success
        truncated = self._steps >= self.max_episode_steps and not terminated
        info = {"is_success": success, "max_reward": self._max_reward, "steps": self._steps}
        return self._obs(raw), float(reward), terminated, truncated, info

    def close(self) -> None:
        self._env.close()

    # -- robomimic extras ----------------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        """Flattened mujoco state (time, qpos, qvel), the rows of robomimic's ``states`` dataset."""
        return np.asarray(self._env.sim.get_state().flatten(), dtype=np.float64)

    def reset_to_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Set the sim to a stored ``states`` row and return the observation there (for replay)."""
        self._env.sim.set_state_from_flattened(np.asarray(state, dtype=np.float64))
        self._env.sim.forward()
        return self._obs(self._env._get_observations(force_update=True))

    def is_success(self) -> bool:
        return bool(self._env._check_success())

    def model_xml(self) -> str:
        """The MJCF XML of the current model (robomimic's per-demo ``model_file`` attribute)."""
        return self._env.sim.model.get_xml()

    def ep_meta(self) -> dict:
        """robosuite's episode metadata (robomimic's per-demo ``ep_meta`` attribute; {} for Lift and Can)."""
        return dict(self._env.get_ep_meta()) if hasattr(self._env, "get_ep_meta") else {}

    @property
    def unwrapped_robosuite(self):
        """The robosuite env (for experts that need task geometry, e.g. the Can target bin)."""
        return self._env

    def _is_image(self, key: str) -> bool:
        return any(key == camera_obs_key(c) for c in self.cameras)

    def _obs(self, raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for k in self.obs_keys:
            if self._is_image(k):
                out[k] = np.ascontiguousarray(np.asarray(raw[k], dtype=np.uint8)[::-1])  # upright rows
            else:
                out[k] = np.asarray(raw[_ROBOSUITE_OBS_NAME.get(k, k)], dtype=np.float32).copy()
        return out


def _validate_env_meta(env_meta: Mapping[str, Any]) -> None:
    for key in ("env_name", "env_kwargs"):
        if key not in env_meta:
            raise ValueError(f"env metadata is missing {key!r} (robomimic format: env_name, type, env_kwargs)")
    env_type = env_meta.get("type", ROBOSUITE_ENV_TYPE)
    if env_type != ROBOSUITE_ENV_TYPE:
        raise ValueError(f"env metadata type {env_type} is not robosuite ({ROBOSUITE_ENV_TYPE})")


def make_env(env_meta: Mapping[str, Any], seed: int | None = None, **kwargs) -> RobosuiteLowDimEnv:
    """Create a robosuite env from robomimic env metadata; ``seed`` seeds its first reset."""
    env = RobosuiteLowDimEnv(env_meta, **kwargs)
    if seed is not None:
        env.reset(seed=seed)
    return env


def make_task_env(name: str, seed: int | None = None) -> gym.Env:
    """Env for a named task: "lift", "can" (robosuite) or "pusht" (gym-pusht)."""
    if name.lower() == "pusht":
        from paradigms_policy.sim.pusht import make_pusht_env

        return make_pusht_env(seed=seed)
    spec = _task_spec(name)
    return make_env(task_env_meta(name), seed=seed, max_episode_steps=spec.max_episode_steps)


def is_image_space(space: gym.Space) -> bool:
    """An env image observation: uint8 [H, W, C] (as robomimic stores camera images)."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def env_shape_meta(env: gym.Env) -> dict:
    """shape_meta (DiffusionPolicy style) describing what ``env`` provides; images as rgb [C, H, W]."""
    obs = {}
    for k, space in env.observation_space.spaces.items():
        if is_image_space(space):
            height, width, channels = space.shape
            obs[k] = {"shape": [channels, height, width], "type": "rgb"}
        else:
            obs[k] = {"shape": list(space.shape), "type": "low_dim"}
    return {"obs": obs, "action": {"shape": list(env.action_space.shape)}}


def check_policy_fits_task(policy_shape_meta: Mapping[str, Any], env: gym.Env) -> None:
    """Raise TaskMismatchError naming every obs key/shape or action dim the policy expects but the env lacks."""
    problems: list[str] = []
    obs_meta = policy_shape_meta.get("obs")
    if not isinstance(obs_meta, Mapping) or not obs_meta:
        problems.append("policy shape_meta has no 'obs' entries")
        obs_meta = {}
    wanted = {}
    env_meta = env_shape_meta(env)["obs"]
    for key, meta in obs_meta.items():
        kind = meta.get("type", "low_dim")
        if kind not in ("low_dim", "rgb"):
            problems.append(f"obs key {key!r} is of type {kind!r}; expected 'low_dim' or 'rgb'")
        elif key in env_meta and env_meta[key]["type"] != kind:
            problems.append(f"obs key {key!r} is {kind!r} in the policy but {env_meta[key]['type']!r} in the env")
        else:
            wanted[key] = meta.get("shape", ())
    env_shapes = {key: tuple(meta["shape"]) for key, meta in env_meta.items()}
    problems += observation_mismatches(wanted, env_shapes)
    action_shape = tuple(int(d) for d in policy_shape_meta.get("action", {}).get("shape", ()))
    if action_shape != tuple(env.action_space.shape):
        problems.append(f"action: policy outputs shape {list(action_shape)}, env expects {list(env.action_space.shape)}")
    if problems:
        raise TaskMismatchError("checkpoint does not fit the task: " + "; ".join(problems))
