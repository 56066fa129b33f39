"""Episodes as units of work: what one episode is (``EpisodeJob``) and who runs it (``EpisodeWorker``).

A rollout or a sweep is a list of jobs. Each job names everything its episode depends on (task,
checkpoint, sampler, env seed, delay, execution mode, ...), and its chunk noise seeds follow from
its env seed (``seed * 1000 + chunk``), so an episode's result does not depend on which process
runs it or in which order: the same jobs give the same ``rollout.json`` in one process or on a
Ray cluster. A worker keeps one loaded policy and env and reuses them across jobs, switching the
sampler or the task only when a job asks for another one.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

NOISE_SEED_STRIDE = 1000  # chunk c of the episode with env seed s draws its noise with seed s * 1000 + c


@dataclass(frozen=True)
class EpisodeJob:
    """One episode: env seed ``seed`` of ``task`` with ``sampler``; the rest as ``run_episode`` takes it."""

    task: str
    checkpoint: str | None
    sampler: str
    seed: int
    delay_steps: int = 0
    execution: str = "aligned"
    inpainting: str | None = None  # None: the policy's default
    replan_every: int = 0  # periods between the observations of consecutive chunks (0: n_action_steps)
    max_steps: int | None = None
    deadline_ms: float | None = None

    @property
    def noise_seed(self) -> int:
        return self.seed * NOISE_SEED_STRIDE


@dataclass(frozen=True)
class WorkerSettings:
    """Per-process settings, the same for every job of a run."""

    device: str = "cpu"
    num_threads: int | None = None  # torch threads per worker; None leaves torch's (or Ray's) default
    trust_checkpoint: bool = False


class EpisodeWorker:
    """Runs episodes with one loaded policy and env (a Ray actor, or a plain object in-process)."""

    def __init__(self, settings: WorkerSettings, preloaded: dict[tuple[str | None, str], Any] | None = None):
        import torch

        self.settings = settings
        if settings.num_threads:
            torch.set_num_threads(int(settings.num_threads))
        self._preloaded = dict(preloaded or {})  # (checkpoint, task) -> an already loaded policy
        self._key: tuple[str | None, str] | None = None
        self._policy: Any = None
        self._env: Any = None
        self._sampler: str | None = None  # the sampler set (and warmed up) on the policy by this worker

    def info(self) -> dict[str, Any]:
        """Where this worker runs and which code it imported (tests check it is the driver's)."""
        import paradigms_policy

        return {"pid": os.getpid(), "package": os.path.dirname(paradigms_policy.__file__)}

    def run(self, job: EpisodeJob) -> dict[str, Any]:
        """Run ``job``; returns its ``EpisodeResult`` as a plain dict (cheap to send between processes)."""
        from paradigms_policy.execution import ExecutionSettings
        from paradigms_policy.policy import DEFAULT_INPAINTING
        from paradigms_policy.sim.rollout import run_episode

        policy, env = self._load(job.checkpoint, job.task)
        if self._sampler != job.sampler:
            policy.set_sampler(job.sampler)
            if hasattr(policy, "warmup"):  # buffers allocated before the first timed chunk
                policy.warmup()
            self._sampler = job.sampler
        policy.inpainting = job.inpainting or DEFAULT_INPAINTING
        result = run_episode(
            env, policy, job.seed, max_steps=job.max_steps,
            deadline_s=None if job.deadline_ms is None else job.deadline_ms / 1e3,
            noise_seed=job.noise_seed, delay_steps=job.delay_steps,
            execution=ExecutionSettings(mode=job.execution, replan_every=job.replan_every),
        )
        return asdict(result)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
        self._env, self._policy, self._key, self._sampler = None, None, None, None

    def _load(self, checkpoint: str | None, task: str) -> tuple[Any, Any]:
        """The policy and env for (checkpoint, task); loads them (dropping the previous pair) on a change."""
        key = (checkpoint, task)
        if key == self._key:
            return self._policy, self._env
        from paradigms_policy.policy import load_policy
        from paradigms_policy.sim.envs import check_policy_fits_task, make_task_env

        self.close()
        policy = self._preloaded.pop(key, None)
        if policy is None:
            policy = load_policy(checkpoint, device=self.settings.device,
                                 trust_checkpoint=self.settings.trust_checkpoint)
        env = make_task_env(task)
        check_policy_fits_task(policy.shape_meta, env)
        self._policy, self._env, self._key = policy, env, key
        return policy, env
