#!/usr/bin/env bash
# One command for a bare GPU machine: CUDA tests, then the profiler on CUDA (shipped checkpoint and a
# DiffusionPolicy-size random network, CUDA graphs against eager), then one JSON + markdown table.
#
#   benchmarks/gpu_check.sh --prepare            # here, before a device session: wheels for Python 3.12
#   benchmarks/gpu_check.sh [--out DIR]          # on the device (default out: benchmarks/results/gpu)
#   benchmarks/gpu_check.sh --dry-run [--out DIR]  # the same steps on CPU with tiny settings (CI runs this)
#
# The device has Python 3.12 and torch (CUDA) but not hydra-core/omegaconf/antlr4: --prepare downloads
# them into benchmarks/wheels-py312 (git-ignored; carry it to the device). They are installed with
# --no-deps into a private folder, so torch is never touched. The package runs from this tree
# (PYTHONPATH), not installed. Every step is time-boxed; the whole run stays under TOTAL_BUDGET_S;
# what was measured is written even when a step fails or runs out of time. PYTHON picks the
# interpreter (default python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-python3}"
WHEELS="$REPO/benchmarks/wheels-py312"
# the versions the CPU venv runs (hydra-core 1.3 needs omegaconf 2.3 and antlr4 4.9, which is sdist-only)
HYDRA_WHEELS=("hydra-core==1.3.8" "omegaconf==2.3.1")
ANTLR_SDIST="antlr4-python3-runtime==4.9.3"
# on the device already; carried in case an image lacks them, installed only then
FALLBACK_WHEELS=("PyYAML==6.0.3" "packaging==26.4")
PIP_312=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

MODE=device
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) MODE=dry ;;
    --prepare) MODE=prepare ;;
    --out) OUT="$2"; shift ;;
    --out=*) OUT="${1#--out=}" ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (expected --dry-run, --prepare, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done

if [[ $MODE == prepare ]]; then
  rm -rf "$WHEELS"; mkdir -p "$WHEELS/fallback"
  "$PYTHON" -m pip download --quiet "${PIP_312[@]}" -d "$WHEELS" "${HYDRA_WHEELS[@]}"
  "$PYTHON" -m pip download --quiet "${PIP_312[@]}" -d "$WHEELS/fallback" "${FALLBACK_WHEELS[@]}"
  # pure Python, published as an sdist only: build a py3-none-any wheel here (it installs anywhere)
  "$PYTHON" -m pip wheel --quiet --no-deps -w "$WHEELS" "$ANTLR_SDIST"
  ls -l "$WHEELS" "$WHEELS/fallback"
  echo "gpu_check: wheels ready in ${WHEELS#"$REPO"/}; name benchmarks/wheels-py312 in the device run's carry"
  exit 0
fi

if [[ $MODE == dry ]]; then
  OUT="${OUT:-$(mktemp -d -t gpu_check_dry.XXXXXX)}"
  TOTAL_BUDGET_S=170
  DEVICE=cpu; GRAPH_EXECUTOR=eager  # no CUDA graphs on a CPU: the "graph" runs are eager too
  CYCLES=2; WARMUP_SOLVES=0; EXTRA=(threads=1)
  DP_NET=("random_network.down_dims=[16,32]" "random_network.diffusion_step_embed_dim=16")
  T_INSTALL=30; T_TESTS=60; T_RUN=60
else
  OUT="${OUT:-$REPO/benchmarks/results/gpu}"
  TOTAL_BUDGET_S=450  # 7.5 min: the check must end within 8
  DEVICE=cuda; GRAPH_EXECUTOR=cuda_graph
  CYCLES="${CYCLES:-20}"; WARMUP_SOLVES=2; EXTRA=()
  DP_NET=("random_network.down_dims=[256,512,1024]" "random_network.diffusion_step_embed_dim=128")  # 63.5M params
  T_INSTALL=60; T_TESTS=120; T_RUN=110
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d -t gpu_check_work.XXXXXX)"
RUNS="$WORK/runs"; STEPS="$WORK/steps.tsv"; LOG="$OUT/gpu_check.log"
mkdir -p "$RUNS"; : >"$STEPS"; : >"$LOG"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg PYTHONUNBUFFERED=1
START=$SECONDS
FAILED=0

say() { echo "[gpu_check $((SECONDS - START))s] $*" | tee -a "$LOG"; }

# step NAME TIMEOUT_S CMD...: run CMD within min(TIMEOUT_S, time left - reserve), log its output and
# elapsed time, record ok/failed/timeout/skipped; never stops the script.
step() {
  local name="$1" limit="$2"; shift 2
  local left=$((TOTAL_BUDGET_S - 15 - (SECONDS - START)))  # 15 s kept for the summary
  (( limit > left )) && limit=$left
  if (( limit < 10 )); then
    say "$name: SKIPPED (out of time budget)"; printf '%s\tskipped\t0\t0\n' "$name" >>"$STEPS"; FAILED=1; return 0
  fi
  say "$name: start (limit ${limit}s)"
  local t0=$SECONDS rc
  set +e
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  set -e
  local status=ok
  if (( rc == 124 || rc == 137 )); then status=timeout; elif (( rc != 0 )); then status=failed; fi
  [[ $status == ok ]] || FAILED=1
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$((SECONDS - t0))" >>"$STEPS"
  say "$name: $status (rc $rc, $((SECONDS - t0))s)"
}

