"""The profile's outputs: ``profile.json``, a text table and ``profile.png``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .policies import describe_checkpoint

__all__ = ["format_table", "write_plot", "write_report"]


def format_table(report: Mapping[str, Any]) -> str:
    rows = [
        ("sampler", "tol|abs", "win", "rounds med/p90/max", "nfe", "latency ms p50/p99/max", "speedup p50",
         "err max/rms (action)", "err max (norm)", "conv"),
    ]
    for name, s in report["samplers"].items():
        tol = "-" if s.get("tolerance") is None else f"{s['tolerance']:g}"
        if s.get("abs_tolerance") is not None:
            tol += f"|{s['abs_tolerance']:g}"
        win = "-" if s.get("window") is None else str(s["window"])
        r, l, e = s["rounds"], s["latency_ms"], s["error"]
        rows.append(
            (
                name,
                tol,
                win,
                f"{r['median']:.0f}/{r['p90']:.0f}/{r['max']:.0f}",
                f"{s['nfe']['median']:.0f}",
                f"{l['p50']:.1f}/{l['p99']:.1f}/{l['max']:.1f}",
                ", ".join(f"{v:.2f}x {k[3:]}" for k, v in s.get("speedup_p50", {}).items()) or "-",
                f"{e['max_abs']:.2e}/{e['rms']:.2e}",
                f"{s['error_normalized']['max_abs']:.2e}",
                f"{100 * s['converged_fraction']:.0f}%",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    deadline_rows = [(n, s["deadline"]) for n, s in report["samplers"].items() if "deadline" in s]
    if deadline_rows:
        lines.append("")
        lines.append(f"deadline adherence (budget {deadline_rows[0][1]['budget_ms']:.1f} ms):")
        lines.append("  sampler           calls  late  late>1round  stopped_early  latency p50/p99/max ms  err max (action)")
        for n, d in deadline_rows:
            l = d["latency_ms"]
            lines.append(
                f"  {n:<16}  {d['calls']:>5}  {d['late']:>4}  {d['late_beyond_one_round']:>11}  {d['deadline_hit']:>13}"
                f"  {l['p50']:.1f}/{l['p99']:.1f}/{l['max']:.1f}  {d['error']['max_abs']:.2e}"
            )
    return "\n".join(lines)


def write_plot(report: Mapping[str, Any], path: Path) -> None:
    """Latency and rounds per sampler, and one chunk's residual against round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["samplers"])
    samplers = report["samplers"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    x = np.arange(len(names))
    p50 = [samplers[n]["latency_ms"]["p50"] for n in names]
    p99 = [samplers[n]["latency_ms"]["p99"] for n in names]
    axes[0].bar(x - 0.2, p50, 0.4, label="p50")
    axes[0].bar(x + 0.2, p99, 0.4, label="p99")
    axes[0].set_ylabel("latency per chunk [ms]")
    axes[0].legend()
    axes[1].bar(x, [samplers[n]["rounds"]["median"] for n in names], 0.6, label="median")
    axes[1].scatter(x, [samplers[n]["rounds"]["max"] for n in names], color="k", marker="_", s=200, label="max")
    axes[1].set_ylabel("sequential rounds per chunk")
    axes[1].legend()
    for ax, title in ((axes[0], "latency"), (axes[1], "rounds")):
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(title)
    ax = axes[2]
    plotted = False
    for n in names:
        hist = samplers[n].get("residual_history", {})
        values = [v for v in hist.get("values", []) if v is not None and np.isfinite(v)]
        if values and not n.endswith("_sequential"):
            ax.semilogy(np.arange(1, len(values) + 1), np.maximum(values, 1e-12), marker=".", label=n)
            plotted = True
    ax.set_xlabel("round")
    ax.set_ylabel("residual")
    cycle = next((s["residual_history"]["cycle"] for s in samplers.values() if "residual_history" in s), None)
    ax.set_title(f"residual vs round (chunk {cycle})")
    if plotted:
        ax.legend()
    fig.suptitle(f"{describe_checkpoint(report['checkpoint'])} on {report['device']}, {report['executor']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: Mapping[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``profile.json`` and ``profile.png`` into ``out_dir``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / "profile.json", out_dir / "profile.png"
    json_path.write_text(json.dumps(report, indent=2))
    write_plot(report, png_path)
    return json_path, png_path
