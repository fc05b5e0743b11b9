"""Rows of one table differ only in their genotype: every row's retraining command, as the two table
scripts really build it (their training calls captured, nothing trained), is the same command but
for the genotype file and the folders it writes. The regularizers belong to the search (a search
command does carry them, checked too); ``--shared-architecture`` is how a union genotype is read
(its one cell serves every domain), so it goes with that genotype."""

import json
import os

import numpy as np

from mdnas_fairseq.cells.conv import DartsConvClassifier
from mdnas_fairseq.derive import write_derived
from mdnas_fairseq.search import random_genotype
from tests.helpers.fairseq_runs import ROOT, load_script

LM_GENOTYPE = os.path.join(ROOT, "results", "lm_random", "genotypes", "seed1_multi_struct.json")


def _flag_value(argv, flag):
    return argv[argv.index(flag) + 1] if flag in argv else None


def _without(argv, flags):
    """``argv`` with each of ``flags`` and its value replaced by a placeholder."""
    out = list(argv)
    for flag in flags:
        if flag in out:
            out[out.index(flag) + 1] = "<" + flag + ">"
    return out


def _assert_one_command(retrains):
    """All retraining commands are one command but for the genotype and the folder; the one union
    (shared-architecture) genotype's too, once the flag that says how to read it is left out."""
    shape = {
        tuple(_without(c, ["--genotype", "--save-dir"]))
        for c in retrains
        if "--shared-architecture" not in c
    }
    assert len(shape) == 1, shape
    (union,) = [c for c in retrains if "--shared-architecture" in c]
    union = [x for x in union if x != "--shared-architecture"]
    assert tuple(_without(union, ["--genotype", "--save-dir"])) in shape
    assert len({_flag_value(c, "--genotype") for c in retrains}) == len(retrains)


# ------------------------------------------------------------------ language models
def test_lm_pipeline_retrains_every_row_with_one_command(tmp_path, monkeypatch):
    lm = load_script("lm_pipeline")
    data = tmp_path / "data"
    data.mkdir()
    (data / "mdnas_data.json").write_text(json.dumps({"langs": ["en", "de"]}))
    commands = []

    def fake_run(cmd, log_path):  # a search writes its genotype; nothing is trained
        commands.append(cmd)
        save = _flag_value(cmd, "--save-dir")
        if "--genotype" not in cmd and "--alpha-lr" in cmd:
            os.makedirs(save, exist_ok=True)
            with open(LM_GENOTYPE) as f:
                genotype = json.load(f)
            with open(os.path.join(save, "genotype.json"), "w") as f:
                json.dump(genotype, f)
        return "", 0.0

    monkeypatch.setattr(lm, "run", fake_run)
    monkeypatch.setattr(lm, "fairseq_cmd", lambda name: name)
    monkeypatch.setattr(lm, "evaluate", lambda *a, **k: 100.0)
    monkeypatch.setattr(lm, "count_parameters", lambda checkpoint: 1)
    models = "multi,multi_struct,multi_contr,multi_param,union,random"
    lm.main(["--data", str(data), "--out", str(tmp_path / "out"), "--models", models])
    retrains = [c for c in commands if "--genotype" in c]
    searches = [c for c in commands if "--genotype" not in c]
    assert len(retrains) == 5 + 5  # five searched rows, five random genotypes
    assert any("--contrastive-coef" in c for c in searches)
    assert any("--struct-coef" in c for c in searches)
    assert any("--param-coef" in c for c in searches)
    _assert_one_command(retrains)


# ------------------------------------------------------------------ vision
def _conv_genotype_file(path, domains, seed):
    net = DartsConvClassifier(domains, channels=4, num_nodes=2)
    genotype = random_genotype(net.space, domains, np.random.default_rng(seed))
    write_derived(path, genotype, net.param_table(), {"method": "test"})


def test_vision_table_retrains_every_row_with_one_command(tmp_path, monkeypatch):
    table = load_script("rotated_mnist_table")
    calls = []
    domains = ["rot0", "rot90"]

    def fake_train(argv):
        calls.append(argv)
        save = _flag_value(argv, "--save-dir")
        if "--genotype" not in argv:  # a search: its genotype
            os.makedirs(save, exist_ok=True)
            _conv_genotype_file(os.path.join(save, "genotype.json"), domains, len(calls))

    def fake_evaluate(checkpoint, a, D, subset="test"):
        return {"acc": 50.0}

    monkeypatch.setattr(table, "fairseq_train", fake_train)
    monkeypatch.setattr(table, "evaluate", fake_evaluate)
    a = table.get_args(
        [
            "--out",
            str(tmp_path / "out"),
            "--channels",
            "4",
            "--num-nodes",
            "2",
            "--random-count",
            "2",
        ]
    )
    work = str(tmp_path)
    for model in ("single", "struct", "contr", "param", "random"):
        table.run_one(a, work, 2, 0, model)
    retrains = [c for c in calls if "--genotype" in c]
    searches = [c for c in calls if "--genotype" not in c]
    assert len(retrains) == 4 + 2
    assert any("--contrastive-coef" in c for c in searches)
    assert any("--struct-coef" in c for c in searches)
    assert any("--param-coef" in c for c in searches)
    _assert_one_command(retrains)
