"""Evaluation sweeps: tasks x samplers x delays x execution modes as ONE set of episode jobs.

Every row of the table (task, sampler, delay, execution) runs the same episode seeds with the same
noise seeds, as ``evaluate`` does for one row. All rows' episodes go to the workers as a single
queue, so the workers stay busy across rows (one Ray start, one progress bar), and a row is written
to ``sweep.json`` as soon as its last episode is in: a sweep that is stopped and started again with
the same ``out_dir`` skips the rows it already has. d = 0 runs once per sampler (labelled ``any``):
there every execution mode is the same synchronous loop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from paradigms_policy.execution import ChunkGeometry, ExecutionModel, ExecutionSettings, MODES
from paradigms_policy.sim.distribute import resolve_backend, run_jobs
from paradigms_policy.sim.envs import check_policy_fits_task, make_task_env
from paradigms_policy.sim.episodes import EpisodeJob, WorkerSettings
from paradigms_policy.sim.rollout import DEFAULT_START_SEED, EpisodeResult, episode_seeds, summarize

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class SweepRow:
    """One row of the sweep table."""

    task: str
    checkpoint: str | None
    sampler: str
    delay_steps: int
    execution: str
    inpainting: str | None = None
    replan_every: int = 0  # 0: n_action_steps

    @property
    def label(self) -> str:
        """How the row's execution is shown: ``any`` at d = 0, ``inpaint (noised)`` for noised inpainting."""
        if self.delay_steps == 0:
            return "any"
        if self.execution == "inpaint" and self.inpainting not in (None, "clean"):
            return f"inpaint ({self.inpainting})"
        return self.execution

    @property
    def key(self) -> str:
        return (f"{self.task}|{self.sampler}|d={self.delay_steps}|{self.label}"
                + (f"|k={self.replan_every}" if self.replan_every else ""))


def sweep_rows(tasks: Sequence[str], samplers: Sequence[str], delays: Sequence[int], executions: Sequence[str],
               checkpoints: Mapping[str, str | None] | None = None, inpainting: str | None = None,
               replan_every: Sequence[int] = (0,)) -> list[SweepRow]:
    """The grid, task-major then sampler (a worker switches policy or sampler rarely); d = 0 once."""
    bad = [mode for mode in executions if mode not in MODES]
    if bad:
        raise ValueError(f"unknown execution modes {bad}; expected some of {list(MODES)}")
    if not tasks or not samplers or not delays or not executions:
        raise ValueError("a sweep needs at least one task, sampler, delay and execution mode")
    checkpoints = dict(checkpoints or {})
    rows: list[SweepRow] = []
    for task in tasks:
        checkpoint = checkpoints.get(task)
        for sampler in samplers:
            for replan in replan_every:
                for delay in sorted({int(d) for d in delays}):
                    for mode in (executions if delay else executions[:1]):
                        rows.append(SweepRow(task, None if checkpoint is None else str(checkpoint), sampler, delay,
                                             mode, inpainting if mode == "inpaint" else None, int(replan)))
    return list(dict.fromkeys(rows))


def _check_rows(rows: Sequence[SweepRow], settings: WorkerSettings) -> dict[tuple[str | None, str], Any]:
    """Load each (checkpoint, task) once here, so a bad checkpoint, sampler, task or delay fails before any episode."""
    from paradigms_policy.policy import load_policy

    policies: dict[tuple[str | None, str], Any] = {}
    for row in rows:
        key = (row.checkpoint, row.task)
        if key not in policies:
            policy = load_policy(row.checkpoint, device=settings.device, trust_checkpoint=settings.trust_checkpoint)
            env = make_task_env(row.task)
            try:
                check_policy_fits_task(policy.shape_meta, env)
            finally:
                env.close()
            policies[key] = policy
        policy = policies[key]
        policy.set_sampler(row.sampler)
        ExecutionModel(ExecutionSettings(mode=row.execution, replan_every=row.replan_every), ChunkGeometry.of(policy),
                       dt=1.0).check_delay(row.delay_steps)
    return policies


