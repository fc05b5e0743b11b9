"""scripts/extend_table.py end to end at a tiny size (issue 24, item 6): base en,de, new fr."""

import json
import math
import os

from tests.helpers.fairseq_runs import EMBEDDED_3, RNN_TEST_SIZES, load_script


def short_rows_tsv(path, rows=150):
    """The first ``rows`` rows of the embedded corpus with at most 12 words per text."""
    kept = []
    with open(EMBEDDED_3, encoding="utf-8") as f:
        header = f.readline()
        for line in f:
            if all(len(x.split()) <= 12 for x in line.rstrip("\n").split("\t")):
                kept.append(line)
            if len(kept) == rows:
                break
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + "".join(kept))


def test_extend_table_end_to_end(tmp_path):
    tsv = str(tmp_path / "tiny.tsv")
    short_rows_tsv(tsv)
    out = str(tmp_path / "table")
    load_script("extend_table").main(
        [
            "--tsv",
            tsv,
            "--base",
            "en,de",
            "--new",
            "fr",
            "--out",
            out,
            "--arch",
            "mdnas_rnn_tiny",
            "--search-epochs",
            "1",
            "--retrain-epochs",
            "1",
            "--vocab-size",
            "100",
            "--single-widths",
            "4,8,16,32",
            "--",
            *RNN_TEST_SIZES,
        ]
    )
    with open(os.path.join(out, "table.json"), encoding="utf-8") as f:
        table = json.load(f)
    rows = {r["row"]: r for r in table["rows"]}
    assert {"base", "extended", "joint", "union", "single_fr_sized"} <= set(rows)
    base, ext = rows["base"], rows["extended"]
    for lang in ("en", "de"):
        assert ext["test_ppl"][lang] == base["test_ppl"][lang]
    assert table["old_equal"] is True
    assert set(rows["joint"]["test_ppl"]) == set(rows["union"]["test_ppl"]) == {"en", "de", "fr"}
    for row in table["rows"]:
        assert all(math.isfinite(p) for p in row["test_ppl"].values()), row["row"]
    assert ext["params_added"] == table["params_added"] == ext["params"] - base["params"] > 0
    sized = rows["single_fr_sized"]
    assert sized["params_target"] == table["params_added"]
    best = min(sized["widths_tried"], key=lambda t: abs(t["params"] - table["params_added"]))
    assert sized["params"] == best["params"]
    assert ext["search_seconds"] > 0 and ext["retrain_seconds"] > 0
    assert table["commit"] and table["seed"] == 1
    with open(os.path.join(out, "table.md"), encoding="utf-8") as f:
        md = f.read()
    assert "Extension loses to the joint run on" in md and "same tokens" in md
    # every row is scored on the same test tokens (one dictionary): per-token perplexities compare
    for lang in ("en", "de", "fr"):
        counts = {
            r["row"]: r["test_tokens"][lang] for r in table["rows"] if lang in r["test_tokens"]
        }
        assert len(set(counts.values())) == 1, (lang, counts)
