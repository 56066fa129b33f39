"""The image policy over ROS 2: latency from camera image to action chunk, at Lift's real 20 Hz.

Runs ``paradigms-ros-demo --task lift_image`` (sim_robot_node rendering the agentview camera and publishing
it as sensor_msgs/Image rgb8 84x84, the policy node running the image checkpoint from it; two processes over
loopback DDS, wall-clock time) for each sampler, and reports per chunk:

- image -> chunk: from the node's receipt of the newest camera image a chunk was computed from to the
  chunk's publication (node clock; the image's receive stamp is in the chunk's ``policy/cycle_stats``);
- published image -> chunk: the same from the image's publication (its receipt by the benchmark process,
  one loopback hop after the robot published it);
- tick -> chunk (the node's latency), sampling time, and closed-loop success with a Wilson 95% interval.

    .venv/bin/python benchmarks/ros_image_latency.py --episodes 10 --samplers ddim_sequential anderson_warm \
        --out benchmarks/results/ros_image_latency
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
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "lift_image.pt"))
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--samplers", nargs="+", default=["ddim_sequential", "anderson_warm"])
    parser.add_argument("--rate-hz", type=float, default=20.0)
    parser.add_argument("--budget-ms", type=float, default=None, help="default: config/policy.yaml's")
    parser.add_argument("--seed", type=int, default=100000)
    parser.add_argument("--out", default="runs/ros_image_latency")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ros_image_latency.json"
    report = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    report.update(checkpoint=str(args.checkpoint), rate_hz=args.rate_hz, episodes=args.episodes, seed=args.seed)
    for sampler in args.samplers:
        if sampler in report["rows"]:
            continue
        demo_args = ["--task", "lift_image", "--checkpoint", str(args.checkpoint), "--episodes", str(args.episodes),
                     "--sampler", sampler, "--rate-hz", str(args.rate_hz), "--seed", str(args.seed)]
        summary = run_demo_row(sampler, demo_args, out, args.budget_ms)
        if summary is None:
            continue
        summary.update(sampler=sampler)
        report["rows"][sampler] = summary
        path.write_text(json.dumps(report, indent=1))
    print(format_table(report))
    return report


def format_table(report: dict) -> str:
    nan = float("nan")
    lines = ["| sampler | chunks | image -> chunk p50 / p99 ms | published image -> chunk p50 / p99 ms | "
             "tick -> chunk p50 / p99 ms | sampling p50 ms | over budget | success | 95% CI |",
             "|" + "---|" * 9]
    for r in report["rows"].values():
        lo, hi = r["success_ci95"]
        lines.append(
            f"| `{r['sampler']}` | {r.get('chunks', 0)} | {r.get('image_to_chunk_p50_ms', nan):.0f} / "
            f"{r.get('image_to_chunk_p99_ms', nan):.0f} | {r.get('image_published_to_chunk_p50_ms', nan):.0f} / "
            f"{r.get('image_published_to_chunk_p99_ms', nan):.0f} | {r.get('latency_p50_ms', nan):.0f} / "
            f"{r.get('latency_p99_ms', nan):.0f} | {r.get('sampling_p50_ms', nan):.0f} | "
            f"{(r.get('budget_miss_fraction') or 0):.1%} | {r['successes']}/{r['episodes']} | [{lo:.2f}, {hi:.2f}] |")
    return "\n".join(lines)


if __name__ == "__main__":
    run(parse_args())
