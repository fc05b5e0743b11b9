"""``mdnas-derive`` (mdnas_fairseq.derive): budgeted and random genotypes from a search's genotype.json,
the files it writes (loadable, counts equal to built models), and its errors. The search directory is
written by hand the way the search task writes it (genotype, softmax(alpha), param_counts, param_table)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from mdnas_fairseq import derive
from mdnas_fairseq.cells.conv import DartsConvClassifier
from mdnas_fairseq.search import (
    derive_genotype,
    derive_with_budget,
    load_genotype,
    read_genotype_json,
    save_genotype,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOMAINS = ["rot0", "rot90", "rot180"]


def net(genotype=None):
    return DartsConvClassifier(DOMAINS, channels=4, num_nodes=4, genotype=genotype)


def write_search(directory, seed=0, drop=()):
    """genotype.json of a finished search, as the task writes it; ``drop`` leaves fields out."""
    model = net()
    g = torch.Generator().manual_seed(seed)
    alpha = 2 * torch.randn(3, model.space.num_edges, model.space.num_ops, generator=g)
    probs = torch.softmax(alpha.double(), -1)
    genotype = derive_genotype(alpha, model.space, DOMAINS)
    table = model.param_table()
    extra = {
        "epoch": 3,
        "alpha": {d: probs[k].tolist() for k, d in enumerate(DOMAINS)},
        "param_counts": {
            "domains": {d: model.genotype_param_count(genotype, [d]) for d in DOMAINS},
            "multimodel": model.genotype_param_count(genotype),
        },
        "param_table": table.to_dict(),
    }
    os.makedirs(directory, exist_ok=True)
    save_genotype(
        os.path.join(directory, "genotype.json"),
        genotype,
        {k: v for k, v in extra.items() if k not in drop},
    )
    return genotype, probs, table


def built_count(genotype):
    return sum(p.numel() for p in net(genotype).parameters())


def test_budget_from_the_command_line_as_a_subprocess(tmp_path):
    searched, probs, table = write_search(str(tmp_path / "search"))
    budget = (table.multimodel_count(searched) + table.smallest_multimodel()) // 2
    out = tmp_path / "budget.json"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mdnas_fairseq.derive",
            str(tmp_path / "search"),
            "--param-budget",
            str(budget),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    genotype = load_genotype(str(out))
    data = read_genotype_json(str(out))
    expected, steps = derive_with_budget(probs, table, DOMAINS, budget, start=searched)
    assert genotype == expected and len(data["derived_by"]["steps"]) == len(steps) > 0
    assert data["param_counts"]["multimodel"] == built_count(genotype) <= budget
    for d in DOMAINS:
        alone = DartsConvClassifier(
            [d],
            channels=4,
            num_nodes=4,
            genotype=type(genotype)(genotype.space, (d,), {d: genotype.cells[d]}),
        )
        assert data["param_counts"]["domains"][d] == sum(p.numel() for p in alone.parameters())
    assert data["derived_by"]["method"] == "param_budget" and data["derived_by"]["budget"] == budget
    assert str(data["param_counts"]["multimodel"]) in run.stdout


def test_own_count_gives_the_searched_genotype_and_the_search_file_is_accepted(tmp_path, capsys):
    searched, _, table = write_search(str(tmp_path))
    own = table.multimodel_count(searched)
    out = str(tmp_path / "same.json")
    assert (
        derive.main([str(tmp_path / "genotype.json"), "--param-budget", str(own), "--out", out])
        == 0
    )
    data = read_genotype_json(out)
    assert load_genotype(out) == searched and data["derived_by"]["steps"] == []
    assert data["param_counts"]["multimodel"] == own


def test_random_genotypes_reproducible_and_matched(tmp_path):
    searched, _, table = write_search(str(tmp_path))
    target = table.multimodel_count(searched)
    files = []
    for name in ("r1.json", "r2.json"):
        files.append(str(tmp_path / name))
        assert (
            derive.main(
                [str(tmp_path), "--random-seed", "11", "--match-params", "--out", files[-1]]
            )
            == 0
        )
    a, b = (read_genotype_json(f) for f in files)
    assert a["cells"] == b["cells"] and a["derived_by"] == b["derived_by"]
    genotype = load_genotype(files[0])
    # the cells (the built model less what every genotype has) match the searched cells, never above
    shared = table.shared_params
    assert 0.98 * (target - shared) <= built_count(genotype) - shared <= target - shared
    assert a["derived_by"]["target_cell_params"] == target - shared
    assert a["param_counts"]["multimodel"] == built_count(genotype)
    assert a["param_counts"]["multimodel_cells"] == built_count(genotype) - shared
    assert (
        a["derived_by"]["seed"] == 11
        and a["derived_by"]["draws"] >= 1
        and a["derived_by"]["tolerance"] == 0.02
    )
    plain = str(tmp_path / "plain.json")
    assert derive.main([str(tmp_path), "--random-seed", "12", "--out", plain]) == 0
    assert read_genotype_json(plain)["derived_by"]["draws"] == 1


@pytest.mark.parametrize(
    "drop,args,message",
    [
        (("alpha",), ["--param-budget", "5000"], "field 'alpha' is missing"),
        (("param_table",), ["--random-seed", "1"], "field 'param_table' is missing"),
    ],
)
def test_missing_fields_are_named_and_nothing_is_written(tmp_path, capsys, drop, args, message):
    write_search(str(tmp_path), drop=drop)
    out = tmp_path / "out.json"
    assert derive.main([str(tmp_path)] + args + ["--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and os.path.join(str(tmp_path), "genotype.json") in err
    assert not out.exists()


def test_errors_budget_too_small_inconsistent_file_no_match_and_usage(tmp_path, capsys):
    _, _, table = write_search(str(tmp_path))
    smallest = table.smallest_multimodel()
    out = str(tmp_path / "out.json")
    assert derive.main([str(tmp_path), "--param-budget", str(smallest - 1), "--out", out]) == 1
    assert f"smallest possible multimodel, {smallest} parameters" in capsys.readouterr().err
    assert (
        derive.main(
            [
                str(tmp_path),
                "--random-seed",
                "0",
                "--match-params",
                "--tolerance",
                "0",
                "--max-draws",
                "3",
                "--out",
                out,
            ]
        )
        == 1
    )
    assert "in 3 draw(s)" in capsys.readouterr().err
    path = tmp_path / "genotype.json"
    data = json.loads(path.read_text())
    data["param_counts"]["multimodel"] += 1
    path.write_text(json.dumps(data))
    assert derive.main([str(tmp_path), "--random-seed", "0", "--out", out]) == 1
    assert "inconsistent" in capsys.readouterr().err and not os.path.exists(out)
    usage_errors = (
        ["--match-params"],
        ["--random-seed", "1", "--param-budget", "3"],
        ["--random-seed", "1", "--tolerance", "0.2"],
    )
    for bad in usage_errors:
        with pytest.raises(SystemExit) as info:
            derive.main([str(tmp_path), "--out", out] + bad)
        assert info.value.code == 2


def test_help_states_the_budget_rule(capsys):
    with pytest.raises(SystemExit):
        derive.main(["--help"])
    text = capsys.readouterr().out
    for phrase in (
        "MERGE",
        "NODE MOVE",
        "smallest cost / parameters saved",
        "ties go to",
        "smallest multimodel",
    ):
        assert phrase in text
