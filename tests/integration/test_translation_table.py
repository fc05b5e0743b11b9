"""scripts/translation_table.py end to end at a tiny size (issue 27, item 4).

References are independent of the code under test: the TSV is written here, the references are
read from the raw text mdnas-prepare kept, the scores are recomputed with sacrebleu from the
hypotheses the script wrote, and the parameter counts are the ones fairseq-train logged.
"""

import json
import math
import os
import re
from argparse import Namespace

import pytest

from tests.helpers.fairseq_runs import load_script
from tests.integration.test_translation_prepare import write_tsv

SIZES = [
    "--encoder-layers", "1", "--decoder-layers", "1", "--embed-dim", "32",
    "--ffn-embed-dim", "64", "--attention-heads", "2", "--conv-kernel-sizes", "3",
]  # fmt: skip
TOLERANCE = 0.02
ROWS = {
    "multi_struct",
    "multi_struct_selected",
    "multi",
    "random_1",
    "random_2",
    "union",
    "baseline",
}
FAIRSEQ_PARAMS = re.compile(r"num\. shared model params: ([0-9,]+)")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    from mdnas_fairseq.data.prepare.translation import prepare_translation

    tmp = tmp_path_factory.mktemp("mt_table")
    tsv = write_tsv(tmp / "in.tsv")
    data = tmp / "prepared"
    prepare_translation(
        tsv, "en-de", str(data), vocab_size=100, domain_column="source", workers=1, quiet=True
    )
    out = tmp / "table"
    argv = [
        "--data", str(data / "data-bin"), "--out", str(out), "--search-epochs", "1",
        "--retrain-epochs", "6", "--lr", "0.01", "--dropout", "0", "--max-tokens", "512",
        "--beam", "2", "--max-len-a", "0", "--max-len-b", "12", "--random-seeds", "1,2",
        "--match-tolerance", str(TOLERANCE), "--search-flags=--no-alpha-heatmaps",
        "--selection-searches", "2", "--selection-epochs", "2",
        "--rows", "multi_struct,multi_struct_selected,multi,random,union,baseline", "--", *SIZES,
    ]  # fmt: skip
    result = load_script("translation_table").main(argv)
    with open(out / "table.json", encoding="utf-8") as f:
        written = json.load(f)
    return {"data": data, "out": out, "result": result, "json": written}


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def logged_params(log):
    """The parameter count fairseq-train itself logged."""
    with open(log, encoding="utf-8") as f:
        return int(FAIRSEQ_PARAMS.findall(f.read())[-1].replace(",", ""))


def test_results_json_and_markdown(table):
    written = table["json"]
    assert {"command", "commit", "seed", "date", "settings", "signatures"} <= set(written)
    assert written["command"].startswith("python scripts/translation_table.py --data ")
    assert written["seed"] == 1 and written["settings"]["retrain_epochs"] == 6
    assert written["domains"] == ["gcc", "libre"]
    assert {r["row"] for r in written["rows"]} == ROWS
    md = (table["out"] / "table.md").read_text()
    assert written["commit"] in md and "BLEU signature: `nrefs:1|" in md
    for name in ROWS:
        assert re.search(rf"^\| {name}\b", md, re.M), name


def test_every_score_is_sacrebleu_on_the_written_hypotheses(table):
    import sacrebleu

    cwd_rel = os.getcwd()  # the JSON's paths are relative to the working directory
    for row in table["json"]["rows"]:
        for d in ("gcc", "libre"):
            refs = lines(table["data"] / "raw" / f"test.{d}.en-de.de")
            hyps = lines(os.path.join(cwd_rel, row["hypotheses"][d]))
            assert len(hyps) == len(refs) == row["sentences"][d] == 2
            bleu, chrf = row["bleu"][d], row["chrf"][d]
            assert math.isfinite(bleu) and math.isfinite(chrf), (row["row"], d)
            assert bleu == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score), row["row"]
            assert chrf == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score), row["row"]
    sig = table["json"]["signatures"]
    assert sig["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert sig["chrf"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0")
    # trained long enough that hypotheses differ: a mix-up of their order would change a score
    rows = {r["row"]: r for r in table["json"]["rows"]}
    hyps = lines(os.path.join(cwd_rel, rows["baseline"]["hypotheses"]["libre"]))
    assert len(set(hyps)) == len(hyps)


