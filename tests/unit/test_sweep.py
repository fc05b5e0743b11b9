"""scripts/sweep.py without fairseq runs: the Pareto front on hand examples, the resume logic
(finished runs are not rerun, unfinished ones are redone, changed settings are refused, failed runs
retried), the budget rows and skipped budgets, sweep.json / sweep.md on hand-made results, the
command line. The runs are replaced by a fake that writes a real genotype.json (softmax(alpha) drawn
from the run's seed and coefficient) and counts the parameters of the model built from it."""

import json
import os
import sys

import pytest
import torch

from mdnas_fairseq.cells.conv import DartsConvClassifier
from mdnas_fairseq.search import derive_genotype, load_genotype, save_genotype
from tests.helpers.fairseq_runs import load_script

sweep = load_script("sweep")
report = sys.modules["sweep_report"]
tasks = sys.modules["sweep_tasks"]
LANGS = ["en", "de"]


def test_pareto_front_on_hand_examples():
    # (params, accuracy), maximised: (110, 79) loses to (100, 80), (130, 84) to (120, 85);
    # equal points (indices 0 and 6, 1 and 4) do not dominate each other
    acc = [(100, 80), (120, 85), (110, 79), (90, 70), (120, 85), (130, 84), (100, 80)]
    assert report.pareto_front(acc, maximize=True) == [3, 0, 6, 1, 4]
    # (params, perplexity), minimised: (110, 210) loses to (100, 200), (130, 150) to (120, 150)
    ppl = [(100, 200), (120, 150), (110, 210), (90, 260), (130, 150), (140, 140)]
    assert report.pareto_front(ppl, maximize=False) == [3, 0, 1, 5]
    # the same perplexities read as accuracies: only the largest quality per size survives
    assert report.pareto_front(ppl, maximize=True) == [3]  # (90, 260): fewest and best
    assert not report.dominates((100, 80), (100, 80), True)
    assert report.dominates((100, 80), (100, 79), True)
    assert not report.dominates((100, 80), (100, 79), False)
    assert report.dominated_count(acc, [acc[0], acc[1]], True) == 2  # (110, 79) and (130, 84)
    assert report.pareto_front([], True) == []


def fake_data(tmp_path):
    data = tmp_path / "data-bin"
    data.mkdir()
    (data / "mdnas_data.json").write_text(json.dumps({"langs": LANGS}))
    (data / "dict.txt").write_text("hello 3\n")
    return str(data)


def net(domains, genotype=None):
    return DartsConvClassifier(domains, channels=4, num_nodes=4, genotype=genotype)


class FakeRuns:
    """Replaces LMRuns._run: a 'search' writes genotype.json as the search task does; the
    'retraining' builds the model of the folder's genotype and counts its parameters."""

    def __init__(self, out, fail=()):
        self.out, self.calls, self.fail = str(out), [], set(fail)

    def __call__(self, path, seed, domains, flags, shared, search, multi):
        self.calls.append((os.path.relpath(path, self.out), search))
        if os.path.basename(path) in self.fail:
            raise tasks.RunFailed(f"fake failure of {os.path.basename(path)}")
        names = ["+".join(domains)] if shared else domains
        genotype_path = os.path.join(path, "genotype.json")
        if search:
            coef = float(flags[flags.index("--struct-coef") + 1]) if "--struct-coef" in flags else 0
            model = net(names)
            g = torch.Generator().manual_seed(seed * 100 + int(10 * coef))
            shape = (len(names), model.space.num_edges, model.space.num_ops)
            alpha = 2 * torch.randn(*shape, generator=g)
            genotype = derive_genotype(alpha, model.space, names)
            probs = torch.softmax(alpha.double(), -1)
            save_genotype(
                genotype_path,
                genotype,
                {
                    "alpha": {n: probs[k].tolist() for k, n in enumerate(names)},
                    "param_counts": model.param_table().param_counts(genotype),
                    "param_table": model.param_table().to_dict(),
                },
            )
        genotype = load_genotype(genotype_path)
        params = sum(p.numel() for p in net(list(genotype.domains), genotype).parameters())
        ppl = {d: 100.0 + seed + params / 1000 for d in domains}
        return dict(
            {
                "params": params,
                "ppl": sum(ppl.values()) / len(ppl),
                "ppl_per_domain": ppl,
                "search_seconds": 1.0,
                "retrain_seconds": 2.0,
            },
            **tasks.genotype_facts(genotype_path, multi and len(domains) > 1),
        )


