"""Every table of figures in README.md and docs/*.md is what its results file says.

scripts/render_results.py rewrites the tables between ``<!-- render: NAME -->`` markers from the
results files under results/. These tests fail when a rendered table differs from its file (a
number typed or edited by hand, a results file changed without rendering), check the rendered
figures against the JSON values read here directly (not through the renderer), and check the
extension renderer (issue 24's tables, not committed yet) on a small fixture against the table
scripts/extend_table.py itself writes.
"""

import argparse
import glob
import json
import os
import re

import numpy as np
import pytest

from tests.helpers.fairseq_runs import ROOT, load_script

render = load_script("render_results")
FIXTURE = os.path.join(ROOT, "tests", "unit", "fixtures", "extend_table.json")
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
FIGURE = re.compile(r"\d\.\d\d\b|\d,\d{3}\b")  # 12.34, 1,234: a measured figure, not a flag value


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def rendered_blocks(text):
    return {m.group("name"): m.group("body") for m in render.MARKER.finditer(text)}


def table_rows(body):
    """The cells of a markdown table's body rows (header and rule dropped)."""
    rows = [line for line in body.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_rendered_tables_equal_their_results_files(page):
    text = read(page)
    new, names = render.render(text)
    stale = [
        name
        for name, old_body in rendered_blocks(text).items()
        if rendered_blocks(new)[name] != old_body
    ]
    assert not stale, (
        f"{os.path.relpath(page, ROOT)}: tables {stale} differ from their results files; "
        "run python scripts/render_results.py"
    )


def test_check_mode_fails_on_an_edited_figure(tmp_path):
    """The command-line check the Makefile and readers use: exit 0 on the committed README, exit 1
    once one figure of a rendered table is changed by hand."""
    readme = read(os.path.join(ROOT, "README.md"))
    good = tmp_path / "README.md"
    good.write_text(readme, encoding="utf-8")
    assert render.main(["--check", str(good)]) == 0
    body = rendered_blocks(readme)["demo"]
    figure = FIGURE.search(body).group(0)
    edited = body.replace(figure, figure[:-1] + str((int(figure[-1]) + 1) % 10), 1)
    bad = tmp_path / "stale.md"
    bad.write_text(readme.replace(body, edited), encoding="utf-8")
    assert render.main(["--check", str(bad)]) == 1
    assert render.main([str(bad)]) == 0  # rendering repairs it
    assert bad.read_text(encoding="utf-8") == readme


def test_every_figure_table_is_rendered():
    """A markdown table outside the markers may hold no measured figure (x.yz, 1,234): those
    belong to a results file. Flag tables and the like are free."""
    loose = []
    for page in PAGES:
        text = render.MARKER.sub("", read(page))
        for line in text.splitlines():
            if line.startswith("|") and FIGURE.search(re.sub(r"`[^`]*`", "", line)):
                loose.append(f"{os.path.relpath(page, ROOT)}: {line[:80]}")
    assert not loose, "tables of figures typed by hand:\n" + "\n".join(loose)


def test_demo_table_shows_the_results_file_figures():
    """The README's demo table, read back cell by cell, against results/demo/table.json read
    here (perplexities to 2 decimals, parameters exactly)."""
    data = json.load(open(os.path.join(ROOT, "results", "demo", "table.json"), encoding="utf-8"))
    for field in ("command", "commit", "seed", "date"):
        assert data.get(field), f"results/demo/table.json lacks its {field}"
    body = rendered_blocks(read(os.path.join(ROOT, "README.md")))["demo"]
    rows = {r[0]: r for r in table_rows(body)}
    assert set(rows) == {r["model"] for r in data["rows"]}
    for r in data["rows"]:
        cells = rows[r["model"]]
        for i, d in enumerate(("en", "de")):
            want = f"{r['test_ppl'][d]:.2f}" if d in r["test_ppl"] else "-"
            assert cells[1 + i] == want
        assert int(cells[3].replace(",", "")) == r["params"]


def test_random_rows_show_mean_std_and_best():
    data = json.load(
        open(os.path.join(ROOT, "results", "lm_random", "seed2.json"), encoding="utf-8")
    )
    rand = next(r for r in data["rows"] if r["model"] == "random")
    text = render.TABLES["lm-random"]()
    row = next(r for r in table_rows(text) if r[0] == "2" and r[1].startswith("random"))
    mean, std, best = map(float, re.findall(r"[\d.]+", row[2].replace(",", "")))
    assert (mean, std, best) == (
        round(rand["test_ppl"]["en"], 2),
        round(rand["test_ppl_std"]["en"], 2),
        rand["test_ppl_best"]["en"],
    )


def test_extend_renderer_reproduces_the_extend_table_figures(tmp_path, monkeypatch):
    """On a small table.json in scripts/extend_table.py's format, the rendered table holds the
    same perplexities, sizes and times as the table.md extend_table.py writes itself."""
    data = json.load(open(FIXTURE, encoding="utf-8"))
    target = tmp_path / "results" / "extend" / "mdnas_rnn_tiny" / "seed1"
    target.mkdir(parents=True)
    (target / "table.json").write_text(json.dumps(data), encoding="utf-8")
    monkeypatch.setattr(render, "ROOT", str(tmp_path))
    ours = render.TABLES["extend"]()
    settings = data["settings"]
    args = argparse.Namespace(
        out=str(tmp_path),
        base_langs=settings["base_langs"],
        new_langs=settings["new_langs"],
        arch=settings["arch"],
        seed=settings["seed"],
    )
    theirs = load_script("extend_table").write_table(args, [], data)
    ours_rows, theirs_rows = table_rows(ours), table_rows(theirs)
    assert [r[0] for r in ours_rows] == [r["row"] for r in data["rows"]]
    assert len(ours_rows) == len(theirs_rows)
    for o, t in zip(ours_rows, theirs_rows):
        # extend_table.py: row | data-bin | ppl... | params | search s | retrain s
        # rendered:        row | model    | ppl... | params | search s | retrain s
        assert o[0] == t[0] and o[2:] == t[2:]
    assert f"{data['params_added']:,}" in ours


def test_extend_renderer_without_results_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "ROOT", str(tmp_path))
    text = render.TABLES["extend"]()
    assert "No extension results" in text and "|" not in text


