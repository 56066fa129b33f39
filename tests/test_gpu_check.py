"""benchmarks/gpu_check.sh: its dry run (the device check's steps on CPU, tiny settings) and its summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paradigms_policy.profiling.compare import compare, format_markdown

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = ["machine", "install_wheels", "cuda_tests", "shipped_graph", "dp_size_graph", "shipped_eager", "dp_size_eager"]
SAMPLERS = ["ddpm_sequential", "ddim_sequential", "picard_cold", "picard_warm", "picard_warm_rounds", "anderson_cold",
            "anderson_warm", "anderson_warm_rounds", "newton_ddim16_warm"]


def run_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    proc = run_script("--dry-run", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return out, proc


@pytest.mark.slow
def test_dry_run_runs_every_step(dry_run):
    out, proc = dry_run
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["dry_run"] is True
    assert [s["name"] for s in summary["steps"]] == STEPS
    assert all(s["status"] == "ok" for s in summary["steps"]), summary["steps"]
    assert summary["environment"]["cuda_available"] in (True, False)
    assert list(summary["runs"]) == ["shipped_graph", "dp_size_graph", "shipped_eager", "dp_size_eager"]
    assert list(summary["comparison"]) == ["shipped", "dp_size"]
    shipped = summary["runs"]["shipped_graph"]
    assert shipped["checkpoint"]["name"] == "lift_lowdim.pt" and len(shipped["checkpoint"]["sha256"]) == 64
    assert summary["runs"]["dp_size_graph"]["checkpoint"]["name"] == "random"
    for name, report in summary["runs"].items():
        assert report["device"].startswith("cpu") and report["executor"] == "eager", name
        assert list(report["samplers"]) == SAMPLERS, name
        for sampler, s in report["samplers"].items():
            assert s["allocations"]["created_while_timed"] == {"slots": 0, "graphs": 0}, (name, sampler)
    for rows in summary["comparison"].values():
        assert [r["sampler"] for r in rows] == SAMPLERS
        assert all(r["graph_speedup_p50"] > 0 for r in rows)


@pytest.mark.slow
def test_dry_run_writes_table_plot_and_log(dry_run):
    out, proc = dry_run
    table = (out / "gpu_check.md").read_text()
    assert "DRY RUN" in table and "| `anderson_warm` |" in table and "## shipped" in table
    assert (out / "gpu_check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (out / "gpu_check.log").read_text()
    assert "cuda_tests: ok" in log and "skipped" in log  # the CUDA tests ran, and skipped on this CPU
    assert "DRY RUN" in proc.stdout


def test_unknown_argument_is_refused():
    proc = run_script("--fast", timeout=30)
    assert proc.returncode == 2 and "unknown argument '--fast'" in proc.stderr


def _report(p50: dict[str, float]) -> dict:
    samplers = {}
    for name, latency in p50.items():
        samplers[name] = {"rounds": {"median": 10.0}, "latency_ms": {"p50": latency, "p99": 2 * latency},
                          "error_normalized": {"max_abs": 0.0}, "speedup_p50": {"vs_ddpm": p50["ddpm_sequential"] / latency},
                          "allocations": {"created_while_timed": {"slots": 0, "graphs": 0}}}
    return {"checkpoint": {"name": "x.pt", "sha256": "0" * 64, "parameters": 10}, "cycles": 3, "observations": "o",
            "samplers": samplers}


def test_compare_puts_graph_and_eager_side_by_side():
    reports = {"net_graph": _report({"ddpm_sequential": 10.0, "picard_warm": 2.0}),
               "net_eager": _report({"ddpm_sequential": 40.0, "picard_warm": 6.0})}
    table = compare(reports)
    rows = {r["sampler"]: r for r in table["net"]}
    assert rows["picard_warm"]["graph_speedup_p50"] == pytest.approx(3.0)
    assert rows["ddpm_sequential"]["graph_speedup_p50"] == pytest.approx(4.0)
    assert rows["picard_warm"]["graph"]["speedup_p50"]["vs_ddpm"] == pytest.approx(5.0)
    markdown = format_markdown({"comparison": table, "runs": reports, "steps": []})
    assert "| `picard_warm` | 10 | 2.00/4.00 | 6.00/12.00 | 3.00x | 5.00x / - |" in markdown
    with pytest.raises(ValueError, match="net_fast"):
        compare({"net_fast": reports["net_graph"]})
