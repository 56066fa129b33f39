"""Cost of one batched denoiser call per window size W: direct model call vs BatchedDenoiser.

Shows how round time grows with the window (the trade-off behind the solvers' window size)
and what the static-buffer executor (eager) or CUDA-graph replay saves per call.

    .venv/bin/python benchmarks/executor_bench.py --windows 1 2 4 8 16 32 --out runs/executor_bench.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from paradigms_policy.model.conditional_unet1d import ConditionalUnet1D
from paradigms_policy.runtime import BatchedDenoiser, describe_device, resolve_device, set_cpu_threads


def time_calls(fn, repeats: int, sync: bool) -> list[float]:
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--down-dims", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--horizon", type=int, default=16)
    parser.add_argument("--action-dim", type=int, default=7)
    parser.add_argument("--cond-dim", type=int, default=38)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/executor_bench.json"))
    args = parser.parse_args()

    device = resolve_device(args.device)
    set_cpu_threads(args.threads)
    torch.manual_seed(0)
    model = ConditionalUnet1D(args.action_dim, global_cond_dim=args.cond_dim, down_dims=args.down_dims).eval().to(device)
    event = (args.horizon, args.action_dim)
    executors = ["eager"] + (["cuda_graph"] if device.type == "cuda" else [])
    denoisers = {e: BatchedDenoiser(model, event_shape=event, cond_dim=args.cond_dim, executor=e, device=device) for e in executors}
    cond = torch.randn(args.batch, args.cond_dim, device=device)
    for d in denoisers.values():
        d.warmup(args.windows, batch=args.batch)
        d.bind(cond)
    sync = device.type == "cuda"
    rows = []
    for w in args.windows:
        x = torch.randn(w, args.batch, *event, device=device)
        t = torch.randint(0, 100, (w,), device=device)
        flat_x = x.reshape(w * args.batch, *event)
        flat_t = t.repeat_interleave(args.batch)
        flat_c = cond.repeat(w, 1)

        def direct():
            with torch.no_grad():
                model(flat_x, flat_t, global_cond=flat_c)

        direct()
        row = {"window": w, "direct_ms": float(np.median(time_calls(direct, args.repeats, sync)))}
        for name, d in denoisers.items():
            row[f"{name}_ms"] = float(np.median(time_calls(lambda: d(x, t), args.repeats, sync)))
        rows.append(row)
        print("  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    params = sum(p.numel() for p in model.parameters())
    report = {"device": describe_device(device), "params": params, "batch": args.batch, "down_dims": args.down_dims, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{params / 1e6:.2f}M params on {report['device']}; wrote {args.out}")


if __name__ == "__main__":
    main()