def test_parameters_as_fairseq_counts_them(table):
    rows = {r["row"]: r for r in table["json"]["rows"]}
    out = table["out"]
    for name in ("multi_struct", "multi", "random_1", "random_2"):
        assert rows[name]["params"] == rows[name]["params_from_genotype"]
        assert rows[name]["params"] == logged_params(out / name / "retrain.log")
        assert rows[name]["search_minutes"] is None or rows[name]["search_minutes"] > 0
        assert rows[name]["train_minutes"] > 0
    singles = [logged_params(out / f"single_{d}" / "retrain.log") for d in ("gcc", "libre")]
    assert rows["union"]["params"] == sum(singles)
    assert rows["baseline"]["params"] == logged_params(out / "baseline" / "train.log")


def test_random_rows_are_size_matched(table):
    rows = {r["row"]: r for r in table["json"]["rows"]}
    struct = rows["multi_struct"]
    for name in ("random_1", "random_2"):
        r = rows[name]
        assert r["target_cell_params"] == struct["cell_params"]
        assert (1 - TOLERANCE) * struct["cell_params"] <= r["cell_params"] <= struct["cell_params"]
        # the rest of the model is the same for every genotype: the totals match as closely
        assert (
            struct["params"] - TOLERANCE * struct["cell_params"] <= r["params"] <= struct["params"]
        )
        assert r["derive"].startswith("mdnas-derive ") and "--match-params" in r["derive"]
        # drawn as the LM tables draw (independent cells never matched the gettext genres'
        # struct search, which shared most edges): the genotype file says how it was drawn
        with open(table["out"] / name / "genotype.json", encoding="utf-8") as f:
            assert json.load(f)["derived_by"]["sharing"] == "copied"


def test_baseline_is_fairseqs_transformer_near_the_target(table):
    rows = {r["row"]: r for r in table["json"]["rows"]}
    base, struct = rows["baseline"], rows["multi_struct"]
    assert base["params_target"] == struct["params"]
    # one more FFN unit adds 2 * 32 weights and a bias to each of the 2 layers (130): the
    # nearest width is within half of that of the target
    assert abs(base["params"] - struct["params"]) <= 65
    with open(table["out"] / "baseline" / "train.log", encoding="utf-8") as f:
        command = f.readline()
    assert " --task translation " in command and " --arch transformer " in command
    assert f" --encoder-ffn-embed-dim {base['ffn_embed_dim']} " in command


def test_baseline_data_bin_concatenates_the_domains(table):
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    src = table["data"] / "data-bin"
    merged = table["out"] / "baseline-data"
    for split in ("train", "valid"):
        for lang in ("en", "de"):
            parts = [
                MMapIndexedDataset(str(src / f"{split}.{d}.en-de.{lang}")) for d in ("gcc", "libre")
            ]
            joined = MMapIndexedDataset(str(merged / f"{split}.en-de.{lang}"))
            expected = [p[i].tolist() for p in parts for i in range(len(p))]
            assert [joined[i].tolist() for i in range(len(joined))] == expected
    assert (merged / "dict.en.txt").read_bytes() == (src / "dict.en.txt").read_bytes()


