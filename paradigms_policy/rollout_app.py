"""paradigms-rollout: evaluate a checkpoint in simulation for a list of samplers on the same seeds.

    paradigms-rollout checkpoint=PATH task=lift episodes=50 \
        samplers=[ddpm_sequential,picard_warm,anderson_warm] out_dir=runs/rollout

PATH may be our checkpoint, a DiffusionPolicy .ckpt or a LeRobot pretrained_model/ directory
(trust_checkpoint=true for a pickle that needs more than the safe allow-list).

Prints a table and writes ``out_dir/rollout.json``:
{"task", "episodes", "samplers": {name: {"success_rate", "success_ci95": [lo, hi],
"rounds_median", "latency_ms_p50", ...}}}.

    paradigms-rollout delay_steps=4 execution=inpaint ...

simulates a solve that takes 4 control periods while the robot keeps executing the previous chunk
(``execution``: naive | aligned | inpaint, see paradigms_policy.execution).

    paradigms-rollout workers=8 ...                    # 8 Ray workers on this machine (ray.init())
    paradigms-rollout workers=64 ray_address=auto ...  # 64 workers on the running Ray cluster

Episodes run as Ray tasks whenever ``workers > 1`` or a cluster address is given (``ray_address`` or
RAY_ADDRESS); a killed worker's episodes are retried. The per-episode results are the same however
the episodes are spread. For tasks x samplers x delays in one command, see paradigms-sweep.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from paradigms_policy import paths
from paradigms_policy.sim.rollout import DEFAULT_START_SEED, evaluate, iter_names


def run_from_config(cfg: Any) -> dict:
    """Run the evaluation described by a rollout.yaml-shaped config and write rollout.json."""
    report = evaluate(
        checkpoint=cfg.checkpoint,
        task=str(cfg.task),
        samplers=iter_names(cfg.samplers),
        episodes=int(cfg.episodes),
        start_seed=int(cfg.get("start_seed", DEFAULT_START_SEED)),
        device=str(cfg.get("device", "cpu")),
        workers=int(cfg.get("workers", 1)),
        max_steps=cfg.get("max_steps"),
        deadline_ms=cfg.get("deadline_ms"),
        num_threads=cfg.get("num_threads"),
        delay_steps=int(cfg.get("delay_steps", 0)),
        execution=str(cfg.get("execution", "aligned")),
        trust_checkpoint=bool(cfg.get("trust_checkpoint", False)),
        inpainting=cfg.get("inpainting"),
        replan_every=int(cfg.get("replan_every", 0)),
        ray_address=cfg.get("ray_address"),
        backend=str(cfg.get("backend", "auto")),
        max_retries=int(cfg.get("max_retries", 3)),
        progress_bar=bool(cfg.get("progress", True)),
    )
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "rollout.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return report


def main() -> None:
    import hydra

    hydra.main(version_base="1.3", config_path=str(paths.config_dir()), config_name="rollout")(run_from_config)()


if __name__ == "__main__":
    main()
