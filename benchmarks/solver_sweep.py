"""Solver sweep: rounds, evaluations, wall time and error of the parallel samplers.

Trains a small ConditionalUnet1D (DiffusionPolicy's shape, down_dims 64-128-256) for a
minute or two on synthetic bimodal smooth action trajectories conditioned on an
observation, then solves a sequence of control cycles whose conditions change slowly
(each cycle starts ``n_shift`` actions later, as after executing them) with:
sequential DDPM-100 (reference), sequential DDIM-16, and Picard / Anderson, cold and
warm, over windows and tolerances. Error = max abs difference to sequential DDPM-100
with the same noise, in normalized action units ([-1, 1]).

    .venv/bin/python benchmarks/solver_sweep.py --out-dir runs/solver_sweep

Prints a table and writes ``solver_sweep.json``. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from paradigms_policy.diffusion.anderson import solve_anderson
from paradigms_policy.diffusion.picard import solve_picard
from paradigms_policy.diffusion.sequential import draw_noise, sample_sequential
from paradigms_policy.diffusion.step_rules import make_step_rule
from paradigms_policy.diffusion.warm_start import WarmStartState

HORIZON, ACTION_DIM, COND_DIM = 16, 4, 4
DT = 0.08  # seconds of "action time" per horizon step


def trajectories(cond_phase: torch.Tensor, amp: torch.Tensor, mode: torch.Tensor) -> torch.Tensor:
    """Smooth bimodal action chunks [N, H, A] in [-1, 1] starting at time ``cond_phase``."""
    h = cond_phase[:, None] + DT * torch.arange(HORIZON)[None, :]  # [N, H]
    a = torch.arange(ACTION_DIM)[None, None, :]
    base = amp[:, None, None] * torch.sin(2.0 * h[..., None] + 0.7 * a)
    detour = 0.35 * mode[:, None, None] * torch.cos(1.3 * h[..., None] + a)
    return (0.8 * base + detour).clamp(-1, 1)


def observation(phase: torch.Tensor, amp: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.sin(2.0 * phase), torch.cos(2.0 * phase), amp, torch.ones_like(amp)], dim=-1)


def train(model, rule_train, seconds: float, batch: int = 64, lr: float = 1e-3, seed: int = 0) -> dict:
    """Epsilon-prediction DDPM training on the synthetic task for a fixed wall time."""
    g = torch.Generator().manual_seed(seed)
    abar = rule_train.schedule.alphas_cumprod.float()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-6)
    start, steps, losses = time.perf_counter(), 0, []
    model.train()
    while time.perf_counter() - start < seconds:
        phase = torch.rand(batch, generator=g) * 6.0
        amp = 0.5 + 0.5 * torch.rand(batch, generator=g)
        mode = torch.randint(0, 2, (batch,), generator=g).float() * 2 - 1
        x0 = trajectories(phase, amp, mode)
        t = torch.randint(0, abar.shape[0], (batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        ab = abar[t][:, None, None]
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        loss = torch.nn.functional.mse_loss(model(xt, t, global_cond=observation(phase, amp)), eps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        losses.append(float(loss.detach()))
    model.eval()
    return {"steps": steps, "seconds": time.perf_counter() - start, "final_loss": statistics.mean(losses[-50:])}


def make_denoiser(model):
    """Denoiser over [W,B,H,A] with the condition bound by ``bind`` (falls back if runtime is absent)."""
    try:
        from paradigms_policy.runtime.executor import BatchedDenoiser

        den = BatchedDenoiser(model, event_shape=(HORIZON, ACTION_DIM), cond_dim=COND_DIM)
        return den, "runtime.BatchedDenoiser(eager)"
    except Exception:  # pragma: no cover - runtime helper not available
        pass

    class Plain:
        cond = None

        def bind(self, cond):
            self.cond = cond

        def __call__(self, x, t):
            w, b = x.shape[:2]
            out = model(x.reshape(w * b, HORIZON, ACTION_DIM), t.repeat_interleave(b),
                        global_cond=self.cond.repeat(w, 1))
            return out.reshape(x.shape)

        def warmup(self, windows, batch):
            pass

    return Plain(), "plain"


def summarize(values: list[float]) -> dict:
    s = sorted(values)
    return {"median": statistics.median(s), "p90": s[min(len(s) - 1, int(0.9 * len(s)))], "max": s[-1],
            "mean": statistics.mean(s)}


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from paradigms_policy.model import ConditionalUnet1D

    model = ConditionalUnet1D(input_dim=ACTION_DIM, global_cond_dim=COND_DIM, down_dims=tuple(args.down_dims))
    ddpm = make_step_rule("ddpm", 100)
    ddim = make_step_rule("ddim", args.ddim_steps)
    model_path = Path(args.model) if args.model else Path(args.out_dir) / "sweep_model.pt"
    if model_path.exists():
        saved = torch.load(model_path)
        model.load_state_dict(saved["state_dict"])
        info = saved["train"]
        model.eval()
        print(f"loaded {model_path} (trained {info['steps']} steps, loss {info['final_loss']:.4f})")
    else:
        info = train(model, ddpm, args.train_seconds)
        model_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": model.state_dict(), "train": info}, model_path)
        print(f"trained {info['steps']} steps in {info['seconds']:.0f}s, loss {info['final_loss']:.4f}")
    den, den_kind = make_denoiser(model)
    den.warmup(sorted({1, *args.windows}), 1)

    # control cycles: time advances by n_shift actions per cycle, amplitude drifts slowly
    g = torch.Generator().manual_seed(1)
    phases = [0.3 + c * args.n_shift * DT for c in range(args.cycles)]
    amps = [0.75 + 0.1 * torch.sin(torch.tensor(0.3 * c)).item() for c in range(args.cycles)]
    conds = [observation(torch.tensor([p]), torch.tensor([a])) for p, a in zip(phases, amps)]

    skip_sweep = args.only_policy_study or args.only_timing_study
    configs = [] if skip_sweep else [("ddpm_sequential", None, None, None, False, None),
                                                 ("ddim_sequential", None, None, None, False, None)]
    for solver in ([] if skip_sweep else args.solvers):
        for w in args.windows:
            for tol in args.tolerances:
                for atol in args.abs_tolerances:
                    for warm in (False, True):
                        for m in (args.histories if solver == "anderson" else [None]):
                            configs.append((solver, w, tol, atol, warm, m))

    # per-cycle draws: cold solvers use fresh draws each cycle; warm solvers get theirs from
    # the warm state (shifted previous draws); references are sequential DDPM with the same draws
    results = {}
    refs: dict[tuple, torch.Tensor] = {}

    def reference(c, x_init, noise):
        key = (c, hash(x_init.numpy().tobytes()), hash(noise.numpy().tobytes()))
        if key not in refs:
            refs[key] = sample_sequential(den, ddpm, x_init, noise).sample
        return refs[key]

    with torch.no_grad():
        for name, w, tol, atol, warm, m in configs:
            label = name if w is None else f"{name}_{'warm' if warm else 'cold'}_w{w}_tol{tol}_abs{atol}"
            if m is not None:
                label += f"_m{m}"
            state = WarmStartState(ddpm)
            recs = {"rounds": [], "nfe": [], "wall_ms": [], "err": []}
            for c, cond in enumerate(conds):
                den.bind(cond)
                gen = torch.Generator().manual_seed(1000 + c)
                if warm and state.prev is not None:
                    x_init, noise, init = state.next(args.n_shift, (1, HORIZON, ACTION_DIM), gen)
                else:
                    x_init, noise = draw_noise(ddpm, (1, HORIZON, ACTION_DIM), generator=gen)
                    init = None
                t0 = time.perf_counter()
                if name == "ddpm_sequential":
                    res = sample_sequential(den, ddpm, x_init, noise)
                elif name == "ddim_sequential":
                    res = sample_sequential(den, ddim, x_init, torch.zeros(ddim.num_steps, *x_init.shape))
                else:
                    solve = solve_anderson if name == "anderson" else solve_picard
                    kw = {"history": m} if name == "anderson" else {"exact_linear": name == "picard_exact"}
                    res = solve(den, ddpm, x_init, noise, window=w, tolerance=tol, abs_tolerance=atol,
                                init_trajectory=init, **kw)
                wall = time.perf_counter() - t0
                if warm:
                    state.update(res)
                if name == "ddim_sequential":
                    err = float("nan")
                else:
                    ref = res.sample if name == "ddpm_sequential" else reference(c, x_init, noise)
                    err = float((res.sample - ref).abs().max())
                if warm and c == 0:
                    continue  # the first warm cycle is a cold solve
                recs["rounds"].append(res.stats.rounds)
                recs["nfe"].append(res.stats.nfe)
                recs["wall_ms"].append(1000 * wall)
                recs["err"].append(err)
            entry = {"solver": name, "window": w, "tolerance": tol, "abs_tolerance": atol, "warm": warm,
                     "history": m,
                     "rounds": summarize(recs["rounds"]), "nfe": summarize(recs["nfe"]),
                     "wall_ms": summarize(recs["wall_ms"]),
                     "max_abs_error": max(recs["err"]) if name != "ddim_sequential" else None}
            results[label] = entry
            err_s = "   n/a" if entry["max_abs_error"] is None else f"{entry['max_abs_error']:.1e}"
            print(f"{label:48s} rounds med {entry['rounds']['median']:5.1f} max {entry['rounds']['max']:4.0f} "
                  f"nfe {entry['nfe']['median']:6.0f} wall p50 {entry['wall_ms']['median']:7.1f} ms "
                  f"max|err| {err_s}", flush=True)
    policy = deadline_policy_study(den, ddpm, ddim, conds, args, phases, amps) if args.policy_study else None
    timing = timing_study(den, ddpm, ddim, conds, args) if args.timing_study else None
    return {"train": info, "denoiser": den_kind, "deadline_policy_study": policy, "timing_study": timing, "threads": args.threads, "cycles": args.cycles,
            "n_shift": args.n_shift, "down_dims": args.down_dims, "results": results}


def manifold_error(sample: torch.Tensor, phase: float, amp: float) -> float:
    """Max abs distance of a chunk [1,H,A] to the nearer of the task's two true chunks."""
    p, a = torch.tensor([phase]), torch.tensor([amp])
    return min(float((sample[0] - trajectories(p, a, torch.tensor([m]))[0]).abs().max()) for m in (-1.0, 1.0))


