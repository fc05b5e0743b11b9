"""Tests of ``mdnas-prepare --domain-column`` (mdnas_fairseq/data/prepare): the values of a TSV
column become the domains of one language.

References are independent of the code under test: the expected split sizes are counted by
hand from the TSV written here, the datasets are decoded with fairseq's Dictionary and
sentencepiece, and the search runs through the real fairseq-train.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.fairseq_runs import BIN, ROOT, USER_DIR, run

PREPARE = os.path.join(BIN, "mdnas-prepare")
SPLITS = ("train", "heldout", "valid", "test")

# 63 rows over 4 sources (columns: id, en, de, source); "tiny" has 3 rows, too few to split.
# Per source the default fractions give (round, at least 1): test 0.05, valid 0.05,
# heldout 0.1, train the rest:
#   libre 25 rows: test 1, valid 1, heldout 2 (round(2.5) = 2), train 21
#   gcc   20 rows: test 1, valid 1, heldout 2, train 16
#   wes-n 15 rows: test 1 (round(0.75)), valid 1, heldout 2 (round(1.5)), train 11
#   tiny   3 rows: dropped by --min-domain-rows 5
EXPECTED = {
    "gcc": {"train": 16, "heldout": 2, "valid": 1, "test": 1},
    "libre": {"train": 21, "heldout": 2, "valid": 1, "test": 1},
    "wes-n": {"train": 11, "heldout": 2, "valid": 1, "test": 1},
}
WORDS = {
    "libre": "cell table sheet column row chart style page print font".split(),
    "gcc": "compiler warning option error function pointer type value flag link".split(),
    "wes-n": "unit attack sword castle village hero level gold map turn".split(),
    "tiny": "alpha beta gamma".split(),
}
COUNTS = {"libre": 25, "gcc": 20, "wes-n": 15, "tiny": 3}


def make_rows():
    rows, k = [], 0
    for src in ("libre", "gcc", "wes-n", "tiny"):
        w = WORDS[src]
        for i in range(COUNTS[src]):
            text = f"the {w[i % len(w)]} {w[(3 * i + 1) % len(w)]} number {i} of {src}"
            rows.append((str(k), text, f"de {text}", src))
            k += 1
    # interleave the sources, as in a real corpus
    return rows[0::2] + rows[1::2]


def write_tsv(path, rows, header=("id", "en", "de", "source")):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    return str(path)


def prepare(argv):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([PREPARE, *argv], capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("domains")
    rows = make_rows()
    tsv = write_tsv(tmp / "in.tsv", rows)
    out = tmp / "out"
    proc = prepare(
        [
            "--tsv",
            tsv,
            "--domain-column",
            "source",
            "--langs",
            "en",
            "--out",
            str(out),
            "--vocab-size",
            "120",
            "--min-domain-rows",
            "5",
            "--workers",
            "1",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    with open(out / "data-bin" / "mdnas_data.json", encoding="utf-8") as f:
        meta = json.load(f)
    return {"tmp": tmp, "tsv": tsv, "rows": rows, "out": out, "meta": meta, "proc": proc}


def test_domains_and_split_sizes(data):
    meta, out = data["meta"], data["out"]
    assert meta["langs"] == ["gcc", "libre", "wes-n"]
    assert meta["domain_column"] == "source" and meta["lang"] == "en"
    assert meta["parallel"] is False
    assert meta["splits_by_lang"] == EXPECTED
    assert meta["domains_dropped"] == {"tiny": 3}
    for d, sizes in EXPECTED.items():
        for s, n in sizes.items():
            with open(out / "raw" / f"{s}.{d}", encoding="utf-8") as f:
                assert len(f.read().splitlines()) == n, (s, d)
            for ext in ("bin", "idx"):
                assert (out / "data-bin" / f"{s}.{d}.{ext}").is_file()
    assert not list((out / "data-bin").glob("*.tiny.*"))
    assert not list((out / "data-bin").glob("*.en.*"))
    # every domain's rows, split for split, are exactly its rows of the TSV (en column)
    for d in EXPECTED:
        want = sorted(r[1] for r in data["rows"] if r[3] == d)
        got = []
        for s in SPLITS:
            with open(out / "raw" / f"{s}.{d}", encoding="utf-8") as f:
                got += f.read().splitlines()
        assert sorted(got) == want


def test_summary_and_drop_message(data):
    text = data["proc"].stdout
    assert "dropping domain 'tiny': 3 usable rows, fewer than --min-domain-rows 5" in text
    assert "--required-batch-size-multiple 1" in text  # valid splits of 1 sentence
    for d, sizes in EXPECTED.items():
        line = next(x for x in text.splitlines() if x.split() and x.split()[0] == d)
        assert [int(x) for x in line.split()[1:5]] == [sizes[s] for s in SPLITS]


def test_dictionary_ids_and_decoding(data):
    import sentencepiece as spm
    from fairseq.data import Dictionary, data_utils

    out = data["out"]
    d = Dictionary.load(str(out / "data-bin" / "dict.txt"))
    assert len(d) == data["meta"]["dict_size"]
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    for dom in EXPECTED:
        for s in SPLITS:
            ds = data_utils.load_indexed_dataset(str(out / "data-bin" / f"{s}.{dom}"), d)
            assert len(ds) == EXPECTED[dom][s]
            for i in range(len(ds)):
                assert int(ds[i].max()) < len(d)
        # decoding the valid split gives back the domain's rows' text
        ds = data_utils.load_indexed_dataset(str(out / "data-bin" / f"valid.{dom}"), d)
        decoded = [sp.decode(d.string(ds[i]).split()) for i in range(len(ds))]
        domain_text = {r[1] for r in data["rows"] if r[3] == dom}
        assert all(x in domain_text for x in decoded), decoded
        with open(out / "raw" / f"valid.{dom}", encoding="utf-8") as f:
            assert decoded == f.read().splitlines()


def test_small_domain_without_min_rows_is_named(data, tmp_path):
    out = tmp_path / "o"
    proc = prepare(
        ["--tsv", data["tsv"], "--domain-column", "source", "--langs", "en", "--out", str(out)]
    )
    assert proc.returncode == 2
    assert "domain 'tiny'" in proc.stderr and "--min-domain-rows" in proc.stderr
    assert not out.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "case,argv_extra,needle",
    [
        ("unknown column", ["--domain-column", "genre", "--langs", "en"], None),
        ("two languages", ["--domain-column", "source", "--langs", "en,de"], None),
        ("bad value", ["--domain-column", "source", "--langs", "en"], None),
        ("empty value", ["--domain-column", "source", "--langs", "en"], None),
    ],
)
def test_errors_write_nothing(data, tmp_path, case, argv_extra, needle):
    rows = make_rows()
    tsv = str(tmp_path / "in.tsv")
    if case == "bad value":
        rows[7] = rows[7][:3] + ("lib office",)
    if case == "empty value":
        rows[9] = rows[9][:3] + (" ",)
    write_tsv(tsv, rows)
    out = tmp_path / "o"
    proc = prepare(["--tsv", tsv, "--out", str(out), "--min-domain-rows", "5", *argv_extra])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    if case == "unknown column":
        assert "'genre' is not a column" in err and tsv in err
        assert "['id', 'en', 'de', 'source']" in err
    elif case == "two languages":
        assert "exactly one language" in err and "en,de" in err
    elif case == "bad value":
        assert "'lib office'" in err and "'source'" in err and "line 9" in err
    else:
        assert "empty value" in err and "'source'" in err and "line 11" in err
    assert sorted(os.listdir(tmp_path)) == ["in.tsv"]


def train_command(data_bin, save_dir, extra=()):
    """A tiny fairseq-train search on a data-bin (3 small domains)."""
    return [
        os.path.join(BIN, "fairseq-train"),
        str(data_bin),
        "--user-dir",
        USER_DIR,
        "--task",
        "multidomain_nas",
        "--arch",
        "mdnas_rnn_tiny",
        "--embed-dim",
        "16",
        "--hidden-dim",
        "16",
        "--num-nodes",
        "3",
        "--criterion",
        "multidomain_nas_loss",
        "--optimizer",
        "adam",
        "--lr",
        "0.003",
        "--batch-size",
        "16",
        "--cpu",
        "--num-workers",
        "0",
        "--save-dir",
        str(save_dir),
        # a domain's valid split here is 1 sentence: fairseq's batch_by_size with its default
        # multiple of 8 makes no batch of fewer than 8 sentences (and drops the remainder)
        "--required-batch-size-multiple",
        "1",
        "--no-alpha-heatmaps",
        "--log-format",
        "simple",
        *extra,
    ]


def test_fairseq_train_on_the_domains(data, tmp_path):
    cmd = train_command(
        data["out"] / "data-bin", tmp_path / "ckpt", ["--max-update", "4", "--no-save"]
    )
    proc = run(cmd)
    log = proc.stdout + proc.stderr
    assert "train: gcc 16 sentences, libre 21 sentences, wes-n 11 sentences" in log, log[-3000:]
    assert "valid on 'valid' subset" in log and "ppl_wes-n" in log, log[-3000:]
    assert "num_updates 4" in log and "done training" in log, log[-3000:]


def test_contrastive_term_is_refused_on_domains_from_a_column(tmp_path):
    """Two sources of equal size: the sentence counts match, so only the data-bin's own word that
    it is not parallel can stop the contrastive term from pairing unrelated sentences."""
    rows = [r for r in make_rows() if r[3] == "gcc"]
    rows += [(r[0], r[1].replace("gcc", "gcc2"), r[2], "gcc2") for r in rows]
    out = tmp_path / "out"
    tsv = write_tsv(tmp_path / "in.tsv", rows)
    argv = ["--tsv", tsv, "--domain-column", "source", "--langs", "en", "--out", str(out)]
    proc = prepare(argv + ["--vocab-size", "80", "--workers", "1"])
    assert proc.returncode == 0, proc.stderr
    cmd = train_command(
        out / "data-bin", tmp_path / "ckpt", ["--contrastive-coef", "0.1", "--max-update", "2"]
    )
    proc = run(cmd, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-2000:]
    assert "says the data is not parallel: its domains are the values of column 'source'" in log
    assert not os.path.exists(tmp_path / "ckpt" / "checkpoint_last.pt")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