def test_selected_row_is_chosen_by_valid_bleu(table):
    """multi_struct_selected: candidate k searched at seed 1 + 1000 k (k = 0 is multi_struct's
    own search), each retrained briefly at seed 501 and scored on the valid split (recomputed
    here with sacrebleu from the written hypotheses); the best mean valid BLEU's genotype (the
    first of equals) is the row's, retrained and scored on test as every row."""
    import sacrebleu

    rows = {r["row"]: r for r in table["json"]["rows"]}
    row, out = rows["multi_struct_selected"], table["out"] / "multi_struct_selected"
    assert [c["search_seed"] for c in row["candidates"]] == [1, 1001]
    means = []
    for c in row["candidates"]:
        seed = c["search_seed"]
        with open(out / f"search_seed{seed}.log", encoding="utf-8") as f:
            assert f" --seed {seed} " in f.readline() + " "
        with open(out / f"select_seed{seed}.log", encoding="utf-8") as f:
            command = f.readline()
        assert " --seed 501 " in command and " --max-epoch 2 " in command
        hyp_dir = out / f"select_seed{seed}" / "hyp"
        assert sorted(os.listdir(hyp_dir)) == ["valid.gcc.hyp", "valid.libre.hyp"]  # never test
        bleu = {}
        for d in ("gcc", "libre"):
            refs = lines(table["data"] / "raw" / f"valid.{d}.en-de.de")
            bleu[d] = sacrebleu.corpus_bleu(lines(hyp_dir / f"valid.{d}.hyp"), [refs]).score
            assert c["valid_bleu"][d] == pytest.approx(bleu[d])
        means.append(sum(bleu.values()) / 2)
        assert c["valid_bleu_mean"] == pytest.approx(means[-1])
    chosen = row["candidates"][means.index(max(means))]
    assert row["search_seed"] == chosen["search_seed"]
    genotype = (out / "genotype.json").read_text(encoding="utf-8")
    assert genotype == open(chosen["genotype"], encoding="utf-8").read()
    with open(out / "retrain.log", encoding="utf-8") as f:
        assert f" --genotype {out / 'genotype.json'} " in f.readline().rstrip() + " "
    # candidate 0 is multi_struct's search: the same seed and flags give the same genotype
    first = json.loads(open(row["candidates"][0]["genotype"], encoding="utf-8").read())
    struct = json.loads((table["out"] / "multi_struct" / "search" / "genotype.json").read_text())
    assert (first["cells"], first["alpha"]) == (struct["cells"], struct["alpha"])
    spent = sum(c["search_minutes"] + c["selection_minutes"] for c in row["candidates"])
    assert row["search_minutes"] == pytest.approx(spent, abs=0.01)
    assert row["params"] == row["params_from_genotype"] == logged_params(out / "retrain.log")