def test_extend_summary_holds_the_tables_new_language_figures(tmp_path, monkeypatch):
    """The README's one-line-per-table summary: each new language's perplexity of the extended,
    joint, union and size-matched rows, the parameters added and the minutes, from table.json."""
    data = json.load(open(FIXTURE, encoding="utf-8"))
    target = tmp_path / "results" / "extend" / "mdnas_rnn_tiny" / "seed1"
    target.mkdir(parents=True)
    (target / "table.json").write_text(json.dumps(data), encoding="utf-8")
    monkeypatch.setattr(render, "ROOT", str(tmp_path))
    (row,) = table_rows(render.TABLES["extend-summary"]())
    by = {r["row"]: r for r in data["rows"]}
    assert row[0] == "mdnas_rnn_tiny, seed 1"
    ppl = [float(x) for x in row[1].split(" / ")]
    assert ppl == [
        by[name]["test_ppl"]["fr"] for name in ("extended", "joint", "union", "single_fr_sized")
    ]
    assert row[2] == f"{data['params_added']:,} of {by['joint']['params']:,}"
    ext_min = (by["extended"]["search_seconds"] + by["extended"]["retrain_seconds"]) / 60
    joint_min = (by["joint"]["search_seconds"] + by["joint"]["retrain_seconds"]) / 60
    assert row[3] == f"{ext_min:.0f} / {joint_min:.0f}"
    assert row[4] == ("yes" if data["old_equal"] else "NO")


