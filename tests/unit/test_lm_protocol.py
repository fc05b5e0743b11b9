"""scripts/lm_pipeline.py --protocol (issue 26): the real protocol's configuration is the one the
results record, and the one the commands run with; explicit flags override it and are recorded as
such; the perturbation row is retrained with the other rows' command. Nothing is trained: the
pipeline's commands are captured (as in test_table_protocols.py)."""

import json
import os

import pytest

from tests.helpers.fairseq_runs import ROOT, load_script

LM_GENOTYPE = os.path.join(ROOT, "results", "lm_random", "genotypes", "seed1_multi_struct.json")


def _flag_values(cmd, flag):
    return [cmd[i + 1] for i, x in enumerate(cmd) if x == flag]


def _contains(cmd, tokens):
    """``tokens`` appear in ``cmd`` as one run, in order."""
    n = len(tokens)
    return any(cmd[i : i + n] == tokens for i in range(len(cmd) - n + 1))


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    """lm_pipeline with its commands captured: a search writes a genotype, mdnas-derive a
    perturbation genotype with its decisions; training, testing and counting are faked."""
    lm = load_script("lm_pipeline")
    commands = []

    def fake_run(cmd, log_path):
        commands.append(cmd)
        with open(LM_GENOTYPE, encoding="utf-8") as f:
            genotype = json.load(f)
        if cmd[0] == "mdnas-derive":
            genotype["selection"] = "perturbation"
            genotype["derived_by"] = {
                "method": "perturbation",
                "decisions": [{}] * 7,
                "finetunes": 6,
                "differs_from_argmax": {"en": True, "de": False},
            }
            out = _flag_values(cmd, "--out")[0]
        elif "--genotype" not in cmd and "--alpha-lr" in cmd:  # a search
            out = os.path.join(_flag_values(cmd, "--save-dir")[0], "genotype.json")
        else:
            return "", 0.0
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            json.dump(genotype, f)
        return "", 0.0

    monkeypatch.setattr(lm, "run", fake_run)
    monkeypatch.setattr(lm, "fairseq_cmd", lambda name: name)
    monkeypatch.setattr(lm, "evaluate", lambda *a, **k: 100.0)
    monkeypatch.setattr(lm, "count_parameters", lambda checkpoint: 1)
    data = tmp_path / "data"
    data.mkdir()
    (data / "mdnas_data.json").write_text(json.dumps({"langs": ["en", "de"]}))
    base = ["--data", str(data), "--out", str(tmp_path / "out")]

    def main(*argv):
        commands.clear()
        lm.main(base + list(argv))
        with open(tmp_path / "out" / "table.json", encoding="utf-8") as f:
            table = json.load(f)
        with open(tmp_path / "out" / "table.md", encoding="utf-8") as f:
            return table, f.read(), list(commands)

    return lm, main


@pytest.mark.parametrize(
    "space, arch", [("rnn", []), ("transformer", ["--arch", "mdnas_transformer_lm_tiny"])]
)
def test_the_real_protocol_is_what_the_results_record_and_what_runs(pipeline, space, arch):
    lm, main = pipeline
    entry = lm.PROTOCOLS["real"][space]
    table, md, commands = main("--protocol", "real", *arch)
    record = table["protocol"]
    assert (record["name"], record["space"]) == ("real", space)
    assert record["defaults"] == entry and record["settings"] == entry
    assert record["overridden"] == {}
    for key, value in entry.items():  # the run's own settings say the same
        if key != "model_flags":
            assert table["settings"][key] == value, key
    assert table["settings"]["extra"] == entry["model_flags"].split()
    assert f"Protocol `real` ({space} space)" in md
    for value in entry.values():
        assert f"`{value}`" in md
    # the rows: every domain's single model, ..., the random, perturbation and baseline rows
    models = [r["model"] for r in table["rows"]]
    assert models == lm.table_models(entry["models"], ["en", "de"])[0]
    assert models[:2] == ["single_en", "single_de"] and "perturbation" in models
    # what ran: the protocol's values in every command
    trains = [c for c in commands if c[0] == "fairseq-train"]
    searches = [c for c in trains if "--alpha-lr" in c]
    retrains = [c for c in trains if "--genotype" in c]
    (baseline,) = [c for c in trains if entry["baseline_arch"] in c]
    assert len(searches) == 6 and len(retrains) == 6 + entry["random_count"] + 1
    for c in trains:
        assert _flag_values(c, "--batch-size") == [str(entry["batch_size"])]
        assert _flag_values(c, "--lr") == [str(entry["lr"])]
        assert _flag_values(c, "--clip-norm") == [str(entry["clip_norm"])]
        assert _contains(c, entry["schedule"].split())
    for c in searches:
        assert _flag_values(c, "--max-epoch") == [str(entry["search_epochs"])]
        assert _flag_values(c, "--alpha-lr") == [str(entry["alpha_lr"])]
        assert _flag_values(c, "--alpha-order") == [str(entry["alpha_order"])]
        assert _flag_values(c, "--arch") == [entry["arch"]]
        assert _contains(c, entry["model_flags"].split())
    for c in retrains:
        assert _flag_values(c, "--max-epoch") == [str(entry["retrain_epochs"])]
        assert _contains(c, entry["model_flags"].split())
    assert any(_flag_values(c, "--struct-coef") == [str(entry["struct_coef"])] for c in searches)
    assert any(
        _flag_values(c, "--contrastive-coef") == [str(entry["contrastive_coef"])] for c in searches
    )
    assert _contains(baseline, entry["baseline_flags"].split())
    assert _flag_values(baseline, "--max-epoch") == [str(entry["retrain_epochs"])]
    assert not _contains(baseline, entry["model_flags"].split())
    (derive,) = [c for c in commands if c[0] == "mdnas-derive"]
    assert _contains(derive, entry["perturb_flags"].split())
    assert derive[1].endswith(os.path.join("multi_struct", "search"))


