"""prepare_translation(): a translation data-bin for ``--task multidomain_nas_translation``
(``mdnas-prepare --translation SRC-TGT``).

Each domain (a value of ``--domain-column``, or the one domain ``SRC-TGT`` without it) gets its
own train/heldout/valid/test rows, drawn per domain as in :func:`.pipeline.prepare_domains`. ONE
sentencepiece model is trained on the train split of both languages of every domain, and ONE
(joined) fairseq dictionary is built from those encoded train splits and written twice, as
``dict.SRC.txt`` and ``dict.TGT.txt`` (identical files, what ``fairseq-preprocess
--joined-dictionary`` writes), so the model can share one embedding between source, target and
output. Each split of each domain is a fairseq language-pair dataset,
``{split}.{domain}.SRC-TGT.{SRC,TGT}.bin/.idx``: fairseq's ``load_langpair_dataset`` reads it as
split ``{split}.{domain}`` (so ``fairseq-train --task translation --train-subset train.gcc`` reads
one domain too). ``mdnas_data.json`` says ``"kind": "translation"`` and names the pair and the
domains; ``raw/{split}.{domain}.SRC-TGT.{lang}`` keeps the untokenised text (the references of
sacrebleu scores).
"""

import os
import shutil
import time

from .binarize import run_fairseq_preprocess, verify
from .errors import DataError
from .outdir import staged_out
from .pipeline import check_options, group_by_domain, provenance, write_metadata, write_raw
from .splits import SPLITS, held_out_overlap, split_rows
from .tsv import LANG_RE, read_tsv
from .vocab import build_dictionary, count_unk, encode_splits, train_shared_spm

KIND = "translation"


def parse_pair(pair):
    """``"en-de"`` -> ("en", "de"), checked."""
    parts = str(pair).split("-")
    if len(parts) != 2 or not all(parts) or not all(LANG_RE.match(p) for p in parts):
        raise DataError(
            f"--translation {pair!r}: give SRC-TGT, two language codes (columns of the TSV) "
            "joined by '-', e.g. --translation en-de"
        )
    if parts[0] == parts[1]:
        raise DataError(f"--translation {pair!r}: source and target are the same language")
    return parts[0], parts[1]


def file_names(domain, src, tgt):
    """The dataset names of one domain, [source, target]: ``{domain}.SRC-TGT.{lang}``."""
    return [f"{domain}.{src}-{tgt}.{lang}" for lang in (src, tgt)]


