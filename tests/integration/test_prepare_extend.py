"""Tests of ``mdnas-prepare --extend-data`` (mdnas_fairseq/data/prepare/extension.py): new languages
added to a prepared data folder, the old languages' files and token ids unchanged.

The base folder holds en,de (300 rows of examples/data/en_de_fr_small.tsv); it is extended with
fr and with el, a Greek column made here by transliterating the German text letter by letter, so
the old en/de sentencepiece model cannot cover it. References are independent of the code under
test: bytes of the old files, the TSV re-read with ``split("\\t")``, datasets decoded with
fairseq's Dictionary and sentencepiece.
"""

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import unicodedata

import pytest

from mdnas_fairseq.data.prepare import DataError, extend, prepare, read_tsv, split_rows
from mdnas_fairseq.data.prepare.cli import build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = os.path.join(ROOT, "examples", "data", "en_de_fr_small.tsv")
SPLITS = ("train", "heldout", "valid", "test")
GREEK = dict(zip("abcdefghijklmnopqrstuvwxyzäöüß", "αβψδεφγηιξκλμνοπϙρστθωϝχυζάόύς"))


def greek(text):
    return "".join(
        GREEK[c] if c in GREEK else GREEK[c.lower()].upper() if c.lower() in GREEK else c
        for c in text
    )


