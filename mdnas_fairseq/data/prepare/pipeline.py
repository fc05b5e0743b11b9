"""prepare(): the whole preparation of one data folder, from the TSV to the verified data-bin
(the steps are in :mod:`.tsv`, :mod:`.splits`, :mod:`.vocab`, :mod:`.binarize`, :mod:`.outdir`)."""

import json
import os
import time

from .binarize import run_fairseq_preprocess, verify
from .errors import DataError
from .outdir import check_out, staged_out
from .splits import SPLITS, held_out_overlap, split_rows
from .summary import print_domain_summary, print_summary
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


def check_options(spm_model_type, vocab_size, workers, out, force, tsv):
    """The vocabulary options checked, (workers, absolute out) with their defaults, --out checked."""
    if spm_model_type not in ("bpe", "unigram"):
        raise DataError(f"--spm-model-type must be bpe or unigram, got {spm_model_type!r}")
    if vocab_size < 1:
        raise DataError(f"--vocab-size must be positive, got {vocab_size}")
    out = os.path.abspath(out)
    check_out(out, force, tsv)
    return workers or min(8, os.cpu_count() or 1), out


def provenance(tsv, split_column, seed, info):
    """The metadata fields saying where the rows came from (``info``: :func:`.read_tsv`'s)."""
    return {
        "source_tsv": os.path.basename(tsv),
        "split_column": split_column,
        "seed": seed,
        "rows_read": info["rows_read"],
        "rows_dropped_empty": info["dropped_empty"],
        "rows_dropped_duplicate": info["dropped_duplicate"],
    }


def write_metadata(work, meta):
    """work/data-bin/mdnas_data.json."""
    with open(os.path.join(work, "data-bin", "mdnas_data.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
        f.write("\n")


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
    domain_column=None,
    min_domain_rows=None,
):
    """Build the data folder ``out`` (see ``mdnas-prepare --help``); returns the metadata dict.

    With ``domain_column`` the domains are the values of that column and ``langs`` names the one
    text column (:func:`prepare_domains`). Raises DataError for bad input or options; nothing is
    left in ``out`` or next to it on failure.
    """
    t0 = time.time()
    langs = parse_langs(langs)
    if domain_column is not None or min_domain_rows is not None:
        return prepare_domains(
            tsv,
            langs,
            out,
            domain_column,
            1 if min_domain_rows is None else min_domain_rows,
            t0,
            vocab_size=vocab_size,
            seed=seed,
            split_column=split_column,
            spm_model_type=spm_model_type,
            character_coverage=character_coverage,
            workers=workers,
            force=force,
            quiet=quiet,
            split_options=dict(
                heldout_fraction=heldout_fraction,
                valid_fraction=valid_fraction,
                test_fraction=test_fraction,
                heldout_rows=heldout_rows,
                valid_rows=valid_rows,
                test_rows=test_rows,
                max_rows=max_rows,
            ),
        )
    workers, out = check_options(spm_model_type, vocab_size, workers, out, force, tsv)

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
            **provenance(tsv, split_column, seed, info),
            "held_out_sentences_also_in_train": held_out_overlap(splits, langs),
        }
        write_metadata(work, meta)

    if not quiet:
        print_summary(out, tsv, meta, info, time.time() - t0)
    return meta


def check_domain_options(langs, domain_column, min_domain_rows):
    if domain_column is None:
        raise DataError("--min-domain-rows applies only with --domain-column")
    if len(langs) != 1:
        raise DataError(
            f"--domain-column {domain_column!r} takes exactly one language in --langs (the column "
            f"holding every domain's text), got {len(langs)}: {','.join(langs)}"
        )
    if min_domain_rows < 1:
        raise DataError(f"--min-domain-rows must be at least 1, got {min_domain_rows}")


def group_by_domain(rows, min_domain_rows, quiet):
    """{domain: [(line, texts, label), ...]} in sorted domain order from the rows of
    :func:`.read_tsv` with a domain column, and {domain: rows} of the domains dropped for having
    fewer than ``min_domain_rows`` rows (each dropped domain printed unless ``quiet``)."""
    groups = {}
    for lineno, (*texts, domain), label in rows:
        groups.setdefault(domain, []).append((lineno, texts, label))
    dropped = {d: len(r) for d, r in sorted(groups.items()) if len(r) < min_domain_rows}
    if not quiet:
        for d, n in dropped.items():
            print(
                f"dropping domain {d!r}: {n} usable row{'s' if n != 1 else ''}, fewer than "
                f"--min-domain-rows {min_domain_rows}"
            )
    return {d: groups[d] for d in sorted(groups) if d not in dropped}, dropped


