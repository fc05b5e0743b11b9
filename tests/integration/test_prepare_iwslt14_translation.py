"""IWSLT14 De-En for translation (issue 27): ``scripts/prepare_iwslt14.sh OUTDIR --translation
de-en`` on a fake download, and the command sequence of docs/translation.md's "IWSLT14 De-En"
section run as written on it (the paths as written, the sizes tiny, 1-2 updates).

References are independent of the code under test: the fake archive is written here
(test_prepare_parallel.make_fake_iwslt), the expected rows are re-read from the TSV with a plain
``split("\\t")``, and the data-bin is read back with fairseq's own translation loader and decoded
with sentencepiece.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile

import pytest

from tests.helpers.fairseq_runs import BIN, ROOT
from tests.integration.test_prepare_parallel import make_fake_iwslt, read_lines

SPLITS = ("train", "heldout", "valid", "test")
OUT = "build/iwslt14"  # as written in the docs; the commands run in a scratch folder
DATA = f"{OUT}/data-de-en"
TINY = [
    "--encoder-layers", "1", "--decoder-layers", "1", "--embed-dim", "32", "--ffn-embed-dim", "64",
    "--attention-heads", "2", "--conv-kernel-sizes", "3", "--cpu", "--num-workers", "0",
    "--no-progress-bar", "--no-alpha-heatmaps", "--no-epoch-checkpoints",
]  # fmt: skip


def doc_commands():
    """The command lines of docs/translation.md's "## IWSLT14 De-En" code block, in order."""
    with open(os.path.join(ROOT, "docs", "translation.md"), encoding="utf-8") as f:
        text = f.read()
    section = re.search(r"^## IWSLT14 De-En\n(.*?)^## ", text, re.S | re.M)
    assert section, "docs/translation.md has no section '## IWSLT14 De-En'"
    block = re.search(r"^```[^\n]*\n(.*?)^```", section.group(1), re.S | re.M).group(1)
    lines = [
        re.split(r"\s+#\s", x.strip(), maxsplit=1)[0]
        for x in block.replace("\\\n", " ").splitlines()
    ]
    return [shlex.split(x) for x in lines if x and not x.startswith("#")]


def skeleton(text):
    """The ASCII letters and digits of a sentence: what survives the tiny sentencepiece model's
    unknown pieces (decoded as ⁇) and NFKC normalisation (… -> ...)."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def run(argv, cwd, timeout=120):
    env = dict(
        os.environ,
        PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
        PYTHON=sys.executable,
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
        IWSLT14_URL="http://127.0.0.1:9/unreachable.tgz",
    )
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(argv)} failed:\n{(r.stdout + r.stderr)[-3000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A scratch folder laid out like a checkout (scripts/, mdnas_fairseq/) holding the fake
    download where the script looks first, prepared by the docs' own first command."""
    tmp = tmp_path_factory.mktemp("iwslt_mt")
    for name in ("scripts", "mdnas_fairseq"):
        os.symlink(os.path.join(ROOT, name), tmp / name)
    make_fake_iwslt(str(tmp / "src" / "de-en"), n_extra=250)
    os.makedirs(tmp / OUT / "orig")
    with tarfile.open(tmp / OUT / "orig" / "de-en.tgz", "w:gz") as tar:
        tar.add(tmp / "src" / "de-en", arcname="de-en")
    commands = doc_commands()
    prepare = commands[0]
    assert prepare == ["bash", "scripts/prepare_iwslt14.sh", OUT, "--translation", "de-en"]
    log = run(prepare + ["--vocab-size", "300", "--workers", "1", "--quiet"], tmp)
    return {"dir": tmp, "commands": commands[1:], "log": log}