def small_rows(start, stop):
    with open(SMALL, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "en\tde\tfr"
    return [line.split("\t") for line in lines[1:][start:stop]]


def write_tsv(path, header, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        f.writelines("\t".join(r) + "\n" for r in rows)
    return str(path)


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def nothing_written(parent, name):
    return not os.path.exists(os.path.join(parent, name)) and not [
        x for x in os.listdir(parent) if x.startswith(f".{name}.")
    ]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("extend")
    rows = [r + [greek(r[1])] for r in small_rows(0, 300)]
    tsv = write_tsv(tmp / "t.tsv", ["en", "de", "fr", "el"], rows)
    prepare(tsv, "en,de", str(tmp / "old"), vocab_size=600, seed=3, workers=1, quiet=True)
    old_bin = str(tmp / "old" / "data-bin")
    snapshot = {
        os.path.relpath(os.path.join(d, f), tmp / "old"): open(os.path.join(d, f), "rb").read()
        for d, _, fs in os.walk(tmp / "old")
        for f in fs
    }
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        meta = extend(old_bin, tsv, "fr,el", str(tmp / "new"), workers=1)
    return {
        "tmp": tmp,
        "tsv": tsv,
        "old": str(tmp / "old"),
        "old_bin": old_bin,
        "new": str(tmp / "new"),
        "meta": meta,
        "old_meta": read_json(os.path.join(old_bin, "mdnas_data.json")),
        "snapshot": snapshot,
        "summary": buf.getvalue(),
    }


def test_old_files_byte_identical_and_old_folder_untouched(base):
    new = base["new"]
    compared = 0
    for rel, data in base["snapshot"].items():
        if rel.startswith(("raw", "tok")) or re.fullmatch(r"data-bin/\w+\.(en|de)\.(bin|idx)", rel):
            with open(os.path.join(new, rel), "rb") as f:
                assert f.read() == data, rel
            compared += 1
    assert compared == 4 * 2 * 4  # every split and old language: .bin, .idx, raw, tok
    with open(os.path.join(new, "spm.model"), "rb") as f:
        assert f.read() == base["snapshot"]["spm.model"]
    # the old folder itself is read only
    now = {
        os.path.relpath(os.path.join(d, f), base["old"])
        for d, _, fs in os.walk(base["old"])
        for f in fs
    }
    assert now == set(base["snapshot"])
    assert "--extend-data" in build_parser().format_help()


def test_metadata_keeps_old_records(base):
    old, meta = base["old_meta"], base["meta"]
    assert read_json(os.path.join(base["new"], "data-bin", "mdnas_data.json")) == meta
    assert meta["langs"] == ["en", "de", "fr", "el"]
    for field, value in old.items():
        if field in ("tokens", "unk_tokens"):
            for s in SPLITS:
                assert {x: meta[field][s][x] for x in ("en", "de")} == value[s], field
        elif field == "held_out_sentences_also_in_train":
            assert {x: meta[field][x] for x in ("en", "de")} == value
        elif field not in ("langs", "dict_size"):
            assert meta[field] == value, field
    assert meta["spm_models"] == {
        "en": "../spm.model",
        "de": "../spm.model",
        "fr": "../spm.fr.model",
        "el": "../spm.el.model",
    }
    assert (
        meta["parallel"] is True and meta["extensions"][-1]["splits"] == "aligned with the old rows"
    )
    for lang in ("en", "de", "fr", "el"):
        assert meta["splits_by_lang"][lang] == old["splits"]


def test_dictionary_only_appended(base):
    with open(os.path.join(base["old_bin"], "dict.txt"), "rb") as f:
        old = f.read()
    with open(os.path.join(base["new"], "data-bin", "dict.txt"), "rb") as f:
        new = f.read()
    assert new.startswith(old) and old.endswith(b"\n")
    added = new[len(old) :].decode("utf-8").splitlines()
    ext = base["meta"]["extensions"][-1]
    assert (
        len(added)
        == ext["appended"]
        == sum(ext["new"][x]["appended"] for x in ("fr", "el")) + (ext["appended_padding"])
    )
    assert ext["new"]["el"]["appended"] > 100  # Greek pieces of its own
    summary = base["summary"]
    assert f"+{ext['new']['el']['appended']} el" in summary
    assert f"{ext['appended']} appended in all" in summary
    # appended words: new to the dictionary, each once; every train piece of fr/el is in it
    old_words = {line.rsplit(" ", 1)[0] for line in old.decode("utf-8").splitlines()}
    words = [line.rsplit(" ", 1)[0] for line in added]
    assert len(set(words)) == len(words) and not set(words) & old_words
    in_dict = old_words | set(words)
    for lang in ("fr", "el"):
        for line in read_lines(os.path.join(base["new"], "tok", f"train.{lang}")):
            assert set(line.split()) <= in_dict
    shared = {
        w for line in read_lines(os.path.join(base["new"], "tok", "train.el")) for w in line.split()
    }
    assert shared & old_words  # pieces shared with en/de ('.', digits, ...) keep their old ids
    assert (len(old_words) + len(words) + 4) % 8 == 0 == base["meta"]["dict_size"] % 8


def test_new_language_unk_rate_reported_and_under_one_percent(base):
    meta, summary = base["meta"], base["summary"]
    for lang in ("fr", "el"):
        tok = [
            w
            for line in read_lines(os.path.join(base["new"], "tok", f"valid.{lang}"))
            for w in line.split()
        ]
        words = {
            line.rsplit(" ", 1)[0]
            for line in read_lines(os.path.join(base["new"], "data-bin", "dict.txt"))
        }
        unk = sum(w not in words for w in tok)
        assert unk / len(tok) < 0.01, lang
        assert meta["unk_tokens"]["valid"][lang] == unk and meta["tokens"]["valid"][lang] == len(
            tok
        )
        info = meta["extensions"][-1]["new"][lang]
        assert info["spm_policy"] == "own"
        assert (
            f"{lang}: valid unk {100 * unk / len(tok):.2f}% ({unk} of {len(tok)} pieces); "
            in summary
        )
        assert f"; {info['appended']} dictionary entries appended" in summary
    assert meta["extensions"][-1]["new"]["el"]["old_model_unknown_rate"] > 0.2


def test_extended_data_loads_and_decodes(base):
    import sentencepiece as spm
    from fairseq.data import Dictionary, data_utils

    data_bin = os.path.join(base["new"], "data-bin")
    d = Dictionary.load(os.path.join(data_bin, "dict.txt"))
    assert len(d) == base["meta"]["dict_size"]
    for lang in ("en", "de", "fr", "el"):
        ds = data_utils.load_indexed_dataset(os.path.join(data_bin, f"train.{lang}"), d)
        assert ds is not None and len(ds) == base["meta"]["splits"]["train"]
        assert max(int(ds[i].max()) for i in range(len(ds))) < len(d)
    for lang in ("fr", "el"):
        sp = spm.SentencePieceProcessor(
            model_file=os.path.join(data_bin, base["meta"]["spm_models"][lang])
        )
        ds = data_utils.load_indexed_dataset(os.path.join(data_bin, f"valid.{lang}"), d)
        raw = read_lines(os.path.join(base["new"], "raw", f"valid.{lang}"))
        checked = 0
        for i, text in enumerate(raw):
            pieces = [d[j] for j in ds[i][:-1].tolist()]
            if d.unk_word in pieces or unicodedata.normalize("NFKC", text) != text:
                continue
            assert sp.decode(pieces) == text
            checked += 1
        assert checked >= 0.8 * len(raw), lang


def test_new_rows_follow_the_old_rows(base):
    by_en = {r[0]: r for r in small_rows(0, 300)}
    for s in SPLITS:
        en = read_lines(os.path.join(base["new"], "raw", f"{s}.en"))
        fr = read_lines(os.path.join(base["new"], "raw", f"{s}.fr"))
        el = read_lines(os.path.join(base["new"], "raw", f"{s}.el"))
        assert fr == [" ".join(by_en[e][2].split()) for e in en]
        assert el == [greek(" ".join(by_en[e][1].split())) for e in en]


def test_drawn_splits_and_old_model_for_a_covered_language(base, capsys):
    """A TSV without the old languages' columns: the new language's splits are drawn as prepare()
    draws them; English-like text is covered by the old model, which then encodes it."""
    tmp = base["tmp"]
    rows = [[r[0]] for r in small_rows(300, 420)]
    tsv = write_tsv(tmp / "x.tsv", ["xx"], rows)
    for r in split_rows(read_tsv(tsv, ["xx"])[0], 5, tsv)["valid"][:2]:
        rows[r[0] - 2][0] += " \u2603"  # a character no train row has: 2 valid pieces unknown
    tsv = write_tsv(tmp / "x.tsv", ["xx"], rows)
    out = str(tmp / "drawn")
    argv = ["--extend-data", base["old"], "--tsv", tsv, "--langs", "xx", "--out", out]
    assert main(argv + ["--seed", "5", "--workers", "1"]) == 0
    summary = capsys.readouterr().out
    meta = read_json(os.path.join(out, "data-bin", "mdnas_data.json"))
    want = split_rows(read_tsv(tsv, ["xx"])[0], 5, tsv)
    for s in SPLITS:
        assert read_lines(os.path.join(out, "raw", f"{s}.xx")) == [r[1][0] for r in want[s]]
    assert meta["parallel"] is False and meta["splits_by_lang"]["xx"]["test"] == 6
    assert "NOT line-aligned" in summary and "x.tsv has no column en, de" in summary
    info = meta["extensions"][-1]["new"]["xx"]
    assert info["spm_policy"] == "old" and info["old_model_unknown_rate"] < 0.01
    assert meta["spm_models"]["xx"] == "../spm.model"
    assert not [f for f in os.listdir(out) if f.startswith("spm.xx")]
    assert "xx: the old sentencepiece model spm.model" in summary
    n = meta["tokens"]["valid"]["xx"]
    assert meta["unk_tokens"]["valid"]["xx"] == 2 and info["valid_unk_rate"] == round(2 / n, 6)
    assert f"xx: valid unk {200 / n:.2f}% (2 of {n} pieces); " in summary


# ---------------------------------------------------------------------------------------------
# bad input: a clear error naming what is wrong, nothing written
# ---------------------------------------------------------------------------------------------


def test_language_already_in_old_data(base):
    with pytest.raises(DataError, match=r"--langs: de already in --extend-data .*en, de"):
        extend(base["old_bin"], base["tsv"], "fr,de", str(base["tmp"] / "e1"), quiet=True)
    assert nothing_written(base["tmp"], "e1")


def test_new_language_missing_from_tsv(base):
    with pytest.raises(
        DataError,
        match=r"t\.tsv line 1: language 'ru' is not a column of the header \['en', 'de', 'fr', 'el'\]",
    ):
        extend(base["old_bin"], base["tsv"], "fr,ru", str(base["tmp"] / "e2"), quiet=True)
    assert nothing_written(base["tmp"], "e2")


@pytest.mark.parametrize(
    "remove, missing",
    [
        (["data-bin/mdnas_data.json", "data-bin/dict.txt"], "missing mdnas_data.json and dict.txt"),
        (["data-bin/dict.txt"], "missing dict.txt"),
        (["spm.model"], r"missing \.\./spm\.model"),
        (["data-bin/test.de.idx"], "missing test.de.idx"),
    ],
)
def test_not_a_data_bin_of_this_tool(base, remove, missing):
    tmp = base["tmp"]
    broken = tmp / "broken"
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(base["old"], broken)
    for rel in remove:
        os.remove(broken / rel)
    with pytest.raises(DataError, match=r"not a data-bin made by mdnas-prepare \(" + missing):
        extend(str(broken / "data-bin"), base["tsv"], "fr", str(tmp / "e3"), quiet=True)
    assert nothing_written(tmp, "e3")


def test_out_is_the_old_data_or_exists(base):
    tmp = base["tmp"]
    for out in (base["old_bin"], base["old"]):
        with pytest.raises(DataError, match=r"inside the data folder of --extend-data"):
            extend(base["old_bin"], base["tsv"], "fr", out, force=True, quiet=True)
    (tmp / "busy").mkdir()
    (tmp / "busy" / "keep.txt").write_text("precious")
    with pytest.raises(DataError, match=r"busy: directory exists and is not empty; use --force"):
        extend(base["old_bin"], base["tsv"], "fr", str(tmp / "busy"), quiet=True)
    assert os.listdir(tmp / "busy") == ["keep.txt"]
    assert [x for x in os.listdir(tmp) if x.startswith(".busy.")] == []
    assert sorted(os.listdir(base["old"])) == ["data-bin", "raw", "spm.model", "spm.vocab", "tok"]


def test_failure_midway_leaves_nothing(base, monkeypatch, capsys):
    def boom(*a, **k):
        raise RuntimeError("simulated binarization failure")

    monkeypatch.setattr("mdnas_fairseq.data.prepare.extension.run_fairseq_preprocess", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        extend(base["old_bin"], base["tsv"], "fr", str(base["tmp"] / "e4"), workers=1, quiet=True)
    assert nothing_written(base["tmp"], "e4")
    # scripts/prepare_parallel.py (= mdnas-prepare) reports a DataError in one line and exits 2
    spec = importlib.util.spec_from_file_location(
        "prepare_parallel", os.path.join(ROOT, "scripts", "prepare_parallel.py")
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--extend-data", base["old_bin"], "--tsv", base["tsv"], "--langs", "en"]
    assert script.main(argv + ["--out", str(base["tmp"] / "e5")]) == 2
    assert (
        "prepare_parallel.py: error: --langs: en already in --extend-data"
        in capsys.readouterr().err
    )
    assert nothing_written(base["tmp"], "e5")
