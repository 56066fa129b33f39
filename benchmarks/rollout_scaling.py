"""Rollout throughput: the old process pool against Ray with 1 and 2 local workers, on the same seeds.

Every setting runs the same Lift episodes (shipped checkpoint, ``ddim_sequential``, one torch thread
per worker, ``max_steps`` capped) through ``evaluate``; the old pool is the pre-Ray
``paradigms_policy/sim/rollout.py`` taken from git (commit ``OLD_COMMIT``) into a temporary module.
Reports episodes per minute end to end (start-up included: spawning / Ray start, loading the
policy and env in every worker) for each episode count, the marginal rate once running (from the
difference between two episode counts: (N2 - N1) / (wall2 - wall1)) and the start-up it implies,
Ray's own start-up (``ray.init`` and the workers answering), and checks that every setting gave the
same per-episode results as the first on the same seeds. Settings are interleaved over
``--repeats`` rounds; the table shows medians.

    nice -n 15 .venv/bin/python benchmarks/rollout_scaling.py --episodes 10 30 --max-steps 100 \
        --out benchmarks/results/rollout_scaling
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

OLD_COMMIT = "2deefaf"  # the last main commit with the ProcessPoolExecutor in sim/rollout.py
TIMING = {"latency_ms_p50", "latency_ms_p90", "seconds_per_episode"}


def load_old_rollout(commit: str = OLD_COMMIT):
    """The pre-Ray rollout module, importable by its spawned pool workers (they inherit sys.path)."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:paradigms_policy/sim/rollout.py"],
                            capture_output=True, text=True, check=True).stdout
    if "ProcessPoolExecutor" not in source:
        raise RuntimeError(f"{commit}:paradigms_policy/sim/rollout.py has no process pool; pass --old-commit")
    folder = Path(tempfile.mkdtemp(prefix="old_rollout_"))
    (folder / "old_rollout_pool.py").write_text(source)
    sys.path.insert(0, str(folder))
    return importlib.import_module("old_rollout_pool")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--max-steps", type=int, default=80)
    parser.add_argument("--sampler", default="ddim_sequential")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument("--out", default="runs/rollout_scaling")
    return parser.parse_args(argv)


def settings(old) -> dict:
    from paradigms_policy.sim.rollout import evaluate

    return {
        "old pool, 2 processes": lambda **kw: old.evaluate(workers=2, **kw),
        "inline, 1 process (no Ray)": lambda **kw: evaluate(workers=1, progress_bar=False, **kw),
        "Ray, 1 worker": lambda **kw: evaluate(workers=1, backend="ray", progress_bar=False, **kw),
        "Ray, 2 workers": lambda **kw: evaluate(workers=2, progress_bar=False, **kw),
    }


def deterministic(report: dict) -> dict:
    return {name: {k: v for k, v in s.items() if k not in TIMING} for name, s in report["samplers"].items()}


def run(args: argparse.Namespace) -> dict:
    old = load_old_rollout(args.old_commit)
    runs: dict[str, dict[int, list[dict]]] = {}
    reference: dict[int, dict] = {}
    for repeat in range(args.repeats):
        for episodes in args.episodes:
            common = dict(checkpoint=None, task="lift", samplers=[args.sampler], episodes=episodes,
                          max_steps=args.max_steps, num_threads=1, progress=None)
            for name, call in settings(old).items():
                start = time.perf_counter()
                report = call(**common)
                wall = time.perf_counter() - start
                same = deterministic(report)
                reference.setdefault(episodes, same)
                entry = {"wall_s": wall, "episodes_per_min": 60 * episodes / wall,
                         "ray_init_s": report.get("ray_init_s"), "workers_ready_s": report.get("workers_ready_s"),
                         "same_results": same == reference[episodes],
                         "successes": report["samplers"][args.sampler]["successes"]}
                runs.setdefault(name, {}).setdefault(episodes, []).append(entry)
                print(f"[{repeat + 1}/{args.repeats}] {episodes} episodes, {name}: {wall:.1f} s, "
                      f"{entry['episodes_per_min']:.1f} ep/min, ray.init {entry['ray_init_s']}, "
                      f"same results {entry['same_results']}", flush=True)
    rows = {}
    for name, by_count in runs.items():
        entries = [e for group in by_count.values() for e in group]
        inits = [e["ray_init_s"] for e in entries if e["ray_init_s"] is not None]
        ready = [e["workers_ready_s"] for e in entries if e["workers_ready_s"] is not None]
        walls = {n: median(e["wall_s"] for e in group) for n, group in by_count.items()}
        row = {"wall_s": walls, "episodes_per_min": {n: 60 * n / w for n, w in walls.items()},
               "ray_init_s": median(inits) if inits else None, "workers_ready_s": median(ready) if ready else None,
               "same_results": all(e["same_results"] for e in entries), "runs": by_count}
        if len(walls) >= 2:
            (n1, w1), (n2, w2) = sorted(walls.items())[0], sorted(walls.items())[-1]
            rate = (n2 - n1) / (w2 - w1) if w2 > w1 else float("nan")
            row["marginal_episodes_per_min"] = 60 * rate
            row["startup_s"] = w1 - n1 / rate
        rows[name] = row
    result = {"task": "lift", "sampler": args.sampler, "episodes": args.episodes, "max_steps": args.max_steps,
              "num_threads_per_worker": 1, "repeats": args.repeats, "old_commit": args.old_commit,
              "machine": f"{platform.processor() or platform.machine()}, shared 2-core developer box (loaded)",
              "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rollout_scaling.json").write_text(json.dumps(result, indent=1))
    table = format_table(result)
    (out / "rollout_scaling.md").write_text(table + "\n")
    print(table)
    return result


def format_table(result: dict) -> str:
    counts = sorted(int(n) for n in result["episodes"])
    lines = [f"Lift, `{result['sampler']}`, episodes of at most {result['max_steps']} steps, 1 torch thread per "
             f"worker; median of {result['repeats']}",
             "",
             "| setting | " + " | ".join(f"{n} episodes: ep/min (wall s)" for n in counts)
             + " | once running: ep/min | start-up s | ray.init s | workers ready s | same per-episode results |",
             "|---|" + "---|" * len(counts) + "---|---|---|---|---|"]
    for name, r in result["rows"].items():
        cells = [f"{r['episodes_per_min'][n]:.1f} ({r['wall_s'][n]:.1f})" for n in counts]
        marginal = r.get("marginal_episodes_per_min")
        startup = r.get("startup_s")
        init = "-" if r["ray_init_s"] is None else f"{r['ray_init_s']:.1f}"
        ready = "-" if r["workers_ready_s"] is None else f"{r['workers_ready_s']:.1f}"
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {'-' if marginal is None else f'{marginal:.1f}'} | {'-' if startup is None else f'{startup:.1f}'}"
                     + f" | {init} | {ready} | {'yes' if r['same_results'] else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    run(parse_args())
