"""Task success against inference delay, for each way of placing a late chunk (naive / aligned / inpaint).

The robot keeps executing the previous chunk for ``d`` control periods while the next one is
solved (simulated, deterministic: the same on any machine). Every (sampler, d, mode) runs the same
episode seeds and chunk noise seeds. d = 0 is run once: there the three modes are the same loop
(tests/test_rollout.py). Writes ``delay_sweep.json`` (resumable: finished rows are kept), prints a
table with Wilson 95% intervals and the chunk-boundary smoothness, and plots success against delay.

    .venv/bin/python benchmarks/delay_sweep.py --episodes 50 --workers 2 \
        --out benchmarks/results/delay_sweep
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from paradigms_policy.execution import MODES  # noqa: E402
from paradigms_policy.sim.rollout import evaluate  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped Lift checkpoint")
    parser.add_argument("--task", default="lift")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--samplers", nargs="+", default=["ddpm_sequential", "anderson_warm"])
    parser.add_argument("--delays", nargs="+", type=int, default=[0, 2, 4, 8])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--inpainting", default="clean", choices=("clean", "noised"),
                        help="how the inpaint rows give known actions to the solver (Policy.inpainting)")
    parser.add_argument("--replan-every", type=int, default=0,
                        help="periods between the observations of consecutive chunks; 0: n_action_steps (8)")
    parser.add_argument("--out", default="runs/delay_sweep")
    return parser.parse_args(argv)


def row_key(sampler: str, delay: int, mode: str, inpainting: str = "clean", replan_every: int = 0) -> str:
    label = mode if delay else "any"
    return (f"{sampler}|d={delay}|{label}" + (f"-{inpainting}" if mode == "inpaint" and inpainting != "clean" else "")
            + (f"|k={replan_every}" if replan_every else ""))


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "delay_sweep.json"
    report = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    report.update(task=args.task, episodes=args.episodes, checkpoint=args.checkpoint or "checkpoints/lift_lowdim.pt")
    for delay in args.delays:
        for mode in (args.modes if delay else ["aligned"]):
            todo = [s for s in args.samplers
                    if row_key(s, delay, mode, args.inpainting, args.replan_every) not in report["rows"]]
            if not todo:
                continue
            started = time.perf_counter()
            result = evaluate(args.checkpoint, args.task, todo, args.episodes, workers=args.workers,
                              num_threads=args.num_threads, delay_steps=delay, execution=mode,
                              inpainting=args.inpainting, replan_every=args.replan_every, progress=None)
            for sampler in todo:
                summary = result["samplers"][sampler]
                summary.pop("per_episode", None)
                label = mode if delay else "any"
                if mode == "inpaint" and args.inpainting != "clean":
                    label = f"inpaint ({args.inpainting})"
                summary.update(sampler=sampler, delay_steps=delay, execution=label,
                               replan_every=args.replan_every or 8)
                report["rows"][row_key(sampler, delay, mode, args.inpainting, args.replan_every)] = summary
            print(f"d={delay} {mode}: {', '.join(todo)} in {time.perf_counter() - started:.0f} s", flush=True)
            path.write_text(json.dumps(report, indent=1))
    print(format_table(report))
    plot(report, out / "delay_sweep.png")
    return report


def format_table(report: dict) -> str:
    header = (f"| sampler | delay d | execution | re-plan every | success | 95% CI | dropped | idle | "
              f"boundary jump p99 | inside jump p99 |")
    lines = [header, "|" + "---|" * 10]
    rows = sorted(report["rows"].values(),
                  key=lambda r: (r["sampler"], r["delay_steps"], r["execution"], r.get("replan_every", 8)))
    for r in rows:
        lo, hi = r["success_ci95"]
        lines.append(f"| `{r['sampler']}` | {r['delay_steps']} | {r['execution']} | {r.get('replan_every', 8)} | "
                     f"{r['successes']}/{r['episodes']} "
                     f"({r['success_rate']:.0%}) | [{lo:.2f}, {hi:.2f}] | {r['dropped_actions']} | {r['idle_steps']} | "
                     f"{r['jump_boundary_p99']:.3f} | {r['jump_inside_p99']:.3f} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(report["rows"].values())
    samplers = sorted({r["sampler"] for r in rows})
    fig, axes = plt.subplots(1, len(samplers), figsize=(5.5 * len(samplers), 4), sharey=True, squeeze=False)
    for ax, sampler in zip(axes[0], samplers):
        mine = [r for r in rows if r["sampler"] == sampler]
        base = [r for r in mine if r["delay_steps"] == 0]
        for offset, mode in zip((-0.12, 0.0, 0.12), MODES):
            points = sorted(base + [r for r in mine if r["execution"] == mode], key=lambda r: r["delay_steps"])
            if len(points) <= len(base):
                continue
            x = [r["delay_steps"] + offset for r in points]
            y = [r["success_rate"] for r in points]
            err = [[r["success_rate"] - r["success_ci95"][0] for r in points],
                   [r["success_ci95"][1] - r["success_rate"] for r in points]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=mode)
        if base:
            ax.axhspan(*base[0]["success_ci95"], color="grey", alpha=0.15, label="d = 0, 95% CI")
        ax.set_title(f"{report['task']}: {sampler}")
        ax.set_xlabel("inference delay d (control periods at 20 Hz)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"success rate ({report['episodes']} seeds)")
    axes[0][-1].legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    run(parse_args())
