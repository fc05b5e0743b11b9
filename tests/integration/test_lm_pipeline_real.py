"""scripts/lm_pipeline.py --protocol real at a tiny size (issue 26): the perturbation row end to end
(the multi_struct search, ``mdnas-derive --select perturbation`` on its checkpoint, the retrain and
the test of the chosen genotype with exactly the multi_struct row's command; sizes and epochs
overridden, so the real protocol's own flags run through fairseq); the recurrent space's baseline,
fairseq's ``lstm_lm``, trained, tested and counted; every command of the real protocol, of both
search spaces, is one fairseq's parser accepts."""

import json
import math
import os

import pytest

from tests.helpers.fairseq_runs import RNN_TEST_SIZES, load_script

PERTURB = "--perturb-batches 2 --perturb-finetune-steps 1"


def first_line(path):
    with open(path, encoding="utf-8") as f:
        return f.readline().split()


def test_the_perturbation_row_end_to_end(tiny_corpus, tmp_path):
    lm = load_script("lm_pipeline")
    data = tiny_corpus(400)
    out = str(tmp_path / "table")
    lm.main(
        ["--data", data, "--out", out, "--protocol", "real", "--models", "multi_struct,perturbation",
         "--search-epochs", "1", "--retrain-epochs", "1", "--batch-size", "16",
         "--perturb-flags", PERTURB, "--", *RNN_TEST_SIZES]
    )  # fmt: skip
    with open(os.path.join(out, "table.json"), encoding="utf-8") as f:
        table = json.load(f)
    rows = {r["model"]: r for r in table["rows"]}
    assert list(rows) == ["multi_struct", "perturbation"]
    row = rows["perturbation"]
    assert all(math.isfinite(p) and p > 1 for p in row["test_ppl"].values())
    assert set(row["test_ppl"]) == {"en", "de"}
    assert row["params"] == row["params_from_genotype"]  # the retrained model is the genotype's
    genotype = os.path.join(out, "perturbation", "genotype.json")
    with open(genotype, encoding="utf-8") as f:
        chosen = json.load(f)
    record = chosen["derived_by"]
    assert chosen["selection"] == "perturbation"
    assert (record["batches_per_domain"], record["finetune_steps"]) == (2, 1)
    # RNN_TEST_SIZES: 3 nodes, 6 edges and 2 input choices per domain
    assert row["decisions"] == len(record["decisions"]) == 2 * (6 + 2)
    assert row["finetunes"] == record["finetunes"]
    assert row["differs_from_argmax"] == record["differs_from_argmax"]
    search = os.path.join(out, "multi_struct", "search")
    assert record["source"].endswith(os.path.join("multi_struct", "search", "checkpoint_last.pt"))
    assert row["selected_from"].endswith(os.path.join("multi_struct", "search"))
    assert os.path.isfile(os.path.join(search, "checkpoint_last.pt"))
    assert row["selection_seconds"] > 0 and row["retrain_seconds"] > 0
    # the perturbation row's retrain is the multi_struct row's command but genotype and folder
    commands = [
        first_line(os.path.join(out, m, "retrain.log")) for m in ("multi_struct", "perturbation")
    ]
    for c in commands:
        for flag in ("--genotype", "--save-dir"):
            c[c.index(flag) + 1] = "<>"
    assert commands[0] == commands[1]
    assert "--lr-scheduler" in commands[0] and "--max-epoch" in commands[0]
    assert table["protocol"]["name"] == "real"
    entry = lm.PROTOCOLS["real"]["rnn"]
    given = {"models", "batch_size", "perturb_flags", "model_flags"}
    given |= {k for k in ("search_epochs", "retrain_epochs") if entry[k] != 1}
    assert set(table["protocol"]["overridden"]) == given
    with open(os.path.join(out, "table.md"), encoding="utf-8") as f:
        md = f.read()
    assert f"perturbation (of multi_struct's search, {row['decisions']} decisions)" in md
    assert "Protocol `real` (rnn space)" in md


def test_the_recurrent_baseline_lstm_lm_is_trained_tested_and_counted(tiny_corpus, tmp_path):
    """fairseq's lstm_lm keeps its settings as an argparse.Namespace in the checkpoint, which
    torch.load refuses by default (weights_only): the pipeline must still test and count it."""
    lm = load_script("lm_pipeline")
    out = str(tmp_path / "table")
    lm.main(
        ["--data", tiny_corpus(400), "--out", out, "--protocol", "real", "--models", "baseline",
         "--retrain-epochs", "1", "--batch-size", "16"]
    )  # fmt: skip
    with open(os.path.join(out, "table.json"), encoding="utf-8") as f:
        (row,) = json.load(f)["rows"]
    assert row["arch"] == "lstm_lm"
    assert all(math.isfinite(p) and p > 1 for p in row["test_ppl"].values())
    checkpoint = os.path.join(out, "baseline", "train", "checkpoint_best.pt")
    assert row["params"] == lm.count_parameters(checkpoint) > 0


@pytest.mark.parametrize("arch", ["mdnas_rnn_tiny", "mdnas_transformer_lm_tiny"])
def test_the_real_protocols_commands_are_valid_fairseq_commands(arch, tiny_corpus, tmp_path):
    """Search, retrain and baseline commands of ``--protocol real`` parse with fairseq-train's own
    parser (the sizes, the schedule and the baseline flags are fairseq's), nothing trained."""
    from fairseq import options

    import mdnas_fairseq  # noqa: F401

    lm = load_script("lm_pipeline")
    data = tiny_corpus(400)
    args = lm.parse_args(
        ["--data", data, "--out", str(tmp_path), "--protocol", "real", "--arch", arch]
    )
    domains = ["en", "de"]
    _, struct = lm.model_settings("multi_struct", domains, args)
    commands = {
        "search": lm.train_flags(args, domains, "s", 1) + lm.search_flags(args) + struct,
        "retrain": lm.retrain_command(args, domains, "g.json", "r", [])[1:],
        "baseline": lm.train_flags(args, domains, "b", 1, arch=args.baseline_arch)
        + args.baseline_flags.split(),
    }
    for name, argv in commands.items():
        parsed = options.parse_args_and_arch(options.get_training_parser(), argv)
        assert parsed.batch_size == args.batch_size and parsed.lr_scheduler == "fixed", name
        assert parsed.arch == (args.baseline_arch if name == "baseline" else arch), name
