"""``mdnas-prepare --translation SRC-TGT`` (mdnas_fairseq/data/prepare/translation.py).

References are independent of the code under test: the split sizes are counted by hand from the
TSV written here (whose target side is a known function of the source side, so alignment is
checked sentence by sentence), and the datasets are read back with fairseq's own translation
loader and decoded with sentencepiece.
"""

import json
import os
import subprocess

import pytest

from tests.helpers.fairseq_runs import BIN, ROOT

PREPARE = os.path.join(BIN, "mdnas-prepare")
WORDS = {
    "libre": "cell table sheet column row chart style page print font".split(),
    "gcc": "compiler warning option error function pointer type value flag link".split(),
}
# 40 rows per domain, default fractions: test round(2.0) = 2, valid 2, heldout 4, train 32
EXPECTED = {"train": 32, "heldout": 4, "valid": 2, "test": 2}


def target_of(source):
    return f"das {source.upper()}"


def write_tsv(path, rows_per_domain=40, extra=()):
    with open(path, "w", encoding="utf-8") as f:
        f.write("en\tde\tsource\n")
        for i in range(rows_per_domain):  # interleaved domains
            for dom, w in WORDS.items():
                text = f"the {w[i % 10]} {w[(3 * i + 1) % 10]} number {i}"
                f.write(f"{text}\t{target_of(text)}\t{dom}\n")
        for row in extra:
            f.write("\t".join(row) + "\n")
    return str(path)


def prepare(*argv):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([PREPARE, *argv], capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mt")
    tsv = write_tsv(tmp / "in.tsv")
    out = tmp / "out"
    proc = prepare(
        "--tsv", tsv, "--translation", "en-de", "--domain-column", "source",
        "--out", str(out), "--vocab-size", "100", "--workers", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


def test_files_metadata_and_joined_dictionary(data):
    bin_dir = data / "data-bin"
    meta = json.loads((bin_dir / "mdnas_data.json").read_text())
    assert meta["kind"] == "translation"
    assert (meta["source_lang"], meta["target_lang"]) == ("en", "de")
    assert meta["domains"] == ["gcc", "libre"]
    assert meta["parallel"] is False and meta["domain_column"] == "source"
    assert meta["splits_by_domain"] == {"gcc": EXPECTED, "libre": EXPECTED}
    assert (bin_dir / "dict.en.txt").read_bytes() == (bin_dir / "dict.de.txt").read_bytes()
    assert not (bin_dir / "dict.txt").exists()  # not a language-model data-bin
    for split in EXPECTED:
        for dom in WORDS:
            for lang in ("en", "de"):
                assert (bin_dir / f"{split}.{dom}.en-de.{lang}.bin").is_file()


def test_fairseq_translation_loader_reads_aligned_pairs(data):
    import sentencepiece as spm
    from fairseq.data import Dictionary
    from fairseq.tasks.translation import load_langpair_dataset

    bin_dir = str(data / "data-bin")
    d = Dictionary.load(os.path.join(bin_dir, "dict.en.txt"))
    sp = spm.SentencePieceProcessor(model_file=str(data / "spm.model"))
    for dom, words in WORDS.items():
        for split, n in EXPECTED.items():
            ds = load_langpair_dataset(
                bin_dir, f"{split}.{dom}", "en", d, "de", d, combine=False, dataset_impl="mmap",
                upsample_primary=1, left_pad_source=True, left_pad_target=False,
                max_source_positions=1024, max_target_positions=1024,
            )  # fmt: skip
            assert len(ds) == n
            for i in range(n):
                src = sp.decode(d.string(ds[i]["source"]).split())
                tgt = sp.decode(d.string(ds[i]["target"]).split())
                assert src.split()[1] in words  # the row's domain
                assert tgt == target_of(src)  # its own translation


def test_single_domain_named_by_pair(tmp_path):
    from mdnas_fairseq.data.prepare.cli import main

    tsv = write_tsv(tmp_path / "in.tsv", rows_per_domain=20)
    argv = ["--tsv", tsv, "--translation", "en-de", "--out", str(tmp_path / "o")]
    assert main(argv + ["--vocab-size", "100", "--workers", "1", "--quiet"]) == 0
    meta = json.loads((tmp_path / "o" / "data-bin" / "mdnas_data.json").read_text())
    assert meta["domains"] == ["en-de"] and meta["splits"]["train"] == 32
    assert (tmp_path / "o" / "data-bin" / "train.en-de.en-de.de.bin").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--translation", "en"], "give SRC-TGT"),
        (["--translation", "en-fr"], "'fr' is not a column"),
        (["--translation", "en-de", "--langs", "en"], "no --langs"),
        (["--translation", "en-de", "--domain-column", "nope"], "'nope' is not a column"),
        (["--translation", "en-de", "--min-domain-rows", "3"], "only with --domain-column"),
    ],
)
def test_errors(tmp_path, capsys, argv, message):
    from mdnas_fairseq.data.prepare.cli import main

    tsv = write_tsv(tmp_path / "in.tsv", rows_per_domain=20)
    try:
        code = main(["--tsv", tsv, "--out", str(tmp_path / "o"), *argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
