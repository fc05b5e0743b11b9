#!/usr/bin/env python3
"""Prepare a parallel corpus (one TSV column per language) for ``--task multidomain_nas``.

    python scripts/prepare_parallel.py --tsv examples/data/en_de_small.tsv --langs en,de \\
        --out build/demo-data --vocab-size 4000

Input: a tab-separated UTF-8 file whose first row names the columns (language codes, e.g.
``en<TAB>de``); it may hold more columns than ``--langs``. Every field is whitespace-normalised
(runs of whitespace -> one space, stripped); rows with an empty field in any chosen language
are dropped, and so are exact duplicate rows (the same text in every chosen language: one copy is
kept, so no sentence pair is both trained on and held out; the summary says how many, and how many
valid/test sentences still occur in train in one language only).

Steps: shuffle the rows with ``--seed`` and split them into train / heldout (held-out part of the
training data for the DARTS alpha step) / valid / test, the same rows for every
language, so line i of ``{split}.en`` is the translation of line i of ``{split}.de``; train ONE
sentencepiece model on the train split of all chosen languages (never on heldout/valid/test);
encode every split; build one fairseq dictionary from the train split of all languages; and
binarize every split and language with ``fairseq-preprocess --only-source --srcdict``.

Output (built in a temporary folder next to DIR and renamed into place at the end, so a failed
run leaves nothing behind; an existing non-empty DIR is replaced only with ``--force``):

    DIR/spm.model, DIR/spm.vocab
    DIR/raw/{train,heldout,valid,test}.{lang}   plain text, one sentence a line
    DIR/tok/{split}.{lang}                   sentencepiece pieces separated by spaces
    DIR/data-bin/dict.txt                    shared fairseq dictionary
    DIR/data-bin/{split}.{lang}.bin/.idx     fairseq mmap datasets
    DIR/data-bin/mdnas_data.json             metadata read by the multidomain_nas task

With ``--split-column NAME`` the split of each row is read from that column (values train,
valid, test, and optionally heldout) instead of being drawn at random; if no row says ``heldout``,
the heldout rows are drawn from the train rows (``--heldout-fraction`` of them, or ``--heldout-rows``).
"""

import argparse
import collections
import json
import logging
import os
import random
import re
import shutil
import sys
import tempfile
import time
import warnings

SPLITS = ("train", "heldout", "valid", "test")
DEFAULT_VOCAB_SIZE = 4000
LANG_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def _quiet_fairseq_import():
    # importing fairseq scripts torch.jit functions, which recent torch flags as deprecated
    warnings.filterwarnings(
        "ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning
    )


class DataError(ValueError):
    """A problem with the input or the options, reported to the user as one clear line."""


# ----------------------------------------------------------------------------------------------
# reading and splitting
# ----------------------------------------------------------------------------------------------


def normalize(text):
    return " ".join(text.split())


def parse_langs(langs):
    if isinstance(langs, str):
        langs = langs.split(",")
    langs = [x.strip() for x in langs]
    if not langs or any(not x for x in langs):
        raise DataError(
            f"--langs {','.join(langs)!r}: give a comma-separated list of language codes, e.g. en,de"
        )
    for lang in langs:
        if not LANG_RE.match(lang):
            raise DataError(
                f"--langs: language code {lang!r} may only contain letters, digits, '_' and '-' "
                "(it becomes part of file names such as train.{lang}.bin)"
            )
    dup = [x for x, c in collections.Counter(langs).items() if c > 1]
    if dup:
        raise DataError(f"--langs: language {dup[0]!r} given twice")
    return langs


