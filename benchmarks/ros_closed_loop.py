"""Closed-loop success over ROS 2 at Lift's real 20 Hz, per sampler and execution mode.

Runs ``paradigms-ros-demo`` (policy node + simulated Lift robot as two processes over loopback DDS,
wall-clock time, nothing slowed down) for each sampler, on the same episode seeds, and collects
success with a Wilson 95% interval, the node's latency, how old each chunk's observation was when
it arrived, and what the robot did (idle steps, late points dropped).

    .venv/bin/python benchmarks/ros_closed_loop.py --episodes 20 \
        --samplers anderson_warm ddim_sequential --out benchmarks/results/ros_closed_loop
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ros_demo_runs import run_demo_row  # noqa: E402  (benchmarks/, next to this script)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--samplers", nargs="+", default=["anderson_warm", "ddim_sequential"])
    parser.add_argument("--execution", nargs="+", default=["inpaint"], choices=("naive", "aligned", "inpaint"))
    parser.add_argument("--rate-hz", type=float, default=20.0)
    parser.add_argument("--budget-ms", type=float, default=None, help="default: config/policy.yaml's")
    parser.add_argument("--seed", type=int, default=100000)
    parser.add_argument("--out", default="runs/ros_closed_loop")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ros_closed_loop.json"
    report = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    report.update(rate_hz=args.rate_hz, episodes=args.episodes, seed=args.seed)
    for sampler in args.samplers:
        for execution in args.execution:
            key = f"{sampler}|{execution}"
            if key in report["rows"]:
                continue
            demo_args = ["--episodes", str(args.episodes), "--sampler", sampler, "--execution", execution,
                         "--rate-hz", str(args.rate_hz), "--seed", str(args.seed)]
            summary = run_demo_row(f"{sampler}_{execution}", demo_args, out, args.budget_ms)
            if summary is None:
                continue
            summary.update(sampler=sampler, execution=execution)
            report["rows"][key] = summary
            path.write_text(json.dumps(report, indent=1))
    print(format_table(report))
    return report


def format_table(report: dict) -> str:
    lines = ["| sampler | execution | success | 95% CI | chunks | sampling p50 ms | tick->chunk p50 / p99 ms | "
             "over budget | obs->arrival p50 / p99 ms | past on arrival (mean) | inpainted (mean) | robot idle steps |",
             "|" + "---|" * 12]
    for r in report["rows"].values():
        lo, hi = r["success_ci95"]
        lines.append(
            f"| `{r['sampler']}` | {r['execution']} | {r['successes']}/{r['episodes']} | [{lo:.2f}, {hi:.2f}] | "
            f"{r.get('chunks', 0)} | {r.get('sampling_p50_ms', float('nan')):.0f} | "
            f"{r.get('latency_p50_ms', float('nan')):.0f} / {r.get('latency_p99_ms', float('nan')):.0f} | "
            f"{(r.get('budget_miss_fraction') or 0):.1%} | {r.get('obs_to_arrival_p50_ms', float('nan')):.0f} / "
            f"{r.get('obs_to_arrival_p99_ms', float('nan')):.0f} | {r.get('dropped_on_arrival_mean', float('nan')):.1f} | "
            f"{r.get('known_actions_mean', float('nan')):.1f} | {r['idle_steps']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    run(parse_args())
