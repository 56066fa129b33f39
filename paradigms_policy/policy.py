"""The deployable policy: checkpoint -> network (EMA weights) + normalizer + batched denoiser + sampler.

One ``predict_action`` call is one control cycle: check and normalize the last n_obs_steps
observations, bind them as the UNet's global condition, draw (or warm-start) the noise, solve the
denoising steps with the configured sampler, unnormalize, and return DiffusionPolicy's executed
slice ``[n_obs_steps - 1 : n_obs_steps - 1 + n_action_steps]`` with the full horizon and the solver's
statistics. Warm-start samplers reuse the previous cycle's trajectory shifted by the actions
executed since (``n_executed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .checkpoint import build_network, build_normalizer
from .compat import observation_mismatches
from .diffusion.inpaint import Inpainting, known_prefix
from .diffusion.registry import AUTO, SAMPLERS, canonical_name
from .diffusion.samplers import Sampler, make_sampler
from .diffusion.selection import candidates, choose_sampler, measure_round_times, round_rows
from .diffusion.sequential import draw_noise
from .diffusion.types import SampleResult, SolveStats
from .diffusion.warm_start import WarmStartState
from .runtime.device import default_executor, resolve_device
from .runtime.executor import BatchedDenoiser

__all__ = ["Policy", "ActionResult", "ObservationError", "PolicyCompatibilityError", "load_policy", "DEFAULT_SAMPLER",
           "solver_call_widths"]

DEFAULT_SAMPLER = "ddpm_sequential"  # the reference: DiffusionPolicy's own 100-step DDPM
INPAINTING = ("clean", "noised")  # how known actions enter the solve (Policy._inpainting)
DEFAULT_INPAINTING = "clean"
SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "prediction_type", "clip_sample", "clip_sample_range")


class ObservationError(ValueError):
    """An observation passed to predict_action is missing, mis-shaped or not finite."""


class PolicyCompatibilityError(ValueError):
    """An environment / robot interface does not provide what the checkpoint was trained on."""


@dataclass
class ActionResult:
    """One predicted chunk (numpy, unnormalized). Batched input gives a leading batch axis."""

    action: np.ndarray  # [n_action_steps, A]: the actions to execute now
    action_pred: np.ndarray  # [horizon, A]: the whole predicted horizon
    stats: SolveStats
    sampler: str
    result: SampleResult | None = None  # raw normalized solve (trajectory, noise) for analysis


class Policy:
    """A loaded checkpoint ready to act; see ``load_policy``."""

    def __init__(self, checkpoint: Mapping[str, Any], *, device: str | torch.device = "cpu",
                 sampler: str | None = None, executor: str | None = None, compile: bool = False,
                 path: str | Path | None = None, **sampler_overrides: Any):
        self.checkpoint_path = Path(path) if path is not None else None
        self.device = resolve_device(device)
        self.shape_meta: dict[str, Any] = checkpoint["shape_meta"]
        self.horizon = int(checkpoint["horizon"])
        self.n_obs_steps = int(checkpoint["n_obs_steps"])
        self.n_action_steps = int(checkpoint["n_action_steps"])
        # first executed action in the horizon (DiffusionPolicy: n_obs_steps - 1; its low-dim policy without
        # oa_step_convention starts at n_obs_steps)
        self.action_start = int(checkpoint.get("action_start", self.n_obs_steps - 1))
        self.source = dict(checkpoint.get("source", {}))
        self.noise_scheduler = dict(checkpoint["noise_scheduler"])
        self.training_info = dict(checkpoint.get("training", {}))
        self.config = checkpoint.get("config", {})
        self.env_args = checkpoint.get("env_args")
        self.obs_shapes = {key: tuple(int(d) for d in meta["shape"]) for key, meta in self.shape_meta["obs"].items()}
        self.obs_keys = list(self.obs_shapes)
        self.action_dim = int(self.shape_meta["action"]["shape"][0])
        self.network = build_network(checkpoint, weights="ema_model").to(self.device)
        self.normalizer = build_normalizer(checkpoint).to(self.device)
        self.denoiser = BatchedDenoiser(
            self.network.model, event_shape=(self.horizon, self.action_dim),
            cond_dim=int(checkpoint["model_kwargs"]["global_cond_dim"]),
            executor=executor or default_executor(self.device), device=self.device, compile=compile,
        )
        self._generator = torch.Generator(device=self.device)
        self._generator.seed()
        self.inpainting = DEFAULT_INPAINTING
        self.set_sampler(sampler or DEFAULT_SAMPLER, **sampler_overrides)

    # ------------------------------------------------------------------ configuration
    def set_sampler(self, name: str, **overrides: Any) -> None:
        """Switch sampler (schedule settings come from the checkpoint unless overridden); forgets the warm start.

        ``auto`` measures call times here and takes the sampler with the least expected latency
        (diffusion/selection.py); ``sampler_choice_reason`` says what was chosen and why, and
        solver overrides that do not apply to the chosen sampler are dropped (and named there).
        """
        schedule = {key: self.noise_scheduler[key] for key in SCHEDULE_KEYS if key in self.noise_scheduler}
        self.requested_sampler = name
        if name == AUTO:
            name, overrides, self.sampler_choice_reason = self._choose_sampler(schedule, overrides)
        else:
            canonical_name(name)  # unknown names fail here, naming the known ones
            self.sampler_choice = None
            self.sampler_choice_reason = f"sampler {name!r} requested by name"
        self.sampler: Sampler = make_sampler(name, **{**schedule, **overrides})
        self.sampler_name = name
        self.warm_state = WarmStartState(rule=self.sampler.rule)

    def _choose_sampler(self, schedule: dict[str, Any], overrides: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
        """(chosen name, the overrides that apply to it, reason) for ``sampler: auto``."""
        event = (1, self.horizon, self.action_dim)
        numel = self.horizon * self.action_dim
        obs = self._mean_observation(1)
        nobs, _ = self._check_obs(obs)
        self.denoiser.bind(self.network.global_cond({k: self.normalizer[k].normalize(v) for k, v in nobs.items()}))
        probe_rule = make_sampler("ddim16_sequential", **schedule).rule
        x_init, _ = draw_noise(probe_rule, event, device=self.device)
        widths = {round_rows(spec, numel) for spec in candidates().values()}
        times = measure_round_times(self.denoiser, probe_rule, x_init, widths)
        self.denoiser.reset_counters()
        choice = choose_sampler(times, numel)
        spec = SAMPLERS[choice.name]
        allowed = set(SCHEDULE_KEYS) | {"kind", "num_inference_steps", "deadline_policy", "clip_sample_range"}
        if spec.settings is not None:
            allowed |= {f for f in spec.settings.__dataclass_fields__}
        kept = {k: v for k, v in overrides.items() if k in allowed}
        dropped = sorted(set(overrides) - set(kept))
        reason = choice.reason + (f"; overrides {dropped} do not apply to it and were dropped" if dropped else "")
        self.sampler_choice = choice
        return choice.name, kept, reason

    def reset(self) -> None:
        """Forget the previous solution (new episode, stale observations): the next solve starts cold."""
        self.warm_state.reset()

    def check_compatible(self, obs_shapes: Mapping[str, Any], action_dim: int) -> None:
        """Fail early if an environment / robot lacks a key the policy needs, shapes differ, or the action size does."""
        problems = observation_mismatches(self.obs_shapes, obs_shapes)
        if int(action_dim) != self.action_dim:
            problems.append(f"action has {int(action_dim)} dims, the policy predicts {self.action_dim}")
        if problems:
            where = f" ({self.checkpoint_path})" if self.checkpoint_path else ""
            raise PolicyCompatibilityError(f"policy{where} does not fit: " + "; ".join(problems))

    # ------------------------------------------------------------------ observations
    def _check_obs(self, obs: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], bool]:
        """obs[key]: [n_obs_steps, *shape] or [B, n_obs_steps, *shape] -> float32 tensors [B, n_obs_steps, *shape]."""
        if not isinstance(obs, Mapping):
            raise ObservationError(f"observations must be a dict of arrays, got {type(obs).__name__}")
        out, batched, batch = {}, None, None
        for key, shape in self.obs_shapes.items():
            if key not in obs:
                raise ObservationError(f"observation {key!r} is missing (got keys {sorted(obs)})")
            try:
                value = np.asarray(obs[key].detach().cpu() if isinstance(obs[key], torch.Tensor) else obs[key],
                                   dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise ObservationError(f"observation {key!r} is not a numeric array: {exc}") from exc
            single = (self.n_obs_steps, *shape)
            if value.shape == single:
                is_batched = False
            elif value.ndim == len(single) + 1 and value.shape[1:] == single and value.shape[0] >= 1:
                is_batched = True
            else:
                raise ObservationError(
                    f"observation {key!r} has shape {list(value.shape)}; expected [n_obs_steps={self.n_obs_steps}, "
                    f"{', '.join(map(str, shape))}] or a batch of those"
                )
            if batched is not None and is_batched != batched:
                raise ObservationError(f"observation {key!r} is {'' if is_batched else 'not '}batched unlike the others")
            if is_batched and batch is not None and value.shape[0] != batch:
                raise ObservationError(f"observation {key!r} has batch size {value.shape[0]}, others have {batch}")
            batched, batch = is_batched, (value.shape[0] if is_batched else 1)
            if not np.isfinite(value).all():
                bad = np.argwhere(~np.isfinite(value))[0].tolist()
                kind = "NaN" if np.isnan(value).any() else "inf"
                raise ObservationError(f"observation {key!r} contains {kind} (first at index {bad})")
            tensor = torch.from_numpy(value).to(self.device)
            out[key] = tensor if is_batched else tensor.unsqueeze(0)
        return out, bool(batched)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_action(self, obs: Mapping[str, Any], *, n_executed: int | None = None,
                       deadline: float | None = None, seed: int | None = None,
                       known_actions: np.ndarray | None = None) -> ActionResult:
        """Predict one action chunk from the last n_obs_steps observations.

        n_executed: control periods since the previous chunk's observation (warm-start shift;
        None -> n_action_steps).
        deadline: absolute ``time.perf_counter()`` time by which parallel samplers must return.
        seed: seeds this call's noise draw (same seed and same warm state -> same actions).
        known_actions: [n, A] (unnormalized) actions 0..n-1 of the executed slice that the robot
        is committed to while this chunk is solved; they are inpainted (execution.py).
        """
        nobs_raw, batched = self._check_obs(obs)
        if n_executed is not None and (isinstance(n_executed, bool) or int(n_executed) != n_executed or n_executed < 0):
            raise ValueError(f"n_executed must be an integer >= 0 or None, got {n_executed!r}")
        if deadline is not None and (not isinstance(deadline, (int, float)) or math.isnan(deadline)):
            raise ValueError(f"deadline must be a perf_counter time in seconds or None, got {deadline!r}")
        nobs = {key: self.normalizer[key].normalize(value) for key, value in nobs_raw.items()}
        global_cond = self.network.global_cond(nobs)  # [B, n_obs_steps * D]
        batch = int(global_cond.shape[0])
        self.denoiser.bind(global_cond)
        generator = self._generator
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        event = (batch, self.horizon, self.action_dim)
        init = None
        prev = self.warm_state.prev
        if self.sampler.uses_warm_start and prev is not None and tuple(prev.sample.shape) == event:
            shift = self.n_action_steps if n_executed is None else int(n_executed)
            x_init, noise, init = self.warm_state.next(shift, event, generator)
        else:
            x_init, noise = draw_noise(self.sampler.rule, event, generator=generator, device=self.device)
        inpaint = self._inpainting(known_actions, event, x_init)
        result = self.sampler.sample(self.denoiser, x_init, noise, init_trajectory=init, deadline=deadline,
                                     inpaint=inpaint)
        if self.sampler.uses_warm_start:
            self.warm_state.update(result)
        action_pred = self.normalizer["action"].unnormalize(result.sample).cpu().numpy()  # [B, H, A]
        start = self.action_start
        action = action_pred[:, start: start + self.n_action_steps]
        if not batched:
            action, action_pred = action[0], action_pred[0]
        return ActionResult(action=action, action_pred=action_pred, stats=result.stats, sampler=self.sampler_name,
                            result=result)

    def _inpainting(self, known_actions: np.ndarray | None, event: tuple[int, ...],
                    x_init: torch.Tensor) -> Inpainting | None:
        """Normalized known values for the first executed actions, or None when there are none.

        ``self.inpainting``: "clean" holds the clean values at every noise level (DiffusionPolicy's
        conditional_sample), "noised" the forward-noised ones (diffusion/inpaint.py).
        """
        if known_actions is None:
            return None
        known = np.asarray(known_actions, dtype=np.float32)
        if known.size == 0:
            return None
        longest = self.horizon - self.action_start - 1  # at least one action stays free
        if known.ndim != 2 or known.shape[1] != self.action_dim or not 1 <= known.shape[0] <= longest:
            raise ValueError(f"known_actions must be [n, action_dim={self.action_dim}] with 1 <= n <= {longest}, "
                             f"got {list(known.shape)}")
        if not np.isfinite(known).all():
            raise ValueError("known_actions contain NaN or inf")
        values = self.normalizer["action"].normalize(torch.from_numpy(known).to(self.device))
        return known_prefix(values, self.action_start, event, noise=x_init if self.inpainting == "noised" else None)

    def _mean_observation(self, batch: int) -> dict[str, np.ndarray]:
        """The training mean of every key, [batch, n_obs_steps, *shape]; stats of images and other
        multi-axis keys are per last axis, so they broadcast rather than reshape."""
        stats = self.normalizer.input_stats()
        obs = {}
        for key, shape in self.obs_shapes.items():
            mean = stats[key]["mean"].cpu().numpy()
            mean = mean.reshape(shape) if mean.size == int(np.prod(shape)) else np.broadcast_to(mean, shape)
            obs[key] = np.broadcast_to(mean, (batch, self.n_obs_steps, *shape)).astype(np.float32)
        return obs

    def warmup(self, batch: int = 1) -> None:
        """Allocate denoiser buffers (capture CUDA graphs) for the widths the sampler's calls use,
        and measure round times, before the first deadline-bound call.

        Two widths serve every call (``solver_call_widths``): the widest round, whose slot also
        serves the narrower rounds near the end of the chain, and width 1 (sequential steps, the
        DDIM deadline fallback). After this, solves of ``batch`` observations allocate and
        capture nothing (the denoiser's ``slots_created`` / ``graphs_captured`` stay put). On CPU
        the slots are only allocated, not run: an eager CPU call has nothing else to warm.
        """
        obs = self._mean_observation(batch)
        widths = solver_call_widths(self.sampler, self.horizon * self.action_dim)
        self.denoiser.warmup(widths, batch, run=self.device.type == "cuda")
        nobs, _ = self._check_obs(obs)
        self.denoiser.bind(self.network.global_cond({k: self.normalizer[k].normalize(v) for k, v in nobs.items()}))
        x_init, _ = draw_noise(self.sampler.rule, (batch, self.horizon, self.action_dim), device=self.device)
        self.sampler.warmup(self.denoiser, x_init)
        self.predict_action(obs, seed=0)
        self.reset()
        self.denoiser.reset_counters()

    def __repr__(self) -> str:
        return (f"Policy({self.checkpoint_path or '<in memory>'}, obs={self.obs_shapes}, action_dim={self.action_dim}, "
                f"horizon={self.horizon}, n_obs_steps={self.n_obs_steps}, n_action_steps={self.n_action_steps}, "
                f"sampler={self.sampler_name}, device={self.device})")


def solver_call_widths(sampler: Sampler, event_numel: int) -> list[int]:
    """The batch widths to prepare for ``sampler``: width 1 and its widest round.

    Sequential sampling (and the DDIM deadline fallback) evaluates one step at a time; a
    parallel round evaluates its window (plus an update rule's extra rows, ``rows_per_round``),
    which shrinks near the end of the chain: those calls use the widest slot, padded.
    """
    return sampler.call_widths(event_numel)


def load_policy(path: str | Path | None = None, device: str | torch.device = "cpu", sampler: str | None = None,
                *, executor: str | None = None, compile: bool = False, trust_checkpoint: bool = False,
                **sampler_overrides: Any) -> Policy:
    """Load a checkpoint (None -> the shipped one) as a ready-to-act Policy.

    ``path`` may be one of our checkpoints, a DiffusionPolicy workspace ``.ckpt`` or a LeRobot diffusion
    policy directory; the format is recognized by content. Pickled files are unpickled with an
    allow-list; ``trust_checkpoint=True`` loads a file that needs more (only for files you trust).
    """
    from .formats import load_any_checkpoint

    if path is None:
        from . import paths

        path = paths.default_checkpoint()
    checkpoint = load_any_checkpoint(path, trust_checkpoint=trust_checkpoint)
    return Policy(checkpoint, device=device, sampler=sampler, executor=executor, compile=compile, path=path,
                  **sampler_overrides)
