"""Warm-start / solver study on the shipped checkpoint and its recorded episodes.

For every control cycle (re-planning every n_action_steps env steps, episode by
episode from ``checkpoints/<stem>.episode.npz`` split at ``episode_ends``) the
reference is sequential DDPM with that cycle's noise. The first cycle of an
episode is cold; later cycles are warm-started from the previous cycle's
REFERENCE solve (so every configuration starts from the same guess) shifted by
n_action_steps. Every configuration solves the same (x_init, noise) cold and
warm; reported: rounds, evaluations, max abs error vs the reference
(normalized units), the window position of every round, and the per-step error
of the warm initial trajectory. Deterministic apart from the timing columns.

    .venv/bin/python benchmarks/lift_solver_study.py --episodes 4 --first-episode 2 \
        --configs "picard:w=32,tol=0.1,abs=0.003,lin=0" "anderson:w=100,tol=0.01,abs=0.001,m=2,lin=1"
    .venv/bin/python benchmarks/lift_solver_study.py --window-costs   # one batched call per window size

Config syntax: ``solver:w=WINDOW,tol=TOL,abs=ABS|none,lin=0|1,m=HISTORY,lam=LAM,k=ORDER``.
Configurations are interleaved per cycle, so their ``ms`` columns compare fairly.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from paradigms_policy.diffusion.anderson import solve_anderson
from paradigms_policy.diffusion.picard import solve_picard
from paradigms_policy.diffusion.sequential import draw_noise, sample_sequential
from paradigms_policy.diffusion.warm_start import shift_for_next_cycle
from paradigms_policy.policy import load_policy


def split_episodes(path: Path, keys) -> list[dict[str, np.ndarray]]:
    """Episodes of a recorded npz (concatenated steps, ``episode_ends`` exclusive ends)."""
    with np.load(path) as data:
        ends = data["episode_ends"].tolist() if "episode_ends" in data.files else [len(data[keys[0]])]
        arrays = {k: np.asarray(data[k], dtype=np.float32) for k in keys}
    starts = [0] + ends[:-1]
    return [{k: v[a:b] for k, v in arrays.items()} for a, b in zip(starts, ends)]


def windows_of(episode, n_obs: int, n_act: int) -> list[dict[str, np.ndarray]]:
    length = min(len(v) for v in episode.values())
    out = []
    for c in range((length - 1) // n_act + 1):
        end = c * n_act
        idx = np.clip(np.arange(end - n_obs + 1, end + 1), 0, None)
        out.append({k: v[idx] for k, v in episode.items()})
    return out


class Recorder:
    """Denoiser wrapper: records the first step index of every call (= window begin)."""

    def __init__(self, den, timesteps):
        self.den = den
        self.index = {int(t): i for i, t in enumerate(timesteps.tolist())}
        self.begins: list[int] = []

    def __call__(self, x, t):
        self.begins.append(self.index[int(t[0])])
        return self.den(x, t)


def parse_config(spec: str):
    """'picard:w=100,tol=0.1,abs=0.003,lin=0' -> (solver, kwargs)."""
    solver, _, rest = spec.partition(":")
    kw = {}
    names = {"w": "window", "tol": "tolerance", "abs": "abs_tolerance", "m": "history", "lin": "exact_linear",
             "lam": "lam", "k": "order_k"}
    for item in filter(None, rest.split(",")):
        key, val = item.split("=")
        key = names[key]
        if key in ("window", "history", "order_k"):
            kw[key] = int(val)
        elif key == "exact_linear":
            kw[key] = bool(int(val))
        elif key == "abs_tolerance" and val == "none":
            kw[key] = None
        else:
            kw[key] = float(val)
    return solver, kw


def window_costs(policy, out: str, windows=(1, 2, 4, 8, 16, 25, 34, 50, 100), repeats: int = 15) -> None:
    """Median time of one batched denoiser call per window size, interleaved (fair under load)."""
    den = policy.denoiser
    obs = {k: np.zeros((1, policy.n_obs_steps, *s), np.float32) for k, s in policy.obs_shapes.items()}
    nobs = {k: policy.normalizer[k].normalize(torch.from_numpy(v)) for k, v in obs.items()}
    den.bind(policy.network.global_cond(nobs))
    xs = {w: torch.randn(w, 1, policy.horizon, policy.action_dim) for w in windows}
    times = {w: [] for w in windows}
    with torch.no_grad():
        for w in windows:
            den(xs[w], torch.arange(w))
        for _ in range(repeats):
            for w in windows:
                t0 = time.perf_counter()
                den(xs[w], torch.arange(w))
                times[w].append(time.perf_counter() - t0)
    base = statistics.median(times[1])
    result = {}
    print(f"{'W':>4s} {'ms/call':>8s} {'x W=1':>6s} {'ms/step':>8s}")
    for w in windows:
        m = statistics.median(times[w])
        result[w] = {"ms": m * 1e3, "relative": m / base}
        print(f"{w:4d} {m * 1e3:8.2f} {m / base:6.2f} {m * 1e3 / w:8.3f}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="checkpoints/lift_lowdim.pt")
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--first-episode", type=int, default=0)
    ap.add_argument("--configs", nargs="+", default=["picard:w=32,tol=0.1,abs=0.003,lin=0",
                                                       "anderson:w=32,tol=0.03,abs=0.003,m=2,lin=1"])
    ap.add_argument("--modes", default="cold,warm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/lift_study/study.json")
    ap.add_argument("--window-costs", action="store_true", help="only time one batched call per window size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    policy = load_policy(args.checkpoint, sampler="picard_warm")
    if args.window_costs:
        window_costs(policy, args.out)
        return
    rule, den = policy.sampler.rule, policy.denoiser
    npz = Path(args.checkpoint).with_name(Path(args.checkpoint).stem + ".episode.npz")
    episodes = split_episodes(npz, policy.obs_keys)[args.first_episode:args.first_episode + args.episodes]
    configs = [(spec, *parse_config(spec)) for spec in args.configs]
    modes = args.modes.split(",")
    gen = torch.Generator().manual_seed(args.seed)
    rec = Recorder(den, rule.timesteps)
    rows = {f"{spec}|{mode}": [] for spec, _, _ in configs for mode in modes}
    init_err = []
    event = (1, policy.horizon, policy.action_dim)
    n_act = policy.n_action_steps
    with torch.no_grad():
        for e, episode in enumerate(episodes):
            prev = None
            for c, obs in enumerate(windows_of(episode, policy.n_obs_steps, n_act)):
                nobs = {k: policy.normalizer[k].normalize(torch.from_numpy(v).unsqueeze(0)) for k, v in obs.items()}
                den.bind(policy.network.global_cond(nobs))
                if prev is None:
                    x_init, noise = draw_noise(rule, event, generator=gen)
                    init = None
                else:
                    x_init, noise, init = shift_for_next_cycle(prev, n_act, gen, rule)
                t0 = time.perf_counter()
                ref = sample_sequential(den, rule, x_init, noise)
                t_ref = time.perf_counter() - t0
                if init is not None:
                    d = (init - ref.trajectory).abs()  # [S+1,B,H,A]
                    init_err.append({"kept": d[:, :, :-n_act].amax(dim=(1, 2, 3)).tolist(),
                                     "tail": d[:, :, -n_act:].amax(dim=(1, 2, 3)).tolist()})
                for spec, solver, kw in configs:
                    fn = solve_picard if solver == "picard" else solve_anderson
                    for mode in modes:
                        if mode == "warm" and init is None:
                            continue
                        rec.begins = []
                        t0 = time.perf_counter()
                        res = fn(rec, rule, x_init, noise, init_trajectory=init if mode == "warm" else None, **kw)
                        dt = time.perf_counter() - t0
                        err = float((res.sample - ref.sample).abs().max())
                        rows[f"{spec}|{mode}"].append({"episode": e, "cycle": c, "rounds": res.stats.rounds,
                                                       "nfe": res.stats.nfe, "err": err, "ms": dt * 1e3,
                                                       "begins": list(rec.begins), "ref_ms": t_ref * 1e3})
                prev = ref
            print(f"episode {e} done", flush=True)
    summary = {}
    print(f"{'config|mode':58s} {'n':>3s} {'rnd med':>7s} {'p90':>5s} {'max':>4s} {'nfe':>6s} {'err max':>8s} {'err p90':>8s} {'ms med':>7s}")
    for key, rs in rows.items():
        if not rs:
            continue
        r = sorted(x["rounds"] for x in rs)
        errs = sorted(x["err"] for x in rs)
        s = {"n": len(rs), "rounds_median": statistics.median(r), "rounds_p90": r[int(0.9 * (len(r) - 1))],
             "rounds_max": r[-1], "nfe_median": statistics.median(x["nfe"] for x in rs), "err_max": errs[-1],
             "err_p90": errs[int(0.9 * (len(errs) - 1))], "ms_median": statistics.median(x["ms"] for x in rs)}
        summary[key] = s
        print(f"{key:58s} {s['n']:3d} {s['rounds_median']:7.1f} {s['rounds_p90']:5d} {s['rounds_max']:4d} "
              f"{s['nfe_median']:6.0f} {s['err_max']:8.4f} {s['err_p90']:8.4f} {s['ms_median']:7.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows, "init_err": init_err}, indent=1))


if __name__ == "__main__":
    main()