def real_table_fixture():
    """A small table.json in scripts/lm_pipeline.py --protocol real's format (figures invented)."""
    domains = ["en", "de"]
    runs = [{"en": 210.0, "de": 250.0}, {"en": 200.0, "de": 262.0}, {"en": 221.0, "de": 247.0}]
    mean = {d: float(np.mean([r[d] for r in runs])) for d in domains}
    rows = [
        {
            "model": "single_en",
            "domains": ["en"],
            "test_ppl": {"en": 230.5},
            "params": 1000,
            "search_seconds": 60.0,
            "retrain_seconds": 30.0,
        },
        {
            "model": "union",
            "domains": domains,
            "test_ppl": {"en": 230.5, "de": 270.25},
            "params": 2000,
            "search_seconds": 240.0,
            "retrain_seconds": 60.0,
        },
        {
            "model": "multi_struct",
            "domains": domains,
            "test_ppl": {"en": 199.5, "de": 240.75},
            "params": 1500,
            "search_seconds": 600.0,
            "retrain_seconds": 120.0,
        },
        {
            "model": "random",
            "domains": domains,
            "test_ppl": mean,
            "params": 1500,
            "test_ppl_std": {d: float(np.std([r[d] for r in runs], ddof=1)) for d in domains},
            "test_ppl_best": {d: min(r[d] for r in runs) for d in domains},
            "runs": [{"test_ppl": r, "params": 1500} for r in runs],
            "retrain_seconds": 360.0,
        },
        {
            "model": "baseline",
            "arch": "lstm_lm",
            "domains": domains,
            "test_ppl": {"en": 205.0, "de": 251.0},
            "params": 1490,
            "retrain_seconds": 100.0,
        },
        {
            "model": "perturbation",
            "domains": domains,
            "test_ppl": {"en": 210.0, "de": 250.0},
            "params": 1500,
            "reference": "multi_struct",
            "selection_seconds": 90.0,
            "retrain_seconds": 150.0,
        },
    ]
    protocol = {"name": "real", "space": "rnn"}
    return {
        "command": "x",
        "commit": "abc1234",
        "date": "2026-12-05",
        "protocol": protocol,
        "settings": {"seed": 1},
        "rows": rows,
    }, runs


def test_real_verdict_margin_is_the_random_averages_z(tmp_path, monkeypatch):
    """The verdict's margin: (mean - searched) / std of the random genotypes' perplexity averaged
    over the domains (numpy here, over the runs of the file), the union's and baseline's averages."""
    data, runs = real_table_fixture()
    target = tmp_path / "results" / "real" / "L" / "rnn" / "seed1"
    target.mkdir(parents=True)
    (target / "table.json").write_text(json.dumps(data), encoding="utf-8")
    monkeypatch.setattr(render, "ROOT", str(tmp_path))
    averages = [np.mean(list(r.values())) for r in runs]
    searched = np.mean([199.5, 240.75])
    z = (np.mean(averages) - searched) / np.std(averages, ddof=1)
    row, perturbation = table_rows(render.TABLES["real-verdict"]())
    assert row[0] == "L, rnn, seed1" and row[1] == "multi_struct"
    assert row[2] == f"{searched:,.2f} (1,500)"
    assert row[3].startswith(f"{np.mean(averages):,.2f} ± {np.std(averages, ddof=1):,.2f}")
    assert row[4] == f"{z:+.2f}"
    assert row[5] == f"{np.mean([230.5, 270.25]):,.2f} (2,000)"
    assert row[6] == f"{np.mean([205.0, 251.0]):,.2f} (1,490)"
    assert row[7] == "12"  # (600 + 120) s
    # the perturbation selection reuses multi_struct's search: (600 + 90 + 150) s
    assert perturbation[1] == "perturbation" and perturbation[7] == "14"
    full = table_rows(render.TABLES["real"]())
    assert [r[0] for r in full][:3] == ["single_en", "union", "multi_struct"]
    assert [r[-1] for r in full] == ["2", "5", "12", "6", "2", "14"]


def test_real_renderers_without_results_say_so(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "ROOT", str(tmp_path))
    for name in ("real", "real-verdict"):
        text = render.TABLES[name]()
        assert "No real-scale results" in text and "|" not in text


