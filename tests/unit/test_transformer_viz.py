"""Pictures of a Transformer genotype: the chain diagram (slot labels, one output edge from the last
slot, the union's shared and per-domain modules) and heatmaps that leave disallowed operations blank."""

import numpy as np
import torch

from mdnas_fairseq.search import GenotypeEdge, MultiDomainGenotype, transformer_lm_space
from mdnas_fairseq.viz import heatmap
from mdnas_fairseq.viz.draw import cell_digraph, union_digraph
from tests.unit.test_viz import parse_dot, parse_union_label

E = GenotypeEdge
SPACE = transformer_lm_space(2, (3,))
CELLS = {
    "en": (E(1, 0, "attention"), E(2, 1, "ffn_relu"), E(3, 2, "dwconv_3"), E(4, 3, "ffn_gelu")),
    "de": (
        E(1, 0, "attention"),
        E(2, 1, "ffn_sqrelu"),
        E(3, 2, "lightconv_3"),
        E(4, 3, "ffn_gelu"),
    ),
}


def test_chain_diagrams_label_the_slots_and_feed_the_output_from_the_last_slot():
    g = MultiDomainGenotype(SPACE, ("en", "de"), CELLS)
    nodes, edges = parse_dot(cell_digraph(g, "de").source)
    assert "embeddings + positions" in nodes["s0"]["label"]
    assert [nodes[f"s{j}"]["label"] for j in (1, 4)] == [
        "1: layer 1, token mixing",
        "4: layer 2, channel mixing",
    ]
    assert sorted((t, h, a["label"]) for t, h, a in edges if "label" in a) == sorted(
        (f"s{e.input}", f"s{e.node}", e.op) for e in CELLS["de"]
    )
    assert [(t, h) for t, h, a in edges if "label" not in a] == [("s4", "out")]
    _, union_edges = parse_dot(union_digraph(g).source)
    labelled = {
        (t, h) + (parse_union_label(a["label"])[0],): parse_union_label(a["label"])[1]
        for t, h, a in union_edges
        if "label" in a
    }
    assert labelled == {
        ("s0", "s1", "attention"): {"en", "de"},
        ("s1", "s2", "ffn_relu"): {"en"},
        ("s1", "s2", "ffn_sqrelu"): {"de"},
        ("s2", "s3", "dwconv_3"): {"en"},
        ("s2", "s3", "lightconv_3"): {"de"},
        ("s3", "s4", "ffn_gelu"): {"en", "de"},
    }


def test_heatmap_leaves_disallowed_operations_blank():
    mask = np.asarray(SPACE.allowed_mask())
    logits = torch.randn(SPACE.num_edges, SPACE.num_ops).masked_fill(
        ~torch.tensor(mask), float("-inf")
    )
    weights = torch.softmax(logits, -1).numpy()
    ax = heatmap.alpha_heatmap_figure(weights, SPACE, "t").axes[0]
    annotations = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts
    }
    assert annotations == {
        (e, k): f"{weights[e, k]:.2f}"
        for e in range(SPACE.num_edges)
        for k in range(SPACE.num_ops)
        if mask[e, k]
    }
    shown = ax.images[0].get_array()
    assert np.array_equal(np.ma.getmaskarray(shown), ~mask)
