"""Tests of the pictures and the report (mdnas_fairseq.viz): cell diagrams checked against the
hand-built genotype's edges (DOT source and rendered SVG), heatmaps, the alpha history, and the
Markdown report's numbers and degradation when fields, files or Graphviz are missing."""

import json
import os
import re
import shutil
import struct
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest
import torch

from mdnas_fairseq.search import (
    GenotypeEdge,
    MultiDomainGenotype,
    darts_cnn_space,
    darts_rnn_space,
    save_genotype,
)
from mdnas_fairseq.viz import draw, heatmap, history, report
from mdnas_fairseq.viz.common import domain_colors
from mdnas_fairseq.viz.draw import (
    GraphvizNotInstalledError,
    cell_digraph,
    draw_genotype,
    union_digraph,
)

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz `dot` program not installed (apt-get install graphviz)",
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG_NS = "{http://www.w3.org/2000/svg}"

# The hand-built genotype: DARTS RNN cell with 3 nodes (state 0 = input, nodes 1, 2, 3), one
# incoming edge per node. Both domains share tanh on 0->1; they differ on node 2 (relu vs identity
# on 1->2) and on node 3 (sigmoid from state 1 vs sigmoid from state 2). Edges are (input, node, op).
CELLS = {
    "en": [(0, 1, "tanh"), (1, 2, "relu"), (1, 3, "sigmoid")],
    "de": [(0, 1, "tanh"), (1, 2, "identity"), (2, 3, "sigmoid")],
}
# The union enumerated by hand: (input, node, op) -> domains that chose it.
UNION = {
    (0, 1, "tanh"): {"en", "de"},
    (1, 2, "relu"): {"en"},
    (1, 2, "identity"): {"de"},
    (1, 3, "sigmoid"): {"en"},
    (2, 3, "sigmoid"): {"de"},
}
# Union edges (input, node): 0->1, 1->2, 1->3, 2->3; the domains agree only on 0->1.
AGREEMENT_TEXT = "25.0%"
DISTINCT_MODULES = 5
INTERMEDIATE_NODES = (1, 2, 3)


def hand_genotype() -> MultiDomainGenotype:
    cells = {
        d: tuple(GenotypeEdge(node=j, input=i, op=op) for i, j, op in edges)
        for d, edges in CELLS.items()
    }
    return MultiDomainGenotype(darts_rnn_space(num_nodes=3), ("en", "de"), cells)


# ------------------------------------------------------------------------------ DOT parsing
EDGE_LINE = re.compile(r"^\s*(\w+) -> (\w+)(?:\s*\[(.*)\])?\s*$")
NODE_LINE = re.compile(r"^\s*(\w+)\s*\[(.*)\]\s*$")
ATTRIBUTE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|<.*>|[^\s\]]+)')


def parse_attributes(text):
    attrs = {}
    for key, value in ATTRIBUTE.findall(text or ""):
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"')
        attrs[key] = value
    return attrs


def parse_dot(source):
    """(nodes: name -> attrs, edges: list of (tail, head, attrs)) of a DOT source."""
    nodes, edges = {}, []
    for line in source.splitlines():
        m = EDGE_LINE.match(line)
        if m:
            edges.append((m.group(1), m.group(2), parse_attributes(m.group(3))))
            continue
        m = NODE_LINE.match(line)
        if m and m.group(1) not in ("graph", "node", "edge"):
            nodes[m.group(1)] = parse_attributes(m.group(2))
    return nodes, edges


def parse_union_label(label):
    m = re.fullmatch(r"(\w+) \((.*)\)", label)
    assert m, f"union edge label {label!r} is not 'op (domain, ...)'"
    return m.group(1), set(m.group(2).split(", "))


def svg_titles(path):
    """Titles of the node groups and the edge groups of a Graphviz SVG (edge titles as 'a->b')."""
    root = ET.parse(path).getroot()
    nodes, edges = [], []
    for g in root.iter(SVG_NS + "g"):
        title = g.find(SVG_NS + "title")
        if g.get("class") == "node":
            nodes.append(title.text)
        elif g.get("class") == "edge":
            edges.append(title.text)
    return nodes, edges


def png_size(path):
    with open(path, "rb") as f:
        data = f.read(24)
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


