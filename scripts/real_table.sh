#!/usr/bin/env bash
# One real-scale table of issue 26 (docs/language-models.md, "The real protocol"): the whole gettext
# En/De corpus prepared once (splits drawn with seed 1, a 4,000-piece sentencepiece model), then
# scripts/lm_pipeline.py --protocol real for one search space and one seed. Writes
# OUT/<space>/seed<SEED>/table.md and table.json; the data in OUT/data (shared by every run of the
# table: two runs side by side wait for one preparation).
# Usage: scripts/real_table.sh L|G rnn|transformer SEED [OUT] [more lm_pipeline.py flags]
#   L: domains = the languages en,de; G: domains = the genres (column source) of the English side
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n '2,8p' "$0"; exit 2; }
TABLE=$1; SPACE=$2; SEED=$3; shift 3
OUT=build/real/$TABLE
if [ $# -gt 0 ] && [[ $1 != -* ]]; then OUT=$1; shift; fi
TSV=${REAL_TSV:-../shared/data/parallel/gettext.en-de.tsv}
case $TABLE in
    L) DOMAINS=(--langs en,de) ;;
    G) DOMAINS=(--domain-column source --langs en) ;;
    *) echo "table $TABLE: L (languages en,de) or G (genres in English)" >&2; exit 2 ;;
esac
case $SPACE in
    rnn) ARCH=mdnas_rnn_tiny ;;
    transformer) ARCH=mdnas_transformer_lm_tiny ;;
    *) echo "space $SPACE: rnn or transformer" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
(
    flock 9
    [ -f "$OUT/data/data-bin/mdnas_data.json" ] ||
        python scripts/prepare_parallel.py --tsv "$TSV" "${DOMAINS[@]}" --out "$OUT/data" \
            --vocab-size 4000 --seed 1 --quiet
) 9>"$OUT/.prepare.lock"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python scripts/lm_pipeline.py --protocol real --arch "$ARCH" --data "$OUT/data/data-bin" --out "$OUT/$SPACE/seed$SEED" --seed "$SEED" "$@"
