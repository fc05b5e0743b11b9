#!/usr/bin/env bash
# The full LM comparison (single En, single De, union, multimodel + struct, multimodel + contrastive)
# on the whole embedded En/De corpus at a larger size than the demo. Writes OUT/run/table.md.
# Usage: scripts/run_lm_table.sh [OUT] [extra lm_pipeline.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/lm_table}; shift || true
SEED=${SEED:-1}
python scripts/prepare_parallel.py --tsv examples/data/en_de_small.tsv --langs en,de \
    --out "$OUT/data" --vocab-size 4000 --seed 1 --force --quiet
python scripts/lm_pipeline.py --data "$OUT/data/data-bin" --out "$OUT/run" \
    --models single_en,single_de,union,multi_struct,multi_contr --arch mdnas_rnn_tiny --batch-size 64 \
    --search-epochs 3 --retrain-epochs 6 --struct-coef 0.1 --contrastive-coef 0.1 --seed "$SEED" \
    "$@" -- --embed-dim 48 --hidden-dim 48
