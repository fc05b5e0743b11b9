#!/usr/bin/env bash
# Download IWSLT14 De-En (needs internet) and prepare it for --task multidomain_nas:
#
#   scripts/prepare_iwslt14.sh [OUTDIR] [extra scripts/prepare_parallel.py options]
#
# OUTDIR (default build/iwslt14) receives:
#   orig/de-en.tgz, orig/de-en/       the download, as published for fairseq
#   iwslt14.de-en.tsv                 en, de, split (train / valid / test as in fairseq's
#                                     examples/translation/prepare-iwslt14.sh; see
#                                     scripts/iwslt14_to_tsv.py)
#   data/                             output of scripts/prepare_parallel.py: one shared
#                                     sentencepiece model (10k pieces, as the authors' shared
#                                     10k BPE vocabulary), data/data-bin for fairseq
# Environment: LOWERCASE=1 (default; fairseq lowercases IWSLT14) or 0, VOCAB_SIZE (10000),
# PYTHON (default: the project's .venv/bin/python if present, else python3),
# IWSLT14_URL (default the fairseq mirror). An existing orig/de-en.tgz is reused, so a file
# downloaded by hand can be placed there.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
OUTDIR="${1:-build/iwslt14}"
[ $# -gt 0 ] && shift
URL="${IWSLT14_URL:-http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz}"
VOCAB_SIZE="${VOCAB_SIZE:-10000}"
LOWERCASE="${LOWERCASE:-1}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

die() { echo "prepare_iwslt14.sh: error: $*" >&2; exit 1; }

ORIG="$OUTDIR/orig"
TGZ="$ORIG/de-en.tgz"
mkdir -p "$ORIG"

if [ -s "$TGZ" ]; then
    echo "using existing $TGZ"
else
    echo "downloading $URL -> $TGZ"
    rm -f "$TGZ.part"
    if command -v curl >/dev/null 2>&1; then
        curl -fL --retry 3 --connect-timeout 20 -o "$TGZ.part" "$URL" || status=$?
    elif command -v wget >/dev/null 2>&1; then
        wget -t 3 -T 20 -O "$TGZ.part" "$URL" || status=$?
    else
        die "neither curl nor wget is installed; download $URL by hand to $TGZ and rerun"
    fi
    if [ "${status:-0}" -ne 0 ] || [ ! -s "$TGZ.part" ]; then
        rm -f "$TGZ.part"
        die "could not download $URL (exit status ${status:-0}; no internet?). Download it by hand to $TGZ and rerun."
    fi
    mv "$TGZ.part" "$TGZ"
fi

tar -tzf "$TGZ" >/dev/null 2>&1 || die "$TGZ is not a valid .tgz archive (remove it and rerun to download again)"
rm -rf "$ORIG/de-en"
tar -xzf "$TGZ" -C "$ORIG"
[ -f "$ORIG/de-en/train.tags.de-en.en" ] || die "$TGZ does not contain de-en/train.tags.de-en.en"

LC_FLAG=()
[ "$LOWERCASE" = 1 ] && LC_FLAG=(--lowercase)
TSV="$OUTDIR/iwslt14.de-en.tsv"
"$PYTHON" "$HERE/iwslt14_to_tsv.py" "$ORIG/de-en" "$TSV" ${LC_FLAG[@]+"${LC_FLAG[@]}"}

"$PYTHON" "$HERE/prepare_parallel.py" --tsv "$TSV" --langs en,de --out "$OUTDIR/data" \
    --split-column split --vocab-size "$VOCAB_SIZE" "$@"
echo "done: fairseq data in $OUTDIR/data/data-bin (fairseq-train $OUTDIR/data/data-bin --user-dir mdnas_fairseq --task multidomain_nas --sample-break-mode eos ...)"
