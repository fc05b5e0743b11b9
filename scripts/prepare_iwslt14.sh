#!/usr/bin/env bash
# Download IWSLT14 De-En (needs internet) and prepare it for --task multidomain_nas (language
# models, each language a domain) or, with --translation SRC-TGT, for
# --task multidomain_nas_translation:
#
#   scripts/prepare_iwslt14.sh [OUTDIR] [extra options]
#   scripts/prepare_iwslt14.sh build/iwslt14                          # language models: en, de
#   scripts/prepare_iwslt14.sh build/iwslt14 --translation de-en      # translation De->En
#
# The extra options ("$@") go on to python scripts/prepare_parallel.py (= mdnas-prepare; see its
# --help), after the script's own --tsv --langs en,de --out --split-column split --vocab-size.
# With --translation SRC-TGT (de-en or en-de) no --langs is passed and the data goes to
# OUTDIR/data-SRC-TGT/ instead of OUTDIR/data/, so both layouts can sit side by side over one
# download. IWSLT14 has no genre column, so a translation data-bin has ONE domain, named by the
# language pair (e.g. de-en): the search is then a one-domain search (the structural term, which
# compares domains, is zero) and --eval-domain takes that name.
#
# OUTDIR (default build/iwslt14) receives:
#   orig/de-en.tgz, orig/de-en/       the download, as published for fairseq
#   iwslt14.de-en.tsv                 en, de, split (train / valid / test as in fairseq's
#                                     examples/translation/prepare-iwslt14.sh; see
#                                     scripts/iwslt14_to_tsv.py)
#   data/                             output of scripts/prepare_parallel.py: one shared
#                                     sentencepiece model (10k pieces, as the authors' shared
#                                     10k BPE vocabulary), data/data-bin for fairseq
#   data-SRC-TGT/                     instead of data/ with --translation SRC-TGT: the same
#                                     sentencepiece model size, data-bin/ with one joined
#                                     dictionary (dict.SRC.txt = dict.TGT.txt) and
#                                     {split}.SRC-TGT.SRC-TGT.{SRC,TGT}.bin/.idx, raw/ (the
#                                     untokenised references of the scores)
# In both, heldout (the alpha step's data) is drawn from the train rows (--heldout-fraction,
# default 0.1); valid and test are fairseq's.
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

# --translation SRC-TGT (or --translation=SRC-TGT) among the extra options?
PAIR=""
prev=""
for a in "$@"; do
    case "$a" in --translation=*) PAIR="${a#--translation=}" ;; esac
    [ "$prev" = --translation ] && PAIR="$a"
    prev="$a"
done
[ "$prev" = --translation ] && die "--translation needs SRC-TGT: de-en (German to English) or en-de"
if [ -n "$PAIR" ]; then
    case "$PAIR" in
        de-en | en-de) ;;
        *) die "--translation $PAIR: IWSLT14 De-En holds de and en: give --translation de-en (German to English, fairseq's IWSLT14 direction) or en-de" ;;
    esac
    LANGS_FLAG=()
    DATA="$OUTDIR/data-$PAIR"
else
    LANGS_FLAG=(--langs en,de)
    DATA="$OUTDIR/data"
fi

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

"$PYTHON" "$HERE/prepare_parallel.py" --tsv "$TSV" ${LANGS_FLAG[@]+"${LANGS_FLAG[@]}"} \
    --out "$DATA" --split-column split --vocab-size "$VOCAB_SIZE" "$@"
if [ -n "$PAIR" ]; then
    echo "done: translation data-bin $DATA/data-bin, ${PAIR%-*} -> ${PAIR#*-}, ONE domain named $PAIR (the language pair; IWSLT14 has no genres)"
    echo "  fairseq-train $DATA/data-bin --user-dir mdnas_fairseq --task multidomain_nas_translation --arch mdnas_transformer_small ..."
    echo "  fairseq-generate $DATA/data-bin --user-dir mdnas_fairseq --task multidomain_nas_translation --eval-domain $PAIR --beam 5 --remove-bpe sentencepiece ..."
    echo "  (the full sequence: docs/translation.md, section IWSLT14 De-En)"
else
    echo "done: fairseq data in $DATA/data-bin (fairseq-train $DATA/data-bin --user-dir mdnas_fairseq --task multidomain_nas --sample-break-mode eos ...)"
fi