# ------------------------------------------------------------------------------ diagrams
def test_domain_cell_graph_has_the_genotype_edges_and_output_edges():
    genotype = hand_genotype()
    colors = domain_colors(genotype.domains)
    for domain, edges in CELLS.items():
        nodes, graph_edges = parse_dot(cell_digraph(genotype, domain).source)
        assert set(nodes) == {"s0", "s1", "s2", "s3", "out"}
        assert "x_t" in nodes["s0"]["label"] and "h_{t-1}" in nodes["s0"]["label"]
        op_edges = [(t, h, a["label"]) for t, h, a in graph_edges if "label" in a]
        assert sorted(op_edges) == sorted((f"s{i}", f"s{j}", op) for i, j, op in edges)
        assert all(a["color"] == colors[domain] for _, _, a in graph_edges if "label" in a)
        out_edges = [(t, h) for t, h, a in graph_edges if "label" not in a]
        assert sorted(out_edges) == sorted((f"s{j}", "out") for j in INTERMEDIATE_NODES)


def test_union_graph_marks_shared_and_domain_specific_ops():
    genotype = hand_genotype()
    colors = domain_colors(genotype.domains)
    assert colors["en"] != colors["de"]
    nodes, graph_edges = parse_dot(union_digraph(genotype).source)
    assert set(nodes) == {"s0", "s1", "s2", "s3", "out"}
    found = {}
    for tail, head, attrs in graph_edges:
        if "label" not in attrs:
            continue
        op, users = parse_union_label(attrs["label"])
        key = (int(tail[1:]), int(head[1:]), op)
        assert key not in found, f"edge {key} drawn twice"
        found[key] = users
        if len(users) > 1:
            assert attrs["style"] == "bold" and attrs["color"] == draw.SHARED_EDGE_COLOR
        else:
            (only,) = users
            assert attrs["color"] == colors[only] and attrs.get("style") != "bold"
    assert found == UNION
    out_edges = sorted((t, h) for t, h, a in graph_edges if "label" not in a)
    assert out_edges == sorted((f"s{j}", "out") for j in INTERMEDIATE_NODES)


def test_conv_cell_has_two_inputs_and_output_only_from_intermediate_nodes():
    space = darts_cnn_space(num_nodes=2)  # inputs 0, 1; nodes 2, 3; two edges per node
    edges = [
        (0, 2, "sep_conv_3x3"),
        (1, 2, "skip_connect"),
        (0, 3, "max_pool_3x3"),
        (2, 3, "dil_conv_3x3"),
    ]
    genotype = MultiDomainGenotype(
        space, ("r0",), {"r0": tuple(GenotypeEdge(j, i, op) for i, j, op in edges)}
    )
    nodes, graph_edges = parse_dot(cell_digraph(genotype, "r0").source)
    assert nodes["s0"]["label"] == "c_{k-2}" and nodes["s1"]["label"] == "c_{k-1}"
    assert sorted((t, h, a["label"]) for t, h, a in graph_edges if "label" in a) == sorted(
        (f"s{i}", f"s{j}", op) for i, j, op in edges
    )
    assert sorted((t, h) for t, h, a in graph_edges if "label" not in a) == [
        ("s2", "out"),
        ("s3", "out"),
    ]


@needs_dot
def test_draw_genotype_renders_valid_png_and_svg_with_the_right_graph(tmp_path):
    genotype = hand_genotype()
    out = tmp_path / "fig"
    written = draw_genotype(genotype, str(out))
    assert set(written) == {"en", "de", "union"}
    expected_files = set()
    for key, paths in written.items():
        assert [os.path.splitext(p)[1] for p in paths] == [".png", ".svg"]
        assert os.path.basename(paths[0]) == f"genotype_{key}.png"
        expected_files |= {os.path.basename(p) for p in paths}
        width, height = png_size(paths[0])
        assert width > 0 and height > 0
        svg_nodes, svg_edges = svg_titles(paths[1])
        assert sorted(svg_nodes) == ["out", "s0", "s1", "s2", "s3"]
        if key == "union":
            op_edges = [(i, j) for i, j, _ in UNION]
        else:
            op_edges = [(i, j) for i, j, _ in CELLS[key]]
        expected_edges = [f"s{i}->s{j}" for i, j in op_edges] + [
            f"s{j}->out" for j in INTERMEDIATE_NODES
        ]
        assert Counter(svg_edges) == Counter(expected_edges)
    # atomic writes leave no temporary files behind
    assert set(os.listdir(out)) == expected_files


