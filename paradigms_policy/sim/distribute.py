"""Run episode jobs in this process or as Ray actor tasks, and stream the results back as they finish.

One code path for every scale: a run is a list of ``EpisodeJob`` and an executor that yields
``(job, result)`` as episodes finish; ``run_jobs`` collects them under one progress bar.

- ``inline``: one ``EpisodeWorker`` in this process (``workers=1``; Ray need not be installed).
- ``ray``: ``workers`` Ray actors, each an ``EpisodeWorker`` holding a loaded policy and env, fed
  episodes one or two at a time (so a fast worker takes more). Ray runs on this machine
  (``ray.init()``, the default whenever ``workers > 1``) or joins a cluster (``ray_address=auto``,
  an address, or ``RAY_ADDRESS``). A worker that dies (killed, out of memory, node lost) loses only
  its unfinished episodes: they go back to the front of the queue for a fresh worker, up to
  ``max_retries`` times each. An exception raised by an episode itself is not retried: it is a bug
  or bad input, and it is raised here as it was raised there.
"""

from __future__ import annotations

import os
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tqdm import tqdm

from paradigms_policy.sim.episodes import EpisodeJob, EpisodeWorker, WorkerSettings

BACKENDS = ("auto", "inline", "ray")
RAY_MISSING = ("runs episodes on Ray, which is not installed here: pip install 'paradigms_policy[ray]' "
               "(ray==2.60.0), or run with workers=1")

# (job, result, worker index) for every finished episode, in the order they finish
OnResult = Callable[[EpisodeJob, dict, int], None]


class EpisodeFailedError(RuntimeError):
    """An episode's worker died more than ``max_retries`` times while running it."""


@dataclass
class RunOutcome:
    """Every job's result dict, and how the run went."""

    results: dict[EpisodeJob, dict]
    backend: str
    workers: int
    retried: list[EpisodeJob] = field(default_factory=list)  # one entry per resubmission
    ray_init_s: float | None = None  # ray.init() in this call (None: inline, or Ray was already up)
    workers_ready_s: float | None = None  # creating the Ray workers until all answered
    worker_info: list[dict[str, Any]] = field(default_factory=list)  # pid and imported package of each worker