@pytest.fixture
def fake(monkeypatch, tmp_path):
    holder = {"runs": FakeRuns(tmp_path / "out")}

    def run(self, *args):
        return holder["runs"](*args)

    monkeypatch.setattr(tasks.LMRuns, "_run", run)
    return holder


def sweep_argv(tmp_path, data, *extra):
    return [
        "--task",
        "lm",
        "--out",
        str(tmp_path / "out"),
        "--data",
        data,
        "--struct-coefs",
        "0,0.5",
        "--seeds",
        "0,1",
        *extra,
        "--retrain-epochs",
        "2",
    ]


def run_sweep(argv):
    out = argv[argv.index("--out") + 1]
    code = sweep.main(argv)
    with open(os.path.join(out, "sweep.json")) as f:
        return code, json.load(f)


def test_finished_runs_are_not_rerun_and_unfinished_ones_are_redone(tmp_path, fake, monkeypatch):
    argv = sweep_argv(tmp_path, fake_data(tmp_path))
    code, first = run_sweep(argv)
    points = [f"points/struct{s}_contr0.0_seed{k}" for s in ("0.0", "0.5") for k in (0, 1)]
    refs = [f"reference/{m}_seed{k}" for k in (0, 1) for m in ("union", "single_en", "single_de")]
    assert code == 0 and fake["runs"].calls == [(f, True) for f in points + refs]
    assert [r["folder"] for r in first["rows"]] == points
    assert {r["commit"] for r in first["rows"] + first["reference"]} == {first["commit"]}
    assert [r["folder"] for r in first["reference"]] == refs
    fake["runs"] = FakeRuns(tmp_path / "out")
    code, second = run_sweep(argv)
    assert code == 0 and fake["runs"].calls == [] and second["rows"] == first["rows"]
    # an interrupted run: no result.json, a stale file; it alone is redone from a fresh folder
    stale = tmp_path / "out" / points[1]
    os.remove(stale / "result.json")
    (stale / "leftover.txt").write_text("x")
    code, third = run_sweep(argv)
    assert fake["runs"].calls == [(points[1], True)] and not (stale / "leftover.txt").exists()
    assert third["rows"] == first["rows"]
    # a setting an older run recorded that is not protocol today (e.g. a new option of the
    # pipeline later excluded) does not stop the resume
    done = tmp_path / "out" / points[0] / "result.json"
    row = json.loads(done.read_text())
    row["protocol"]["models"] = "recorded by an older sweep"
    done.write_text(json.dumps(row))
    fake["runs"] = FakeRuns(tmp_path / "out")
    assert run_sweep(argv)[0] == 0 and fake["runs"].calls == []
    # the same folder with other settings is refused, naming the setting
    with pytest.raises(SystemExit, match="finished with other settings \\(retrain_epochs\\)"):
        run_sweep(argv[:-1] + ["3"])
    (tmp_path / "data-bin" / "dict.txt").write_text("hello 4\n")  # other data, same path
    with pytest.raises(SystemExit, match="finished with other settings \\(data\\)"):
        run_sweep(argv)


def test_failed_runs_are_reported_and_retried(tmp_path, fake, monkeypatch):
    argv = sweep_argv(tmp_path, fake_data(tmp_path), "--no-baselines")
    fake["runs"] = FakeRuns(tmp_path / "out", fail={"struct0.5_contr0.0_seed0"})
    code, data = run_sweep(argv)
    assert code == 1 and len(data["rows"]) == 3
    assert data["failed"][0]["folder"] == "points/struct0.5_contr0.0_seed0"
    assert "fake failure" in (tmp_path / "out" / "sweep.md").read_text()
    fake["runs"] = FakeRuns(tmp_path / "out")
    code, data = run_sweep(argv)
    assert code == 0 and fake["runs"].calls == [("points/struct0.5_contr0.0_seed0", True)]
    assert len(data["rows"]) == 4 and data["failed"] == []