@needs_dot
def test_draw_main_with_one_format_and_a_search_directory(tmp_path, capsys):
    genotype = hand_genotype()
    save_genotype(str(tmp_path / "genotype.json"), genotype)
    out = tmp_path / "only_svg"
    assert draw.main([str(tmp_path / "genotype.json"), "--out", str(out), "--format", "svg"]) == 0
    assert sorted(os.listdir(out)) == ["genotype_de.svg", "genotype_en.svg", "genotype_union.svg"]
    for name in os.listdir(out):
        ET.parse(out / name)
    # a search directory stands for its genotype.json; the default output is its figures/ folder
    assert draw.main([str(tmp_path), "--format", "png"]) == 0
    assert sorted(os.listdir(tmp_path / "figures")) == [
        "genotype_de.png",
        "genotype_en.png",
        "genotype_union.png",
    ]
    assert "genotype_union.png" in capsys.readouterr().out


def test_draw_without_dot_raises_a_clear_error(tmp_path, monkeypatch, capsys):
    empty_bin = tmp_path / "empty_bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    with pytest.raises(GraphvizNotInstalledError, match="apt-get install graphviz"):
        draw_genotype(hand_genotype(), str(tmp_path / "fig"))
    save_genotype(str(tmp_path / "genotype.json"), hand_genotype())
    assert draw.main([str(tmp_path / "genotype.json"), "--out", str(tmp_path / "fig")]) == 1
    assert "apt-get install graphviz" in capsys.readouterr().err


def test_draw_main_names_a_missing_genotype_file(tmp_path, capsys):
    missing = tmp_path / "nothing" / "genotype.json"
    assert draw.main([str(missing), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err


# ------------------------------------------------------------------------------ heatmaps
def random_weights(num_domains, space, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(
        torch.randn(num_domains, space.num_edges, space.num_ops, generator=g), dim=-1
    )


def test_save_alpha_heatmaps_one_png_per_domain(tmp_path):
    space = darts_rnn_space(num_nodes=3)
    weights = random_weights(2, space)
    paths = heatmap.save_alpha_heatmaps(weights, space, ["en", "de"], str(tmp_path), epoch=4)
    assert [os.path.basename(p) for p in paths] == ["alpha_en_epoch4.png", "alpha_de_epoch4.png"]
    for p in paths:
        width, height = png_size(p)
        assert width > 100 and height > 100
    # a nested list and the genotype file's {domain: weights} mapping work as well
    listed = heatmap.save_alpha_heatmaps(
        weights.tolist(), space, ["en", "de"], str(tmp_path / "list")
    )
    mapped = heatmap.save_alpha_heatmaps(
        {"de": weights[1].tolist(), "en": weights[0].tolist()},
        space,
        ["en", "de"],
        str(tmp_path / "map"),
    )
    assert (
        [os.path.basename(p) for p in listed]
        == [os.path.basename(p) for p in mapped]
        == ["alpha_en.png", "alpha_de.png"]
    )
    assert sorted(os.listdir(tmp_path)) == [
        "alpha_de_epoch4.png",
        "alpha_en_epoch4.png",
        "list",
        "map",
    ]


def test_heatmap_figure_labels_and_annotations():
    space = darts_rnn_space(num_nodes=3)
    weights = random_weights(1, space, seed=3)[0].numpy()
    fig = heatmap.alpha_heatmap_figure(weights, space, "title")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "0->1",
        "0->2",
        "1->2",
        "0->3",
        "1->3",
        "2->3",
    ]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "none",
        "tanh",
        "relu",
        "sigmoid",
        "identity",
    ]
    annotations = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts
    }
    assert annotations == {(e, k): f"{weights[e, k]:.2f}" for e in range(6) for k in range(5)}


def test_heatmap_rejects_wrong_shapes_and_non_softmax_rows(tmp_path):
    space = darts_rnn_space(num_nodes=3)
    with pytest.raises(ValueError, match=r"shape \(2, 5, 5\)"):
        heatmap.save_alpha_heatmaps(torch.full((2, 5, 5), 0.2), space, ["en", "de"], str(tmp_path))
    with pytest.raises(ValueError, match="no weights for domain"):
        heatmap.save_alpha_heatmaps(
            {"en": random_weights(1, space)[0].tolist()}, space, ["en", "de"], str(tmp_path)
        )
    logits = torch.randn(2, 6, 5) * 3
    with pytest.raises(ValueError, match="from_logits=True"):
        heatmap.save_alpha_heatmaps(logits, space, ["en", "de"], str(tmp_path))
    assert (
        len(
            heatmap.save_alpha_heatmaps(
                logits, space, ["en", "de"], str(tmp_path), from_logits=True
            )
        )
        == 2
    )