def resolve_backend(backend: str, workers: int, ray_address: str | None) -> str:
    """``auto``: Ray when ``workers > 1`` or a cluster address is given (argument or RAY_ADDRESS), else inline."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if backend == "auto":
        return "ray" if workers > 1 or ray_address or os.environ.get("RAY_ADDRESS") else "inline"
    if backend == "inline" and (workers > 1 or ray_address):
        raise ValueError(f"backend=inline runs one worker in this process; got workers={workers}, "
                         f"ray_address={ray_address!r} (use backend=ray or auto)")
    return backend


def run_jobs(jobs: Sequence[EpisodeJob], settings: WorkerSettings, *, workers: int = 1,
             ray_address: str | None = None, backend: str = "auto", max_retries: int = 3,
             progress: bool = True, on_result: OnResult | None = None,
             preloaded: dict[tuple[str | None, str], Any] | None = None) -> RunOutcome:
    """Run every job once (retrying those whose worker died); results keyed by job.

    ``preloaded`` hands an already loaded policy to the inline worker (it is not sent to Ray).
    """
    jobs = list(jobs)
    if len(set(jobs)) != len(jobs):
        raise ValueError("run_jobs: the same episode job is listed twice")
    kind = resolve_backend(backend, workers, ray_address)
    outcome = RunOutcome(results={}, backend=kind, workers=workers)
    bar = tqdm(total=len(jobs), desc="episodes", unit="ep", disable=not progress, dynamic_ncols=True,
               mininterval=1.0)
    successes = 0

    def collect(stream: Iterator[tuple[EpisodeJob, dict, int]]) -> None:
        nonlocal successes
        for job, result, worker in stream:
            if job in outcome.results:
                raise RuntimeError(f"episode {job} returned twice")
            outcome.results[job] = result
            successes += bool(result["success"])
            bar.update(1)
            bar.set_postfix(success=successes, retried=len(outcome.retried), refresh=False)
            if on_result is not None:
                on_result(job, result, worker)

    try:
        if kind == "inline":
            worker = EpisodeWorker(settings, preloaded=preloaded)
            outcome.worker_info = [worker.info()]
            try:
                collect((job, worker.run(job), 0) for job in jobs)
            finally:
                worker.close()
        else:
            with ray_session(ray_address, num_cpus=workers) as init_s:
                outcome.ray_init_s = init_s
                with RayEpisodePool(settings, workers, max_retries=max_retries) as pool:
                    outcome.workers_ready_s = pool.ready_s
                    outcome.worker_info = pool.info()
                    collect(pool.stream(jobs))
                    outcome.retried = list(pool.retried)
    finally:
        bar.close()
    missing = [job for job in jobs if job not in outcome.results]
    if missing:
        raise RuntimeError(f"{len(missing)} episodes returned no result, first: {missing[0]}")
    return outcome


# ---------------------------------------------------------------------------------------------- Ray
def _ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(RAY_MISSING) from exc
    return ray


def worker_runtime_env() -> dict[str, Any]:
    """Ray workers import the same ``paradigms_policy`` as this driver: its source root goes first on PYTHONPATH.

    On a cluster the package must be installed (or the same path mounted) on every node; this only
    makes a local checkout win over an installed copy, as it does in the driver.
    """
    import paradigms_policy

    root = str(Path(paradigms_policy.__file__).resolve().parent.parent)
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join([root, *rest])}}


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs: Any) -> float:
    """``ray.init`` for episode workers; returns the seconds it took.

    ``address`` (or RAY_ADDRESS) joins a running cluster ("auto": the one started on this machine
    with ``ray start --head``); without one a local Ray starts with ``num_cpus`` CPUs.
    """
    ray = _ray()
    options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, runtime_env=worker_runtime_env())
    if address or os.environ.get("RAY_ADDRESS"):
        options["address"] = address or os.environ["RAY_ADDRESS"]
    else:
        options["num_cpus"] = num_cpus
    options.update(kwargs)
    start = time.perf_counter()
    ray.init(**options)
    return time.perf_counter() - start


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[float | None]:
    """Ray for the duration of the block: started here and shut down after, or the one already running.

    Yields the ``ray.init`` time, or None when Ray was already initialized (by a caller or a test).
    """
    ray = _ray()
    if ray.is_initialized():
        yield None
        return
    init_s = init_ray(address, num_cpus)
    try:
        yield init_s
    finally:
        ray.shutdown()


def _lost_worker_errors() -> tuple[type[BaseException], ...]:
    """Ray errors that mean the worker (or its node) went away, not that the episode raised."""
    from ray import exceptions as rex

    return (rex.RayActorError, rex.WorkerCrashedError, rex.ObjectLostError, rex.NodeDiedError)


class RayEpisodePool:
    """``workers`` Ray actors running episodes; dead ones are replaced and their episodes resubmitted.

    Each worker holds at most ``prefetch`` episodes at a time (one running, one queued), so a
    killed worker loses at most that many and the faster workers take more of the queue.
    """

    def __init__(self, settings: WorkerSettings, workers: int, *, max_retries: int = 3, prefetch: int = 2,
                 cpus_per_worker: float = 1.0, startup_timeout_s: float = 600.0):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.settings, self.n_workers, self.max_retries = settings, workers, max_retries
        self.prefetch, self.cpus_per_worker, self.startup_timeout_s = max(1, prefetch), cpus_per_worker, startup_timeout_s
        self.retried: list[EpisodeJob] = []
        self.ready_s: float | None = None
        self._actors: list[Any] = []
        self._generation: list[int] = []  # bumped when a slot's actor is replaced

    def __enter__(self) -> "RayEpisodePool":
        ray = _ray()
        start = time.perf_counter()
        self._actors = [self._new_actor() for _ in range(self.n_workers)]
        self._generation = [0] * self.n_workers
        ready, pending = ray.wait([a.info.remote() for a in self._actors], num_returns=self.n_workers,
                                  timeout=self.startup_timeout_s)
        if pending:
            cpus = ray.cluster_resources().get("CPU", 0)
            self.close()
            raise RuntimeError(f"only {len(ready)} of {self.n_workers} Ray episode workers started within "
                               f"{self.startup_timeout_s:.0f} s; the cluster has {cpus:g} CPUs and each worker "
                               f"asks for {self.cpus_per_worker:g}")
        self._info = ray.get(ready)
        self.ready_s = time.perf_counter() - start
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        ray = _ray()
        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors = []

    def pids(self) -> list[int]:
        """Process ids of the current workers (by slot)."""
        ray = _ray()
        return [info["pid"] for info in ray.get([a.info.remote() for a in self._actors])]

    def info(self) -> list[dict[str, Any]]:
        ray = _ray()
        return ray.get([a.info.remote() for a in self._actors])

    def _new_actor(self) -> Any:
        ray = _ray()
        remote = ray.remote(EpisodeWorker).options(num_cpus=self.cpus_per_worker, max_restarts=0,
                                                   max_task_retries=0)
        return remote.remote(self.settings)

    def _replace(self, slot: int) -> None:
        ray = _ray()
        try:
            ray.kill(self._actors[slot], no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self._actors[slot] = self._new_actor()
        self._generation[slot] += 1

    def stream(self, jobs: Sequence[EpisodeJob]) -> Iterator[tuple[EpisodeJob, dict, int]]:
        """Yield ``(job, result, slot)`` as episodes finish, each job exactly once."""
        ray = _ray()
        lost = _lost_worker_errors()
        queue: deque[EpisodeJob] = deque(jobs)
        attempts: dict[EpisodeJob, int] = {}
        in_flight: dict[Any, tuple[EpisodeJob, int, int]] = {}  # ref -> (job, slot, generation)
        load = [0] * self.n_workers

        def fill() -> None:
            for slot in range(self.n_workers):
                while queue and load[slot] < self.prefetch:
                    job = queue.popleft()
                    ref = self._actors[slot].run.remote(job)
                    in_flight[ref] = (job, slot, self._generation[slot])
                    load[slot] += 1

        fill()
        while in_flight:
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            job, slot, generation = in_flight.pop(ref)
            if generation == self._generation[slot]:
                load[slot] -= 1
            try:
                result = ray.get(ref)
            except lost as exc:
                attempts[job] = attempts.get(job, 0) + 1
                if attempts[job] > self.max_retries:
                    raise EpisodeFailedError(f"episode {job} lost its worker {attempts[job]} times "
                                             f"(max_retries={self.max_retries}); last error: {exc}") from exc
                if generation == self._generation[slot]:  # the first loss seen from this actor: replace it
                    self._replace(slot)
                    load[slot] = 0
                self.retried.append(job)
                queue.appendleft(job)
            else:
                yield job, result, slot
            fill()