def prepare_translation(
    tsv,
    pair,
    out,
    vocab_size,
    seed=1,
    domain_column=None,
    min_domain_rows=None,
    split_column=None,
    spm_model_type="bpe",
    character_coverage=0.9995,
    workers=None,
    force=False,
    quiet=False,
    split_options=None,
):
    """Build the translation data folder ``out`` (module docstring); returns the metadata."""
    t0 = time.time()
    src, tgt = parse_pair(pair)
    if min_domain_rows is not None and domain_column is None:
        raise DataError("--min-domain-rows applies only with --domain-column")
    min_domain_rows = 1 if min_domain_rows is None else min_domain_rows
    if min_domain_rows < 1:
        raise DataError(f"--min-domain-rows must be at least 1, got {min_domain_rows}")
    workers, out = check_options(spm_model_type, vocab_size, workers, out, force, tsv)

    rows, info = read_tsv(tsv, [src, tgt], split_column, domain_column)
    if not rows:
        raise DataError(f"{tsv}: no usable rows (every row has an empty {src} or {tgt} field)")
    if domain_column is None:  # one domain, named by the pair
        rows = [(line, [*texts, f"{src}-{tgt}"], label) for line, texts, label in rows]
    groups, dropped = group_by_domain(rows, min_domain_rows, quiet)
    if not groups:
        raise DataError(
            f"{tsv}: every domain of --domain-column {domain_column!r} has fewer than "
            f"--min-domain-rows {min_domain_rows} rows ({dropped})"
        )
    splits = {}
    for d, domain_rows in groups.items():
        splits[d] = split_rows(domain_rows, seed, f"{tsv} (domain {d!r})", **(split_options or {}))
    domains = list(groups)
    names = {d: file_names(d, src, tgt) for d in domains}
    every = [n for d in domains for n in names[d]]

    with staged_out(out, force, tsv) as work:
        for sub in ("raw", "tok", "data-bin"):
            os.makedirs(os.path.join(work, sub))
        for d in domains:
            write_raw(work, splits[d], names[d])
        sp = train_shared_spm(work, every, vocab_size, spm_model_type, character_coverage, workers)
        ntokens = {s: {} for s in SPLITS}
        for d in domains:
            counts = encode_splits(sp, splits[d], names[d], work, workers)
            for s in SPLITS:
                ntokens[s].update(counts[s])
        dictionary = build_dictionary([os.path.join(work, "tok", f"train.{n}") for n in every])
        dictionary.save(os.path.join(work, "data-bin", "dict.txt"))
        run_fairseq_preprocess(work, every, workers)
        lines = {d: {s: len(splits[d][s]) for s in SPLITS} for d in domains}
        for d in domains:
            dictionary = verify(work, names[d], lines[d], ntokens)
        unk = count_unk(work, every, dictionary)
        # the joined dictionary under fairseq's translation names; no dict.txt (not an LM data-bin)
        joined = os.path.join(work, "data-bin", "dict.txt")
        shutil.copyfile(joined, os.path.join(work, "data-bin", f"dict.{src}.txt"))
        os.replace(joined, os.path.join(work, "data-bin", f"dict.{tgt}.txt"))

        def by_domain(table):
            return {
                s: {d: dict(zip((src, tgt), (table[s][n] for n in names[d]))) for d in domains}
                for s in SPLITS
            }

        overlap = {}
        for d in domains:
            found = held_out_overlap(splits[d], names[d])
            overlap[d] = dict(zip((src, tgt), (found[n] for n in names[d])))
        meta = {
            "format": "mdnas-data",
            "version": 1,
            "kind": KIND,
            "source_lang": src,
            "target_lang": tgt,
            "domains": domains,
            "langs": [src, tgt],
            "parallel": False,  # line i of one domain is not a translation of line i of another
            "domain_column": domain_column,
            "rows_by_domain": {d: len(r) for d, r in groups.items()},
            "min_domain_rows": min_domain_rows,
            "domains_dropped": dropped,
            "splits": {s: sum(lines[d][s] for d in domains) for s in SPLITS},
            "splits_by_domain": lines,
            "spm_model": "../spm.model",
            "spm_model_type": spm_model_type,
            "spm_vocab_size": sp.get_piece_size(),
            "spm_trained_on": [f"raw/train.{n}" for n in every],
            "dict_size": len(dictionary),
            "joined_dictionary": True,
            "tokens": by_domain(ntokens),
            "unk_tokens": by_domain(unk),
            **provenance(tsv, split_column, seed, info),
            "held_out_sentences_also_in_train": overlap,
        }
        write_metadata(work, meta)

    if not quiet:
        print_translation_summary(out, tsv, meta, time.time() - t0)
    return meta


def print_translation_summary(out, tsv, meta, seconds):
    src, tgt = meta["source_lang"], meta["target_lang"]
    print(
        f"{out}: {src}->{tgt} translation data from {tsv} ({meta['rows_read']} rows read), "
        f"{len(meta['domains'])} domain(s), seed {meta['seed']}, {seconds:.1f}s"
    )
    print(f"  {'domain':<16} " + " ".join(f"{s:>8}" for s in SPLITS) + f" {'train tok':>10}")
    for d in meta["domains"]:
        counts = " ".join(f"{meta['splits_by_domain'][d][s]:>8}" for s in SPLITS)
        tok = sum(meta["tokens"]["train"][d].values())
        print(f"  {d:<16} {counts} {tok:>10}")
    print(
        f"  sentencepiece {meta['spm_model_type']}: {meta['spm_vocab_size']} pieces; joined "
        f"dictionary dict.{src}.txt = dict.{tgt}.txt: {meta['dict_size']} symbols"
    )
