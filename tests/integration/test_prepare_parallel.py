"""Tests of scripts/prepare_parallel.py (= mdnas-prepare, mdnas_fairseq/data/prepare) and
scripts/iwslt14_to_tsv.py (+ prepare_iwslt14.sh).

References are independent of the code under test: the input TSV is re-read here with a plain
``split("\\t")``, token counts are recounted from the tok/ files, datasets are decoded with
fairseq's Dictionary and sentencepiece, and the IWSLT helper's output is compared with rows
written out by hand.
"""

import collections
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import unicodedata

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(ROOT, "scripts")
EMBEDDED = os.path.join(ROOT, "examples", "data", "en_de_small.tsv")
SPLITS = ("train", "heldout", "valid", "test")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(SCRIPTS, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


pp = _load("prepare_parallel")
iw = _load("iwslt14_to_tsv")


def embedded_rows(n):
    with open(EMBEDDED, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "en\tde"
    return [tuple(line.split("\t")) for line in lines[1 : n + 1]]


def write_tsv(path, header, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    return str(path)


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def leftovers(parent, name):
    return [x for x in os.listdir(parent) if x.startswith(f".{name}.")]


# ---------------------------------------------------------------------------------------------
# a prepared folder shared by several tests: 300 embedded rows + extra column + 5 rows that
# must be dropped (an empty chosen field), vocabulary 600
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    rows = embedded_rows(300)
    table = []
    for i, (en, de) in enumerate(rows):
        table.append((str(i), de, en))  # columns in another order, one extra column
    for i in range(5):  # one chosen field empty (or only whitespace): dropped
        table.insert(17 * i + 3, (f"x{i}", " " if i % 2 else "", f"orphan english sentence {i}"))
    tsv = write_tsv(tmp / "in.tsv", ["id", "de", "en"], table)
    out = tmp / "out"
    meta = pp.prepare(tsv, "en,de", str(out), vocab_size=600, seed=3, workers=1, quiet=True)
    return {"tsv": tsv, "out": str(out), "meta": meta, "rows": rows, "tmp": tmp}


def test_layout_and_metadata(corpus):
    out, meta = corpus["out"], corpus["meta"]
    expected = {"spm.model", "spm.vocab", "raw", "tok", "data-bin"}
    assert set(os.listdir(out)) == expected
    for sub in ("raw", "tok"):
        assert sorted(os.listdir(os.path.join(out, sub))) == sorted(
            f"{s}.{lang}" for s in SPLITS for lang in ("en", "de")
        )
    binfiles = {f"{s}.{lang}.{e}" for s in SPLITS for lang in ("en", "de") for e in ("bin", "idx")}
    assert set(os.listdir(os.path.join(out, "data-bin"))) == binfiles | {
        "dict.txt",
        "mdnas_data.json",
    }
    assert leftovers(os.path.dirname(out), "out") == []

    with open(os.path.join(out, "data-bin", "mdnas_data.json"), encoding="utf-8") as f:
        js = json.load(f)
    assert js == meta
    assert js["format"] == "mdnas-data" and js["version"] == 1 and js["parallel"] is True
    assert js["langs"] == ["en", "de"] and js["seed"] == 3 and js["source_tsv"] == "in.tsv"
    assert os.path.samefile(
        os.path.join(out, "data-bin", js["spm_model"]), os.path.join(out, "spm.model")
    )
    # 300 usable rows: test 5% = 15, valid 5% = 15, heldout 10% = 30, the rest train
    assert js["splits"] == {"train": 240, "heldout": 30, "valid": 15, "test": 15}
    for s in SPLITS:
        for lang in ("en", "de"):
            assert len(read_lines(os.path.join(out, "raw", f"{s}.{lang}"))) == js["splits"][s]
            assert len(read_lines(os.path.join(out, "tok", f"{s}.{lang}"))) == js["splits"][s]


def test_alignment_disjoint_and_cover(corpus):
    out = corpus["out"]
    # independent reading of the input: drop rows with an empty en or de field
    with open(corpus["tsv"], encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = lines[0].split("\t")
    usable = []
    for line in lines[1:]:
        r = dict(zip(header, line.split("\t")))
        if r["en"].strip() and r["de"].strip():
            usable.append((" ".join(r["en"].split()), " ".join(r["de"].split())))
    assert len(usable) == 300 and sorted(usable) == sorted(corpus["rows"])
    de_of = dict(usable)  # English side is unique in the embedded corpus

    seen = collections.Counter()
    for s in SPLITS:
        en = read_lines(os.path.join(out, "raw", f"{s}.en"))
        de = read_lines(os.path.join(out, "raw", f"{s}.de"))
        assert len(en) == len(de)
        for e, d in zip(en, de):
            assert e in de_of, f"{s}: {e!r} is not an input row"
            assert de_of[e] == d, (
                f"{s}: line pairs {e!r} with {d!r}, input pairs it with {de_of[e]!r}"
            )
            seen[(e, d)] += 1
    # every usable row in exactly one split, nothing else
    assert seen == collections.Counter(usable)
    assert not any("orphan" in e for e, _ in seen)


def test_binary_datasets_decode_to_raw(corpus):
    import sentencepiece as spm
    from fairseq.data import Dictionary, data_utils

    out = corpus["out"]
    d = Dictionary.load(os.path.join(out, "data-bin", "dict.txt"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "spm.model"))
    checked = 0
    for s in SPLITS:
        lengths = set()
        for lang in ("en", "de"):
            ds = data_utils.load_indexed_dataset(os.path.join(out, "data-bin", f"{s}.{lang}"), d)
            raw = read_lines(os.path.join(out, "raw", f"{s}.{lang}"))
            tok = read_lines(os.path.join(out, "tok", f"{s}.{lang}"))
            assert ds is not None and len(ds) == len(raw)
            lengths.add(len(ds))
            for i in range(len(ds)):
                ids = ds[i]
                assert ids[-1].item() == d.eos()
                pieces = [d[j] for j in ids[:-1].tolist()]
                assert len(pieces) == len(tok[i].split())
                if d.unk_word in pieces or unicodedata.normalize("NFKC", raw[i]) != raw[i]:
                    continue
                assert pieces == tok[i].split()
                assert sp.decode(pieces) == raw[i]
                checked += 1
        assert len(lengths) == 1
    assert checked >= 0.9 * 2 * 300


def test_dictionary_is_shared_and_counts_train_only(corpus):
    out = corpus["out"]
    counts = collections.Counter()
    for lang in ("en", "de"):
        for line in read_lines(os.path.join(out, "tok", f"train.{lang}")):
            counts.update(line.split())
    dict_lines = read_lines(os.path.join(out, "data-bin", "dict.txt"))
    in_dict = {}
    for line in dict_lines:
        word, c = line.rsplit(" ", 1)
        in_dict[word] = int(c)
    real = {w: c for w, c in in_dict.items() if not w.startswith("madeupword")}
    assert real == dict(counts)
    assert len(dict_lines) + 4 == corpus["meta"]["dict_size"]
    assert corpus["meta"]["dict_size"] % 8 == 0


def test_same_seed_same_split_other_seed_differs(corpus, tmp_path):
    again = pp.prepare(
        corpus["tsv"],
        "en,de",
        str(tmp_path / "again"),
        vocab_size=600,
        seed=3,
        workers=1,
        quiet=True,
    )
    assert again["splits"] == corpus["meta"]["splits"]
    for s in SPLITS:
        for sub in ("raw", "tok"):
            a = read_lines(os.path.join(corpus["out"], sub, f"{s}.en"))
            b = read_lines(tmp_path / "again" / sub / f"{s}.en")
            assert a == b
    rows, _ = pp.read_tsv(corpus["tsv"], ["en", "de"])
    s3 = pp.split_rows(rows, 3, "x")
    s4 = pp.split_rows(rows, 4, "x")
    assert [r[1] for r in s3["test"]] == read_lines_pairs(corpus["out"], "test")
    assert s3["test"] != s4["test"]


def read_lines_pairs(out, split):
    return [
        list(p)
        for p in zip(
            read_lines(os.path.join(out, "raw", f"{split}.en")),
            read_lines(os.path.join(out, "raw", f"{split}.de")),
        )
    ]


def test_sentencepiece_sees_train_split_only(tmp_path):
    # Each row carries a character of its own (CJK ideographs); with character coverage 1.0
    # sentencepiece keeps every character of its training text, so the vocabulary must hold
    # exactly the characters of the train rows and none of the heldout/valid/test rows.
    rows = embedded_rows(200)
    marked = [(f"{en} {chr(0x4E00 + i)}", de) for i, (en, de) in enumerate(rows)]
    tsv = write_tsv(tmp_path / "m.tsv", ["en", "de"], marked)
    out = tmp_path / "m"
    pp.prepare(
        tsv,
        "en,de",
        str(out),
        vocab_size=700,
        character_coverage=1.0,
        seed=5,
        workers=1,
        quiet=True,
    )
    vocab_chars = set()
    for line in read_lines(out / "spm.vocab"):
        vocab_chars.update(c for c in line.split("\t")[0] if 0x4E00 <= ord(c) < 0x4E00 + 200)
    by_split = {s: {line[-1] for line in read_lines(out / "raw" / f"{s}.en")} for s in SPLITS}
    assert len(by_split["train"]) == 160
    assert vocab_chars == by_split["train"]
    for s in ("heldout", "valid", "test"):
        assert not vocab_chars & by_split[s]


def test_split_column(tmp_path):
    rows = embedded_rows(240)
    labels = [
        "valid" if i % 10 == 3 else "test" if i % 10 == 7 else "train" for i in range(len(rows))
    ]
    tsv = write_tsv(
        tmp_path / "s.tsv",
        ["en", "de", "split"],
        [(e, d, label) for (e, d), label in zip(rows, labels)],
    )
    meta = pp.prepare(
        tsv,
        "en,de",
        str(tmp_path / "s"),
        vocab_size=500,
        split_column="split",
        heldout_rows=20,
        workers=1,
        quiet=True,
    )
    assert meta["splits"] == {"train": 172, "heldout": 20, "valid": 24, "test": 24}
    for s in ("valid", "test"):  # exactly the labelled rows, in file order
        want = [list(r) for r, label in zip(rows, labels) if label == s]
        assert read_lines_pairs(tmp_path / "s", s) == want
    train_rows = {r for r, label in zip(rows, labels) if label == "train"}
    got = [tuple(p) for s in ("train", "heldout") for p in read_lines_pairs(tmp_path / "s", s)]
    assert sorted(got) == sorted(train_rows)

    bad = write_tsv(
        tmp_path / "b.tsv",
        ["en", "de", "split"],
        [(e, d, "train") for e, d in rows[:5]] + [("a", "b", "dev")],
    )
    with pytest.raises(pp.DataError, match=r"b\.tsv line 7: column 'split' is 'dev'"):
        pp.prepare(bad, "en,de", str(tmp_path / "b"), split_column="split", quiet=True)


def test_duplicate_rows_are_dropped_before_splitting(tmp_path):
    # 100 distinct rows, each written 4 times: split by row, most held-out pairs would also be trained on
    rows = embedded_rows(100)
    tsv = write_tsv(tmp_path / "dup.tsv", ["en", "de"], rows * 4)
    meta = pp.prepare(
        tsv,
        "en,de",
        str(tmp_path / "dup"),
        vocab_size=300,
        test_rows=10,
        valid_rows=10,
        heldout_rows=10,
        workers=1,
        quiet=True,
    )
    assert meta["rows_dropped_duplicate"] == 300
    assert sum(meta["splits"].values()) == 100
    pairs = {s: {tuple(p) for p in read_lines_pairs(tmp_path / "dup", s)} for s in SPLITS}
    assert sum(len(v) for v in pairs.values()) == 100  # every pair once
    for held in ("heldout", "valid", "test"):
        assert not pairs[held] & pairs["train"]
    assert meta["held_out_sentences_also_in_train"] == {"en": 0, "de": 0}
    # with split labels the held-out copy of a duplicate wins over its train copy
    labelled = (
        [(e, d, "train") for e, d in rows[:40]]
        + [(e, d, "test") for e, d in rows[:5]]
        + [(e, d, "valid") for e, d in rows[40:45]]
    )
    tsv = write_tsv(tmp_path / "lab.tsv", ["en", "de", "split"], labelled)
    meta = pp.prepare(
        tsv,
        "en,de",
        str(tmp_path / "lab"),
        vocab_size=200,
        split_column="split",
        heldout_rows=5,
        workers=1,
        quiet=True,
    )
    assert meta["rows_dropped_duplicate"] == 5
    assert meta["splits"] == {"train": 30, "heldout": 5, "valid": 5, "test": 5}
    assert read_lines_pairs(tmp_path / "lab", "test") == [list(r) for r in rows[:5]]


# ---------------------------------------------------------------------------------------------
# errors: clear messages, nothing half-written
# ---------------------------------------------------------------------------------------------


def assert_no_output(tmp_path, name):
    assert not os.path.exists(tmp_path / name)
    assert leftovers(tmp_path, name) == []


def test_unknown_language(tmp_path):
    tsv = write_tsv(tmp_path / "t.tsv", ["en", "de"], embedded_rows(50))
    with pytest.raises(
        pp.DataError,
        match=r"t\.tsv line 1: language 'fr' is not a column of the header \['en', 'de'\]",
    ):
        pp.prepare(tsv, "en,fr", str(tmp_path / "o"), quiet=True)
    assert_no_output(tmp_path, "o")


def test_ragged_line_names_line_number(tmp_path):
    rows = embedded_rows(50)
    rows[5] = rows[5] + ("extra",)  # file line 7 (header is line 1)
    tsv = write_tsv(tmp_path / "r.tsv", ["en", "de"], rows)
    with pytest.raises(
        pp.DataError, match=r"r\.tsv line 7: expected 2 tab-separated fields .*found 3"
    ):
        pp.prepare(tsv, "en,de", str(tmp_path / "o"), quiet=True)
    assert_no_output(tmp_path, "o")
    rows = embedded_rows(50)
    rows[9] = (rows[9][0],)
    tsv = write_tsv(tmp_path / "r2.tsv", ["en", "de"], rows)
    with pytest.raises(pp.DataError, match=r"r2\.tsv line 11: .*found 1 field"):
        pp.prepare(tsv, "en,de", str(tmp_path / "o"), quiet=True)


def test_empty_file_and_too_few_rows(tmp_path):
    empty = tmp_path / "e.tsv"
    empty.write_text("")
    with pytest.raises(pp.DataError, match=r"e\.tsv: empty file"):
        pp.prepare(str(empty), "en,de", str(tmp_path / "o"), quiet=True)
    few = write_tsv(tmp_path / "f.tsv", ["en", "de"], embedded_rows(3) + [("only english", "")])
    with pytest.raises(
        pp.DataError,
        match=r"f\.tsv: 3 usable rows \(after dropping 1 with an empty field\), "
        r"but the splits need at least 4",
    ):
        pp.prepare(few, "en,de", str(tmp_path / "o"), quiet=True)
    assert_no_output(tmp_path, "o")


def test_existing_dir_needs_force(tmp_path):
    tsv = write_tsv(tmp_path / "t.tsv", ["en", "de"], embedded_rows(120))
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(pp.DataError, match=r"exists and is not empty; use --force"):
        pp.prepare(tsv, "en,de", str(out), vocab_size=300, quiet=True)
    assert os.listdir(out) == ["keep.txt"]
    assert leftovers(tmp_path, "o") == []
    pp.prepare(tsv, "en,de", str(out), vocab_size=300, force=True, workers=1, quiet=True)
    assert "keep.txt" not in os.listdir(out) and os.path.isfile(out / "data-bin" / "dict.txt")
    assert leftovers(tmp_path, "o") == []
    # an existing EMPTY folder is fine without --force
    (tmp_path / "empty").mkdir()
    pp.prepare(tsv, "en,de", str(tmp_path / "empty"), vocab_size=300, workers=1, quiet=True)


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    tsv = write_tsv(tmp_path / "t.tsv", ["en", "de"], embedded_rows(120))
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("precious")

    def boom(*a, **k):
        raise RuntimeError("simulated binarization failure")

    monkeypatch.setattr("mdnas_fairseq.data.prepare.pipeline.run_fairseq_preprocess", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        pp.prepare(tsv, "en,de", str(out), vocab_size=300, force=True, workers=1, quiet=True)
    assert os.listdir(out) == ["keep.txt"]  # the old folder is untouched
    assert leftovers(tmp_path, "o") == []
    with pytest.raises(RuntimeError, match="simulated"):
        pp.prepare(tsv, "en,de", str(tmp_path / "new"), vocab_size=300, workers=1, quiet=True)
    assert_no_output(tmp_path, "new")


def test_vocab_too_large_is_a_clear_error(tmp_path):
    tsv = write_tsv(tmp_path / "t.tsv", ["en", "de"], embedded_rows(60))
    with pytest.raises(
        pp.DataError, match=r"--vocab-size 5000 is too large .* use a smaller --vocab-size"
    ):
        pp.prepare(
            tsv, "en,de", str(tmp_path / "o"), vocab_size=5000, spm_model_type="unigram", quiet=True
        )
    assert_no_output(tmp_path, "o")


def test_main_reports_errors(tmp_path, capsys):
    tsv = write_tsv(tmp_path / "t.tsv", ["en", "de"], embedded_rows(20))
    assert pp.main(["--tsv", tsv, "--langs", "en,xx", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "language 'xx'" in err and "t.tsv line 1" in err
    assert_no_output(tmp_path, "o")


def test_console_script_and_script_write_the_same_folder(tmp_path):
    """``mdnas-prepare`` (the console script) and ``python scripts/prepare_parallel.py`` (the thin
    entry point) run the same code: byte-identical files and the same summary. spm.model alone is
    compared by its pieces and scores, since sentencepiece stores its (temporary) input path in it."""
    import sentencepiece as spm

    console = os.path.join(os.path.dirname(sys.executable), "mdnas-prepare")
    assert os.path.isfile(console), f"{console} missing: reinstall with pip install -e ."
    tsv = write_tsv(tmp_path / "tiny.tsv", ["en", "de"], embedded_rows(200))
    opts = ["--tsv", tsv, "--langs", "en,de", "--vocab-size", "300", "--workers", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    summaries, files = {}, {}
    for name, cmd in (
        ("console", [console]),
        ("script", [sys.executable, os.path.join(SCRIPTS, "prepare_parallel.py")]),
    ):
        out = tmp_path / name
        res = subprocess.run(
            cmd + opts + ["--out", str(out)], env=env, capture_output=True, text=True, timeout=300
        )
        assert res.returncode == 0, res.stdout + res.stderr
        summaries[name] = re.sub(
            r", [0-9.]+s$", "", res.stdout.replace(str(out), "OUT"), flags=re.M
        )
        files[name] = sorted(
            os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs
        )
    assert files["console"] == files["script"] and "data-bin/train.de.bin" in files["script"]
    assert summaries["console"] == summaries["script"] and "train" in summaries["script"]
    for rel in files["script"]:
        a, b = (tmp_path / name / rel for name in ("console", "script"))
        if rel == "spm.model":
            pa, pb = (spm.SentencePieceProcessor(model_file=str(x)) for x in (a, b))
            assert pa.get_piece_size() == pb.get_piece_size() == 300
            assert [(pa.id_to_piece(i), pa.get_score(i)) for i in range(300)] == [
                (pb.id_to_piece(i), pb.get_score(i)) for i in range(300)
            ]
        else:
            assert a.read_bytes() == b.read_bytes(), rel


# ---------------------------------------------------------------------------------------------
# IWSLT14: tag stripping and TSV building on a tiny fake extracted folder
# ---------------------------------------------------------------------------------------------

FAKE_TRAIN = {
    "en": [
        "<url>http://www.ted.com/talks/a.html</url>",
        "<keywords>talks, ocean</keywords>",
        "<speaker>Jane Doe</speaker>",
        "<talkid>1</talkid>",
        "<title>Jane Doe: The ocean</title>",
        "<description>TED Talk Subtitles and Transcript: Jane talks.</description>",
        "Thank you, Chris.",
        "It\u2019s a  great   honor.",
        "Yes.",
        "This English line is very very much longer than its German side.",
        '<reviewer href="x">R</reviewer>',
        '<translator href="y">T</translator>',
    ],
    "de": [
        "<url>http://www.ted.com/talks/a.html</url>",
        "<keywords>talks, ozean</keywords>",
        "<speaker>Jane Doe</speaker>",
        "<talkid>1</talkid>",
        "<title>Jane Doe: Der Ozean</title>",
        "<description>TED Talk Untertitel: Jane spricht.</description>",
        "Vielen Dank, Chris.",
        "Es ist eine große Ehre.",
        "Ja.",
        "Kurz.",
        '<reviewer href="x">R</reviewer>',
        '<translator href="y">T</translator>',
    ],
}


def make_fake_iwslt(folder, n_extra=0):
    os.makedirs(folder)
    extra = embedded_rows(n_extra) if n_extra else []
    for lang, k in (("en", 0), ("de", 1)):
        with open(os.path.join(folder, f"train.tags.de-en.{lang}"), "w", encoding="utf-8") as f:
            f.write("\n".join(FAKE_TRAIN[lang] + [r[k] for r in extra]) + "\n")
        for j, name in enumerate(iw.TEST_SETS):
            segs = [f"Test {j} &amp; seg \u2019one\u2019 {lang}", f"Test {j} seg two {lang}"]
            if n_extra:
                segs += [r[k] for r in embedded_rows(n_extra + 12 * (j + 1))[-12:]]
            body = "\n".join(f'<seg id="{i + 1}"> {s} </seg>' for i, s in enumerate(segs))
            with open(os.path.join(folder, f"{name}.de-en.{lang}.xml"), "w", encoding="utf-8") as f:
                f.write(
                    f'<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n<srcset setid="{name}">\n'
                    f'<doc docid="1" genre="lectures">\n<url>http://x</url>\n<talkid>1</talkid>\n'
                    f"{body}\n</doc>\n</srcset>\n</mteval>\n"
                )


def test_iwslt_rows_from_fake_folder(tmp_path):
    folder = tmp_path / "de-en"
    make_fake_iwslt(str(folder))
    rows = iw.build_rows(str(folder), valid_every=3)
    train_pairs = [  # tags dropped, title/description unwrapped, ratio > 1.5 pair dropped
        ("Jane Doe: The ocean", "Jane Doe: Der Ozean"),
        ("TED Talk Subtitles and Transcript: Jane talks.", "TED Talk Untertitel: Jane spricht."),
        ("Thank you, Chris.", "Vielen Dank, Chris."),
        ("It's a great honor.", "Es ist eine große Ehre."),
        ("Yes.", "Ja."),
    ]
    want = [
        (e, d, "valid" if i % 3 == 0 else "train") for i, (e, d) in enumerate(train_pairs, start=1)
    ]
    for j in range(5):
        want += [
            (f"Test {j} & seg 'one' en", f"Test {j} & seg 'one' de", "test"),
            (f"Test {j} seg two en", f"Test {j} seg two de", "test"),
        ]
    assert rows == want
    lower = iw.build_rows(str(folder), lowercase=True, valid_every=3)
    assert lower == [(e.lower(), d.lower(), s) for e, d, s in want]

    out_tsv = tmp_path / "iw.tsv"
    assert iw.main([str(folder), str(out_tsv), "--valid-every", "3"]) == 0
    lines = read_lines(out_tsv)
    assert lines[0] == "en\tde\tsplit" and [tuple(x.split("\t")) for x in lines[1:]] == want


def test_iwslt_misaligned_and_missing(tmp_path, capsys):
    folder = tmp_path / "de-en"
    make_fake_iwslt(str(folder))
    with open(folder / "train.tags.de-en.de", "a", encoding="utf-8") as f:
        f.write("Eine Zeile zu viel.\n")
    with pytest.raises(
        iw.IWSLTError, match=r"not line-aligned.*train\.tags\.de-en\.en: 6 lines.*de: 7 lines"
    ):
        iw.build_rows(str(folder))
    os.remove(folder / "IWSLT14.TED.tst2011.de-en.en.xml")
    os.remove(folder / "train.tags.de-en.de")
    assert iw.main([str(folder), str(tmp_path / "x.tsv")]) == 2
    assert "missing train.tags.de-en.de" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.tsv")


def test_prepare_iwslt14_sh_offline(tmp_path):
    """The shell script end to end, except the download: a fake de-en.tgz placed where the
    script looks first is reused."""
    src = tmp_path / "src"
    make_fake_iwslt(str(src / "de-en"), n_extra=250)
    outdir = tmp_path / "iwslt"
    os.makedirs(outdir / "orig")
    with tarfile.open(outdir / "orig" / "de-en.tgz", "w:gz") as tar:
        tar.add(src / "de-en", arcname="de-en")
    env = dict(os.environ, PYTHON=sys.executable, IWSLT14_URL="http://127.0.0.1:9/unreachable.tgz")
    res = subprocess.run(
        [
            "bash",
            os.path.join(SCRIPTS, "prepare_iwslt14.sh"),
            str(outdir),
            "--vocab-size",
            "500",
            "--workers",
            "1",
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    with open(outdir / "data" / "data-bin" / "mdnas_data.json", encoding="utf-8") as f:
        meta = json.load(f)
    assert meta["langs"] == ["en", "de"] and meta["split_column"] == "split"
    assert meta["splits"]["test"] == 5 * 14
    # lowercased by default, ratio filter applied, valid = every 23rd kept train pair
    tsv = read_lines(outdir / "iwslt14.de-en.tsv")
    assert all(x == x.lower() for x in tsv)
    n_train_pairs = sum(x.endswith("\ttrain") or x.endswith("\tvalid") for x in tsv)
    assert meta["splits"]["valid"] == n_train_pairs // 23
    assert read_lines(outdir / "data" / "raw" / "test.en")[:2] == [
        "test 0 & seg 'one' en",
        "test 0 seg two en",
    ]

    # no download possible and no archive: a clear failure, nothing extracted
    res = subprocess.run(
        ["bash", os.path.join(SCRIPTS, "prepare_iwslt14.sh"), str(tmp_path / "none")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0
    assert "could not download http://127.0.0.1:9/unreachable.tgz" in res.stderr
    assert os.listdir(tmp_path / "none" / "orig") == []