def test_translation_verdict_leads_are_struct_minus_each_row(tmp_path, monkeypatch):
    """Issue 27's goal table: per domain the struct row's BLEU, every other row's BLEU with the
    struct row's lead over it, the random rows as their mean (numpy here); parameters; minutes."""
    bleu = {
        "multi_struct": [30.0, 10.5],
        "baseline": [29.25, 11.0],
        "union": [31.5, 9.0],
        "multi": [30.5, 10.0],
        "random_1": [28.0, 9.5],
        "random_2": [27.0, 10.25],
    }
    params = {"multi_struct": 600, "baseline": 610, "union": 900, "multi": 800}
    params.update(random_1=590, random_2=596)
    rows = [
        {
            "row": name,
            "bleu": dict(zip(("gcc", "wesnoth"), b)),
            "params": params[name],
            "search_minutes": None if name.startswith(("random", "baseline")) else 3.5,
            "train_minutes": 6.0,
        }
        for name, b in bleu.items()
    ]
    path = "results/translation/x/table.json"
    (tmp_path / "results" / "translation" / "x").mkdir(parents=True)
    data = {"domains": ["gcc", "wesnoth"], "rows": rows, "commit": "abc", "seed": 1}
    (tmp_path / path).write_text(json.dumps(data), encoding="utf-8")
    monkeypatch.setattr(render, "ROOT", str(tmp_path))
    text = render.translation_verdict(path)
    head = [c.strip() for c in text.splitlines()[0].strip("|").split("|")]
    assert head == [
        "BLEU", "multi_struct", "fairseq transformer", "union (one model per genre)", "multi",
        "random (mean of 2)",
    ]  # fmt: skip
    body = table_rows(text)
    random_mean = np.mean([bleu["random_1"], bleu["random_2"]], axis=0)
    for i, domain in enumerate(("gcc", "wesnoth")):
        struct = bleu["multi_struct"][i]
        others = [bleu[n][i] for n in ("baseline", "union", "multi")] + [random_mean[i]]
        assert body[i] == [domain, f"{struct:.2f}"] + [
            f"{o:.2f} ({struct - o:+.2f})" for o in others
        ]
    means = {n: np.mean(b) for n, b in bleu.items()}
    means["random"] = np.mean(random_mean)
    lead = [f"{means[n]:.2f} ({means['multi_struct'] - means[n]:+.2f})" for n in
            ("baseline", "union", "multi", "random")]  # fmt: skip
    assert body[2] == ["mean", f"{means['multi_struct']:.2f}", *lead]
    assert body[3] == ["params", "600", "610", "900", "800", "593"]
    assert body[4] == ["minutes (search + train)", "10", "6", "10", "10", "6"]
    assert "`results/translation/x/table.json`" in text
    # the selected struct row (chosen among searches): compared with every row, multi_struct too
    rows.append(dict(rows[0], row="multi_struct_selected", bleu={"gcc": 33.0, "wesnoth": 9.0}))
    (tmp_path / path).write_text(json.dumps(data), encoding="utf-8")
    text = render.translation_verdict(path, "multi_struct_selected")
    head = [c.strip() for c in text.splitlines()[0].strip("|").split("|")]
    assert head[1] == "multi_struct_selected" and head[5] == "multi_struct"
    assert table_rows(text)[0][5] == f"30.00 ({33.0 - 30.0:+.2f})"
    assert "multi_struct_selected" not in render.translation_verdict(path)


def test_translation_candidates_lists_each_tables_choice(tmp_path, monkeypatch):
    """The selected row's candidates per table: their search seeds and mean valid BLEU in the
    order searched, and the seed the row recorded as chosen."""
    paths = []
    for seed, means, chosen in ((1, [4.581, 4.2], 1), (2, [3.0, 4.57, 4.05], 1002)):
        cands = [
            {"search_seed": seed + 1000 * k, "valid_bleu_mean": m} for k, m in enumerate(means)
        ]
        row = {"row": "multi_struct_selected", "candidates": cands, "search_seed": chosen}
        path = f"results/translation/x/seed{seed}.json"
        (tmp_path / "results" / "translation" / "x").mkdir(parents=True, exist_ok=True)
        data = {"rows": [{"row": "multi"}, row], "commit": "abc", "seed": seed}
        (tmp_path / path).write_text(json.dumps(data), encoding="utf-8")
        paths.append(path)
    monkeypatch.setattr(render, "ROOT", str(tmp_path))
    body = table_rows(render.translation_candidates(paths))
    assert body == [
        ["1", "1, 1001", "4.58, 4.20", "1"],
        ["2", "2, 1002, 2002", "3.00, 4.57, 4.05", "1002"],
    ]