def load_sweep(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.exists() else {"rows": {}}


def run_sweep(rows: Sequence[SweepRow], episodes: int, out_dir: str | Path, *, start_seed: int = DEFAULT_START_SEED,
              settings: WorkerSettings = WorkerSettings(), workers: int = 1, ray_address: str | None = None,
              backend: str = "auto", max_retries: int = 3, max_steps: int | None = None,
              deadline_ms: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every row not yet in ``out_dir/sweep.json`` (same seeds) and return the whole sweep."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = episode_seeds(episodes, start_seed)
    report = load_sweep(out)
    run = {"seeds": seeds, "max_steps": max_steps, "deadline_ms": deadline_ms}
    stored = {key: report.get(key) for key in run}
    if report["rows"] and stored != run:
        changed = [key for key in run if stored[key] != run[key]]
        raise ValueError(f"{out / SWEEP_FILE} holds rows run with other {changed} (episodes, start_seed, max_steps, "
                         "deadline_ms must match to add rows); use another out_dir")
    report.update(episodes=episodes, **run)
    todo = [row for row in rows if row.key not in report["rows"]]
    kind = resolve_backend(backend, workers, ray_address)
    policies = _check_rows(todo, settings) if todo else {}
    jobs_of = {row: [EpisodeJob(row.task, row.checkpoint, row.sampler, seed, row.delay_steps, row.execution,
                                row.inpainting, row.replan_every, max_steps, deadline_ms) for seed in seeds]
               for row in todo}
    row_of = {job: row for row, jobs in jobs_of.items() for job in jobs}
    done: dict[SweepRow, dict[EpisodeJob, dict]] = {row: {} for row in todo}
    started = time.perf_counter()

    def on_result(job: EpisodeJob, result: dict, worker: int) -> None:
        row = row_of[job]
        done[row][job] = result
        if len(done[row]) == len(jobs_of[row]):
            summary = summarize([EpisodeResult(**done[row][j]) for j in jobs_of[row]])
            report["rows"][row.key] = {"task": row.task, "checkpoint": row.checkpoint, "sampler": row.sampler,
                                       "delay_steps": row.delay_steps, "execution": row.label,
                                       "replan_every": row.replan_every, **summary}
            (out / SWEEP_FILE).write_text(json.dumps(report, indent=1))

    if todo:
        outcome = run_jobs([job for row in todo for job in jobs_of[row]], settings, workers=workers,
                           ray_address=ray_address, backend=kind, max_retries=max_retries, progress=progress,
                           on_result=on_result, preloaded=policies if kind == "inline" else None)
        report["last_run"] = {"backend": outcome.backend, "workers": workers, "rows": len(todo),
                              "episodes": len(row_of), "retried_episodes": len(outcome.retried),
                              "wall_time_s": time.perf_counter() - started}
    (out / SWEEP_FILE).write_text(json.dumps(report, indent=1))
    (out / "sweep.md").write_text(format_sweep_table(report, rows) + "\n")
    return report


def format_sweep_table(report: Mapping[str, Any], rows: Sequence[SweepRow] | None = None) -> str:
    """Markdown table of the sweep (``rows`` given: those rows in that order; else every stored row)."""
    stored = report["rows"]
    entries = [stored[row.key] for row in rows if row.key in stored] if rows is not None else list(stored.values())
    header = ("| task | sampler | delay d | execution | re-plan every | success | 95% CI | rounds p50 | p50 ms | "
              "dropped | idle | boundary jump p99 | inside jump p99 |")
    lines = [header, "|" + "---|" * 13]
    for r in entries:
        lo, hi = r["success_ci95"]
        replan = r.get("replan_every") or "n_action_steps"
        lines.append(f"| {r['task']} | `{r['sampler']}` | {r['delay_steps']} | {r['execution']} | {replan} | "
                     f"{r['successes']}/{r['episodes']} ({r['success_rate']:.0%}) | [{lo:.2f}, {hi:.2f}] | "
                     f"{r['rounds_median']:.1f} | {r['latency_ms_p50']:.1f} | {r['dropped_actions']} | "
                     f"{r['idle_steps']} | {r['jump_boundary_p99']:.3f} | {r['jump_inside_p99']:.3f} |")
    return "\n".join(lines)


def plot_sweep(report: Mapping[str, Any], path: str | Path) -> Path:
    """Success rate against delay, one panel per (task, sampler, re-plan period), one line per execution mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(report["rows"].values())
    panel_of = lambda r: (r["task"], r["sampler"], r.get("replan_every") or 0)  # noqa: E731
    panels = sorted({panel_of(r) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), sharey=True, squeeze=False)
    for ax, (task, sampler, replan) in zip(axes[0], panels):
        mine = [r for r in rows if panel_of(r) == (task, sampler, replan)]
        base = [r for r in mine if r["delay_steps"] == 0]
        labels = sorted({r["execution"] for r in mine if r["delay_steps"]})
        for i, label in enumerate(labels):
            offset = 0.12 * (i - (len(labels) - 1) / 2)
            points = sorted(base + [r for r in mine if r["execution"] == label], key=lambda r: r["delay_steps"])
            ax.errorbar([r["delay_steps"] + offset for r in points], [r["success_rate"] for r in points],
                        yerr=[[r["success_rate"] - r["success_ci95"][0] for r in points],
                              [r["success_ci95"][1] - r["success_rate"] for r in points]],
                        marker="o", capsize=3, label=label)
        if base:
            ax.axhspan(*base[0]["success_ci95"], color="grey", alpha=0.15, label="d = 0, 95% CI")
        ax.set_title(f"{task}: {sampler}" + (f", re-plan every {replan}" if replan else ""))
        ax.set_xlabel("inference delay d (control periods)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"success rate ({report.get('episodes')} seeds)")
    axes[0][-1].legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
