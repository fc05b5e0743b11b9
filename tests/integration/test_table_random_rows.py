"""The random rows of scripts/rotated_mnist_table.py at a tiny size, through the real fairseq runs:
each random genotype is what ``mdnas-derive SEARCH --random-seed 1000 s + k --match-params`` writes
for the reference search (a second path: the public command in its own process), its retrained
model has that genotype's parameter count, and its cells' count (what depends on the genotype) is
within 2% below the search's. Then
--resume: the same table again runs nothing and writes the same rows; other settings are refused
naming the run's file and the setting."""

import json
import os

import pytest

from mdnas_fairseq.search import read_genotype_json
from tests.helpers.fairseq_runs import BIN, load_script, run
from tests.helpers.vision_runs import mnist_args

TINY = [
    "--train-images-per-domain",
    "32",
    "--heldout-images-per-domain",
    "32",
    "--search-epochs",
    "1",
    "--retrain-epochs",
    "1",
    "--channels",
    "4",
    "--num-nodes",
    "2",
    "--eval-batch-size",
    "500",
]


def test_random_rows_are_mdnas_derive_random_genotypes_matched_to_the_search(tmp_path, monkeypatch):
    work, out = tmp_path / "work", tmp_path / "table"
    argv = ["--domains", "2", "--seeds", "3", "--models", "struct,random", "--random-count", "2"]
    argv += ["--out", str(out), "--work-dir", str(work)] + TINY + mnist_args()
    table = load_script("rotated_mnist_table")
    table.main(argv + ["--resume"])  # nothing to reuse yet: runs everything
    searched = str(work / "D2_struct_seed3" / "genotype.json")
    counts = json.load(open(searched))["param_counts"]
    target_cells = counts["multimodel_cells"]
    stem_and_head = counts["multimodel"] - target_cells
    result = json.load(open(out / "table.json"))
    randoms = [r for r in result["runs"] if r["model"] == "random"]
    assert [r["random_index"] for r in randoms] == [0, 1]
    for r in randoms:
        k = r["random_index"]
        written = work / "D2_random_seed3" / f"random{k}" / "genotype.json"
        by_cli = str(tmp_path / f"cli{k}.json")
        seed = str(3000 + k)
        run(
            [os.path.join(BIN, "mdnas-derive"), searched, "--random-seed", seed, "--match-params"]
            + ["--out", by_cli]
        )
        assert read_genotype_json(str(written))["cells"] == read_genotype_json(by_cli)["cells"]
        assert (
            r["params"]
            == r["genotype_params"]
            == json.load(open(by_cli))["param_counts"]["multimodel"]
        )
        assert r["cell_params"] == r["params"] - stem_and_head
        assert 0.98 * target_cells <= r["cell_params"] <= target_cells
    (row,) = [row for row in result["rows"] if row["model"] == "random"]
    assert row["runs"] == 2
    first = json.load(open(out / "table.json"))["runs"]
    calls = []
    monkeypatch.setattr(table, "call_in_child", lambda *a: calls.append(a))
    table.main(argv + ["--resume"])
    assert calls == [] and json.load(open(out / "table.json"))["runs"] == first
    with pytest.raises(
        SystemExit, match=r"run_D2_struct_seed3\.json was made with other settings \(lr\)"
    ):
        table.main(argv + ["--resume", "--lr", "0.02"])
    assert calls == []
