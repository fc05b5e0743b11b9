"""Multi-domain translation through fairseq's own commands (issue 27): a search with
``fairseq-train --task multidomain_nas_translation --arch mdnas_transformer``, the retrained
multimodel (``--genotype``, ``--label-smoothing``, ``--eval-bleu`` with the best checkpoint by
BLEU), ``fairseq-generate --eval-domain`` and ``fairseq-interactive``; and the errors for bad input.

References are independent of the code under test: the TSV is written here (each domain's words
are its own, the target a known function of the source), and generation's sources and references
are checked against the raw text of that domain's test split.
"""

import json
import os
import re
import shutil

import pytest

from tests.helpers.fairseq_runs import BIN, USER_DIR, build_from_argv, load_script, run
from tests.integration.test_translation_prepare import WORDS, target_of, write_tsv

SIZES = [
    "--encoder-layers", "1", "--decoder-layers", "1", "--embed-dim", "32",
    "--ffn-embed-dim", "64", "--attention-heads", "2", "--conv-kernel-sizes", "3",
]  # fmt: skip


def train_argv(data_bin, save_dir, extra=()):
    return [
        data_bin, "--user-dir", USER_DIR, "--task", "multidomain_nas_translation",
        "--arch", "mdnas_transformer_tiny", *SIZES, "--criterion", "multidomain_nas_loss",
        "--optimizer", "adam", "--lr", "0.003", "--batch-size", "8", "--cpu", "--seed", "2",
        "--save-dir", save_dir, "--no-epoch-checkpoints", "--log-format", "simple",
        "--num-workers", "0", "--no-alpha-heatmaps", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from mdnas_fairseq.data.prepare.translation import prepare_translation

    tmp = tmp_path_factory.mktemp("mt_fairseq")
    tsv = write_tsv(tmp / "in.tsv")
    out = tmp / "prepared"
    prepare_translation(
        tsv, "en-de", str(out), vocab_size=100, domain_column="source", workers=1, quiet=True
    )
    return out


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mt_runs")
    data_bin = str(data / "data-bin")
    search, retrain = str(tmp / "search"), str(tmp / "retrain")
    run([os.path.join(BIN, "fairseq-train"), *train_argv(data_bin, search, ["--max-epoch", "1"])])
    # the retraining in this process (fairseq_cli.train, as fairseq-train runs it): its log

    extra = [
        # long enough (lr 0.01, 10 epochs) for the test sentences to get different translations
        "--genotype", os.path.join(search, "genotype.json"), "--max-epoch", "10", "--lr", "0.01",
        "--dropout", "0",
        "--label-smoothing", "0.1", "--eval-bleu", "--eval-bleu-remove-bpe", "sentencepiece",
        "--eval-bleu-args", '{"beam": 2, "max_len_b": 12}', "--best-checkpoint-metric", "bleu",
        "--maximize-best-checkpoint-metric",
    ]  # fmt: skip
    log = train_in_process(train_argv(data_bin, retrain, extra))
    return {"search": search, "retrain": retrain, "log": log}


def train_in_process(argv):
    """fairseq-train in this process; returns what it logged."""
    import io
    import logging

    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils
    from fairseq.logging import metrics
    from fairseq_cli import train

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s | %(message)s"))
    root, level = logging.getLogger(), logging.getLogger().level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        args = options.parse_args_and_arch(options.get_training_parser(), argv)
        cfg = convert_namespace_to_omegaconf(args)
        metrics.reset()
        distributed_utils.call_main(cfg, train.main)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return stream.getvalue()


def raw(data, split, domain, lang):
    with open(data / "raw" / f"{split}.{domain}.en-de.{lang}", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def test_search_writes_a_translation_genotype(runs):
    with open(os.path.join(runs["search"], "genotype.json")) as f:
        genotype = json.load(f)
    assert genotype["search_space"]["name"] == "transformer_mt"
    assert genotype["domains"] == ["gcc", "libre"]
    # 1 encoder + 1 decoder layer: 4 slots, token / channel / token / channel
    for cell in genotype["cells"].values():
        assert [e["node"] for e in cell] == [2, 3, 4, 5]
        assert [e["input"] for e in cell] == [0, 2, 1, 4]  # two chains: source, target
        for e, kind in zip(cell, ("token", "channel", "token", "channel")):
            channel = e["op"].startswith("ffn_")
            assert e["op"] != "none" and (channel or e["op"] == "identity" or kind == "token")
            assert not (channel and kind == "token")


def test_retrain_derived_multimodel_with_bleu(runs):
    log = runs["log"]
    counts = re.search(r"derived multimodel: (\d+) parameters \(genotype count (\d+)\)", log)
    assert counts and counts.group(1) == counts.group(2)
    valid = [line for line in log.splitlines() if "valid on 'valid' subset" in line]
    assert len(valid) == 10
    for key in ("bleu", "bleu_gcc", "bleu_libre", "nll_loss", "ppl_gcc"):
        assert f"| {key} " in valid[-1]
    assert "best_bleu" in valid[-1]  # the best checkpoint is chosen by BLEU
    assert os.path.isfile(os.path.join(runs["retrain"], "checkpoint_best.pt"))


def fairseq_cli_main(name, argv, capsys):
    """fairseq-generate / fairseq-interactive in this process (their stdout)."""
    import importlib

    from fairseq import options

    module = importlib.import_module(f"fairseq_cli.{name}")
    parser = options.get_generation_parser(interactive=name == "interactive")
    module.main(options.parse_args_and_arch(parser, argv))
    return capsys.readouterr().out.splitlines()


def test_generate_and_score_one_domain(runs, data, capsys, tmp_path, domain="gcc"):
    lines = fairseq_cli_main(
        "generate",
        [
            str(data / "data-bin"), "--user-dir", USER_DIR, "--task", "multidomain_nas_translation",
            "--path", os.path.join(runs["retrain"], "checkpoint_best.pt"),
            "--gen-subset", "test", "--eval-domain", domain, "--beam", "5",
            "--remove-bpe", "sentencepiece", "--cpu", "--batch-size", "4", "--max-len-b", "12",
        ],
        capsys,
    )  # fmt: skip

    def by_id(kind, field=1):  # sentence id -> text of the lines of a kind (S, T, D)
        found = [line.split("\t") for line in lines if line.startswith(f"{kind}-")]
        return {int(f[0][len(kind) + 1 :]): f[field] for f in found}

    sources, targets = by_id("S"), by_id("T")
    # sentence id i is line i of the domain's raw test text, on both sides
    assert [sources[i] for i in range(len(sources))] == raw(data, "test", domain, "en")
    assert [targets[i] for i in range(len(targets))] == raw(data, "test", domain, "de")
    assert [targets[i] for i in range(len(sources))] == [
        target_of(sources[i]) for i in range(len(sources))
    ]
    sources = list(sources.values())
    assert len([line for line in lines if line.startswith("H-")]) == len(sources)
    assert all(s.split()[1] in WORDS[domain] for s in sources)

    # scripts/score_translation.py: sacrebleu on fairseq-generate's detokenised hypotheses (D-)
    import sacrebleu

    detokenised = by_id("D", field=2)
    refs = raw(data, "test", domain, "de")
    hyps = [detokenised[i] for i in range(len(refs))]
    assert len(set(hyps)) == len(hyps)  # distinct: the checks of their order below can fail
    out = tmp_path / "scores.json"
    argv = [
        str(data / "data-bin"), "--path", os.path.join(runs["retrain"], "checkpoint_best.pt"),
        "--domains", domain, "--beam", "5", "--max-len-b", "12", "--batch-size", "4", "--cpu",
        "--out", str(out), "--hypotheses-dir", str(tmp_path / "hyp"),
    ]  # fmt: skip
    assert load_script("score_translation").main(argv) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "hyp" / f"test.{domain}.hyp").read_text().splitlines() == hyps
    scores = json.loads(out.read_text())
    expected_bleu = sacrebleu.corpus_bleu(hyps, [refs])
    assert scores["domains"][domain]["bleu"] == pytest.approx(expected_bleu.score)
    assert scores["domains"][domain]["chrf"] == pytest.approx(
        sacrebleu.corpus_chrf(hyps, [refs]).score
    )
    assert scores["domains"][domain]["sentences"] == len(refs)
    assert scores["signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert f"BLEU signature: {scores['signatures']['bleu']}" in printed


def test_interactive_translates_in_eval_domain(runs, data, capsys, tmp_path):
    (tmp_path / "in.txt").write_text("the compiler warning number 3\nthe flag value number 4\n")
    lines = fairseq_cli_main(
        "interactive",
        [
            str(data / "data-bin"), "--user-dir", USER_DIR, "--task", "multidomain_nas_translation",
            "--path", os.path.join(runs["retrain"], "checkpoint_best.pt"), "--eval-domain", "gcc",
            "--beam", "2", "--cpu", "--max-len-b", "12", "--bpe", "sentencepiece",
            "--sentencepiece-model", str(data / "spm.model"), "--input", str(tmp_path / "in.txt"),
        ],
        capsys,
    )  # fmt: skip
    assert len([line for line in lines if line.startswith("H-")]) == 2


# ------------------------------------------------------------------ bad input
def setup(argv):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import mdnas_fairseq  # noqa: F401

    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    return tasks.setup_task(convert_namespace_to_omegaconf(args).task)


def test_language_model_data_bin_is_refused(tmp_path):
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "dict.txt").write_text("a 1\n")
    with pytest.raises(FileNotFoundError, match="no mdnas_data.json"):
        setup(train_argv(str(tmp_path), str(tmp_path / "s")))
    with pytest.raises(ValueError, match="looks like a language-model data-bin"):
        setup(train_argv(str(lm), str(tmp_path / "s")))
    (lm / "mdnas_data.json").write_text(json.dumps({"langs": ["en", "de"], "parallel": True}))
    with pytest.raises(ValueError, match="not a translation one: use --task multidomain_nas"):
        setup(train_argv(str(lm), str(tmp_path / "s")))


def test_mismatched_dictionaries_are_refused(data, tmp_path):
    copy = tmp_path / "bin"
    shutil.copytree(data / "data-bin", copy)
    lines = (copy / "dict.de.txt").read_text().splitlines(keepends=True)
    (copy / "dict.de.txt").write_text("".join(lines[1:]))
    with pytest.raises(ValueError, match="needs a joined dictionary"):
        setup(train_argv(str(copy), str(tmp_path / "s")))
    with pytest.raises(ValueError, match="--source-lang fr"):
        setup(train_argv(str(data / "data-bin"), str(tmp_path / "s"), ["-s", "fr"]))


def test_checkpoint_of_another_dictionary_is_refused(runs, data, tmp_path):
    from fairseq import checkpoint_utils

    copy = tmp_path / "bin"
    shutil.copytree(data / "data-bin", copy)
    for lang in ("en", "de"):  # same size, two symbols swapped: other token ids
        lines = (copy / f"dict.{lang}.txt").read_text().splitlines(keepends=True)
        lines[0], lines[1] = lines[1], lines[0]
        (copy / f"dict.{lang}.txt").write_text("".join(lines))
    with pytest.raises(ValueError, match="different dictionary"):
        checkpoint_utils.load_model_ensemble(
            [os.path.join(runs["retrain"], "checkpoint_best.pt")], arg_overrides={"data": str(copy)}
        )


def test_language_model_genotype_is_refused(data, tmp_path):
    from mdnas_fairseq.search import save_genotype, transformer_lm_space
    from tests.helpers.transformer import uniform_genotype

    path = str(tmp_path / "lm_genotype.json")
    space = transformer_lm_space(2, (3,))
    save_genotype(path, uniform_genotype(space, ["gcc", "libre"], "attention", "ffn_relu"))
    argv = train_argv(str(data / "data-bin"), str(tmp_path / "s"), ["--genotype", path])
    with pytest.raises(ValueError, match="space 'transformer_lm'.*translation search"):
        build_from_argv(argv)


def test_genotype_of_other_sizes_is_refused(data, runs, tmp_path):
    argv = train_argv(
        str(data / "data-bin"), str(tmp_path / "s"),
        ["--genotype", os.path.join(runs["search"], "genotype.json"), "--decoder-layers", "2"],
    )  # fmt: skip
    message = "made for 1 encoder \\+ 1 decoder layers, kernels 3; this model has 1 encoder \\+ 2"
    with pytest.raises(ValueError, match=message):
        build_from_argv(argv)


def test_contrastive_term_is_refused(data, tmp_path):
    argv = train_argv(str(data / "data-bin"), str(tmp_path / "s"), ["--contrastive-coef", "0.1"])
    with pytest.raises(ValueError, match="--contrastive-coef does not apply"):
        build_from_argv(argv)