def deadline_policy_study(den, ddpm, ddim, conds, args, phases, amps) -> dict:
    """Error vs sequential DDPM-100 (same noise) of what each deadline policy would publish.

    Warm-started Anderson (the default settings) is cut after r rounds (``publish``), versus
    a full DDIM solve from the same x_init (``ddim_fallback`` with time for all its steps, its
    best case) and the shifted previous chunk (``keep_previous``).
    """
    state = WarmStartState(ddpm)
    errs: dict[str, list[float]] = {}
    with torch.no_grad():
        for c, cond in enumerate(conds):
            den.bind(cond)
            gen = torch.Generator().manual_seed(1000 + c)
            if state.prev is None:
                x_init, noise = draw_noise(ddpm, (1, HORIZON, ACTION_DIM), generator=gen)
                init = None
            else:
                x_init, noise, init = state.next(args.n_shift, (1, HORIZON, ACTION_DIM), gen)
            ref = sample_sequential(den, ddpm, x_init, noise).sample
            full = solve_anderson(den, ddpm, x_init, noise, window=args.policy_window, tolerance=0.1,
                                  abs_tolerance=args.policy_abs_tolerance, init_trajectory=init)
            state.update(full)
            if init is None:
                continue
            def record(key, sample):
                errs.setdefault(key, []).append(float((sample - ref).abs().max()))
                errs.setdefault(key + "|manifold", []).append(manifold_error(sample, phases[c], amps[c]))

            for r in (1, 2, 4, 8):
                cut = solve_anderson(den, ddpm, x_init, noise, window=args.policy_window, tolerance=0.1,
                                     abs_tolerance=args.policy_abs_tolerance, init_trajectory=init, max_rounds=r)
                record(f"publish_after_{r}_rounds", cut.sample)
            for steps in (4, 8, ddim.num_steps):
                rule = make_step_rule("ddim", steps)
                record(f"ddim_fallback_{steps}_steps",
                       sample_sequential(den, rule, x_init, torch.zeros(steps, *x_init.shape)).sample)
            record("keep_previous", init[-1])
            record("converged", full.sample)
            record("sequential_ddpm100", ref)
    out = {k: {"median": statistics.median(v), "max": max(v)} for k, v in errs.items()}
    print("deadline policy study (max abs error vs sequential DDPM-100 with the same noise | vs the nearer "
          "true chunk of the task; normalized units):")
    for k in [k for k in out if not k.endswith("|manifold")]:
        v, m = out[k], out[k + "|manifold"]
        print(f"  {k:28s} vs ref median {v['median']:.3f} max {v['max']:.3f} | vs task median {m['median']:.3f} "
              f"max {m['max']:.3f}")
    return out


