"""gym-pusht's PushT with observations under DiffusionPolicy's PushT low-dim keys.

DiffusionPolicy's low-dim PushT uses ``agent_pos`` [2] and ``keypoint`` [K, 2] (block keypoints
in pixel coordinates) and absolute target positions in [0, 512]^2 as actions. gym-pusht's
``environment_state_agent_pos`` observation gives the same quantities with the 8 corner
keypoints of the T (DiffusionPolicy's own env samples 9), so ``keypoint`` is [8, 2] here.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

PUSHT_MAX_EPISODE_STEPS = 300  # as gym-pusht registers it and DiffusionPolicy evaluates it
PUSHT_KEYS: tuple[str, ...] = ("agent_pos", "keypoint")
PUSHT_ENV_ID = "gym_pusht/PushT-v0"
PUSHT_OBS_TYPE = "environment_state_agent_pos"
GYM_ENV_TYPE = 2  # robomimic's EnvType.GYM_TYPE


def pusht_env_meta(max_episode_steps: int = PUSHT_MAX_EPISODE_STEPS) -> dict:
    """robomimic env metadata for PushT (a gym env: ``gym.make(env_name, **env_kwargs)`` recreates it)."""
    from importlib.metadata import version

    return {
        "env_name": PUSHT_ENV_ID,
        "env_version": version("gym-pusht"),
        "type": GYM_ENV_TYPE,
        "env_kwargs": {"obs_type": PUSHT_OBS_TYPE, "max_episode_steps": int(max_episode_steps)},
    }


class PushTLowDimEnv(gym.Env):
    """PushT with Dict obs {"agent_pos": [2], "keypoint": [8, 2]} (float32), Box action [0, 512]^2."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, *, max_episode_steps: int = PUSHT_MAX_EPISODE_STEPS, render_mode: str | None = None) -> None:
        from gym_pusht.envs import PushTEnv

        self._env = PushTEnv(obs_type=PUSHT_OBS_TYPE, render_mode=render_mode or "rgb_array")
        self.render_mode = render_mode
        self.max_episode_steps = int(max_episode_steps)
        n_keypoints = self._env.observation_space["environment_state"].shape[0] // 2
        self.observation_space = gym.spaces.Dict(
            {
                "agent_pos": gym.spaces.Box(0.0, 512.0, shape=(2,), dtype=np.float32),
                "keypoint": gym.spaces.Box(0.0, 512.0, shape=(n_keypoints, 2), dtype=np.float32),
            }
        )
        self.action_space = gym.spaces.Box(0.0, 512.0, shape=(2,), dtype=np.float32)
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        raw, info = self._env.reset(seed=seed, options=options)
        self._steps = 0
        return self._obs(raw), {"is_success": bool(info.get("is_success", False))}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,):
            raise ValueError(f"PushT action has shape {action.shape}, expected (2,)")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"PushT action contains NaN or inf: {action}")
        raw, reward, terminated, truncated, info = self._env.step(action)
        self._steps += 1
        truncated = bool(truncated) or (self._steps >= self.max_episode_steps and not terminated)
        info = {"is_success": bool(info["is_success"]), "coverage": float(info.get("coverage", 0.0)), "steps": self._steps}
        return self._obs(raw), float(reward), bool(terminated), truncated, info

    def render(self):
        return self._env.render()

    def get_state(self) -> np.ndarray:
        """[agent x, agent y, block x, block y, block angle]: gym-pusht's ``reset_to_state`` format (robomimic ``states``).

        gym-pusht's reset places the block (angle 0) at the given position and THEN sets the angle,
        which pymunk does about the centre of gravity, so the block's own position is not what
        ``reset_to_state`` wants: the returned x, y are the ones that land the block where it is now.
        """
        env = self._env
        angle = float(env.block.angle)
        cog = np.asarray(env.block.center_of_gravity, dtype=np.float64)
        c, s = np.cos(angle), np.sin(angle)
        position = np.asarray(env.block.position, dtype=np.float64) - cog + np.array([c * cog[0] - s * cog[1],
                                                                                     s * cog[0] + c * cog[1]])
        return np.array([*env.agent.position, *position, angle], dtype=np.float64)

    def reset_to_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Put agent and block where a ``get_state`` row says; returns the observation there (for replay)."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (5,):
            raise ValueError(f"PushT state has shape {state.shape}, expected (5,): agent x, y, block x, y, angle")
        raw, _ = self._env.reset(options={"reset_to_state": state})
        self._steps = 0
        return self._obs(raw)

    def close(self) -> None:
        self._env.close()

    @staticmethod
    def _obs(raw: dict) -> dict[str, np.ndarray]:
        return {
            "agent_pos": np.asarray(raw["agent_pos"], dtype=np.float32),
            "keypoint": np.asarray(raw["environment_state"], dtype=np.float32).reshape(-1, 2),
        }


def make_pusht_env(seed: int | None = None, **kwargs) -> PushTLowDimEnv:
    env = PushTLowDimEnv(**kwargs)
    if seed is not None:
        env.reset(seed=seed)
    return env
