#!/usr/bin/env bash
# The main job on the embedded default corpus (examples/data/en_de_small.tsv, real En/De text):
# prepare the data, then for single En, the union model and the structural multimodel:
# search, derive, retrain, fairseq-eval-lm per domain, and print the perplexity table.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-build/demo}
python scripts/prepare_parallel.py --tsv examples/data/en_de_small.tsv --langs en,de \
    --out "$OUT/data" --vocab-size 3000 --max-rows 3000 --seed 1 --force --quiet
python scripts/lm_pipeline.py --data "$OUT/data/data-bin" --out "$OUT/run" \
    --models single_en,union,multi_struct --arch mdnas_rnn_tiny --batch-size 64 \
    --search-epochs "${DEMO_SEARCH_EPOCHS:-3}" --retrain-epochs "${DEMO_RETRAIN_EPOCHS:-4}" --seed 1
python -m mdnas_fairseq.viz.report "$OUT/run/multi_struct/search" >"$OUT/report.log" 2>&1 || {
    cat "$OUT/report.log"; exit 1; }
echo "search report: $OUT/run/multi_struct/search/report.md (drawings in its figures/)"