def prepare_domains(
    tsv,
    langs,
    out,
    domain_column,
    min_domain_rows,
    t0,
    vocab_size,
    seed,
    split_column,
    spm_model_type,
    character_coverage,
    workers,
    force,
    quiet,
    split_options,
):
    """:func:`prepare` with ``--domain-column``: every value of the column is a domain of the one
    language ``langs[0]``; splits drawn per domain (or read from ``split_column``), one shared
    sentencepiece model and dictionary over every domain's train split. Domains are not
    translations of each other: the metadata says ``"parallel": false``."""
    check_domain_options(langs, domain_column, min_domain_rows)
    lang = langs[0]
    workers, out = check_options(spm_model_type, vocab_size, workers, out, force, tsv)

    rows, info = read_tsv(tsv, langs, split_column, domain_column)
    if not rows:
        raise DataError(f"{tsv}: no usable rows")
    groups, dropped = group_by_domain(rows, min_domain_rows, quiet)
    if not groups:
        raise DataError(
            f"{tsv}: every domain of --domain-column {domain_column!r} has fewer than "
            f"--min-domain-rows {min_domain_rows} rows ({dropped})"
        )
    splits, rows_by_domain = {}, {d: len(r) for d, r in groups.items()}
    for d, domain_rows in groups.items():
        where = f"{tsv} (domain {d!r} of --domain-column {domain_column!r})"
        try:
            splits[d] = split_rows(domain_rows, seed, where, **split_options)
        except DataError as e:
            if "usable rows" not in str(e):  # an option error, not a small domain
                raise
            raise DataError(
                f"{e} (or drop domains this small with --min-domain-rows {len(domain_rows) + 1})"
            ) from None
    domains = list(groups)

    with staged_out(out, force, tsv) as work:
        for sub in ("raw", "tok", "data-bin"):
            os.makedirs(os.path.join(work, sub))
        lines = {d: {s: len(splits[d][s]) for s in SPLITS} for d in domains}
        for d in domains:
            write_raw(work, splits[d], [d])
        sp = train_shared_spm(
            work, domains, vocab_size, spm_model_type, character_coverage, workers
        )
        ntokens = {s: {} for s in SPLITS}
        for d in domains:
            counts = encode_splits(sp, splits[d], [d], work, workers)
            for s in SPLITS:
                ntokens[s][d] = counts[s][d]
        dictionary = build_dictionary([os.path.join(work, "tok", f"train.{d}") for d in domains])
        dictionary.save(os.path.join(work, "data-bin", "dict.txt"))
        run_fairseq_preprocess(work, domains, workers)
        for d in domains:
            dictionary = verify(work, [d], lines[d], ntokens)
        unk = count_unk(work, domains, dictionary)
        overlap = {}
        for d in domains:
            overlap.update(held_out_overlap(splits[d], [d]))

        meta = {
            "format": "mdnas-data",
            "version": 1,
            "langs": domains,
            "parallel": False,
            "domain_column": domain_column,
            "lang": lang,
            "rows_by_domain": rows_by_domain,
            "min_domain_rows": min_domain_rows,
            "domains_dropped": dropped,
            "splits": {s: sum(lines[d][s] for d in domains) for s in SPLITS},
            "splits_by_lang": lines,
            "spm_model": "../spm.model",
            "spm_model_type": spm_model_type,
            "spm_vocab_size": sp.get_piece_size(),
            "spm_trained_on": [f"raw/train.{d}" for d in domains],
            "dict_size": len(dictionary),
            "tokens": ntokens,
            "unk_tokens": unk,
            **provenance(tsv, split_column, seed, info),
            "held_out_sentences_also_in_train": overlap,
        }
        write_metadata(work, meta)

    if not quiet:
        print_domain_summary(out, tsv, meta, info, time.time() - t0)
    return meta