def timing_study(den, ddpm, ddim, conds, args) -> dict:
    """Interleaved wall-clock comparison (min of ``--timing-repeats`` per cycle, so that load
    from other processes on a shared machine hurts every sampler alike)."""
    specs = {
        "ddpm_sequential": None,
        "ddim_sequential": None,
        "picard_cold": dict(solver="picard", warm=False, exact_linear=False),
        "anderson_cold": dict(solver="anderson", warm=False),
        "picard_warm": dict(solver="picard", warm=True, exact_linear=False),
        "anderson_warm": dict(solver="anderson", warm=True),
    }
    states = {k: WarmStartState(ddpm) for k in specs}
    times: dict[str, list[float]] = {k: [] for k in specs}
    rounds: dict[str, list[int]] = {k: [] for k in specs}
    per_call = {}
    with torch.no_grad():
        den.bind(conds[0])
        for w in sorted({1, args.timing_window}):
            x = torch.randn(w, 1, HORIZON, ACTION_DIM)
            t = torch.zeros(w, dtype=torch.long)
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                den(x, t)
                best = min(best, time.perf_counter() - t0)
            per_call[w] = 1000 * best
        for c, cond in enumerate(conds):
            den.bind(cond)
            for name, spec in specs.items():
                gen = torch.Generator().manual_seed(1000 + c)
                st = states[name]
                init = None
                if spec is not None and spec["warm"] and st.prev is not None:
                    x_init, noise, init = st.next(args.n_shift, (1, HORIZON, ACTION_DIM), gen)
                else:
                    x_init, noise = draw_noise(ddpm, (1, HORIZON, ACTION_DIM), generator=gen)
                best, res = float("inf"), None
                for _ in range(args.timing_repeats):
                    t0 = time.perf_counter()
                    if name == "ddpm_sequential":
                        res = sample_sequential(den, ddpm, x_init, noise)
                    elif name == "ddim_sequential":
                        res = sample_sequential(den, ddim, x_init, torch.zeros(ddim.num_steps, *x_init.shape))
                    elif spec["solver"] == "picard":
                        res = solve_picard(den, ddpm, x_init, noise, window=args.timing_window,
                                           tolerance=args.timing_tolerance_picard, abs_tolerance=args.timing_abs,
                                           init_trajectory=init)
                    else:
                        res = solve_anderson(den, ddpm, x_init, noise, window=args.timing_window,
                                             tolerance=args.timing_tolerance, abs_tolerance=args.timing_abs,
                                             history=args.timing_history, init_trajectory=init)
                    best = min(best, time.perf_counter() - t0)
                st.update(res)
                if spec is not None and spec["warm"] and c == 0:
                    continue
                times[name].append(1000 * best)
                rounds[name].append(res.stats.rounds)
    out = {k: {"latency_ms_median": statistics.median(v), "rounds_median": statistics.median(rounds[k])}
           for k, v in times.items()}
    print(f"timing study (min of {args.timing_repeats}, interleaved; per call: "
          + ", ".join(f"W={w}: {ms:.1f} ms" for w, ms in per_call.items()) + ")")
    for k, v in out.items():
        print(f"  {k:18s} latency median {v['latency_ms_median']:8.1f} ms  rounds median {v['rounds_median']}")
    return {"per_call_ms": per_call, "samplers": out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default="runs/solver_sweep")
    p.add_argument("--train-seconds", type=float, default=200.0)
    p.add_argument("--cycles", type=int, default=6)
    p.add_argument("--n-shift", type=int, default=8)
    p.add_argument("--windows", type=int, nargs="+", default=[16, 32, 50])
    p.add_argument("--tolerances", type=float, nargs="+", default=[0.1])
    p.add_argument("--abs-tolerances", type=float, nargs="+", default=[1e-3, 3e-3])
    p.add_argument("--histories", type=int, nargs="+", default=[2])
    p.add_argument("--solvers", nargs="+", default=["picard", "picard_exact", "anderson"],
                   help="picard = ParaDiGMS cumulative form; picard_exact = exact linear part; anderson = ParaTAA")
    p.add_argument("--model", default=None, help="load/save the trained network here (default OUT/sweep_model.pt)")
    p.add_argument("--ddim-steps", type=int, default=16)
    p.add_argument("--down-dims", type=int, nargs=3, default=[64, 128, 256])
    p.add_argument("--policy-study", action="store_true", help="also compare deadline policies")
    p.add_argument("--only-policy-study", action="store_true")
    p.add_argument("--policy-window", type=int, default=32)
    p.add_argument("--policy-abs-tolerance", type=float, default=2e-3)
    p.add_argument("--timing-study", action="store_true", help="interleaved wall-clock comparison")
    p.add_argument("--only-timing-study", action="store_true")
    p.add_argument("--timing-repeats", type=int, default=3)
    p.add_argument("--timing-window", type=int, default=32)
    p.add_argument("--timing-tolerance", type=float, default=0.03)
    p.add_argument("--timing-tolerance-picard", type=float, default=0.1)
    p.add_argument("--timing-abs", type=float, default=3e-3)
    p.add_argument("--timing-history", type=int, default=2)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 on a shared 2-core box: 2 threads spin against other jobs)")
    args = p.parse_args()
    args.policy_study = args.policy_study or args.only_policy_study
    args.timing_study = args.timing_study or args.only_timing_study
    report = run(args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "solver_sweep.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'solver_sweep.json'}")


if __name__ == "__main__":
    main()
