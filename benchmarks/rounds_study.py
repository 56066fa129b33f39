"""Rounds study: error against round for every update form, and the named samplers' figures.

Consecutive control cycles of the shipped checkpoint's recorded episodes (re-planning every
n_action_steps). Per cycle and rule the reference is the sequential sample with that cycle's
noise (and known actions). The first cycle of an episode is cold; later cycles are warm-started
from the previous cycle's REFERENCE solve shifted by n_action_steps (so every form starts from the
same guess). ``warm+known`` adds the first ``--known`` actions of the executed slice as inpainted
values (the previous chunk's actions at those times: what the robot runs while solving).

    # error against round, tolerance 0, every form (JSON + plot)
    python benchmarks/rounds_study.py curves --episodes 2 --out benchmarks/results/rounds_study
    # rounds and error of named samplers at their defaults (or with overrides: name:key=value,...)
    python benchmarks/rounds_study.py samplers --first-episode 2 --episodes 4 \
        --samplers anderson_ddpm100_warm newton_ddim16_warm:abs_tolerance=0.05

Error: max abs difference of the final sample to the reference, normalized action units.
"Rounds to the bar": the first round after which the error stays <= 0.02. Deterministic apart
from the timing columns.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lift_solver_study import split_episodes, windows_of  # noqa: E402

from paradigms_policy.diffusion.anderson import Anderson  # noqa: E402
from paradigms_policy.diffusion.fixed_point import (Evaluation, LoopSettings, TrajectoryState,  # noqa: E402
                                                    solve_fixed_point)
from paradigms_policy.diffusion.inpaint import known_prefix  # noqa: E402
from paradigms_policy.diffusion.linear_forms import cumulative_residual  # noqa: E402
from paradigms_policy.diffusion.newton import Newton  # noqa: E402
from paradigms_policy.diffusion.picard import Picard  # noqa: E402
from paradigms_policy.diffusion.registry import RULES  # noqa: E402
from paradigms_policy.diffusion.samplers import make_sampler  # noqa: E402
from paradigms_policy.diffusion.sequential import draw_noise, sample_sequential  # noqa: E402
from paradigms_policy.diffusion.step_rules import make_step_rule  # noqa: E402
from paradigms_policy.diffusion.warm_start import shift_for_next_cycle  # noqa: E402
from paradigms_policy.policy import load_policy  # noqa: E402

BAR = 0.02


# --------------------------------------------------------------------------- a study-only form
@dataclasses.dataclass(frozen=True)
class EpsLagPicard(LoopSettings):
    """Picard whose exact part is the step's whole state dependence at a FIXED noise prediction.

    x_{j+1} = L_j x_j(new) + (F_j(x_j) - L_j x_j) with L_j = dF_j/dx_j holding eps fixed
    (per element: x0 clipped there -> only c_x). Same fixed point; study only.
    """

    def start(self, state: TrajectoryState) -> "EpsLagRound":
        return EpsLagRound(state)


class EpsLagRound:
    def __init__(self, state: TrajectoryState):
        self.state = state
        rule = state.rule
        t = rule.tables
        self.cx, self.cx0, self.s0 = t["c_x"], t["c_x0"], t["sqrt_alpha_bar"]

    def probes(self, begin, w):
        return None

    def change(self, begin, w, ev: Evaluation):
        return cumulative_residual(ev.stepped, self.state.traj[begin + 1:begin + w + 1])

    def new_states(self, begin, w, ev: Evaluation, settled):
        st, rule = self.state, self.state.rule
        x = st.traj[begin:begin + w]
        sh = (-1,) + (1,) * (x.dim() - 1)
        idx = slice(begin, begin + w)
        cx, cx0, s0 = (v[idx].to(x).reshape(sh) for v in (self.cx, self.cx0, self.s0))
        unclipped = (ev.x0.abs() < rule.clip_sample_range).to(x) if rule.clip_sample else torch.ones_like(x)
        if rule.kind == "ddim":
            lin = cx0 / s0 * unclipped
        else:
            lin = cx + cx0 / s0 * unclipped
        new = torch.empty_like(ev.stepped)
        new[0] = ev.stepped[0]
        for i in range(1, w):
            new[i] = st.project(ev.stepped[i] + lin[i] * (new[i - 1] - x[i]))
        return new


# --------------------------------------------------------------------------- forms
def forms(steps: int) -> dict[str, LoopSettings]:
    """Every update form, full window, converged only at an RMS change of 1e-5 (four hundred times
    below the bar: the curves are those of tolerance 0 at the bar, and states that settled stop costing rows)."""
    exact = dict(window=steps, tolerance=0.0, abs_tolerance=1e-5)
    return {
        "picard-cumulative": Picard(**exact),
        "picard-exact-linear": Picard(**exact, exact_linear=True),
        "picard-epslag": EpsLagPicard(**exact),
        "jacobi-order4": Anderson(**exact, history=0, order_k=4),
        "anderson-exact-linear": Anderson(**exact),
        "anderson-cumulative": Anderson(**exact, exact_linear=False),
        "anderson-m4": Anderson(**exact, history=4),
        "newton": Newton(**exact),
        "newton-chord": Newton(**exact, jacobian_every=1000),
    }


def coarse_ddim_step(rule, den, u, a: int, b: int):
    """One DDIM step from the state of fine step ``a`` to the state of fine step ``b`` (b = S: clean)."""
    s = rule.num_steps
    t = rule.timesteps[a:a + 1]
    out = den(u.unsqueeze(0), t)[0].to(u.dtype)
    abar = rule.tables["alpha_bar"].to(u.dtype)
    ab_a = abar[a]
    ab_b = abar[b] if b < s else torch.ones((), dtype=u.dtype)
    x0 = (u - (1 - ab_a).sqrt() * out) / ab_a.sqrt()
    if rule.clip_sample:
        x0 = x0.clamp(-rule.clip_sample_range, rule.clip_sample_range)
    eps = (u - ab_a.sqrt() * x0) / (1 - ab_a).sqrt()
    return ab_b.sqrt() * x0 + (1 - ab_b).sqrt() * eps


def parareal_curve(den, rule, x_init, noise, init, ref, inpaint, slices: int, iterations: int) -> list[float]:
    """Parareal with a one-step DDIM coarse propagator per slice; error after every round.

    Per iteration: the fine steps of all slices in parallel (L = S/slices rounds of width
    ``slices``), then the sequential coarse sweep (``slices`` rounds of width 1). A warm start
    takes the slice boundaries from the guess; a cold start first runs one coarse sweep.
    """
    s = rule.num_steps
    proj = (lambda v: v) if inpaint is None else inpaint.apply
    bounds = np.linspace(0, s, slices + 1).round().astype(int).tolist()
    errors: list[float] = []
    u = [proj(x_init)]
    g_old = [None] * slices
    if init is None:
        for n in range(slices):
            u.append(proj(coarse_ddim_step(rule, den, u[n], bounds[n], bounds[n + 1])))
            errors.append(float((u[-1] - ref).abs().max()) if n == slices - 1 else float("nan"))
    else:
        u += [proj(init[b]) for b in bounds[1:]]
    for _ in range(iterations):
        # fine propagation of every slice from its current start, in parallel (one call per fine step)
        starts = torch.stack(u[:-1])  # [N, B, ...]
        length = max(bounds[n + 1] - bounds[n] for n in range(slices))
        x = starts.clone()
        for i in range(length):
            idx = torch.tensor([min(bounds[n] + i, bounds[n + 1] - 1) for n in range(slices)])
            active = torch.tensor([bounds[n] + i < bounds[n + 1] for n in range(slices)])
            out = den(x, rule.timesteps[idx]).to(x.dtype)
            stepped = proj(rule.full_step(x, out, idx, noise[idx]))
            x = torch.where(active.reshape(-1, *([1] * (x.dim() - 1))), stepped, x)
            errors.append(float("nan"))
        fine = [x[n] for n in range(slices)]
        for n in range(slices):  # coarse at the old starts (batched with the fine calls: no extra round)
            if g_old[n] is None:
                g_old[n] = proj(coarse_ddim_step(rule, den, u[n], bounds[n], bounds[n + 1]))
        new = [u[0]]
        g_new = []
        for n in range(slices):  # sequential coarse sweep
            g = proj(coarse_ddim_step(rule, den, new[n], bounds[n], bounds[n + 1])) if n > 0 else g_old[0]
            g_new.append(g)
            new.append(proj(g + fine[n] - g_old[n]))
            if n > 0:
                errors.append(float("nan"))
        errors[-1] = float((new[-1] - ref).abs().max())
        u, g_old = new, g_new
    # carry the last known error forward over the rounds that produce no final state
    last = float("nan")
    filled = []
    for e in errors:
        last = e if e == e else last
        filled.append(last)
    return filled


# --------------------------------------------------------------------------- cycles
def load(args):
    torch.set_num_threads(args.threads)
    policy = load_policy(args.checkpoint, sampler="ddpm_sequential")
    npz = Path(args.checkpoint).with_name(Path(args.checkpoint).stem + ".episode.npz")
    episodes = split_episodes(npz, policy.obs_keys)[args.first_episode:args.first_episode + args.episodes]
    return policy, episodes


def cycles(policy, episodes, rule, known: int, seed: int, max_cycles: int | None):
    """Yield (episode, cycle, start, x_init, noise, init, inpaint, reference) per cycle and start mode."""
    den = policy.denoiser
    gen = torch.Generator().manual_seed(seed)
    event = (1, policy.horizon, policy.action_dim)
    n_act, first = policy.n_action_steps, policy.n_obs_steps - 1
    for e, episode in enumerate(episodes):
        prev = None
        for c, obs in enumerate(windows_of(episode, policy.n_obs_steps, n_act)):
            if max_cycles is not None and c >= max_cycles:
                break
            nobs = {k: policy.normalizer[k].normalize(torch.from_numpy(v).unsqueeze(0)) for k, v in obs.items()}
            den.bind(policy.network.global_cond(nobs))
            if prev is None:
                x_init, noise = draw_noise(rule, event, generator=gen)
                init = None
            else:
                x_init, noise, init = shift_for_next_cycle(prev, n_act, gen, rule)
            ref = sample_sequential(den, rule, x_init, noise)
            if init is None:
                yield e, c, "cold", x_init, noise, None, None, ref
            else:
                yield e, c, "cold", x_init, noise, None, None, ref
                yield e, c, "warm", x_init, noise, init, None, ref
                if known > 0:
                    values = prev.sample[:, first + n_act:first + n_act + known]  # the old chunk at those times
                    inpaint = known_prefix(values, first, tuple(x_init.shape))
                    ref_k = sample_sequential(den, rule, x_init, noise, inpaint=inpaint)
                    yield e, c, f"warm+known{known}", x_init, noise, init, inpaint, ref_k
            prev = ref


def rounds_to_bar(curve: list[float], bar: float = BAR) -> int | None:
    """First round (1-based) after which the error stays <= bar; None if never within the curve."""
    for i in range(len(curve)):
        if all(v <= bar for v in curve[i:]):
            return i + 1
    return None


def summarize_rounds(values: list[int | None], cap: int) -> dict:
    filled = [cap + 1 if v is None else v for v in values]
    return {"n": len(values), "median": float(np.median(filled)), "p90": float(np.percentile(filled, 90)),
            "not_reached": sum(v is None for v in values)}


def run_curves(args) -> None:
    policy, episodes = load(args)
    den = policy.denoiser
    for tag in args.rules:
        out: dict = {"bar": BAR, "known": args.known, "episodes": [args.first_episode, args.episodes],
                     "max_cycles": args.max_cycles, "rules": {}}
        kind, steps = RULES[tag]
        rule = make_step_rule(kind, steps, **schedule_of(policy))
        cap = min(args.max_rounds, steps)
        chosen = {k: v for k, v in forms(steps).items() if not args.forms or k in args.forms}
        curves: dict[str, dict[str, list]] = {}
        for e, c, start, x_init, noise, init, inpaint, ref in cycles(policy, episodes, rule, args.known, args.seed,
                                                                      args.max_cycles):
            for name, method in chosen.items():
                rounds_cap = min(cap, args.newton_rounds) if name.startswith("newton") else cap
                method = dataclasses.replace(method, max_rounds=rounds_cap)
                errs: list[float] = []
                observer = (lambda k, st, errs=errs, ref=ref: errs.append(float((st.traj[-1] - ref.sample).abs().max())))
                res = solve_fixed_point(den, rule, x_init, noise, method, init_trajectory=init, inpaint=inpaint,
                                        observer=observer)
                curves.setdefault(name, {}).setdefault(start, []).append(
                    {"episode": e, "cycle": c, "errors": errs, "rows": res.stats.rows})
            if "parareal" in args.extra:
                for slices in args.parareal_slices or [10 if steps >= 50 else 4]:
                    errs = parareal_curve(den, rule, x_init, noise, init, ref.sample, inpaint, slices,
                                          iterations=args.parareal_iterations)
                    curves.setdefault(f"parareal-ddim{slices}", {}).setdefault(start, []).append(
                        {"episode": e, "cycle": c, "errors": errs[:cap]})
            if init is not None:
                kept = (init - ref.trajectory)[:, :, :-policy.n_action_steps].abs().amax()
                tail = (init - ref.trajectory)[:, :, -policy.n_action_steps:].abs().amax()
                curves.setdefault("_guess", {}).setdefault(start, []).append(
                    {"final_kept": float((init[-1] - ref.sample)[:, :-policy.n_action_steps].abs().max()),
                     "final_tail": float((init[-1] - ref.sample)[:, -policy.n_action_steps:].abs().max()),
                     "all_kept": float(kept), "all_tail": float(tail)})
            print(f"[{tag}] episode {e} cycle {c} {start}", flush=True)
        summary = {}
        for name, by_start in curves.items():
            if name == "_guess":
                continue
            for start, rows in by_start.items():
                s = summarize_rounds([rounds_to_bar(r["errors"]) for r in rows], cap)
                med = np.median(np.array([pad(r["errors"], cap) for r in rows]), axis=0)
                s["median_error_by_round"] = [float(v) for v in med]
                if "rows" in rows[0]:
                    s["rows_per_solve_median"] = float(np.median([r["rows"] for r in rows]))
                summary[f"{name}|{start}"] = s
        out["rules"][tag] = {"summary": summary, "curves": curves}
        print_summary(tag, summary)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        path = Path(args.out) / f"curves_{tag}.json"
        path.write_text(json.dumps(out))
        print(f"wrote {path}")
    run_plot(args)


def run_plot(args) -> None:
    """curves.png from every curves_<rule>.json in --out."""
    merged: dict = {"rules": {}}
    for path in sorted(Path(args.out).glob("curves_*.json")):
        merged["rules"].update(json.loads(path.read_text())["rules"])
    plot_curves(merged, Path(args.out) / "curves.png")
    print(f"wrote {Path(args.out) / 'curves.png'}")


def pad(curve: list[float], cap: int) -> list[float]:
    curve = [v if v == v else 10.0 for v in curve]  # NaN (no final state yet) plotted as off-scale
    return (curve + [curve[-1]] * cap)[:cap] if curve else [float("nan")] * cap


def print_summary(tag: str, summary: dict) -> None:
    print(f"\n[{tag}] rounds to max-abs error <= {BAR} (median / p90, not reached) and median error by round")
    for key, s in summary.items():
        errs = " ".join(f"{v:.3f}" for v in s["median_error_by_round"][:10])
        print(f"  {key:40s} {s['median']:5.1f} {s['p90']:5.1f} {s['not_reached']:3d} | {errs}")


def plot_curves(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = list(out["rules"])
    starts = sorted({k.split("|")[1] for t in tags for k in out["rules"][t]["summary"]})
    fig, axes = plt.subplots(len(tags), len(starts), figsize=(5 * len(starts), 4 * len(tags)), squeeze=False)
    for i, tag in enumerate(tags):
        summary = out["rules"][tag]["summary"]
        for j, start in enumerate(starts):
            ax = axes[i][j]
            for key, s in summary.items():
                name, st = key.split("|")
                if st != start:
                    continue
                y = np.maximum(np.array(s["median_error_by_round"]), 1e-7)
                ax.semilogy(np.arange(1, len(y) + 1), y, marker=".", label=f"{name} ({s['median']:.0f})")
            ax.axhline(BAR, color="k", lw=0.8, ls="--")
            ax.axvline(4, color="r", lw=0.8, ls=":")
            ax.set_title(f"{tag}, {start}: median max-abs error vs round")
            ax.set_xlabel("round")
            ax.set_ylim(1e-6, 20)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- named samplers
def schedule_of(policy) -> dict:
    keys = ("num_train_timesteps", "beta_schedule", "prediction_type", "clip_sample")
    return {k: policy.noise_scheduler[k] for k in keys if k in policy.noise_scheduler}


def parse_sampler(spec: str) -> tuple[str, str, dict]:
    """'name:key=value,...' -> (label, name, overrides)."""
    name, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, value = item.split("=")
        overrides[key] = None if value == "none" else (int(value) if value.isdigit() else float(value))
    return spec, name, overrides


def run_samplers(args) -> None:
    policy, episodes = load(args)
    den = policy.denoiser
    rows: dict[str, list] = {}
    specs = [parse_sampler(s) for s in args.samplers]
    samplers = {label: make_sampler(name, **schedule_of(policy), **ov) for label, name, ov in specs}
    by_rule: dict[str, list[str]] = {}
    for label, sampler in samplers.items():
        by_rule.setdefault(f"{sampler.rule.kind}{sampler.rule.num_steps}", []).append(label)
    for rule_key, labels in by_rule.items():
        rule = samplers[labels[0]].rule
        for e, c, start, x_init, noise, init, inpaint, ref in cycles(policy, episodes, rule, args.known, args.seed,
                                                                      args.max_cycles):
            for label in labels:
                sampler = samplers[label]
                wanted = "warm" if sampler.uses_warm_start else "cold"
                if not start.startswith(wanted) or (wanted == "cold" and start != "cold"):
                    continue
                if sampler.uses_warm_start and init is None:
                    continue
                t0 = time.perf_counter()
                res = sampler.sample(den, x_init, noise, init_trajectory=init, inpaint=inpaint)
                ms = (time.perf_counter() - t0) * 1e3
                rows.setdefault(f"{label}|{start}", []).append(
                    {"episode": e, "cycle": c, "rounds": res.stats.rounds, "rows": res.stats.rows, "nfe": res.stats.nfe,
                     "err": float((res.sample - ref.sample).abs().max()), "ms": ms})
            print(f"[{rule_key}] episode {e} cycle {c} {start}", flush=True)
    summary = {}
    print(f"{'sampler|start':60s} {'n':>3s} {'rnd med':>7s} {'p90':>5s} {'rows/rnd':>8s} {'err max':>8s} "
          f"{'err p90':>8s} {'ms med':>7s}")
    for key, rs in rows.items():
        r = [x["rounds"] for x in rs]
        errs = [x["err"] for x in rs]
        s = {"n": len(rs), "rounds_median": float(np.median(r)), "rounds_p90": float(np.percentile(r, 90)),
             "rows_per_round": float(sum(x["rows"] for x in rs) / max(1, sum(r))),
             "steps_per_round": float(sum(x.get("nfe", x["rows"]) for x in rs) / max(1, sum(r))), "error_max": max(errs),
             "error_p90": float(np.percentile(errs, 90)), "ms_median": statistics.median(x["ms"] for x in rs)}
        summary[key] = s
        print(f"{key:60s} {s['n']:3d} {s['rounds_median']:7.1f} {s['rounds_p90']:5.1f} {s['rows_per_round']:8.1f} "
              f"{s['error_max']:8.4f} {s['error_p90']:8.4f} {s['ms_median']:7.0f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / args.name
    path.write_text(json.dumps({"episodes": [args.first_episode, args.episodes], "known": args.known,
                                "summary": summary, "rows": rows}, indent=1))
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("curves", "samplers", "plot"))
    ap.add_argument("--checkpoint", default="checkpoints/lift_lowdim.pt")
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--first-episode", type=int, default=0)
    ap.add_argument("--max-cycles", type=int, default=None, help="cycles per episode (default: all)")
    ap.add_argument("--known", type=int, default=3, help="known actions in the warm+known mode (0: off)")
    ap.add_argument("--rules", nargs="+", default=["ddpm100", "ddim16"])
    ap.add_argument("--forms", nargs="*", default=None)
    ap.add_argument("--extra", nargs="*", default=["parareal"])
    ap.add_argument("--parareal-slices", nargs="+", type=int, default=None,
                    help="coarse slices (default: 4 for DDIM-16 / DPM-10, 10 for DDPM-100)")
    ap.add_argument("--parareal-iterations", type=int, default=3)
    ap.add_argument("--max-rounds", type=int, default=30)
    ap.add_argument("--newton-rounds", type=int, default=10, help="round cap of the (expensive) Newton curves")
    ap.add_argument("--samplers", nargs="+", default=[])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/rounds_study")
    ap.add_argument("--name", default="samplers.json", help="file name of the samplers run")
    args = ap.parse_args()
    {"curves": run_curves, "samplers": run_samplers, "plot": run_plot}[args.what](args)


if __name__ == "__main__":
    main()
