"""scripts/translation_table.py end to end at a tiny size (issue 27, item 4).

References are independent of the code under test: the TSV is written here, the references are
read from the raw text mdnas-prepare kept, the scores are recomputed with sacrebleu from the
hypotheses the script wrote, and the parameter counts are the ones fairseq-train logged.
"""

import json
import math
import os
import re

import pytest

from tests.helpers.fairseq_runs import load_script
from tests.integration.test_translation_prepare import write_tsv

SIZES = [
    "--encoder-layers", "1", "--decoder-layers", "1", "--embed-dim", "32",
    "--ffn-embed-dim", "64", "--attention-heads", "2", "--conv-kernel-sizes", "3",
]  # fmt: skip
TOLERANCE = 0.02
ROWS = {"multi_struct", "multi", "random_1", "random_2", "union", "baseline"}
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
        "--match-tolerance", str(TOLERANCE), "--search-flags=--no-alpha-heatmaps", "--", *SIZES,
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
    parts = [["multi", "union"], ["multi_struct", "random_1", "random_2", "baseline"]]
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
