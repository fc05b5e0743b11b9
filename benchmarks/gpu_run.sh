#!/usr/bin/env bash
# All GPU measurements in one command, each part boxed in time so that a short lease still
# returns the parts that finished (the test suite never needs a GPU):
#
#   BUDGET=540 OUT=build/gpu_run bash benchmarks/gpu_run.sh
#
# 1. benchmarks/lm_search_speed.py --device cuda: compiled rows (inductor), then the same with CUDA
#    graphs (--compile-backend inductor-cudagraphs);
# 2. scripts/gpu_check.sh (fp32 and fp16 search, derived retraining, 2-GPU runs where two GPUs exist);
# 3. fairseq-train end to end (search compiled and eager, lstm_lm);
# 4. the eager rows with the D = 1, 8 scaling.
# Each part writes OUT/<part>.txt. BUDGET: seconds for the whole run (default 540).
# GPU_RUN_DRY=1 runs the same parts on the CPU at a tiny size (to check the script itself).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu_run}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
DEV=cuda; TINY=()
if [ "${GPU_RUN_DRY:-0}" = 1 ]; then
    DEV=cpu; export GPU_CHECK_DRY_RUN=1
    TINY=(--vocab 50 --nodes 2 --length 5 --steps 1 --repeats 1 --e2e-updates 12)
fi
T0=$(date +%s)
left() { echo $(( ${BUDGET:-540} - ($(date +%s) - T0) )); }
box() { local l; l=$(left); echo $(( $1 < l - 5 ? $1 : (l > 6 ? l - 5 : 1) )); }
part() {  # name, seconds, command...
    local name=$1 want=$2; shift 2
    echo "== $name ($(left) s left)"
    timeout "$(box "$want")" "$@" >"$OUT/$name.txt" 2>&1
    echo "exit status $?" >>"$OUT/$name.txt"
    grep -v "SyntaxWarning\|re.compile\|tensorboardX\|^INFO:mdnas" "$OUT/$name.txt"
}
BENCH=("$PY" benchmarks/lm_search_speed.py --device "$DEV" "${TINY[@]}")
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    "$PY" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__)"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
part bench_compiled 120 "${BENCH[@]}" --hidden 32,256 --modes on --domain-counts ''
part bench_cudagraphs 120 "${BENCH[@]}" --hidden 32,256 --modes on --domain-counts '' \
    --compile-backend inductor-cudagraphs
part gpu_check 170 bash scripts/gpu_check.sh "$OUT/gpu_check"
part e2e 170 "${BENCH[@]}" --only-fairseq-train --e2e-dir "$OUT/e2e"
part bench_eager 100 "${BENCH[@]}" --hidden 32,256 --modes off --domain-counts 1,8
echo "== done ($(left) s left)"