def test_budgets_retrain_one_search_and_skip_the_impossible(tmp_path, fake, monkeypatch):
    data = fake_data(tmp_path)
    code, plain = run_sweep(sweep_argv(tmp_path, data, "--no-baselines"))
    source = next(r for r in plain["rows"] if r["folder"] == "points/struct0.5_contr0.0_seed0")
    table = net(LANGS).param_table()
    smallest, searched = table.smallest_multimodel(), source["params"]
    budgets = [searched + 10, (searched + smallest) // 2, smallest, smallest - 1]
    fake["runs"] = FakeRuns(tmp_path / "out")
    argv = sweep_argv(tmp_path, data, "--no-baselines", "--budgets", ",".join(map(str, budgets)))
    code, out = run_sweep(argv)  # default source: smallest nonzero struct coef, seed 0
    folders = [f"budgets/struct0.5_contr0.0_seed0/budget{b}" for b in budgets[:3]]
    assert code == 0 and fake["runs"].calls == [(f, False) for f in folders]  # no search, no rerun
    rows = {r["budget"]: r for r in out["rows"] if r["kind"] == "budget"}
    assert sorted(rows) == sorted(budgets[:3])
    for b, r in rows.items():
        assert r["params"] == r["params_genotype"] <= b and r["searched_params"] == searched
        assert (r["struct_coef"], r["contrastive_coef"], r["seed"]) == (0.5, 0.0, 0)
        derived = json.loads((tmp_path / "out" / r["folder"] / "genotype.json").read_text())
        assert derived["derived_by"]["budget"] == b
    assert rows[budgets[0]]["moves"] == 0 and rows[budgets[0]]["params"] == searched
    assert rows[smallest]["params"] == smallest and rows[smallest]["agreement"] == 1.0
    # smaller budgets: never more parameters, never fewer shared edges
    ordered = [rows[b] for b in budgets[:3]]
    assert all(
        a["params"] >= b["params"] and a["shared_edges"] <= b["shared_edges"]
        for a, b in zip(ordered, ordered[1:])
    )
    (skipped,) = out["skipped_budgets"]
    assert skipped["budget"] == smallest - 1 and f"{smallest} parameters" in skipped["reason"]
    assert f"Skipped budget {smallest - 1:,}" in (tmp_path / "out" / "sweep.md").read_text()
    assert set(out["pareto"]["budgets"]) <= set(folders) and out["front_comparison"] is not None


def row(kind, struct, seed, params, ppl_en, ppl_de, agreement=0.5, budget=None, model="multimodel"):
    return {
        "kind": kind,
        "model": model,
        "struct_coef": struct,
        "contrastive_coef": 0.0,
        "seed": seed,
        "budget": budget,
        "params": params,
        "params_genotype": params,
        "agreement": agreement,
        "shared_edges": 2,
        "ppl": (ppl_en + ppl_de) / 2,
        "ppl_per_domain": {"en": ppl_en, "de": ppl_de},
        "search_seconds": 3.0,
        "retrain_seconds": 4.0,
        "moves": 2,
        "searched_params": 130,
        "smallest_possible_params": 90,
        "folder": f"{kind}/{model}_{struct}_{seed}_{budget}",
    }


def test_sweep_json_and_md_on_hand_made_results(tmp_path):
    rows = [
        row("coef", 0.0, 0, 100, 10.0, 20.0, 0.25),
        row("coef", 0.0, 1, 120, 14.0, 22.0, 0.75),
        row("coef", 1.0, 0, 90, 30.0, 40.0, 1.0),
        row("coef", 1.0, 1, 90, 32.0, 40.0, 1.0),
        row("budget", 0.0, 0, 95, 8.0, 20.0, 0.5, budget=95),
    ]
    refs = [
        row("reference", 0.0, 0, 80, 50.0, 60.0, None, model="union"),
        row("reference", 0.0, 1, 80, 52.0, 60.0, None, model="union"),
        {
            **row("reference", 0.0, 0, 70, 40.0, 0.0, None, model="single_en"),
            "ppl": 40.0,
            "ppl_per_domain": {"en": 40.0},
        },
    ]
    header = {
        "task": "lm",
        "domains": ["en", "de"],
        "command": "python scripts/sweep.py x",
        "commit": "abc",
        "out": "out",
        "protocol": "P",
        "reference_text": "R",
        "settings": {},
        "sweep": {},
        "budget_from": {"struct_coef": 0.0, "contrastive_coef": 0.0, "seed": 0},
    }
    skipped = [{"budget": 5, "reason": "too small"}]
    data = report.write_outputs(str(tmp_path), header, rows, refs, skipped, [])
    on_disk = json.loads((tmp_path / "sweep.json").read_text())
    assert on_disk["rows"] == rows and on_disk["reference"] == refs and on_disk["metric"] == "ppl"
    for r in on_disk["rows"]:
        for key in (
            "struct_coef",
            "contrastive_coef",
            "seed",
            "params",
            "agreement",
            "ppl",
            "ppl_per_domain",
        ):
            assert key in r
    # struct 0: params 100, 120 -> 110 ± 14.14; ppl means 15 and 18 -> 16.5 ± 2.12
    group = next(g for g in data["summary"] if g["kind"] == "coef" and g["struct_coef"] == 0.0)
    assert group["params"] == pytest.approx((110, 14.1421356))
    assert group["ppl"] == pytest.approx((16.5, 2.1213203))
    assert group["agreement"] == pytest.approx((0.5, 0.3535534)) and group["runs"] == 2
    # fronts (ppl minimised) of (params, mean ppl): struct 0 (100, 15), (120, 18); struct 1
    # (90, 35),
    # (90, 36): the front is (90, 35), (100, 15); the budget front is its one row (95, 14), which
    # dominates (100, 15) and is dominated by neither; the reference rows are on no front
    assert data["pareto"]["coefficients"] == [
        "coef/multimodel_1.0_0_None",
        "coef/multimodel_0.0_0_None",
    ]
    assert data["pareto"]["budgets"] == ["budget/multimodel_0.0_0_95"]
    assert data["front_comparison"] == {
        "coef_front": 2,
        "budget_front": 1,
        "budget_dominated_by_coef": 0,
        "coef_dominated_by_budget": 1,
    }
    md = (tmp_path / "sweep.md").read_text()
    assert (
        "| struct 0, contr 0 | 2 | 110 ± 14 | 50% ± 35 | 12.00 ± 2.83 | 21.00 ± 1.41 | "
        "16.50 ± 2.12 |"
    ) in md
    assert "| union | 2 | 80 ± 0 | - | 51.00 ± 1.41 | 60.00 ± 0.00 | 55.50 ± 0.71 |" in md
    assert "| single_en | 1 | 70 | - | 40.00 | - | 40.00 |" in md
    assert "| budget 95 (2 move(s)) | 1 | 95 | 50% | 8.00 | 20.00 | 14.00 |" in md
    assert "Skipped budget 5: too small" in md and "Command: `python scripts/sweep.py x`" in md
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line_errors_and_budget_source(tmp_path):
    data = fake_data(tmp_path)
    base = ["--task", "lm", "--out", str(tmp_path / "o"), "--data", data]
    args = sweep.parse(base + ["--struct-coefs", "0,1,0.1", "--seeds", "3,4", "--budgets", "900"])
    assert args.budget_source == (0.1, 0.0, 3)
    args = sweep.parse(
        base
        + [
            "--struct-coefs",
            "0,1",
            "--seeds",
            "0,2",
            "--budgets",
            "900",
            "--budget-from",
            "struct_coef=0,seed=2",
        ]
    )
    assert args.budget_source == (0.0, 0.0, 2)
    args = sweep.parse(base + ["--search-epochs", "7", "--", "--embed-dim", "16"])
    assert args.pipeline.search_epochs == 7 and args.pipeline.extra == ["--embed-dim", "16"]
    errors = [
        (
            ["--budgets", "9", "--budget-from", "struct_coef=5"],
            "struct 5, contr 0, seed 0 is not a point",
        ),
        (["--budgets", "9", "--budget-from", "depth=5"], "use struct_coef=X"),
        (["--models", "union"], "--models: settings of lm_pipeline.py that the sweep"),
        (["--seeds", "1,1"], "--seeds must be distinct"),
        (["--struct-coefs", "0,-1"], "--struct-coefs must be distinct numbers >= 0"),
        (["--domains", "3"], "--domains 3, but 2 languages"),
        (["--langs", "en,fr"], "--langs en,fr: distinct languages of the data"),
        (["stray", "--", "--embed-dim", "16"], "unexpected arguments \\['stray'\\]"),
    ]
    for extra, message in errors:
        with pytest.raises(SystemExit, match=message):
            sweep.parse(base + extra)
    with pytest.raises(SystemExit, match="needs --data"):
        sweep.parse(["--task", "lm", "--out", "o"])
    with pytest.raises(SystemExit, match="takes no --data"):
        sweep.parse(["--task", "vision", "--out", "o", "--langs", "en"])
    with pytest.raises(SystemExit, match="D = 1 to 4"):
        sweep.parse(["--task", "vision", "--out", "o", "--domains", "5"])
