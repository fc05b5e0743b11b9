"""prepare(): the whole preparation of one data folder, from the TSV to the verified data-bin
(the steps are in :mod:`.tsv`, :mod:`.splits`, :mod:`.vocab`, :mod:`.binarize`, :mod:`.outdir`)."""

import json
import os
import time

from .binarize import run_fairseq_preprocess, verify
from .errors import DataError
from .outdir import check_out, staged_out
from .splits import SPLITS, held_out_overlap, split_rows
from .summary import print_summary
from .tsv import parse_langs, read_tsv
from .vocab import (
    DEFAULT_VOCAB_SIZE,
    build_dictionary,
    count_unk,
    encode_splits,
    train_shared_spm,
)


def write_raw(work, splits, langs):
    """work/raw/{split}.{lang}: the normalised sentences, one a line, the same rows for every
    language."""
    for s in SPLITS:
        for k, lang in enumerate(langs):
            with open(
                os.path.join(work, "raw", f"{s}.{lang}"), "w", encoding="utf-8", newline="\n"
            ) as f:
                f.writelines(r[1][k] + "\n" for r in splits[s])


def draw_splits(tsv, rows, info, seed, **options):
    """:func:`.split_rows` (``options``: its keyword arguments) on the ``rows`` that
    :func:`.read_tsv` read from ``tsv``; its errors say which rows were dropped."""
    dropped = [f"{info['dropped_empty']} with an empty field"] if info["dropped_empty"] else []
    dropped += [f"{info['dropped_duplicate']} duplicate rows"] if info["dropped_duplicate"] else []
    note = f" (after dropping {' and '.join(dropped)})" if dropped else ""
    if not rows:
        raise DataError(f"{tsv}: no usable rows{note}")
    return split_rows(rows, seed, tsv, dropped_note=note, **options)


def prepare(
    tsv,
    langs,
    out,
    vocab_size=DEFAULT_VOCAB_SIZE,
    seed=1,
    max_rows=None,
    heldout_fraction=0.1,
    valid_fraction=0.05,
    test_fraction=0.05,
    heldout_rows=None,
    valid_rows=None,
    test_rows=None,
    split_column=None,
    spm_model_type="bpe",
    character_coverage=0.9995,
    workers=None,
    force=False,
    quiet=False,
):
    """Build the data folder ``out`` (see ``mdnas-prepare --help``); returns the metadata dict.

    Raises DataError for bad input or options; nothing is left in ``out`` or next to it on failure.
    """
    t0 = time.time()
    langs = parse_langs(langs)
    if spm_model_type not in ("bpe", "unigram"):
        raise DataError(f"--spm-model-type must be bpe or unigram, got {spm_model_type!r}")
    if vocab_size < 1:
        raise DataError(f"--vocab-size must be positive, got {vocab_size}")
    workers = workers or min(8, os.cpu_count() or 1)
    out = os.path.abspath(out)
    check_out(out, force, tsv)

    rows, info = read_tsv(tsv, langs, split_column)
    splits = draw_splits(
        tsv,
        rows,
        info,
        seed,
        heldout_fraction=heldout_fraction,
        valid_fraction=valid_fraction,
        test_fraction=test_fraction,
        heldout_rows=heldout_rows,
        valid_rows=valid_rows,
        test_rows=test_rows,
        max_rows=max_rows,
    )

    with staged_out(out, force, tsv) as work:
        for sub in ("raw", "tok", "data-bin"):
            os.makedirs(os.path.join(work, sub))
        lines = {s: len(splits[s]) for s in SPLITS}
        write_raw(work, splits, langs)
        sp = train_shared_spm(work, langs, vocab_size, spm_model_type, character_coverage, workers)
        ntokens = encode_splits(sp, splits, langs, work, workers)
        dictionary = build_dictionary(
            [os.path.join(work, "tok", f"train.{lang}") for lang in langs]
        )
        dictionary.save(os.path.join(work, "data-bin", "dict.txt"))
        run_fairseq_preprocess(work, langs, workers)
        dictionary = verify(work, langs, lines, ntokens)
        unk = count_unk(work, langs, dictionary)

        meta = {
            "format": "mdnas-data",
            "version": 1,
            "langs": langs,
            "parallel": True,
            "splits": lines,
            "spm_model": "../spm.model",
            "spm_model_type": spm_model_type,
            "spm_vocab_size": sp.get_piece_size(),
            "spm_trained_on": [f"raw/train.{lang}" for lang in langs],
            "dict_size": len(dictionary),
            "tokens": ntokens,
            "unk_tokens": unk,
            "source_tsv": os.path.basename(tsv),
            "split_column": split_column,
            "seed": seed,
            "rows_read": info["rows_read"],
            "rows_dropped_empty": info["dropped_empty"],
            "rows_dropped_duplicate": info["dropped_duplicate"],
            "held_out_sentences_also_in_train": held_out_overlap(splits, langs),
        }
        with open(os.path.join(work, "data-bin", "mdnas_data.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, ensure_ascii=False)
            f.write("\n")

    if not quiet:
        print_summary(out, tsv, meta, info, time.time() - t0)
    return meta
