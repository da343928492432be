#!/usr/bin/env bash
# npconv's device check (issue 15): one run of under 10 minutes on one CUDA GPU (H100/H200)
# with CuPy, torch (CUDA) and hypothesis installed.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # default OUT_DIR: ./gpu-check-out
#
# Steps, each under its own timeout (seconds, overridable by the variables named; 0 skips
# the step, e.g. T_BENCH=0 to rerun the checks only):
#   1. python -m npconv on CuPy                       T_MAIN=40
#   2. pytest tests/test_gpu.py (hypothesis, ci)      T_TESTS=150
#   3. benchmarks/gpu_probe.py                        T_PROBE=160
#   4. benchmarks/run.py --device cuda $BENCH_ARGS    T_BENCH=180
#      (default BENCH_ARGS: --quick --sections suite zoo; every zoo network)
# Everything goes to OUT_DIR: env.txt, one log per step, bench-cuda.md (+ .json) and
# summary.md, a markdown page to paste into docs/benchmarks-gpu.md.
#
# Exit status: 0 every step passed; 1 a step failed or timed out (summary.md says which);
# 3 no usable GPU: the CPU-side preparation ran (the probe on the stand-in backend, the
# GPU tests skipping cleanly) and nothing needed a GPU; 2 a bad environment (CUPY_TF32 on).
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-$PWD/gpu-check-out}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
export CUPY_CACHE_DIR=${CUPY_CACHE_DIR:-${TMPDIR:-/tmp}/npconv-cupy-kernel-cache}
if [ -n "${CUPY_TF32:-}" ] && [ "${CUPY_TF32}" != "0" ]; then
    echo "gpu_check: CUPY_TF32=$CUPY_TF32 makes float32 matmuls TF32; unset it" >&2
    exit 2
fi
unset CUPY_TF32 NVIDIA_TF32_OVERRIDE NPCONV_BACKEND
T_MAIN=${T_MAIN:-40} T_TESTS=${T_TESTS:-150} T_PROBE=${T_PROBE:-160} T_BENCH=${T_BENCH:-180}
BENCH_ARGS=${BENCH_ARGS:---quick --sections suite zoo}
START=$(date +%s)
STEPS=()

step() {  # step NAME LOG TIMEOUT COMMAND...: run, tee to OUT/LOG, record the status
    local name=$1 log=$2 limit=$3
    shift 3
    if [ "$limit" -le 0 ]; then  # T_...=0 skips a step (a rerun of the others)
        STEPS+=("| $name | skipped | 0 s | |")
        return
    fi
    echo "== $name (timeout ${limit}s)"
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$log"
    local rc=${PIPESTATUS[0]}
    local status=PASS
    [ "$rc" -ne 0 ] && status="FAIL (exit $rc)"
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && status="TIMEOUT after ${limit}s"
    STEPS+=("| $name | $status | $(( $(date +%s) - t0 )) s | \`$log\` |")
    echo "== $name: $status"
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
        || echo "nvidia-smi: not available"
    "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("numpy", "cupy", "torch", "hypothesis"):
    try:
        mod = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        print(name, "missing:", type(exc).__name__, exc)
        continue
    extra = ""
    if name == "cupy":
        try:
            extra = f" (CUDA runtime {mod.cuda.runtime.runtimeGetVersion()})"
        except Exception as exc:  # noqa: BLE001
            extra = f" (no CUDA runtime: {type(exc).__name__})"
    if name == "torch":
        extra = f" (CUDA {mod.version.cuda}, cuDNN {mod.backends.cudnn.version()})"
    print(name, mod.__version__ + extra)
EOF
} 2>&1 | tee "$OUT/env.txt"

if ! "$PY" benchmarks/gpu_probe.py --detect; then
    echo "== no usable GPU: the CPU-side preparation only"
    step "probe on the CPU stand-in backend" probe-standin.log 400 \
        "$PY" benchmarks/gpu_probe.py --standin --summary "$OUT/probe-standin-summary.md"
    step "tests/test_gpu.py skips cleanly" test_gpu.log 120 \
        "$PY" -m pytest tests/test_gpu.py -q -rs -p no:cacheprovider
    printf '%s\n' "| step | status | time | log |" "|---|---|---|---|" "${STEPS[@]}" \
        > "$OUT/summary.md"
    echo "gpu_check: no usable GPU (see above); the CPU-side preparation is in $OUT." \
         "Run this script on a machine with a CUDA GPU, CuPy and a CUDA build of torch." >&2
    exit 3
fi

step "python -m npconv on CuPy" main.log "$T_MAIN" \
    env NPCONV_BACKEND=cupy "$PY" -m npconv --batch 16 --repeat 3
step "tests/test_gpu.py against torch CUDA" test_gpu.log "$T_TESTS" \
    "$PY" -m pytest tests/test_gpu.py -m gpu -q -rs -p no:cacheprovider --durations=8
step "benchmarks/gpu_probe.py" probe.log "$T_PROBE" \
    "$PY" benchmarks/gpu_probe.py --summary "$OUT/probe-summary.md"
# shellcheck disable=SC2086 # BENCH_ARGS is a list of options
step "benchmarks/run.py --device cuda $BENCH_ARGS" bench.log "$T_BENCH" \
    "$PY" benchmarks/run.py --device cuda $BENCH_ARGS --output "$OUT/bench-cuda.md"

FAILED=0
for row in "${STEPS[@]}"; do
    case "$row" in *"| PASS |"* | *"| skipped |"*) ;; *) FAILED=1 ;; esac
done
{
    echo "# npconv on a GPU"
    echo
    echo "Command: \`bash benchmarks/gpu_check.sh\` ($(( $(date +%s) - START )) s in all)."
    echo
    echo '```text'
    cat "$OUT/env.txt"
    echo '```'
    echo
    echo "| step | status | time | log |"
    echo "|---|---|---|---|"
    printf '%s\n' "${STEPS[@]}"
    echo
    grep -E "[0-9]+ (passed|failed|skipped|errors?)" "$OUT/test_gpu.log" | tail -n 1 | sed 's/^/tests\/test_gpu.py: /'
    echo
    [ -f "$OUT/probe-summary.md" ] && cat "$OUT/probe-summary.md"
    echo
    echo '```text'
    grep -E "^(FAIL|OK|MISMATCH)|time:" "$OUT/main.log" 2>/dev/null | head -n 5
    echo '```'
    echo
    if [ -f "$OUT/bench-cuda.md" ]; then
        echo "Benchmarks against torch+cuDNN (TF32 off on both sides): \`bench-cuda.md\`."
        grep -E "^\| .*(PASS|FAIL)" "$OUT/bench-cuda.md" | head -n 40
    else
        echo "benchmarks/run.py wrote no report (see bench.log)."
    fi
} > "$OUT/summary.md"
echo "== summary: $OUT/summary.md"
cat "$OUT/summary.md"
exit $FAILED