def write_history(path, epochs_weights):
    with open(path, "w", encoding="utf-8") as f:
        for epoch, alpha in epochs_weights:
            f.write(
                json.dumps({"epoch": epoch, "alpha": alpha, "metrics": {"loss": 1.0 / epoch}})
                + "\n"
            )


def test_alpha_history_means_and_plot(tmp_path):
    # two edges, three operations; the mean over edges is computed by hand below
    epochs = [
        (2, {"en": [[0.2, 0.3, 0.5], [0.4, 0.5, 0.1]], "de": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]}),
        (1, {"en": [[0.6, 0.2, 0.2], [0.2, 0.2, 0.6]], "de": [[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]]}),
    ]
    path = tmp_path / "alpha_history.jsonl"
    write_history(path, epochs)
    entries = history.read_alpha_history(str(path))
    assert [e["epoch"] for e in entries] == [1, 2]
    domains, series = history.alpha_history_series(entries)
    assert domains == ["en", "de"]
    epochs, means = series["en"]
    assert epochs == [1, 2]
    np.testing.assert_allclose(means, [[0.4, 0.2, 0.4], [0.3, 0.4, 0.3]])
    np.testing.assert_allclose(series["de"][1], [[0.5, 0.25, 0.25], [0.5, 0.5, 0.0]])
    out = history.plot_alpha_history(
        str(path), str(tmp_path / "fig" / "history.png"), operations=["a", "b", "c"]
    )
    width, height = png_size(out)
    assert width > 100 and height > 100


def test_alpha_history_names_the_bad_line_and_field(tmp_path):
    path = tmp_path / "alpha_history.jsonl"
    path.write_text(
        json.dumps({"epoch": 1, "alpha": {"en": [[1.0]]}}) + "\n" + json.dumps({"epoch": 2}) + "\n"
    )
    with pytest.raises(ValueError, match=r"line 2: missing field 'alpha'"):
        history.read_alpha_history(str(path))
    with pytest.raises(FileNotFoundError, match="alpha history file not found"):
        history.read_alpha_history(str(tmp_path / "absent.jsonl"))


# ------------------------------------------------------------------------------ report
PARAM_COUNTS = {"domains": {"en": 41234, "de": 42345}, "multimodel": 47890}
SUM_OF_DOMAINS = 41234 + 42345
METRICS = {"loss": 4.8125, "ppl_en": 123.456, "js": 0.0421}
SETTINGS = {
    "arch": "mdnas_rnn_tiny",
    "domains": ["en", "de"],
    "struct_coef": 0.25,
    "contrastive_coef": 0.5,
    "alpha_order": "second",
    "lr": 20.0,
    "seed": 7,
}


def write_search_dir(directory, with_extras=True):
    genotype = hand_genotype()
    space = genotype.space
    os.makedirs(directory, exist_ok=True)
    if not with_extras:
        save_genotype(os.path.join(directory, "genotype.json"), genotype)
        return genotype
    history = []
    for epoch in (11, 12):
        weights = random_weights(2, space, seed=epoch)
        alpha = {"en": weights[0].tolist(), "de": weights[1].tolist()}
        extra = {
            "epoch": epoch,
            "alpha": alpha,
            "param_counts": PARAM_COUNTS,
            "metrics": METRICS,
            "settings": SETTINGS,
        }
        save_genotype(
            os.path.join(directory, "genotypes", f"genotype_epoch{epoch}.json"), genotype, extra
        )
        history.append((epoch, alpha))
    save_genotype(os.path.join(directory, "genotype.json"), genotype, extra)
    write_history(os.path.join(directory, "alpha_history.jsonl"), history)
    return genotype


def section(text, heading):
    start = text.index(heading)
    rest = text[start + len(heading) :]
    following = re.search(r"^#{1,3} ", rest, flags=re.M)
    return rest[: following.start()] if following else rest


def linked_files(text, report_dir):
    return [os.path.join(report_dir, target) for target in re.findall(r"\]\(([^)]+)\)", text)]