install_wheels() {
  if "$PYTHON" -c "import hydra, omegaconf" 2>/dev/null && [[ $MODE == device ]]; then
    echo "hydra-core and omegaconf already importable: nothing to install"; return 0
  fi
  if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
    if "$PYTHON" -c "import hydra, omegaconf" 2>/dev/null; then
      echo "no wheels in benchmarks/wheels-py312; hydra-core and omegaconf importable already"; return 0
    fi
    echo "hydra-core/omegaconf missing and no wheels in benchmarks/wheels-py312:" \
         "run 'benchmarks/gpu_check.sh --prepare' before the device session and carry that folder" >&2
    return 1
  fi
  local wheels=("$WHEELS"/*.whl) module
  for module in yaml packaging; do
    if ! "$PYTHON" -c "import $module" 2>/dev/null; then
      echo "$module missing: installing it from $WHEELS/fallback"
      wheels+=("$WHEELS"/fallback/"$([[ $module == yaml ]] && echo pyyaml || echo packaging)"-*.whl)
    fi
  done
  "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "${wheels[@]}"
  PYTHONPATH="$PYTHONPATH:$WORK/site" "$PYTHON" -c "import hydra, omegaconf; print('hydra', hydra.__version__, 'omegaconf', omegaconf.__version__, 'from', hydra.__file__)"
}

MACHINE_PY='
import json, platform, sys
import numpy, torch
env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda, "numpy": numpy.__version__,
       "cuda_available": torch.cuda.is_available(), "mode": sys.argv[2]}
env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (" + platform.machine() + ")"
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(env)
if sys.argv[2] == "device" and not torch.cuda.is_available():
    sys.exit("torch sees no CUDA device: this is the device check (use --dry-run on a CPU)")
'
# the profiler's default samplers, plus Picard and Anderson with whole rounds on the device (*_rounds: flags
# read every <= 8 rounds, blocks of rounds captured as CUDA graphs) and Newton on DDIM-16 (few, wide rounds)
SAMPLERS="samplers=[ddpm_sequential,ddim_sequential,picard_cold,picard_warm,picard_warm_rounds,anderson_cold,anderson_warm,anderson_warm_rounds,newton_ddim16_warm]"
ROUNDS_VARIANT=("+sampler_overrides.picard_warm_rounds.sampler=picard_warm" "+sampler_overrides.picard_warm_rounds.rounds_per_sync=8"
                "+sampler_overrides.anderson_warm_rounds.sampler=anderson_warm" "+sampler_overrides.anderson_warm_rounds.rounds_per_sync=8")
PROFILE=("$PYTHON" -m paradigms_policy.profile device="$DEVICE" cycles="$CYCLES" warmup_solves="$WARMUP_SOLVES" seed=0
         "$SAMPLERS" "${ROUNDS_VARIANT[@]}" "${EXTRA[@]}")

summarize() {
  "$PYTHON" -m paradigms_policy.profiling.compare --runs "$RUNS" --steps "$STEPS" --env "$WORK/env.json" \
    --out "$OUT" $([[ $MODE == dry ]] && echo --dry-run) >>"$LOG" 2>&1 || FAILED=1
}
trap summarize EXIT  # the JSON and table are written whatever happened before

say "mode $MODE, python $PYTHON, out $OUT, budget ${TOTAL_BUDGET_S}s"
step machine 60 "$PYTHON" -c "$MACHINE_PY" "$WORK/env.json" "$MODE"
export -f install_wheels; export PYTHON WHEELS WORK MODE
step install_wheels "$T_INSTALL" bash -c install_wheels
[[ -d "$WORK/site" ]] && export PYTHONPATH="$PYTHONPATH:$WORK/site"
step cuda_tests "$T_TESTS" "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests/test_executor.py tests/test_warmup_capture.py \
  tests/test_device_rounds.py
# graphs first (the headline), then eager; the shipped checkpoint profiles on its recorded episodes
step shipped_graph "$T_RUN" "${PROFILE[@]}" executor="$GRAPH_EXECUTOR" out_dir="$RUNS/shipped_graph"
step dp_size_graph "$T_RUN" "${PROFILE[@]}" executor="$GRAPH_EXECUTOR" out_dir="$RUNS/dp_size_graph" checkpoint=random "${DP_NET[@]}"
step shipped_eager "$T_RUN" "${PROFILE[@]}" executor=eager out_dir="$RUNS/shipped_eager"
step dp_size_eager "$T_RUN" "${PROFILE[@]}" executor=eager out_dir="$RUNS/dp_size_eager" checkpoint=random "${DP_NET[@]}"
say "done in $((SECONDS - START))s; writing $OUT/gpu_check.{json,md,png}"
trap - EXIT
summarize
say "wrote $OUT/gpu_check.json, gpu_check.md, gpu_check.png, gpu_check.log"
cat "$OUT/gpu_check.md"
rm -rf "$WORK"
exit "$FAILED"