def test_translation_layout(work):
    tmp = work["dir"]
    bin_dir = tmp / DATA / "data-bin"
    meta = json.loads((bin_dir / "mdnas_data.json").read_text())
    assert meta["kind"] == "translation" and meta["domains"] == ["de-en"]
    assert (meta["source_lang"], meta["target_lang"]) == ("de", "en")
    assert "ONE domain named de-en" in work["log"]
    assert not (tmp / OUT / "data").exists()  # the language-model layout is not written
    # one joined dictionary, written twice; no language-model dict.txt
    assert (bin_dir / "dict.de.txt").read_bytes() == (bin_dir / "dict.en.txt").read_bytes()
    assert not (bin_dir / "dict.txt").exists()
    for split in SPLITS:
        for lang in ("de", "en"):
            for ext in ("bin", "idx"):
                assert (bin_dir / f"{split}.de-en.de-en.{lang}.{ext}").is_file()

    # the splits are the TSV's (fairseq's); heldout is drawn from its train rows
    rows = [x.split("\t") for x in read_lines(tmp / OUT / "iwslt14.de-en.tsv")]
    assert rows[0] == ["en", "de", "split"]
    by_split = {s: [r for r in rows[1:] if r[2] == s] for s in ("train", "valid", "test")}
    got = meta["splits_by_domain"]["de-en"]
    assert got["test"] == len(by_split["test"]) == 5 * 14
    assert got["valid"] == len(by_split["valid"]) > 0
    assert got["train"] + got["heldout"] == len(by_split["train"]) and got["heldout"] > 0
    raw = tmp / DATA / "raw"
    assert read_lines(raw / "test.de-en.de-en.en") == [r[0] for r in by_split["test"]]
    assert read_lines(raw / "test.de-en.de-en.de") == [r[1] for r in by_split["test"]]

    # fairseq's own loader reads the valid split as aligned de -> en pairs
    import sentencepiece as spm
    from fairseq.data import Dictionary
    from fairseq.tasks.translation import load_langpair_dataset

    d = Dictionary.load(str(bin_dir / "dict.de.txt"))
    sp = spm.SentencePieceProcessor(model_file=str(tmp / DATA / "spm.model"))
    ds = load_langpair_dataset(
        str(bin_dir), "valid.de-en", "de", d, "en", d, combine=False, dataset_impl="mmap",
        upsample_primary=1, left_pad_source=True, left_pad_target=False,
        max_source_positions=1024, max_target_positions=1024,
    )  # fmt: skip
    pairs = [(r[1], r[0]) for r in by_split["valid"]]
    assert len(ds) == len(pairs)
    for i, (de, en) in enumerate(pairs):  # letters and digits: pieces the tiny model lacks
        assert skeleton(sp.decode(d.string(ds[i]["source"]).split())) == skeleton(de)
        assert skeleton(sp.decode(d.string(ds[i]["target"]).split())) == skeleton(en)


def test_documented_commands_run(work):
    """search, random genotype, retrain with --genotype (and --eval-bleu), fairseq-generate,
    score_translation.py and sacrebleu, as the docs write them but at a tiny size."""
    tmp, commands = work["dir"], work["commands"]
    assert [c[0] for c in commands] == [
        "fairseq-train", "mdnas-derive", "fairseq-train", "fairseq-generate", "python", "sacrebleu",
    ]  # fmt: skip
    search, derive, retrain, generate, score, sacrebleu = commands
    assert (
        "--task" in search and search[search.index("--task") + 1] == "multidomain_nas_translation"
    )
    run(search + TINY + ["--max-update", "2"], tmp)
    genotype = json.loads((tmp / "runs" / "iwslt_search" / "genotype.json").read_text())
    assert genotype["domains"] == ["de-en"] and list(genotype["cells"]) == ["de-en"]
    run(derive, tmp)
    drawn = json.loads((tmp / "runs" / "iwslt_random1.json").read_text())
    assert list(drawn["cells"]) == ["de-en"]
    run(retrain + TINY + ["--max-update", "1"], tmp)
    assert (tmp / "runs" / "iwslt_retrain" / "checkpoint_best.pt").is_file()
    log = run(generate + ["--cpu", "--num-workers", "0"], tmp)
    assert len(re.findall(r"^H-\d+\t", log, re.M)) == 5 * 14
    run([sys.executable] + score[1:] + ["--cpu"], tmp)
    scores = json.loads((tmp / "runs" / "iwslt_retrain" / "scores.json").read_text())
    assert list(scores["domains"]) == ["de-en"] and scores["domains"]["de-en"]["sentences"] == 70
    assert len(read_lines(tmp / "runs" / "iwslt_retrain" / "hyp" / "test.de-en.hyp")) == 70
    assert "BLEU" in run([os.path.join(BIN, "sacrebleu")] + sacrebleu[1:], tmp)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--translation", "fr-en"], "IWSLT14 De-En holds de and en: give --translation de-en"),
        (["--translation"], "--translation needs SRC-TGT"),
    ],
)
def test_bad_pair_fails_before_download(tmp_path, extra, message):
    env = dict(os.environ, PYTHON=sys.executable, IWSLT14_URL="http://127.0.0.1:9/unreachable.tgz")
    script = os.path.join(ROOT, "scripts", "prepare_iwslt14.sh")
    r = subprocess.run(
        ["bash", script, str(tmp_path / "out"), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and message in r.stderr
    assert not (tmp_path / "out").exists()