@needs_dot
def test_report_contains_the_numbers_tables_and_pictures(tmp_path):
    search_dir = str(tmp_path / "search")
    write_search_dir(search_dir)
    path = report.write_report(search_dir)
    assert path == os.path.join(search_dir, "report.md")
    text = open(path, encoding="utf-8").read()

    assert "epoch 12" in text
    for number in PARAM_COUNTS["domains"].values():
        assert str(number) in section(text, "## Parameter counts")
    assert f"**{PARAM_COUNTS['multimodel']}**" in text
    assert str(SUM_OF_DOMAINS) in text
    assert f"**{AGREEMENT_TEXT}**" in text and "**1 of 4**" in text
    assert f"**{DISTINCT_MODULES}** distinct (edge, op) modules" in text
    for name, value in METRICS.items():
        assert f"| {name} | {value} |" in text
    settings = section(text, "## Settings")
    assert "| arch | mdnas_rnn_tiny |" in settings and "| struct_coef | 0.25 |" in settings
    assert "| domains | en, de |" in settings and "| seed | 7 |" in settings

    for domain, edges in CELLS.items():
        table = section(text, f"### Domain {domain}")
        rows = re.findall(r"^\| (\d+) \| (\d+)[^|]* \| `(\w+)` \|$", table, flags=re.M)
        assert sorted((int(i), int(j), op) for j, i, op in rows) == sorted(edges)
    union = section(text, "## Concordant union")
    rows = re.findall(
        r"^\| (\d+) \| (\d+)[^|]* \| `(\w+)` \| ([^|]+) \| ([\w-]+) \|$", union, flags=re.M
    )
    parsed = {
        (int(i), int(j), op): (set(users.strip().split(", ")), kind)
        for j, i, op, users, kind in rows
    }
    assert {k: v[0] for k, v in parsed.items()} == UNION
    assert all(
        kind == ("shared" if len(users) > 1 else "domain-specific")
        for users, kind in parsed.values()
    )

    epochs = section(text, "## Over the epochs")
    assert re.search(r"^\| 11 \| 25\.0% \(1/4\) \| 5 \| 47890 \|$", epochs, flags=re.M)
    assert re.search(r"^\| 12 \| 25\.0% \(1/4\) \| 5 \| 47890 \|$", epochs, flags=re.M)

    links = linked_files(text, search_dir)
    names = {os.path.basename(p) for p in links}
    assert {
        "genotype_union.png",
        "genotype_en.svg",
        "alpha_en.png",
        "alpha_de.png",
        "alpha_history.png",
    } <= names
    for p in links:
        assert os.path.isfile(p), f"report links to missing file {p}"
        if p.endswith(".png"):
            assert png_size(p)[0] > 0
    assert "Not available" not in text and "not drawn" not in text


@needs_dot
def test_report_console_main_and_report_elsewhere(tmp_path, capsys):
    search_dir = str(tmp_path / "search")
    write_search_dir(search_dir)
    assert report.main([search_dir]) == 0
    assert capsys.readouterr().out.strip() == os.path.join(search_dir, "report.md")
    assert "47890" in open(os.path.join(search_dir, "report.md"), encoding="utf-8").read()
    other = tmp_path / "elsewhere" / "r.md"
    assert report.main([search_dir, "--out", str(other)]) == 0
    text = other.read_text(encoding="utf-8")
    links = linked_files(text, str(other.parent))
    assert links and all(os.path.isfile(p) for p in links)


def test_report_without_extra_fields_says_what_is_missing(tmp_path):
    search_dir = str(tmp_path / "search")
    write_search_dir(search_dir, with_extras=False)
    text = open(report.write_report(search_dir), encoding="utf-8").read()
    for field in ("epoch", "param_counts", "metrics", "settings", "alpha"):
        assert f"field `{field}`" in text, f"report does not say that {field!r} is missing"
    assert "`alpha_history.jsonl` is missing" in text
    assert f"**{AGREEMENT_TEXT}**" in text and f"**{DISTINCT_MODULES}** distinct" in text
    for op in ("tanh", "relu", "identity", "sigmoid"):
        assert f"`{op}`" in text


def test_report_without_dot_says_so_and_still_draws_heatmaps(tmp_path, monkeypatch):
    search_dir = str(tmp_path / "search")
    write_search_dir(search_dir)
    empty_bin = tmp_path / "empty_bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    text = open(report.write_report(search_dir), encoding="utf-8").read()
    assert "Cell diagrams not drawn" in text and "apt-get install graphviz" in text
    assert os.path.isfile(os.path.join(search_dir, "figures", "alpha_en.png"))
    assert "47890" in text


def test_report_main_names_a_missing_genotype_file(tmp_path, capsys):
    (tmp_path / "empty_search").mkdir()
    assert report.main([str(tmp_path / "empty_search")]) == 1
    err = capsys.readouterr().err
    assert (
        os.path.join(str(tmp_path / "empty_search"), "genotype.json") in err and "not found" in err
    )