def test_explicit_flags_override_the_protocol_and_are_recorded(pipeline):
    lm, main = pipeline
    entry = lm.PROTOCOLS["real"]["rnn"]
    table, md, commands = main(
        "--protocol", "real", "--models", "multi_struct,perturbation", "--retrain-epochs", "7",
        "--", "--embed-dim", "8",
    )  # fmt: skip
    record = table["protocol"]
    assert record["defaults"] == entry
    assert record["settings"]["retrain_epochs"] == 7
    assert record["settings"]["model_flags"] == entry["model_flags"] + " --embed-dim 8"
    assert set(record["overridden"]) == {"retrain_epochs", "models", "model_flags"}
    assert record["settings"]["search_epochs"] == entry["search_epochs"]
    changed = md.split("Changed by flags: ")[1].split(".")[0]
    assert set(changed.split(", ")) == {"models", "retrain_epochs", "model_flags"}
    retrains = [c for c in commands if "--genotype" in c]
    assert len(retrains) == 2
    for c in retrains:  # fairseq takes the last --embed-dim: the explicit one
        assert _flag_values(c, "--max-epoch") == ["7"]
        assert _flag_values(c, "--embed-dim")[-1] == "8"


def test_the_perturbation_row_is_retrained_with_the_rows_command(pipeline):
    lm, main = pipeline
    table, md, commands = main(
        "--models", "multi_struct,random,perturbation", "--random-count", "2"
    )
    rows = {r["model"]: r for r in table["rows"]}
    row = rows["perturbation"]
    assert row["decisions"] == 7 and row["finetunes"] == 6
    assert row["differs_from_argmax"] == {"en": True, "de": False}
    assert row["reference"] == "multi_struct" and row["params"] == 1
    assert row["selected_from"].endswith(os.path.join("multi_struct", "search"))
    assert "perturbation (of multi_struct's search, 7 decisions)" in md
    (derive,) = [c for c in commands if c[0] == "mdnas-derive"]
    assert derive[1].endswith(os.path.join("out", "multi_struct", "search"))
    assert "--select" in derive and "perturbation" in derive and "--cpu" in derive
    retrains = [c for c in commands if "--genotype" in c]
    assert len(retrains) == 1 + 2 + 1

    def shape(c):
        return [
            x for i, x in enumerate(c) if i == 0 or c[i - 1] not in ("--genotype", "--save-dir")
        ]

    assert len({tuple(shape(c)) for c in retrains}) == 1  # one command but genotype and folder
    assert set(table["against_random"]) == {"multi_struct (argmax)", "perturbation"}
    assert "Against the random rows" in md


def test_perturbation_needs_its_reference_search(pipeline):
    lm, main = pipeline
    with pytest.raises(SystemExit, match="run --models multi_struct,perturbation"):
        main("--models", "perturbation")


def test_demo_is_the_parsers_defaults(pipeline):
    lm, _ = pipeline
    argv = ["--data", "d", "--out", "o"]
    args = lm.parse_args(argv)
    plain = lm.build_parser().parse_args(argv)
    assert args.protocol == "demo" and args.protocol_record["settings"] == {}
    for key, value in vars(plain).items():
        assert getattr(args, key) == value, key


def test_a_protocol_is_applied_only_by_parse_args(pipeline):
    lm, _ = pipeline
    plain = lm.build_parser().parse_args(["--data", "d", "--out", "o", "--protocol", "real"])
    with pytest.raises(SystemExit, match="only scripts/lm_pipeline.py's parse_args"):
        lm.train_flags(plain, ["en"], "save", 1)
    with pytest.raises(SystemExit, match="is in no search space"):
        lm.parse_args(["--data", "d", "--out", "o", "--protocol", "real", "--arch", "lstm_lm"])


def test_models_expand_per_domain_and_leave_contrastive_out_of_non_parallel_data(pipeline):
    lm, _ = pipeline
    rows, skipped = lm.table_models("single_*,union,multi_contr,random", ["gcc", "wesnoth"], False)
    assert rows == ["single_gcc", "single_wesnoth", "union", "random"]
    assert "not parallel" in skipped["multi_contr"]
    rows, skipped = lm.table_models("single_*,multi_contr", ["en", "de"], True)
    assert rows == ["single_en", "single_de", "multi_contr"] and skipped == {}


def test_sharing_choices_are_the_derive_names():
    """lm_pipeline (and translation_table through it) offers exactly mdnas-derive's
    --random-sharing names, kept apart only so that the scripts start without torch."""
    from mdnas_fairseq.search.random_genotypes import SHARING

    assert load_script("lm_pipeline").RANDOM_SHARING == tuple(SHARING)
