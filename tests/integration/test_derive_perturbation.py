"""``mdnas-derive SEARCH --select perturbation`` on a tiny real search checkpoint (a few updates of the
recurrent search on the tiny En/De corpus): the file it writes, what it records, its errors."""

import os

import pytest
import torch

from mdnas_fairseq import derive
from mdnas_fairseq.search import darts_rnn_space, load_genotype, read_genotype_json
from tests.helpers.fairseq_runs import BIN, run, train_args

DOMAINS = ["en", "de"]
SPACE = darts_rnn_space(3)  # RNN_TEST_SIZES: 3 nodes, 6 edges; nodes 2 and 3 choose an input


@pytest.fixture(scope="module")
def search_dir(tiny_corpus, tmp_path_factory):
    save = str(tmp_path_factory.mktemp("search"))
    run(train_args(tiny_corpus(400), save, extra=["--max-update", "4", "--alpha-lr", "0.05"]))
    return save


def perturb(search, out, *extra):
    """The console script, as users run it."""
    cmd = [os.path.join(BIN, "mdnas-derive"), search, "--select", "perturbation", "--cpu"]
    return run(cmd + ["--out", str(out)] + list(extra))


def test_perturbation_writes_a_genotype_with_its_decisions(search_dir, tmp_path):
    out = tmp_path / "perturbation.json"
    proc = perturb(
        search_dir, out, "--perturb-batches", "2", "--perturb-finetune-steps", "1",
        "--perturb-order", "fixed",
    )  # fmt: skip
    assert "perturbation selection on heldout" in proc.stdout
    genotype = load_genotype(str(out), domains=DOMAINS, space=SPACE)  # retrainable as any genotype
    data = read_genotype_json(str(out))
    assert data["selection"] == "perturbation"
    derive.load_search(str(out))  # param_counts agree with param_table for the chosen cells
    record = data["derived_by"]
    assert record["method"] == "perturbation" and record["heldout_subset"] == "heldout"
    assert (record["batches_per_domain"], record["finetune_steps"]) == (2, 1)
    assert record["edge_order"] == [list(e) for e in SPACE.edges] and record["node_order"] == [2, 3]
    assert record["finetunes"] == len(SPACE.edges) + 2 - 1  # between the 8 decisions
    decisions = record["decisions"]
    assert len(decisions) == 2 * (len(SPACE.edges) + 2)
    ops, inputs = {}, {}
    for d in decisions:  # every decision keeps the candidate whose removal hurt most
        losses = d["loss_without"]
        assert max(losses, key=losses.get) == str(d["kept"][0])
        if d["stage"] == "operation":
            ops[(d["architecture"], tuple(d["edge"]))] = d["kept"][0]
        else:
            inputs[(d["architecture"], d["node"])] = d["kept"][0]
    for name in DOMAINS:  # the cells are what the decisions say
        for e in genotype.cells[name]:
            assert e.op == ops[(name, (e.input, e.node))]
            assert e.node == 1 or e.input == inputs[(name, e.node)]
    # argmax from the same search: the searched genotype, marked as such
    argmax_out = tmp_path / "argmax.json"
    run(
        [
            os.path.join(BIN, "mdnas-derive"),
            search_dir,
            "--select",
            "argmax",
            "--out",
            str(argmax_out),
        ]
    )
    argmax = read_genotype_json(str(argmax_out))
    searched = read_genotype_json(os.path.join(search_dir, "genotype.json"))
    assert argmax["selection"] == "argmax" and argmax["cells"] == searched["cells"]
    differs = {n: data["cells"][n] != searched["cells"][n] for n in DOMAINS}
    assert record["differs_from_argmax"] == differs


@pytest.mark.parametrize(
    "target, extra, message",
    [
        ("search", ["--perturb-subset", "valid"], "evaluation split"),
        ("genotype", [], "not a genotype file"),
        ("search", ["--perturb-batches", "0"], "--perturb-batches must be >= 1"),
        ("missing", [], "search checkpoint not found"),
    ],
)
def test_errors_name_the_problem_and_write_nothing(
    search_dir, tmp_path, capsys, target, extra, message
):
    where = {
        "search": search_dir,
        "genotype": os.path.join(search_dir, "genotype.json"),
        "missing": str(tmp_path / "nowhere.pt"),
    }[target]
    out = tmp_path / "never.json"
    argv = [where, "--select", "perturbation", "--cpu", "--out", str(out)] + extra
    assert derive.main(argv) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_argmax_reads_the_genotype_not_the_checkpoint(search_dir, tmp_path, capsys):
    out = tmp_path / "never.json"
    argv = [os.path.join(search_dir, "checkpoint_last.pt"), "--select", "argmax", "--out", str(out)]
    assert derive.main(argv) == 1
    assert "only --select perturbation reads the checkpoint" in capsys.readouterr().err
    assert not out.exists()


def test_perturbation_options_need_select_perturbation(tmp_path, capsys):
    with pytest.raises(SystemExit):
        derive.main(["x", "--param-budget", "5", "--perturb-batches", "2", "--out", "y"])
    assert "--perturb-batches need(s) --select perturbation" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        derive.main(["x", "--out", "y"])
    assert "give one of --random-seed, --param-budget or --select" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        derive.main(["x", "--select", "perturbation", "--random-seed", "1", "--out", "y"])
    assert "not allowed with" in capsys.readouterr().err


def test_the_supernet_glue_routes_the_weights_and_finetunes_only_the_weights(search_dir):
    net = derive.CheckpointSupernet(
        os.path.join(search_dir, "checkpoint_last.pt"), None, None, 1, None, 0, cpu=True
    )
    assert net.names == DOMAINS and net.space == SPACE and net.subset == "heldout"
    w = net.probs[0].clone()
    loss = net.heldout_loss(0, w)
    assert net.heldout_loss(0, w) == loss  # the same batches, no dropout
    w[SPACE.edge_index(0, 1)] = 0.0  # node 1 loses its only input
    assert net.heldout_loss(0, w) != loss
    before = {n: p.detach().clone() for n, p in net.model.named_parameters()}
    net.finetune(net.probs.clone(), 2)
    moved = {n for n, p in net.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and not any(n.endswith("alpha") for n in moved)
    assert net.heldout_loss(0, net.probs[0]) != loss
