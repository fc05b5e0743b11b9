#!/usr/bin/env bash
# GPU checks of the search (needs a CUDA device; the test suite never does).
#
#   scripts/gpu_check.sh [OUT]        (default OUT: build/gpu_check)
#
# 1. prepares a small En/De corpus from the embedded data;
# 2. a short LM search (mdnas_rnn_small, 256 dims) in fp32 and in --fp16;
# 3. the derived multimodel's retraining (fp32);
# 4. with two or more GPUs, a 2-GPU data-parallel search over NCCL (one process per GPU).
# Prints the words/s fairseq logged for each run, and fails if an alpha is not finite, if a run
# overflowed in fp16 to the minimum loss scale, or if the two GPUs' alphas differ.
# GPU_CHECK_DRY_RUN=1 runs the same steps on the CPU at a tiny size (to check the script itself).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/gpu_check}
PY=${PYTHON:-python}
DEVICE=(); FP16=(--fp16)
if [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
    DEVICE=(--cpu --embed-dim 16 --hidden-dim 16 --num-nodes 3); FP16=(--fp16 --fp16-no-flatten-grads --fp16-init-scale 4)
    NGPU=0
else
    $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check.sh: no CUDA device')"
    NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
fi
mkdir -p "$OUT"
$PY scripts/prepare_parallel.py --tsv examples/data/en_de_small.tsv --langs en,de --out "$OUT/data" \
    --vocab-size 2000 --max-rows 2000 --seed 1 --force --quiet
DATA="$OUT/data/data-bin"
COMMON=(--user-dir mdnas_fairseq --task multidomain_nas --domains en,de --arch mdnas_rnn_small
        --criterion multidomain_nas_loss --struct-coef 0.1 --optimizer adam --lr 0.003 --clip-norm 0.25
        --batch-size 64 --max-update 60 --log-format simple --log-interval 20 --num-workers 0 --seed 1
        --no-epoch-checkpoints --no-alpha-heatmaps "${DEVICE[@]}")

wps() { grep -o "wps [0-9.]*" "$1" | tail -1 | cut -d' ' -f2; }

run() {  # name, extra flags...
    local name=$1; shift
    local start=$(date +%s)
    CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} fairseq-train "$DATA" "${COMMON[@]}" --save-dir "$OUT/$name" \
        "$@" >"$OUT/$name.log" 2>&1 || { tail -30 "$OUT/$name.log"; echo "FAILED: $name"; exit 1; }
    printf "%-22s words/s %10s   (%ss wall, log %s)\n" "$name" "$(wps "$OUT/$name.log")" "$(( $(date +%s) - start ))" \
        "$OUT/$name.log"
}

check_alpha() {  # checkpoint -> fails unless alpha is finite
    $PY - "$1" <<'EOF'
import sys, torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=False)["model"]
alpha = [v for k, v in state.items() if k.endswith("arch.alpha")][0]
assert alpha.dtype == torch.float32, alpha.dtype
assert torch.isfinite(alpha).all(), "alpha is not finite"
print(f"  alpha finite, |alpha|max {alpha.abs().max():.4f}")
EOF
}

run search_fp32
check_alpha "$OUT/search_fp32/checkpoint_last.pt"
run search_fp16 "${FP16[@]}"
grep -q "Minimum loss scale reached" "$OUT/search_fp16.log" && { echo "FAILED: fp16 loss scale collapsed"; exit 1; }
check_alpha "$OUT/search_fp16/checkpoint_last.pt"
run retrain_fp32 --genotype "$OUT/search_fp32/genotype.json"

if [ "$NGPU" -ge 2 ]; then
    PORT=$((20000 + RANDOM % 20000))
    for R in 0 1; do
        CUDA_VISIBLE_DEVICES=$R $PY tests/fairseq_capture.py "$OUT/nccl_dump" train "$DATA" "${COMMON[@]}" \
            --save-dir "$OUT/search_nccl" --distributed-world-size 2 --distributed-rank $R --device-id 0 \
            --distributed-backend nccl --distributed-init-method tcp://127.0.0.1:$PORT --distributed-no-spawn \
            >"$OUT/search_nccl_rank$R.log" 2>&1 &
    done
    wait || { tail -30 "$OUT/search_nccl_rank0.log"; echo "FAILED: 2-GPU search"; exit 1; }
    printf "%-22s words/s %10s\n" "search_nccl (2 GPUs)" "$(wps "$OUT/search_nccl_rank0.log")"
    # the derived multimodel over 2 GPUs with PyTorch's DDP: each GPU's batch uses one domain's modules
    CUDA_VISIBLE_DEVICES=0,1 run retrain_nccl --genotype "$OUT/search_fp32/genotype.json" --distributed-world-size 2 --find-unused-parameters
    $PY - "$OUT/nccl_dump" <<'EOF'
import glob, sys, torch
for epoch_file in sorted(glob.glob(f"{sys.argv[1]}/rank0_epoch*.pt")):
    a = torch.load(epoch_file)
    b = torch.load(epoch_file.replace("rank0_", "rank1_"))
    alpha = [k for k in a if k.endswith("arch.alpha")][0]
    assert torch.isfinite(a[alpha]).all(), "alpha is not finite"
    assert torch.equal(a[alpha], b[alpha]), f"{epoch_file}: the GPUs' alphas differ"
print("  2-GPU alphas identical and finite")
EOF
else
    echo "search_nccl: skipped (one GPU)"
fi
echo "gpu_check: all checks passed"
