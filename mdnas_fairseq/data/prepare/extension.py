"""extend(): a data folder for new languages against an existing one (``mdnas-prepare
--extend-data``). The old languages' datasets are copied byte for byte, dict.txt is only appended
to (every old token id stays), the old languages keep the old sentencepiece model, and each new
language is encoded with the old model when that model knows its characters, or else with a model
of its own trained on its train split (see ``mdnas-prepare --help``).

fairseq is imported inside the functions that need it, never when this module is imported."""

import collections
import copy
import hashlib
import json
import math
import os
import shutil
import time

from .binarize import run_fairseq_preprocess, verify
from .errors import DataError
from .outdir import check_out, staged_out
from .pipeline import draw_splits, write_raw
from .splits import SPLITS, held_out_overlap
from .summary import print_extension_summary
from .tsv import parse_langs, read_tsv
from .vocab import count_unk, encode_splits, train_spm

METADATA = "mdnas_data.json"
OLD_MODEL_MAX_UNK = 0.01  # a new language keeps the old model if it leaves fewer pieces unknown
SPM_POLICIES = ("auto", "old", "own")


# ------------------------------------------------------------------------------- the old folder
def open_old(path):
    """The data-bin ``path`` (or the data folder holding it as data-bin/) made by mdnas-prepare:
    {"bin", "dir", "meta", "langs", "spm" (lang -> model path), "dict"}; a DataError names what
    is missing."""
    if not os.path.isdir(path):
        raise DataError(f"--extend-data {path}: no such directory")
    bin_dir = os.path.abspath(path)
    if not os.path.isfile(os.path.join(bin_dir, METADATA)) and os.path.isfile(
        os.path.join(bin_dir, "data-bin", METADATA)
    ):
        bin_dir = os.path.join(bin_dir, "data-bin")

    def not_made_here(what):
        return DataError(
            f"--extend-data {path}: not a data-bin made by mdnas-prepare ({what}; it holds "
            f"{sorted(os.listdir(bin_dir))})"
        )

    missing = [f for f in (METADATA, "dict.txt") if not os.path.isfile(os.path.join(bin_dir, f))]
    if METADATA in missing:
        raise not_made_here("missing " + " and ".join(missing))
    meta_path = os.path.join(bin_dir, METADATA)
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != "mdnas-data":
        raise DataError(f"{meta_path}: field 'format' is not 'mdnas-data'")
    for field, kind in (
        ("langs", list),
        ("spm_model", str),
        ("spm_model_type", str),
        ("splits", dict),
        ("tokens", dict),
        ("unk_tokens", dict),
        ("dict_size", int),
    ):
        if not isinstance(meta.get(field), kind):
            raise DataError(f"{meta_path}: field {field!r} is missing or not a {kind.__name__}")
    langs = meta["langs"]
    spm = {lang: meta.get("spm_models", {}).get(lang, meta["spm_model"]) for lang in langs}
    spm = {lang: os.path.normpath(os.path.join(bin_dir, p)) for lang, p in spm.items()}
    missing += sorted({os.path.relpath(p, bin_dir) for p in spm.values() if not os.path.isfile(p)})
    missing += [
        f"{s}.{lang}.{ext}"
        for lang in langs
        for s in SPLITS
        for ext in ("bin", "idx")
        if not os.path.isfile(os.path.join(bin_dir, f"{s}.{lang}.{ext}"))
    ]
    if missing:
        raise not_made_here("missing " + ", ".join(missing))
    old = {"bin": bin_dir, "dir": os.path.dirname(bin_dir), "meta": meta, "langs": langs}
    old.update(spm=spm, dict=os.path.join(bin_dir, "dict.txt"))
    return old


def lines_of(meta, lang):
    """{split: sentences} of one language (they differ between languages only after an extension
    whose new languages could not follow the old rows)."""
    return meta.get("splits_by_lang", {}).get(lang, meta["splits"])


def check_out_apart(out, old):
    """--out may neither be the old data folder nor lie inside it or around it."""
    o, d = os.path.realpath(out), os.path.realpath(old["dir"])
    if o == d or not os.path.relpath(o, d).startswith(os.pardir):
        raise DataError(
            f"--out {out}: is or lies inside the data folder of --extend-data ({old['dir']}); "
            "write the extended data to a new folder"
        )
    if not os.path.relpath(d, o).startswith(os.pardir):
        raise DataError(
            f"--out {out}: holds the --extend-data folder {old['dir']}; "
            "write the extended data to a new folder"
        )


