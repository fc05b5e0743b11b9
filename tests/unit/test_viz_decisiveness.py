"""The report's decisiveness section and plot (mdnas_fairseq.viz): per-epoch entropy and margin of
softmax(alpha) per domain from alpha_history.jsonl, checked against values worked by hand."""

import json
import math
import os
import re
import struct

import numpy as np
import pytest

from mdnas_fairseq.search import GenotypeEdge, MultiDomainGenotype, darts_rnn_space, save_genotype
from mdnas_fairseq.viz import history, report

SPACE = darts_rnn_space(1)  # one edge (0,1); ops none, tanh, relu, sigmoid, identity
# epoch -> domain -> the single edge's weights, and the hand values (entropy in nats, margin w/o none)
HISTORY = {
    1: {"en": [0.2, 0.2, 0.2, 0.2, 0.2], "de": [0.5, 0.5, 0.0, 0.0, 0.0]},
    2: {"en": [0.0, 0.7, 0.1, 0.1, 0.1], "de": [0.6, 0.1, 0.25, 0.05, 0.0]},
}
HAND = {
    (1, "en"): (math.log(5), 0.0),
    (1, "de"): (math.log(2), 0.5),
    (2, "en"): (-(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1)), 0.6),
    (2, "de"): (
        -(
            0.6 * math.log(0.6)
            + 0.1 * math.log(0.1)
            + 0.25 * math.log(0.25)
            + 0.05 * math.log(0.05)
        ),
        0.15,
    ),
}


def write_dir(directory, history=True):
    cell = (GenotypeEdge(node=1, input=0, op="tanh"),)
    genotype = MultiDomainGenotype(SPACE, ("en", "de"), {"en": cell, "de": cell})
    save_genotype(os.path.join(directory, "genotype.json"), genotype)
    if history:
        with open(os.path.join(directory, "alpha_history.jsonl"), "w", encoding="utf-8") as f:
            for epoch in (2, 1):  # out of order: the reader sorts by epoch
                alpha = {d: [w] for d, w in HISTORY[epoch].items()}
                f.write(json.dumps({"epoch": epoch, "alpha": alpha, "metrics": {}}) + "\n")


def test_series_equal_hand_values(tmp_path):
    write_dir(str(tmp_path))
    entries = history.read_alpha_history(str(tmp_path / "alpha_history.jsonl"))
    domains, series = history.decisiveness_series(entries, SPACE)
    assert domains == ["en", "de"]
    for d in domains:
        epochs, entropy, margin = series[d]
        assert epochs == [1, 2]
        np.testing.assert_allclose(entropy, [HAND[(e, d)][0] for e in epochs])
        np.testing.assert_allclose(margin, [HAND[(e, d)][1] for e in epochs], atol=1e-12)


def test_report_table_and_plot(tmp_path):
    write_dir(str(tmp_path))
    text = open(report.write_report(str(tmp_path)), encoding="utf-8").read()
    section = text[text.index("## Decisiveness over the search") : text.index("## Figures")]
    assert "| epoch | entropy en | margin en | entropy de | margin de |" in section
    for epoch in (1, 2):
        values = [f"{v:.4f}" for d in ("en", "de") for v in HAND[(epoch, d)]]
        assert f"| {epoch} | " + " | ".join(values) + " |" in section
    (link,) = re.findall(r"\]\(([^)]+)\)", section)
    png = tmp_path / link
    with open(png, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24])[0] > 100


def test_report_without_history_and_bad_shapes(tmp_path):
    write_dir(str(tmp_path), history=False)
    text = open(report.write_report(str(tmp_path)), encoding="utf-8").read()
    section = text[text.index("## Decisiveness over the search") : text.index("## Figures")]
    assert "`alpha_history.jsonl` is missing" in section
    path = tmp_path / "alpha_history.jsonl"
    path.write_text(json.dumps({"epoch": 4, "alpha": {"en": [[0.5, 0.5]]}}) + "\n")
    with pytest.raises(ValueError, match=r"epoch 4, domain 'en': weights of shape \(1, 2\)"):
        history.plot_decisiveness(str(path), str(tmp_path / "d.png"), SPACE)
    text = open(report.write_report(str(tmp_path)), encoding="utf-8").read()
    assert "Decisiveness not computed" in text and "epoch 4, domain 'en'" in text
