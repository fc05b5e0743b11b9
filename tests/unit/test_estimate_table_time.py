"""scripts/estimate_table_time.py's arithmetic (nothing run): tokens from a fairseq log, one table's
minutes from measured costs, and costs carried to another data-bin (--costs-from)."""

import json

import pytest

from tests.helpers.fairseq_runs import load_script

LOG = (
    "2026-12-05 07:19:02 | INFO | train | epoch 001 | loss 11.297 | loss_de 11.278 | wpb 1273 | "
    "bsz 61.1 | num_updates 20 | lr 0.003 | gnorm 0.72 | clip 100 | train_wall 18 | wall 29\n"
)
META = {
    "langs": ["en", "de"],
    "splits": {"train": 100},
    "tokens": {"train": {"en": 900, "de": 1900}},
}


@pytest.fixture
def est():
    return load_script("estimate_table_time")


def costs(per_token=1e-3, fixed=10.0):
    return {"per_token": per_token, "fixed": fixed}


def test_tokens_are_words_per_batch_times_updates(est, tmp_path):
    log = tmp_path / "run.log"
    log.write_text("inner line | wpb 5 | num_updates 3\n" + LOG)
    assert est.trained_tokens(str(log)) == 1273 * 20
    log.write_text("nothing\n")
    with pytest.raises(SystemExit, match="no train summary"):
        est.trained_tokens(str(log))


def test_a_tables_minutes_from_its_costs(est, tmp_path):
    args = est.parse_args(["--data", "d", "--out", str(tmp_path), "--protocol", "real"])
    args.search_epochs, args.retrain_epochs, args.random_count = 1, 2, 3
    m = {
        "search": costs(2e-3, 5.0),
        "search_contr": costs(4e-3, 5.0),
        "retrain": costs(1e-3, 1.0),
        "baseline": costs(1e-3, 0.0),
        "eval": {"en": 0.5, "de": 0.5},
        "perturbation": {"cpu_seconds": 7.0},
    }
    models = ["single_en", "union", "multi_contr", "random", "perturbation", "baseline"]
    rows, tokens = est.estimate(args, META, models, m)
    assert tokens == {"en": 1000, "de": 2000}  # pieces and one end of sentence per sentence
    retrain_all = 2 * (3000 * 1e-3 + 1.0) + 1.0  # two epochs, then one test per domain
    assert rows["single_en"] == {
        "search": 1000 * 2e-3 + 5.0,
        "retrain": 2 * (1000 * 1e-3 + 1.0) + 0.5,
        "minutes": round((7.0 + 4.5) / 60, 1),
    }
    assert rows["union"]["search"] == 3000 * 2e-3 + 5.0 and rows["union"]["retrain"] == retrain_all
    assert rows["multi_contr"]["search"] == 3000 * 4e-3 + 5.0
    assert rows["random"] == {"search": 0.0, "retrain": 27.0, "minutes": round(27.0 / 60, 1)}
    assert retrain_all == 9.0
    assert rows["perturbation"]["search"] == 7.0
    assert rows["baseline"]["retrain"] == 2 * 3.0 + 1.0


def test_costs_from_another_table(est, tmp_path):
    args = est.parse_args(["--data", "d", "--out", str(tmp_path), "--protocol", "real"])
    source = {
        "protocol": json.loads(json.dumps(args.protocol_record)),
        "measured": {
            "search": costs(),
            "eval": {"en": 4.0, "de": 6.0},
            "perturbation": {"fixed": 100.0, "per_step": 10.0, "finetune_steps": 5},
        },
    }
    path = tmp_path / "estimate.json"
    path.write_text(json.dumps(source))
    m = est.costs_for(str(path), args, ["a", "b", "c"])
    assert m["eval"] == {"a": 5.0, "b": 5.0, "c": 5.0}
    p = m["perturbation"]  # three domains instead of two
    assert (p["fixed"], p["per_step"]) == (150.0, 22.5)
    assert p["cpu_seconds"] == 150.0 + 5 * 22.5
    args.protocol_record["settings"]["retrain_epochs"] += 1  # how much runs: the costs still apply
    est.costs_for(str(path), args, ["a"])
    source["protocol"]["settings"]["batch_size"] = 128  # what a token costs: refused
    path.write_text(json.dumps(source))
    with pytest.raises(SystemExit, match="measured with other settings: batch_size"):
        est.costs_for(str(path), args, ["a"])
