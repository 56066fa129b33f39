"""Success rate of the scripted PushT expert (gym-pusht's 95% coverage, 300 steps) over seeded episodes.

    python benchmarks/pusht_expert.py --episodes 50 --start-seed 200 --out benchmarks/results/pusht_expert

Episode i uses env seed start_seed + i and expert seed start_seed + i + 1000. Seeds 0-19 were used
while writing the expert; report figures on others. Prints a summary and writes ``out/pusht_expert.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--start-seed", type=int, default=200)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--out", default="benchmarks/results/pusht_expert")
    args = parser.parse_args()

    from tqdm import tqdm

    from paradigms_policy.sim.pusht import make_pusht_env
    from paradigms_policy.sim.pusht_expert import PushTExpert, run_pusht_expert
    from paradigms_policy.sim.rollout import wilson_interval

    env = make_pusht_env()
    start = time.perf_counter()
    results = [run_pusht_expert(env, PushTExpert(seed + 1000), seed=seed, max_steps=args.max_steps)
               for seed in tqdm(range(args.start_seed, args.start_seed + args.episodes), desc="pusht expert", unit="ep")]
    env.close()
    successes = sum(r["success"] for r in results)
    lo, hi = wilson_interval(successes, len(results))
    lengths = np.array([r["length"] for r in results if r["success"]])
    report = {
        "episodes": len(results), "start_seed": args.start_seed, "max_steps": args.max_steps,
        "successes": successes, "success_rate": successes / len(results), "success_ci95": [lo, hi],
        "steps_to_success_mean": float(lengths.mean()) if len(lengths) else float("nan"),
        "max_coverage_mean": float(np.mean([r["max_coverage"] for r in results])),
        "seconds": time.perf_counter() - start, "per_episode": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pusht_expert.json").write_text(json.dumps(report, indent=2))
    print(f"PushT expert: {successes}/{len(results)} = {report['success_rate']:.0%} (95% CI [{lo:.2f}, {hi:.2f}]), "
          f"{report['steps_to_success_mean']:.0f} steps to success on average, "
          f"mean max coverage {report['max_coverage_mean']:.3f}; wrote {out / 'pusht_expert.json'}")


if __name__ == "__main__":
    main()