# --------------------------------------------------------------------------------- the new rows
def aligned_rows(tsv, columns, old, new_langs):
    """The new languages' text of the old rows, split for split and line for line, when the TSV
    holds every old language and each old row (matched on its old-language texts) has text in
    every new language: ({split: [row]}, None); otherwise (None, the reason)."""
    old_langs = old["langs"]
    absent = [lang for lang in old_langs if lang not in columns]
    if absent:
        return None, f"{os.path.basename(tsv)} has no column {', '.join(absent)}"
    raw = {}
    for s in SPLITS:
        for lang in old_langs:
            path = os.path.join(old["dir"], "raw", f"{s}.{lang}")
            if not os.path.isfile(path):
                return None, f"the old text {os.path.relpath(path, old['dir'])} is missing"
            with open(path, encoding="utf-8") as f:
                raw[s, lang] = f.read().split("\n")[:-1]
        if len({len(raw[s, lang]) for lang in old_langs}) > 1:
            return None, f"the old languages' {s} splits are not line-aligned"
    rows, _ = read_tsv(tsv, old_langs + new_langs)
    n_old = len(old_langs)
    new_text = {}
    for lineno, texts, _ in rows:
        new_text.setdefault(tuple(texts[:n_old]), (lineno, texts[n_old:]))
    splits, missing, total = {}, 0, 0
    for s in SPLITS:
        keys = list(zip(*(raw[s, lang] for lang in old_langs)))
        total += len(keys)
        found = [new_text.get(k) for k in keys]
        missing += found.count(None)
        splits[s] = [(hit[0], hit[1], None) for hit in found if hit]
    if missing:
        return None, (
            f"{missing} of the {total} old rows have no text in {', '.join(new_langs)} "
            f"in {os.path.basename(tsv)}"
        )
    return splits, None


def one_lang(splits, k):
    """The rows of ``splits`` with only the k-th language's text."""
    return {s: [(r[0], [r[1][k]], r[2]) for r in splits[s]] for s in SPLITS}