def test_selection_takes_the_best_mean_valid_bleu(monkeypatch, tmp_path):
    """The choice alone, on made-up candidates: the highest mean valid BLEU, the first of equals,
    its genotype file the one retrained."""
    tt = load_script("translation_table")
    scores = {0: {"a": 10.0, "b": 2.0}, 1: {"a": 3.0, "b": 12.0}, 2: {"a": 12.0, "b": 3.0}}

    def candidate(args, domains, base, coef, k):
        path = os.path.join(base, f"g{k}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"k": k}, f)
        mean = sum(scores[k].values()) / 2
        return {"search_seed": k, "genotype": path, "search_minutes": 1.0,
                "selection_minutes": 0.5, "valid_bleu": scores[k], "valid_bleu_mean": mean}  # fmt: skip

    retrained = []

    def retrain(args, domains, genotype, base):
        with open(genotype, encoding="utf-8") as f:
            retrained.append(json.load(f)["k"])
        return {"params": 1}

    monkeypatch.setattr(tt, "selection_candidate", candidate)
    monkeypatch.setattr(tt, "retrain_and_score", retrain)
    args = Namespace(out=str(tmp_path), selection_searches=3)
    row = tt.selected_row(args, "multi_struct_selected", ["a", "b"], 0.1)
    assert retrained == [1] and row["search_seed"] == 1  # 7.5 (k=1 and k=2): the first
    assert row["search_minutes"] == pytest.approx(4.5)


def split_into_parts(table, tmp_path, parts):
    """The fixture's one-run table written as the runs of ``--rows`` that ``parts`` names would
    have written it (each a table.json of its own rows), in ``tmp_path/part_I``."""
    folders = []
    for i, names in enumerate(parts):
        part = json.loads(json.dumps(table["json"]))
        part["rows"] = [r for r in part["rows"] if r["row"] in names]
        part["settings"]["rows"] = ",".join(names)
        part["settings"]["out"] = f"part_{i}"
        part["command"] += f" --rows {','.join(names)}"
        folder = tmp_path / f"part_{i}"
        folder.mkdir()
        (folder / "table.json").write_text(json.dumps(part), encoding="utf-8")
        folders.append(str(folder))
    return folders


def test_merged_parts_are_the_one_run_table(table, tmp_path):
    """Rows made by two processes side by side (--rows) and merged (--merge) give the table one
    run gives: the same rows in the same order, the same markdown rows, each part's command."""
    parts = [
        ["multi", "union"],
        ["multi_struct", "multi_struct_selected", "random_1", "random_2", "baseline"],
    ]
    folders = split_into_parts(table, tmp_path, parts)
    out = tmp_path / "merged"
    merged = load_script("translation_table").main(["--merge", *folders, "--out", str(out)])
    written = json.loads((out / "table.json").read_text(encoding="utf-8"))
    assert written == merged
    assert written["rows"] == table["json"]["rows"]
    assert written["settings"]["rows"] == ",".join(r["row"] for r in table["json"]["rows"])
    assert [p["rows"] for p in written["parts"]] == parts
    assert written["signatures"] == table["json"]["signatures"]
    one_run = [x for x in lines(table["out"] / "table.md") if x.startswith("|")]
    assert [x for x in lines(out / "table.md") if x.startswith("|")] == one_run
    md = (out / "table.md").read_text(encoding="utf-8")
    for p in written["parts"]:
        assert f"`{p['command']}`" in md


def test_merge_adds_a_row_run_later_with_its_own_settings(table, tmp_path):
    """A row added to an existing table (multi_struct_selected, after the rest was merged): the
    older parts lack its settings or differ in them, which only the part that ran it decides."""
    rest = [r["row"] for r in table["json"]["rows"] if r["row"] != "multi_struct_selected"]
    folders = split_into_parts(table, tmp_path, [rest, ["multi_struct_selected"]])
    paths = [os.path.join(f, "table.json") for f in folders]
    older, added = (json.loads(open(p, encoding="utf-8").read()) for p in paths)
    del older["settings"]["selection_searches"], older["settings"]["selection_epochs"]
    added["settings"]["selection_epochs"] = 5
    for path, part in zip(paths, (older, added)):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(part, f)
    script = load_script("translation_table")
    existing = script.main(["--merge", folders[0], "--out", str(tmp_path / "existing")])
    assert "selection_epochs" not in existing["settings"]  # none of a row's settings without it
    merged = script.main(
        ["--merge", str(tmp_path / "existing"), folders[1], "--out", str(tmp_path / "m")]
    )
    assert merged["rows"] == table["json"]["rows"]
    assert merged["settings"]["selection_epochs"] == 5
    assert merged["settings"]["selection_searches"] == 2
    # the merged table's parts are the runs that made it: the existing table's, then the new one
    assert [p["command"] for p in merged["parts"]] == [older["command"], added["command"]]


def duplicate_multi(part, one_run):
    part["rows"].append(next(r for r in one_run["rows"] if r["row"] == "multi"))


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda part, _: part["settings"].update(retrain_epochs=7), "setting 'retrain_epochs'"),
        (duplicate_multi, "row 'multi' is in"),
        (lambda part, _: part.update(signatures={"bleu": "other"}), "signatures differ"),
    ],
)
def test_merge_refuses_parts_of_different_tables(table, tmp_path, spoil, message):
    folders = split_into_parts(table, tmp_path, [["multi", "union"], ["multi_struct"]])
    path = os.path.join(folders[1], "table.json")
    with open(path, encoding="utf-8") as f:
        part = json.load(f)
    spoil(part, table["json"])
    with open(path, "w", encoding="utf-8") as f:
        json.dump(part, f)
    with pytest.raises(SystemExit, match=message):
        load_script("translation_table").main(["--merge", *folders, "--out", str(tmp_path / "m")])
    assert not (tmp_path / "m").exists()  # nothing written


def test_merge_names_a_folder_without_a_table(tmp_path):
    with pytest.raises(SystemExit, match=r"--merge .*nothing: no table.json"):
        load_script("translation_table").main(
            ["--merge", str(tmp_path / "nothing"), "--out", str(tmp_path / "m")]
        )