def read_tsv(path, langs, split_column=None):
    """Read the chosen columns of a TSV file.

    Returns (rows, info): rows is a list of (line_number, [field per lang], split_label_or_None)
    for the rows kept; info counts what was read and dropped.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        data = f.read()
    if not data.strip():
        raise DataError(
            f"{path}: empty file (expected a header row naming the languages, e.g. 'en\\tde')"
        )
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()

    def decode(lineno, raw):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path} line {lineno}: not valid UTF-8 ({e.reason} at byte {e.start})"
            ) from None

    header = decode(1, lines[0])
    if header.startswith("\ufeff"):
        header = header[1:]
    columns = [c.strip() for c in header.split("\t")]
    if any(not c for c in columns):
        raise DataError(
            f"{path} line 1: empty column name in header {columns} (the header names the languages)"
        )
    dup = [c for c, n in collections.Counter(columns).items() if n > 1]
    if dup:
        raise DataError(f"{path} line 1: column {dup[0]!r} appears twice in the header {columns}")
    for lang in langs:
        if lang not in columns:
            raise DataError(
                f"{path} line 1: language {lang!r} is not a column of the header {columns}"
            )
    if split_column is not None:
        if split_column not in columns:
            raise DataError(
                f"{path} line 1: --split-column {split_column!r} is not a column of the header {columns}"
            )
        if split_column in langs:
            raise DataError(f"--split-column {split_column!r} is also one of --langs")
    col = [columns.index(lang) for lang in langs]
    split_col = columns.index(split_column) if split_column is not None else None

    rows, n_empty = [], 0
    for lineno, raw in enumerate(lines[1:], start=2):
        fields = decode(lineno, raw).split("\t")
        if len(fields) != len(columns):
            what = "an empty line" if fields == [""] else f"{len(fields)} field(s)"
            raise DataError(
                f"{path} line {lineno}: expected {len(columns)} tab-separated fields "
                f"(as in the header), found {what}"
            )
        label = None
        if split_col is not None:
            label = fields[split_col].strip()
            if label not in SPLITS:
                raise DataError(
                    f"{path} line {lineno}: column {split_column!r} is {label!r}, expected one of {list(SPLITS)}"
                )
        texts = [normalize(fields[i]) for i in col]
        if not all(texts):
            n_empty += 1
            continue
        rows.append((lineno, texts, label))
    rows, n_duplicate = drop_duplicate_rows(rows)
    info = {
        "rows_read": len(lines) - 1,
        "dropped_empty": n_empty,
        "dropped_duplicate": n_duplicate,
        "columns": columns,
    }
    return rows, info


SPLIT_PRIORITY = {"test": 0, "valid": 1, "heldout": 2, "train": 3, None: 4}


def drop_duplicate_rows(rows):
    """Keep one row of every group of rows with identical texts in all chosen languages, so no
    sentence pair is both trained on and held out. Without split labels the first row in file order
    is kept; with labels the held-out copy (test, then valid, then heldout) wins over a train copy.
    Returns (rows in file order, number dropped)."""
    best = {}
    for k, (_, texts, label) in enumerate(rows):
        key = tuple(texts)
        if key not in best or SPLIT_PRIORITY[label] < SPLIT_PRIORITY[rows[best[key]][2]]:
            best[key] = k
    kept = sorted(best.values())
    return [rows[k] for k in kept], len(rows) - len(kept)


def held_out_overlap(splits, langs):
    """Per language: valid/test sentences whose text also occurs in train (in a different row)."""
    out = {}
    for k, lang in enumerate(langs):
        train = {r[1][k] for r in splits["train"]}
        out[lang] = sum(r[1][k] in train for s in ("valid", "test") for r in splits[s])
    return out


def _count(n, fraction, rows, name):
    if rows is not None:
        if rows < 1:
            raise DataError(f"--{name}-rows must be at least 1, got {rows}")
        return rows
    if not 0 < fraction < 1:
        raise DataError(f"--{name}-fraction must be in (0, 1), got {fraction}")
    return max(1, int(round(fraction * n)))


def split_rows(
    rows,
    seed,
    path,
    heldout_fraction=0.1,
    valid_fraction=0.05,
    test_fraction=0.05,
    heldout_rows=None,
    valid_rows=None,
    test_rows=None,
    max_rows=None,
    dropped_note="",
):
    """Shuffle and split rows into {split: [row, ...]}; deterministic for a seed."""
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    if max_rows is not None:
        if max_rows < 1:
            raise DataError(f"--max-rows must be at least 1, got {max_rows}")
        order = order[:max_rows]
    n = len(order)
    labelled = rows and rows[0][2] is not None
    if not labelled:
        k_test = _count(n, test_fraction, test_rows, "test")
        k_valid = _count(n, valid_fraction, valid_rows, "valid")
        k_heldout = _count(n, heldout_fraction, heldout_rows, "heldout")
        need = k_test + k_valid + k_heldout + 1
        if n < need:
            raise DataError(
                f"{path}: {n} usable rows{dropped_note}, but the splits need at least {need} "
                f"(test {k_test} + valid {k_valid} + heldout {k_heldout} + at least 1 train row); "
                "use a bigger file or fewer --test/--valid/--arch rows"
            )
        a, b, c = k_test, k_test + k_valid, k_test + k_valid + k_heldout
        picked = {"test": order[:a], "valid": order[a:b], "heldout": order[b:c], "train": order[c:]}
    else:
        if valid_rows is not None or test_rows is not None:
            raise DataError(
                "--valid-rows/--test-rows do not apply with --split-column (the column gives those splits)"
            )
        picked = {s: [i for i in order if rows[i][2] == s] for s in SPLITS}
        if not picked["heldout"]:
            train = picked["train"]
            k_heldout = _count(len(train), heldout_fraction, heldout_rows, "heldout")
            if len(train) < k_heldout + 1:
                raise DataError(
                    f"{path}: {len(train)} usable rows labelled train{dropped_note}, but the heldout split "
                    f"needs {k_heldout} of them and at least 1 must stay in train"
                )
            picked["heldout"], picked["train"] = train[:k_heldout], train[k_heldout:]
        # keep the file order of the given valid/test (and heldout) sets
        for s in ("heldout", "valid", "test"):
            picked[s] = sorted(picked[s])
        missing = [s for s in SPLITS if not picked[s]]
        if missing:
            raise DataError(f"{path}: no usable rows for split(s) {missing}{dropped_note}")
    return {s: [rows[i] for i in picked[s]] for s in SPLITS}


# ----------------------------------------------------------------------------------------------
# sentencepiece, dictionary, binarization
# ----------------------------------------------------------------------------------------------


def train_spm(text_file, model_prefix, vocab_size, model_type, character_coverage, threads):
    import sentencepiece as spm

    try:
        spm.SentencePieceTrainer.train(
            input=text_file,
            model_prefix=model_prefix,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            num_threads=threads,
            input_sentence_size=0,  # use every training sentence
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e)
        m = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", msg)
        if m:
            raise DataError(
                f"--vocab-size {m.group(1)} is too large for this training text: sentencepiece "
                f"({model_type}) can make at most {m.group(2)} pieces from it; use a smaller "
                f"--vocab-size (e.g. --vocab-size {int(m.group(2)) // 1000 * 1000 or m.group(2)}) "
                "or a bigger corpus"
            ) from None
        m = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", msg)
        if m:
            raise DataError(
                f"--vocab-size {m.group(1)} is smaller than the {m.group(2)} characters sentencepiece "
                "must keep; use a larger --vocab-size or a lower --character-coverage"
            ) from None
        raise RuntimeError(f"sentencepiece training failed: {msg}") from None
    return spm.SentencePieceProcessor(model_file=model_prefix + ".model")


def build_dictionary(tok_files):
    """fairseq dictionary from whitespace-separated token files, as fairseq-preprocess builds it
    (all symbols, threshold 0, padded to a multiple of 8)."""
    _quiet_fairseq_import()
    from fairseq.data import Dictionary

    counts = collections.Counter()
    for path in tok_files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                counts.update(line.split())
    d = Dictionary()
    for word, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        d.add_symbol(word, n=c)
    d.finalize(threshold=0, nwords=-1, padding_factor=8)
    return d


def run_fairseq_preprocess(work, langs, workers):
    """Binarize every tok/{split}.{lang} with fairseq-preprocess (``fairseq_cli.preprocess``,
    run in-process with ``--only-source --srcdict data-bin/dict.txt``) and rename its output
    to data-bin/{split}.{lang}.bin/.idx."""
    from fairseq import options
    from fairseq_cli import preprocess as fairseq_preprocess

    log = logging.getLogger("fairseq_cli.preprocess")
    for split in SPLITS:
        for lang in langs:
            dest = os.path.join(work, f"fp-{split}-{lang}")
            argv = [
                "--only-source",
                "--srcdict",
                os.path.join(work, "data-bin", "dict.txt"),
                "--dataset-impl",
                "mmap",
                "--trainpref",
                os.path.join(work, "tok", f"{split}.{lang}"),
                "--destdir",
                dest,
                "--workers",
                str(workers if split == "train" else 1),
            ]
            args = options.get_preprocessing_parser().parse_args(argv)
            handlers, level = list(log.handlers), log.level
            log.setLevel(logging.WARNING)
            try:
                fairseq_preprocess.main(args)
            finally:
                for h in log.handlers:
                    if h not in handlers:
                        log.removeHandler(h)
                        h.close()
                log.setLevel(level)
            for ext in ("bin", "idx"):
                src = os.path.join(
                    dest, f"train.{ext}"
                )  # --trainpref output name with --only-source
                if not os.path.isfile(src):
                    raise RuntimeError(
                        f"fairseq-preprocess did not write train.{ext} for {split}.{lang} "
                        f"(files: {sorted(os.listdir(dest))})"
                    )
                os.replace(src, os.path.join(work, "data-bin", f"{split}.{lang}.{ext}"))
            shutil.rmtree(dest)


def verify(work, langs, lines, ntokens):
    """Load every dataset with fairseq and check sentence and token counts; returns the dict."""
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(os.path.join(work, "data-bin", "dict.txt"))
    log = logging.getLogger("fairseq.data.data_utils")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        _verify(work, langs, lines, ntokens, d, data_utils)
    finally:
        log.setLevel(level)
    return d


def _verify(work, langs, lines, ntokens, d, data_utils):
    for split in SPLITS:
        sizes = {}
        for lang in langs:
            prefix = os.path.join(work, "data-bin", f"{split}.{lang}")
            ds = data_utils.load_indexed_dataset(prefix, d)
            if ds is None:
                raise RuntimeError(f"{prefix}: fairseq could not load the dataset")
            sizes[lang] = len(ds)
            if len(ds) != lines[split]:
                raise RuntimeError(f"{prefix}: {len(ds)} sentences, expected {lines[split]}")
            n_tok = int(ds.sizes.sum())
            if n_tok != ntokens[split][lang] + lines[split]:  # + one </s> per sentence
                raise RuntimeError(
                    f"{prefix}: {n_tok} tokens, expected {ntokens[split][lang] + lines[split]}"
                )
        if len(set(sizes.values())) != 1:
            raise RuntimeError(f"{split}: languages differ in sentence count: {sizes}")


# ----------------------------------------------------------------------------------------------
# main entry points
# ----------------------------------------------------------------------------------------------


def _check_out(out, force, tsv):
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(f"--out {out}: exists and is not a directory")
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise DataError(
            f"--out {out}: directory exists and is not empty; use --force to replace it"
        )
    if force and os.path.isdir(out):
        rel = os.path.relpath(os.path.realpath(tsv), os.path.realpath(out))
        if not rel.startswith(os.pardir):
            raise DataError(f"--force would delete the input {tsv}, which is inside --out {out}")


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
    """Build the data folder ``out`` (see the module docstring); returns the metadata dict.

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
    _check_out(out, force, tsv)

    rows, info = read_tsv(tsv, langs, split_column)
    dropped = [f"{info['dropped_empty']} with an empty field"] if info["dropped_empty"] else []
    dropped += [f"{info['dropped_duplicate']} duplicate rows"] if info["dropped_duplicate"] else []
    note = f" (after dropping {' and '.join(dropped)})" if dropped else ""
    if not rows:
        raise DataError(f"{tsv}: no usable rows{note}")
    splits = split_rows(
        rows,
        seed,
        tsv,
        heldout_fraction,
        valid_fraction,
        test_fraction,
        heldout_rows,
        valid_rows,
        test_rows,
        max_rows,
        note,
    )

    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        for sub in ("raw", "tok", "data-bin"):
            os.makedirs(os.path.join(work, sub))
        lines = {s: len(splits[s]) for s in SPLITS}
        for s in SPLITS:
            for k, lang in enumerate(langs):
                with open(
                    os.path.join(work, "raw", f"{s}.{lang}"), "w", encoding="utf-8", newline="\n"
                ) as f:
                    f.writelines(r[1][k] + "\n" for r in splits[s])

        # one sentencepiece model on the train split of every language (never heldout/valid/test)
        spm_input = os.path.join(work, "spm_train.txt")
        with open(spm_input, "w", encoding="utf-8", newline="\n") as f:
            for lang in langs:
                with open(os.path.join(work, "raw", f"train.{lang}"), encoding="utf-8") as g:
                    shutil.copyfileobj(g, f)
        sp = train_spm(
            spm_input,
            os.path.join(work, "spm"),
            vocab_size,
            spm_model_type,
            character_coverage,
            workers,
        )
        os.remove(spm_input)

        ntokens = {s: {} for s in SPLITS}
        for s in SPLITS:
            for k, lang in enumerate(langs):
                pieces = sp.encode([r[1][k] for r in splits[s]], out_type=str, num_threads=workers)
                ntokens[s][lang] = sum(len(p) for p in pieces)
                with open(
                    os.path.join(work, "tok", f"{s}.{lang}"), "w", encoding="utf-8", newline="\n"
                ) as f:
                    f.writelines(" ".join(p) + "\n" for p in pieces)

        dictionary = build_dictionary(
            [os.path.join(work, "tok", f"train.{lang}") for lang in langs]
        )
        dictionary.save(os.path.join(work, "data-bin", "dict.txt"))
        run_fairseq_preprocess(work, langs, workers)
        dictionary = verify(work, langs, lines, ntokens)

        unk = {s: {} for s in SPLITS}
        for s in SPLITS:
            for lang in langs:
                with open(os.path.join(work, "tok", f"{s}.{lang}"), encoding="utf-8") as f:
                    unk[s][lang] = sum(
                        dictionary.index(w) == dictionary.unk() for line in f for w in line.split()
                    )

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

        # publish: the finished folder replaces `out` in one rename
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(work, 0o777 & ~umask)
        _check_out(out, force, tsv)
        old = None
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.rename(out, os.path.join(old, "d"))
        os.rename(work, out)
        if old:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise

    if not quiet:
        print_summary(out, tsv, meta, info, time.time() - t0)
    return meta


