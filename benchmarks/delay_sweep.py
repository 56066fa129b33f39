"""Task success against inference delay, for each way of placing a late chunk (naive / aligned / inpaint).

The robot keeps executing the previous chunk for ``d`` control periods while the next one is
solved (simulated, deterministic: the same on any machine). Every (sampler, d, mode) runs the same
episode seeds and chunk noise seeds. d = 0 is run once: there the three modes are the same loop
(tests/test_rollout.py). Since the sweep command exists this script is a shortcut to it
(``paradigms_policy.sim.sweep``, the same as ``paradigms-sweep``): one queue of episodes over Ray
workers, ``sweep.json`` (resumable: finished rows are kept), ``sweep.md`` and ``sweep.png``.
Results written before the sweep command existed are ``delay_sweep.json`` in the same folder.

    .venv/bin/python benchmarks/delay_sweep.py --episodes 50 --workers 2 \
        --out benchmarks/results/delay_sweep
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from paradigms_policy.execution import MODES  # noqa: E402
from paradigms_policy.sim.episodes import WorkerSettings  # noqa: E402
from paradigms_policy.sim.sweep import format_sweep_table, plot_sweep, run_sweep, sweep_rows  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped Lift checkpoint")
    parser.add_argument("--task", default="lift")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--samplers", nargs="+", default=["ddpm_sequential", "anderson_warm"])
    parser.add_argument("--delays", nargs="+", type=int, default=[0, 2, 4, 8])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ray-address", default=None, help="join a running Ray cluster (auto: the local one)")
    parser.add_argument("--num-threads", type=int, default=1)
    parser.add_argument("--inpainting", default="clean", choices=("clean", "noised"),
                        help="how the inpaint rows give known actions to the solver (Policy.inpainting)")
    parser.add_argument("--replan-every", type=int, default=0,
                        help="periods between the observations of consecutive chunks; 0: n_action_steps (8)")
    parser.add_argument("--out", default="runs/delay_sweep")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    rows = sweep_rows([args.task], args.samplers, args.delays, args.modes, checkpoints={args.task: args.checkpoint},
                      inpainting=args.inpainting, replan_every=[args.replan_every])
    report = run_sweep(rows, args.episodes, args.out, settings=WorkerSettings(num_threads=args.num_threads),
                       workers=args.workers, ray_address=args.ray_address)
    print(format_sweep_table(report, rows))
    print(f"wrote {plot_sweep(report, Path(args.out) / 'sweep.png')}")
    return report


if __name__ == "__main__":
    run(parse_args())
