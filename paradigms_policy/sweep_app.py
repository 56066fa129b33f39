"""paradigms-sweep: tasks x samplers x delays x execution modes in one command, one combined table.

    paradigms-sweep tasks=[lift] samplers=[ddim_sequential,anderson_warm] delays=[0,2,4,8] \
        executions=[naive,aligned,inpaint] episodes=50 workers=8 out_dir=runs/sweep
    paradigms-sweep ... checkpoints.can=runs/train/can/checkpoints/final.pt tasks=[lift,can] ray_address=auto

Writes ``out_dir/sweep.json`` (every row's rollout summary, written as rows finish; a rerun with the
same out_dir skips the rows it has), ``sweep.md`` (the table) and ``sweep.png`` (success against
delay). Episodes run as Ray tasks when ``workers > 1`` or a cluster address is given, as in
paradigms-rollout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paradigms_policy import paths
from paradigms_policy.sim.episodes import WorkerSettings
from paradigms_policy.sim.rollout import DEFAULT_START_SEED, iter_names
from paradigms_policy.sim.sweep import format_sweep_table, plot_sweep, run_sweep, sweep_rows


def run_from_config(cfg: Any) -> dict:
    """Run the sweep described by a sweep.yaml-shaped config; prints the table."""
    checkpoints = {str(k): (None if v is None else str(v)) for k, v in (cfg.get("checkpoints") or {}).items()}
    rows = sweep_rows(iter_names(cfg.tasks), iter_names(cfg.samplers), [int(d) for d in cfg.delays],
                      iter_names(cfg.executions), checkpoints=checkpoints, inpainting=cfg.get("inpainting"),
                      replan_every=[int(k) for k in cfg.get("replan_every", [0])])
    settings = WorkerSettings(device=str(cfg.get("device", "cpu")), num_threads=cfg.get("num_threads"),
                              trust_checkpoint=bool(cfg.get("trust_checkpoint", False)))
    report = run_sweep(rows, int(cfg.episodes), cfg.out_dir, start_seed=int(cfg.get("start_seed", DEFAULT_START_SEED)),
                       settings=settings, workers=int(cfg.get("workers", 1)), ray_address=cfg.get("ray_address"),
                       backend=str(cfg.get("backend", "auto")), max_retries=int(cfg.get("max_retries", 3)),
                       max_steps=cfg.get("max_steps"), deadline_ms=cfg.get("deadline_ms"),
                       progress=bool(cfg.get("progress", True)))
    print(format_sweep_table(report, rows))
    if cfg.get("plot", True):
        print(f"wrote {plot_sweep(report, Path(cfg.out_dir) / 'sweep.png')}")
    print(f"wrote {Path(cfg.out_dir) / 'sweep.json'}")
    return report


def main() -> None:
    import hydra

    hydra.main(version_base="1.3", config_path=str(paths.config_dir()), config_name="sweep")(run_from_config)()


if __name__ == "__main__":
    main()