def print_summary(out, tsv, meta, info, seconds):
    langs = meta["langs"]
    dropped = f", {info['dropped_empty']} dropped (empty field)" if info["dropped_empty"] else ""
    dropped += (
        f", {info['dropped_duplicate']} dropped (duplicate row)"
        if info["dropped_duplicate"]
        else ""
    )
    print(
        f"{out}: from {tsv} ({info['rows_read']} rows read{dropped}), seed {meta['seed']}, {seconds:.1f}s"
    )
    head = f"  {'split':<6} {'lines':>8}" + "".join(
        f" {lang + ' tokens':>12} {lang + ' unk':>8}" for lang in langs
    )
    print(head)
    for s in SPLITS:
        row = f"  {s:<6} {meta['splits'][s]:>8}"
        for lang in langs:
            row += f" {meta['tokens'][s][lang]:>12} {meta['unk_tokens'][s][lang]:>8}"
        print(row)
    print(
        f"  sentencepiece {meta['spm_model_type']}: {meta['spm_vocab_size']} pieces (trained on train only); "
        f"fairseq dict.txt: {meta['dict_size']} symbols (with <s> <pad> </s> <unk> and padding to x8)"
    )
    used = meta["dict_size"] - 4
    if used < 0.8 * meta["spm_vocab_size"]:
        print(
            f"  note: only about {used} of the {meta['spm_vocab_size']} sentencepiece pieces occur in the "
            "encoded train split; a smaller --vocab-size would suit this corpus better"
        )
    overlap = meta["held_out_sentences_also_in_train"]
    if any(overlap.values()):
        print(
            "  note: valid/test sentences whose text also occurs in train (in a row that differs in another "
            "language): " + ", ".join(f"{lang} {n}" for lang, n in overlap.items())
        )
    held_out = sum(meta["tokens"][s][lang] for s in ("valid", "test") for lang in langs)
    held_unk = sum(meta["unk_tokens"][s][lang] for s in ("valid", "test") for lang in langs)
    if held_out and held_unk > 0.01 * held_out:
        print(
            f"  note: {100.0 * held_unk / held_out:.1f}% of valid/test tokens map to <unk> "
            "(pieces or characters not seen in the train split)"
        )


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--tsv", required=True, help="tab-separated UTF-8 file, header row = language codes"
    )
    p.add_argument(
        "--langs", required=True, help="comma-separated languages (columns) to use, e.g. en,de"
    )
    p.add_argument("--out", required=True, help="output folder DIR")
    p.add_argument(
        "--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, help="sentencepiece vocabulary size"
    )
    p.add_argument("--spm-model-type", choices=("bpe", "unigram"), default="bpe")
    p.add_argument(
        "--character-coverage",
        type=float,
        default=0.9995,
        help="sentencepiece character coverage (1.0 keeps every character of the train split)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the shuffle that draws the splits")
    p.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="use at most this many usable rows (a seeded random subset) before splitting",
    )
    for name, frac, what in (
        ("heldout", 0.1, "alpha-step rows (held out of train)"),
        ("valid", 0.05, "validation rows"),
        ("test", 0.05, "test rows"),
    ):
        g = p.add_mutually_exclusive_group()
        g.add_argument(
            f"--{name}-fraction",
            type=float,
            default=frac,
            help=f"fraction of usable rows used as {what}"
            + (" (of the train-labelled rows with --split-column)" if name == "heldout" else ""),
        )
        g.add_argument(
            f"--{name}-rows",
            type=int,
            default=None,
            help=f"number of {what} (overrides the fraction)",
        )
    p.add_argument(
        "--split-column",
        default=None,
        help="column holding each row's split (train/valid/test[/heldout]) instead of a random split",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="threads/processes (default: min(8, CPUs))"
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing non-empty --out folder"
    )
    p.add_argument("--quiet", action="store_true", help="do not print the summary")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        prepare(
            args.tsv,
            args.langs,
            args.out,
            vocab_size=args.vocab_size,
            seed=args.seed,
            max_rows=args.max_rows,
            heldout_fraction=args.heldout_fraction,
            valid_fraction=args.valid_fraction,
            test_fraction=args.test_fraction,
            heldout_rows=args.heldout_rows,
            valid_rows=args.valid_rows,
            test_rows=args.test_rows,
            split_column=args.split_column,
            spm_model_type=args.spm_model_type,
            character_coverage=args.character_coverage,
            workers=args.workers,
            force=args.force,
            quiet=args.quiet,
        )
    except DataError as e:
        print(f"prepare_parallel.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