# ---------------------------------------------------------------------------- the new vocabulary
def old_model_settings(path, meta):
    """model_type and character_coverage of the old sentencepiece model (its trainer spec)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    spec = proto.trainer_spec
    kind = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(spec.model_type).lower()
    return (kind if kind in ("bpe", "unigram") else meta["spm_model_type"]), round(
        spec.character_coverage, 6
    )


def distinct_entries(prefix, nspecial):
    """How many different dictionary entries (not <s> <pad> </s> <unk>) a dataset uses."""
    import numpy as np
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    ids = np.memmap(
        prefix + ".bin", dtype=MMapIndexedDataset.Index(prefix + ".idx").dtype, mode="r"
    )
    return int((np.unique(ids) >= nspecial).sum())


def default_vocab_size(old, n_train):
    """As many pieces as an old language's train split uses on average, scaled by the square root
    of the ratio of train sentences (Heaps' law: the vocabulary grows as about the square root of
    the text)."""
    used = [distinct_entries(os.path.join(old["bin"], f"train.{lang}"), 4) for lang in old["langs"]]
    old_train = sum(lines_of(old["meta"], lang)["train"] for lang in old["langs"])
    ratio = n_train * len(old["langs"]) / old_train
    return max(1, round(sum(used) / len(used) * math.sqrt(ratio)))


def unknown_rate(sp, texts, threads):
    """The fraction of the pieces of ``texts`` that sentencepiece model ``sp`` marks unknown."""
    ids = sp.encode(texts, num_threads=threads)
    n = sum(len(x) for x in ids)
    return sum(i == sp.unk_id() for x in ids for i in x) / max(1, n)


def appended_entries(tok_file, index):
    """(piece, count) for every piece of ``tok_file`` that ``index`` (a dict or set) lacks, most
    frequent first (the order fairseq-preprocess gives a new dictionary)."""
    counts = collections.Counter()
    with open(tok_file, encoding="utf-8") as f:
        for line in f:
            counts.update(w for w in line.split() if w not in index)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def padding_entries(symbols, n, factor=8):
    """madeupwordNNNN entries (named unlike any in ``symbols``) that pad ``n`` to a multiple of
    ``factor``, as fairseq pads a dictionary."""
    out, i = [], 0
    while (n + len(out)) % factor:
        name = f"madeupword{i:04d}"
        if name not in symbols:
            out.append((name, 0))
        i += 1
    return out


# ------------------------------------------------------------------------------------ extend()
def extend(
    old_data,
    tsv,
    langs,
    out,
    vocab_size=None,
    spm_policy="auto",
    spm_model_type=None,
    character_coverage=None,
    seed=1,
    split_column=None,
    workers=None,
    force=False,
    quiet=False,
    **split_options,
):
    """Build the data folder ``out``: the data-bin ``old_data`` with the new languages ``langs``
    of ``tsv`` added (see ``mdnas-prepare --help``); returns the metadata dict.

    ``split_options`` (:func:`.split_rows`'s keyword arguments: max_rows, heldout_fraction, ...)
    and ``seed`` draw the new languages' splits when they cannot follow the old rows.
    Raises DataError for bad input or options; nothing is left in ``out`` or next to it on failure.
    """
    t0 = time.time()
    new_langs = parse_langs(langs)
    if spm_policy not in SPM_POLICIES:
        raise DataError(
            f"--extend-spm must be one of {', '.join(SPM_POLICIES)}, got {spm_policy!r}"
        )
    if vocab_size is not None and vocab_size < 1:
        raise DataError(f"--vocab-size must be positive, got {vocab_size}")
    workers = workers or min(8, os.cpu_count() or 1)
    old = open_old(old_data)
    have = [lang for lang in new_langs if lang in old["langs"]]
    if have:
        raise DataError(
            f"--langs: {', '.join(have)} already in --extend-data {old_data} (its languages: "
            f"{', '.join(old['langs'])}); give only new languages"
        )
    out = os.path.abspath(out)
    check_out_apart(out, old)
    check_out(out, force, tsv)
    model_type, coverage = old_model_settings(old["spm"][old["langs"][0]], old["meta"])
    model_type, coverage = spm_model_type or model_type, character_coverage or coverage

    rows, info = read_tsv(tsv, new_langs, split_column)
    splits, not_aligned = None, "--split-column given"
    if split_column is None:
        splits, not_aligned = aligned_rows(tsv, info["columns"], old, new_langs)
    if splits is None:
        splits = draw_splits(tsv, rows, info, seed, **split_options)

    with staged_out(out, force, tsv) as work:
        spm_options = (vocab_size, spm_policy, model_type, coverage)
        meta = _build(work, old, splits, new_langs, not_aligned is None, workers, spm_options)
        record = meta["extensions"][-1]
        record.update(
            source_tsv=os.path.basename(tsv),
            rows_read=info["rows_read"],
            splits="aligned with the old rows" if not_aligned is None else "drawn",
        )
        if not_aligned is not None:
            record.update(not_aligned=not_aligned, split_column=split_column, seed=seed)
        with open(os.path.join(work, "data-bin", METADATA), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, ensure_ascii=False)
            f.write("\n")

    if not quiet:
        print_extension_summary(out, old_data, tsv, meta, time.time() - t0)
    return meta


def _copy_old(work, old):
    """The old languages' datasets, raw/ and tok/ text, and sentencepiece models, byte for byte;
    returns {lang: model path relative to data-bin}."""
    for lang in old["langs"]:
        for s in SPLITS:
            for ext in ("bin", "idx"):
                name = f"{s}.{lang}.{ext}"
                shutil.copyfile(
                    os.path.join(old["bin"], name), os.path.join(work, "data-bin", name)
                )
            for sub in ("raw", "tok"):
                src = os.path.join(old["dir"], sub, f"{s}.{lang}")
                if os.path.isfile(src):
                    shutil.copyfile(src, os.path.join(work, sub, f"{s}.{lang}"))
    models = {}
    for lang, path in old["spm"].items():
        name = os.path.basename(path)
        for src, dst in ((path, name), (path[: -len(".model")] + ".vocab", name[:-6] + ".vocab")):
            if os.path.isfile(src) and not os.path.exists(os.path.join(work, dst)):
                shutil.copyfile(src, os.path.join(work, dst))
        models[lang] = "../" + name
    return models


def _build(work, old, splits, new_langs, aligned, workers, spm_options):
    """Everything under ``work``; returns the metadata."""
    from fairseq.data import Dictionary

    lines = {s: len(splits[s]) for s in SPLITS}

    for sub in ("raw", "tok", "data-bin"):
        os.makedirs(os.path.join(work, sub))
    models = _copy_old(work, old)
    old_dict = Dictionary.load(old["dict"])
    if len(old_dict) != old["meta"]["dict_size"]:
        raise DataError(
            f"{old['dict']}: {len(old_dict)} entries, but {METADATA} says dict_size "
            f"{old['meta']['dict_size']}"
        )
    write_raw(work, splits, new_langs)
    with open(old["dict"], "rb") as f:
        old_bytes = f.read()
    index = dict(old_dict.indices)
    appended, ntokens, new = _encode_new(
        work, old, splits, new_langs, workers, spm_options, models, index
    )
    padding = padding_entries(index, len(index))
    with open(os.path.join(work, "data-bin", "dict.txt"), "wb") as f:
        f.write(old_bytes if old_bytes.endswith(b"\n") or not old_bytes else old_bytes + b"\n")
        f.write("".join(f"{w} {c}\n" for w, c in appended + padding).encode("utf-8"))
    for lang in old["langs"]:  # the copies load with fairseq and match the old metadata
        try:
            verify(work, [lang], lines_of(old["meta"], lang), old["meta"]["tokens"])
        except RuntimeError as e:
            msg = str(e).replace(os.path.join(work, "data-bin"), old["bin"])
            raise DataError(f"--extend-data: {msg} (as {METADATA} says)") from None
    run_fairseq_preprocess(work, new_langs, workers)
    for lang in new_langs:
        dictionary = verify(work, [lang], lines, ntokens)
    unk = count_unk(work, new_langs, dictionary)
    for lang in new_langs:
        new[lang]["valid_unk_rate"] = round(unk["valid"][lang] / max(1, ntokens["valid"][lang]), 6)

    meta = copy.deepcopy(old["meta"])
    langs = old["langs"] + new_langs
    meta["langs"] = langs
    meta["parallel"] = bool(meta.get("parallel")) and aligned
    meta["spm_models"] = models
    meta["splits_by_lang"] = {lang: lines_of(old["meta"], lang) for lang in old["langs"]}
    meta["splits_by_lang"].update({lang: lines for lang in new_langs})
    meta["dict_size"] = len(dictionary)
    for s in SPLITS:
        meta["tokens"][s].update(ntokens[s])
        meta["unk_tokens"][s].update(unk[s])
    overlap = meta.setdefault("held_out_sentences_also_in_train", {})
    overlap.update(held_out_overlap(splits, new_langs))
    meta.setdefault("extensions", []).append(
        {
            "langs": new_langs,
            "old_langs": old["langs"],
            "old_dict_size": len(old_dict),
            "old_dict_sha256": hashlib.sha256(old_bytes).hexdigest(),
            "appended": len(appended) + len(padding),
            "appended_padding": len(padding),
            "spm_model_type": spm_options[2],
            "spm_character_coverage": spm_options[3],
            "new": new,
        }
    )
    return meta


def _encode_new(work, old, splits, new_langs, workers, spm_options, models, index):
    """Choose (or train) each new language's sentencepiece model, write its tok/ files and add
    the pieces its train split uses that ``index`` lacks to ``index`` and ``models``; returns
    ([(piece, count) appended], {split: {lang: pieces}}, {lang: record})."""
    import sentencepiece as spm

    vocab_size, policy, model_type, coverage = spm_options
    appended, ntokens, new = [], {s: {} for s in SPLITS}, {}
    old_sp = spm.SentencePieceProcessor(model_file=old["spm"][old["langs"][0]])
    requested = vocab_size or default_vocab_size(old, len(splits["train"]))
    for k, lang in enumerate(new_langs):
        texts = one_lang(splits, k)
        rate = unknown_rate(old_sp, [r[1][0] for r in texts["train"]], workers)
        own = policy == "own" or (policy == "auto" and rate >= OLD_MODEL_MAX_UNK)
        sp, models[lang] = old_sp, models[old["langs"][0]]
        if own:
            train_file = os.path.join(work, "raw", f"train.{lang}")
            sp = train_spm(
                train_file,
                os.path.join(work, f"spm.{lang}"),
                requested,
                model_type,
                coverage,
                workers,
                fit=True,
            )
            models[lang] = f"../spm.{lang}.model"
        counts = encode_splits(sp, texts, [lang], work, workers)
        for s in SPLITS:
            ntokens[s][lang] = counts[s][lang]
        entries = appended_entries(os.path.join(work, "tok", f"train.{lang}"), index)
        for word, _ in entries:
            index[word] = len(index)
        appended += entries
        new[lang] = {
            "spm_model": models[lang],
            "spm_policy": "own" if own else "old",
            "old_model_unknown_rate": round(rate, 6),
            "spm_vocab_size": sp.get_piece_size(),
            "spm_vocab_size_requested": requested if own else None,
            "appended": len(entries),
        }
    return appended, ntokens, new
