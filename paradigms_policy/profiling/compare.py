"""Several profile runs of one device side by side: CUDA graphs against eager, per model.

Reads the ``profile.json`` of each run (named ``<model>_<executor label>``), the step log of
the script that made them and a description of the machine, and writes one JSON holding all
of it plus a markdown table and a latency plot. Used by ``benchmarks/gpu_check.sh``.

    python -m paradigms_policy.profiling.compare --runs DIR --steps steps.tsv --env env.json --out DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .policies import describe_checkpoint

__all__ = ["collect", "compare", "format_markdown", "read_steps", "write_plot", "main"]

EXECUTOR_LABELS = ("graph", "eager")


def read_steps(path: Path) -> list[dict[str, Any]]:
    """Step log lines ``name<TAB>status<TAB>rc<TAB>elapsed_s`` -> dicts (missing file: no steps)."""
    steps = []
    if not path.is_file():
        return steps
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        name, status, rc, elapsed = line.split("\t")
        steps.append({"name": name, "status": status, "rc": int(rc), "elapsed_s": float(elapsed)})
    return steps


def collect(runs_dir: Path, order: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """{run name: profile report} for every ``<runs_dir>/<name>/profile.json`` present, runs named
    in ``order`` first (in that order), then the rest by name."""
    paths = {path.parent.name: path for path in runs_dir.glob("*/profile.json")}
    names = [n for n in order if n in paths] + sorted(n for n in paths if n not in order)
    return {name: json.loads(paths[name].read_text()) for name in names}


def compare(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """{model: rows}, one row per sampler: rounds, latency and speed-ups of each executor label,
    and ``graph_speedup_p50`` (eager p50 / graph p50) where both ran."""
    models: dict[str, dict[str, Mapping[str, Any]]] = {}
    for run, report in reports.items():
        model, _, label = run.rpartition("_")
        if label not in EXECUTOR_LABELS or not model:
            raise ValueError(f"run {run!r} is not named <model>_<{'|'.join(EXECUTOR_LABELS)}>")
        models.setdefault(model, {})[label] = report
    table: dict[str, list[dict[str, Any]]] = {}
    for model, by_label in models.items():
        names: list[str] = []
        for report in by_label.values():
            names += [n for n in report["samplers"] if n not in names]
        rows = []
        for name in names:
            row: dict[str, Any] = {"sampler": name}
            for label, report in by_label.items():
                s = report["samplers"].get(name)
                if s is None:
                    continue
                row[label] = {
                    "rounds_median": s["rounds"]["median"],
                    "latency_ms_p50": s["latency_ms"]["p50"],
                    "latency_ms_p99": s["latency_ms"]["p99"],
                    "speedup_p50": s.get("speedup_p50", {}),
                    "error_normalized_max_abs": s["error_normalized"]["max_abs"],
                    "created_while_timed": s.get("allocations", {}).get("created_while_timed"),
                }
            if "graph" in row and "eager" in row and row["graph"]["latency_ms_p50"] > 0:
                row["graph_speedup_p50"] = row["eager"]["latency_ms_p50"] / row["graph"]["latency_ms_p50"]
            rows.append(row)
        table[model] = rows
    return table


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_markdown(summary: Mapping[str, Any]) -> str:
    """The comparison as markdown: environment, steps, one table per model."""
    env = summary.get("environment", {})
    lines = ["# GPU check", ""]
    if summary.get("dry_run"):
        lines += ["**DRY RUN on CPU with tiny settings: checks the script, not a device. Both columns ran "
                  "eager on the CPU; no figure here is a GPU figure.**", ""]
    lines.append(f"- when: {summary.get('finished')}")
    for key in ("device", "torch", "cuda", "python", "numpy"):
        if key in env:
            lines.append(f"- {key}: {env[key]}")
    steps = summary.get("steps", [])
    if steps:
        lines.append("- steps: " + ", ".join(f"{s['name']} {s['status']} ({s['elapsed_s']:.0f} s)" for s in steps))
    for model, rows in summary.get("comparison", {}).items():
        run = next((r for n, r in summary["runs"].items() if n.rpartition("_")[0] == model), None)
        lines += ["", f"## {model}", ""]
        if run is not None:
            lines.append(f"{describe_checkpoint(run['checkpoint'])}; {run['cycles']} cycles; {run['observations']}")
            lines.append("")
        lines.append("| sampler | rounds | graph p50/p99 ms | eager p50/p99 ms | graph vs eager (p50) "
                     "| vs DDPM-100 / DDIM-16 (graph, p50) | err max (norm) | created while timed (slots/graphs) |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for row in rows:
            g, e = row.get("graph"), row.get("eager")
            first = g or e
            speed = first["speedup_p50"] if first else {}
            created = first.get("created_while_timed") if first else None
            lines.append(
                f"| `{row['sampler']}` | {_fmt(first['rounds_median'] if first else None, '.0f')} "
                f"| {_fmt(g and g['latency_ms_p50'], '.2f')}/{_fmt(g and g['latency_ms_p99'], '.2f')} "
                f"| {_fmt(e and e['latency_ms_p50'], '.2f')}/{_fmt(e and e['latency_ms_p99'], '.2f')} "
                f"| {_times(row.get('graph_speedup_p50'))} "
                f"| {_times(speed.get('vs_ddpm'))} / {_times(speed.get('vs_ddim'))} "
                f"| {_fmt(first['error_normalized_max_abs'] if first else None, '.2e')} "
                f"| {'-' if not created else str(created['slots']) + '/' + str(created['graphs'])} |"
            )
    return "\n".join(lines) + "\n"


def write_plot(summary: Mapping[str, Any], path: Path) -> None:
    """Latency p50 per sampler, graph and eager side by side, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comparison = summary.get("comparison", {})
    if not comparison:
        return
    fig, axes = plt.subplots(1, len(comparison), figsize=(7 * len(comparison), 4.5), squeeze=False)
    for ax, (model, rows) in zip(axes[0], comparison.items()):
        x = np.arange(len(rows))
        for offset, label in ((-0.2, "graph"), (0.2, "eager")):
            values = [row[label]["latency_ms_p50"] if label in row else np.nan for row in rows]
            ax.bar(x + offset, values, 0.4, label=label)
        ax.set_xticks(x, [row["sampler"] for row in rows], rotation=30, ha="right")
        ax.set_ylabel("latency p50 per chunk [ms]")
        ax.set_title(model)
        ax.legend()
    env = summary.get("environment", {})
    title = f"{env.get('device', '?')}, torch {env.get('torch', '?')}"
    fig.suptitle(("DRY RUN (CPU, eager both): " if summary.get("dry_run") else "") + title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder with one <model>_<graph|eager>/ per run")
    parser.add_argument("--steps", type=Path, help="step log (name, status, rc, elapsed_s; tab-separated)")
    parser.add_argument("--env", type=Path, help="JSON describing the machine")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    steps = read_steps(args.steps) if args.steps else []
    reports = collect(args.runs, [s["name"] for s in steps]) if args.runs.is_dir() else {}
    env = json.loads(args.env.read_text()) if args.env and args.env.is_file() else {}
    summary = {
        "dry_run": bool(args.dry_run),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": env,
        "steps": steps,
        "comparison": compare(reports),
        "runs": reports,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    markdown = format_markdown(summary)
    (args.out / "gpu_check.md").write_text(markdown)
    write_plot(summary, args.out / "gpu_check.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
