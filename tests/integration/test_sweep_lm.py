"""scripts/sweep.py end to end on the tiny corpus through the real LM pipeline (fairseq-train,
fairseq-eval-lm): two struct coefficients, one seed, then a budget of one search added to the
finished sweep, then the same command again. Checked: every row's parameter count is the retrained
checkpoint's model's sum(p.numel()) and its genotype's count, the budgeted model has at most N
parameters, an impossible budget is skipped naming the smallest size, and finished runs never rerun
(the pipeline's command runner is counted)."""

import json
import os
import sys

import pytest

from mdnas_fairseq.search import ParamTable, genotype_from_dict, read_genotype_json
from tests.helpers.fairseq_runs import load_script

TINY = [
    "--search-epochs",
    "1",
    "--retrain-epochs",
    "1",
    "--batch-size",
    "16",
    "--",
    "--embed-dim",
    "16",
    "--hidden-dim",
    "16",
    "--num-nodes",
    "3",
    "--no-alpha-heatmaps",
]


def built_params(checkpoint):
    from fairseq import checkpoint_utils

    import mdnas_fairseq  # noqa: F401

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([checkpoint])
    return sum(p.numel() for p in models[0].parameters())


def test_tiny_lm_sweep_with_a_budget_resumes_without_rerunning(tiny_corpus, tmp_path, monkeypatch):
    data = tiny_corpus()
    sweep = load_script("sweep")
    pipeline = sys.modules["lm_pipeline"]
    calls, original = [], pipeline.run

    def counted(cmd, log_path):
        calls.append(os.path.basename(cmd[0]))
        return original(cmd, log_path)

    monkeypatch.setattr(pipeline, "run", counted)
    out = tmp_path / "sweep"
    argv = [
        "--task",
        "lm",
        "--out",
        str(out),
        "--data",
        data,
        "--langs",
        "en,de",
        "--domains",
        "2",
        "--struct-coefs",
        "0,1",
        "--seeds",
        "0",
        "--no-baselines",
    ]
    assert sweep.main(argv + TINY) == 0
    assert sorted(calls) == ["fairseq-eval-lm"] * 4 + ["fairseq-train"] * 4
    source = out / "points" / "struct0.0_contr0.0_seed0"
    searched = read_genotype_json(str(source / "genotype.json"))
    assert searched == read_genotype_json(str(source / "search" / "genotype.json"))
    table = ParamTable.from_dict(searched["param_table"], genotype_from_dict(searched).space)
    smallest, own = table.smallest_multimodel(), searched["param_counts"]["multimodel"]
    budget = (own + smallest) // 2
    with_budget = argv + ["--budgets", f"{budget},{smallest - 1}", "--budget-from", "struct_coef=0"]
    calls.clear()
    assert sweep.main(with_budget + TINY) == 0
    assert calls == ["fairseq-train", "fairseq-eval-lm", "fairseq-eval-lm"]  # the budget's alone
    result = json.loads((out / "sweep.json").read_text())
    assert [r["kind"] for r in result["rows"]] == ["coef", "coef", "budget"]
    for r in result["rows"]:
        built = built_params(str(out / r["folder"] / "retrain" / "checkpoint_best.pt"))
        assert r["params"] == built == r["params_genotype"], r["folder"]
        assert set(r["ppl_per_domain"]) == {"en", "de"}
        assert r["ppl"] == pytest.approx(sum(r["ppl_per_domain"].values()) / 2)
    row = result["rows"][2]
    assert row["budget"] == budget and row["params"] <= budget and row["searched_params"] == own
    derived = read_genotype_json(str(out / row["folder"] / "genotype.json"))
    assert derived["derived_by"]["budget"] == budget
    (skipped,) = result["skipped_budgets"]
    assert skipped["budget"] == smallest - 1
    assert f"smallest possible multimodel, {smallest} parameters" in skipped["reason"]
    calls.clear()
    assert sweep.main(with_budget + TINY) == 0 and calls == []
    again = json.loads((out / "sweep.json").read_text())
    assert again["rows"] == result["rows"] and (out / "pareto.png").is_file()
