"""Tests of genotypes (docs/method.md, sections 1 and 4): derivation, concordant union, parameter count,
and the genotype file format (round trip, rejection of bad files, atomic writes)."""

import json
import os

import numpy as np
import pytest
import torch

from mdnas_fairseq.search import (
    GENOTYPE_FORMAT,
    GENOTYPE_VERSION,
    GenotypeEdge,
    GenotypeError,
    MultiDomainGenotype,
    SearchSpace,
    atomic_path,
    darts_cnn_space,
    darts_rnn_space,
    derive_genotype,
    load_genotype,
    multimodel_param_count,
    read_genotype_json,
    save_genotype,
)

E = GenotypeEdge


# ------------------------------------------------------------------------------ search spaces
def test_edge_order_of_rnn_and_custom_spaces():
    space = darts_rnn_space(num_nodes=3)
    # one input state 0, nodes 1, 2, 3; edges grouped by node, ordered by input
    assert space.edges == [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    assert [space.edge_index(i, j) for i, j in space.edges] == list(range(6))
    assert space.node_edge_slice(3) == slice(3, 6)
    toy = SearchSpace(
        "toy", ("none", "conv", "pool", "skip"), num_input_nodes=2, num_nodes=2, edges_per_node=2
    )
    assert toy.edges == [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    assert [toy.edge_index(i, j) for i, j in toy.edges] == list(range(5))
    cnn = darts_cnn_space()  # DARTS conv cell: 2 + 3 + 4 + 5 = 14 edges
    assert cnn.num_edges == 14 and [cnn.edge_index(i, j) for i, j in cnn.edges] == list(range(14))
    with pytest.raises(KeyError):
        space.edge_index(3, 3)
    with pytest.raises(ValueError):
        SearchSpace("bad", ("none", "a"), num_input_nodes=1, num_nodes=2, edges_per_node=2)
    with pytest.raises(ValueError):
        SearchSpace("bad", ("none",), num_input_nodes=1, num_nodes=2, edges_per_node=1)


# ------------------------------------------------------------------------------- derivation
def _alpha_from_probs(rows, shifts=None):
    """alpha with softmax(alpha[e]) == rows[e]; a per-edge constant shift leaves the softmax unchanged."""
    p = np.asarray(rows, dtype=np.float64)
    p = p / p.sum(-1, keepdims=True)
    alpha = np.log(p)
    if shifts is not None:
        alpha = alpha + np.asarray(shifts, dtype=np.float64)[:, None]
    return alpha


def test_derive_rnn_genotype_by_hand():
    space = darts_rnn_space(num_nodes=3)  # ops: none, tanh, relu, sigmoid, identity
    #                 none  tanh  relu  sigm  iden
    en = [
        [0.60, 0.10, 0.20, 0.05, 0.05],  # (0,1): none is largest, skipped -> relu
        [0.10, 0.50, 0.20, 0.10, 0.10],  # (0,2): tanh 0.50
        [0.10, 0.10, 0.10, 0.60, 0.10],  # (1,2): sigmoid 0.60 > 0.50 -> node 2 keeps (1,2) sigmoid
        [0.70, 0.12, 0.08, 0.05, 0.05],  # (0,3): tanh 0.12
        [0.02, 0.29, 0.28, 0.27, 0.14],  # (1,3): tanh 0.29 (largest non-none SUM, but not max)
        [0.05, 0.35, 0.20, 0.20, 0.20],  # (2,3): tanh 0.35 -> node 3 keeps (2,3) tanh
    ]
    de = [
        [0.10, 0.10, 0.10, 0.10, 0.60],  # (0,1): identity
        [0.10, 0.15, 0.55, 0.10, 0.10],  # (0,2): relu 0.55
        [0.50, 0.10, 0.10, 0.20, 0.10],  # (1,2): sigmoid 0.20 -> node 2 keeps (0,2) relu
        [0.10, 0.10, 0.10, 0.10, 0.60],  # (0,3): identity 0.60 -> node 3 keeps (0,3) identity
        [0.90, 0.04, 0.03, 0.02, 0.01],  # (1,3): tanh 0.04
        [0.20, 0.20, 0.40, 0.10, 0.10],  # (2,3): relu 0.40
    ]
    # Shift de's edge (1,2) by +100: its raw alpha is now the largest of node 2 (log 0.2 + 100 >
    # log 0.55), but the softmax weights -- what DARTS ranks edges by -- do not change.
    alpha = torch.tensor(
        np.stack([_alpha_from_probs(en), _alpha_from_probs(de, shifts=[0, 0, 100, 0, 0, 0])]),
        dtype=torch.float32,
    )
    g = derive_genotype(alpha, space, ["en", "de"])
    assert g.cells["en"] == (E(1, 0, "relu"), E(2, 1, "sigmoid"), E(3, 2, "tanh"))
    assert g.cells["de"] == (E(1, 0, "identity"), E(2, 0, "relu"), E(3, 0, "identity"))
    assert all(e.op != "none" for cell in g.cells.values() for e in cell)
    assert g.domains == ("en", "de") and g.space == space
    # the derivation is invariant to per-edge shifts of alpha (it ranks softmax weights)
    gen = torch.Generator().manual_seed(0)
    shifted = alpha + 50 * torch.randn(2, 6, 1, generator=gen)
    assert derive_genotype(shifted, space, ["en", "de"]) == g


def test_derive_custom_space_keeps_top_two_edges():
    space = SearchSpace(
        "toy", ("none", "conv", "pool", "skip"), num_input_nodes=2, num_nodes=2, edges_per_node=2
    )
    #        none  conv  pool  skip
    rows = [
        [0.70, 0.10, 0.15, 0.05],  # (0,2): none largest -> pool
        [0.10, 0.60, 0.20, 0.10],  # (1,2): conv          (node 2 has only 2 edges: keeps both)
        [0.10, 0.20, 0.30, 0.40],  # (0,3): skip 0.40     -> 2nd best of node 3
        [0.80, 0.10, 0.05, 0.05],  # (1,3): conv 0.10     -> dropped
        [0.25, 0.50, 0.15, 0.10],  # (2,3): conv 0.50     -> best of node 3
    ]
    g = derive_genotype(torch.tensor(_alpha_from_probs(rows))[None], space, ["x"])
    assert g.cells["x"] == (E(2, 0, "pool"), E(2, 1, "conv"), E(3, 0, "skip"), E(3, 2, "conv"))


def _darts_parse(weights, space):
    """DARTS' own genotype parser (``model_search.py``), loops over numpy softmax weights."""
    none = space.operations.index(space.none_op)
    gene = set()
    start = 0
    for j in space.node_ids:
        W = weights[start : start + j]
        best = lambda row: max(row[k] for k in range(len(row)) if k != none)  # noqa: E731
        for i in sorted(range(j), key=lambda x: -best(W[x]))[: space.edges_per_node]:
            k_best = None
            for k in range(len(W[i])):
                if k != none and (k_best is None or W[i][k] > W[i][k_best]):
                    k_best = k
            gene.add(E(j, i, space.operations[k_best]))
        start += j
    return gene


@pytest.mark.parametrize("space", [darts_rnn_space(5), darts_cnn_space(4)], ids=["rnn", "cnn"])
def test_derive_matches_darts_parser_on_random_alpha(space):
    gen = torch.Generator().manual_seed(17)
    for _ in range(5):
        alpha = 2 * torch.randn(3, space.num_edges, space.num_ops, generator=gen)
        alpha[:, :, space.op_index("none")] += 1.5  # none often dominant
        g = derive_genotype(alpha, space, ["a", "b", "c"])
        probs = torch.softmax(alpha.double(), -1).numpy()
        for d, name in enumerate(g.domains):
            assert set(g.cells[name]) == _darts_parse(probs[d], space)
            assert len(g.cells[name]) == space.num_nodes * space.edges_per_node


def test_derive_rejects_wrong_alpha_shape():
    space = darts_rnn_space(3)
    with pytest.raises(GenotypeError):
        derive_genotype(torch.zeros(2, 6, 5), space, ["en"])
    with pytest.raises(GenotypeError):
        derive_genotype(torch.zeros(1, 7, 5), space, ["en"])


# ----------------------------------------------------------------- union and parameter count
def three_domain_genotype():
    # darts_rnn_space(3): nodes 1, 2, 3 each keep one incoming edge.
    return MultiDomainGenotype(
        darts_rnn_space(3),
        ("en", "de", "fr"),
        {
            "en": (E(1, 0, "tanh"), E(2, 1, "relu"), E(3, 1, "sigmoid")),
            "de": (E(1, 0, "tanh"), E(2, 1, "relu"), E(3, 2, "sigmoid")),
            "fr": (E(1, 0, "tanh"), E(2, 0, "relu"), E(3, 1, "identity")),
        },
    )


OP_PARAMS = {"tanh": 10, "relu": 20, "sigmoid": 30, "identity": 40}


def op_params(edge):
    return OP_PARAMS[edge.op]


def test_union_and_agreement_by_hand():
    g = three_domain_genotype()
    # edge (input, node) -> op -> domains that chose it
    assert g.union() == {
        (0, 1): {"tanh": ("en", "de", "fr")},
        (0, 2): {"relu": ("fr",)},
        (1, 2): {"relu": ("en", "de")},
        (1, 3): {"identity": ("fr",), "sigmoid": ("en",)},
        (2, 3): {"sigmoid": ("de",)},
    }
    assert list(g.union()) == sorted(g.union())
    # at most min(D, K) operations per edge
    assert all(len(ops) <= min(3, 4) for ops in g.union().values())
    # 5 edges in the union; only (0,1) has one op chosen by all 3 domains -> 1/5
    assert g.agreement() == pytest.approx(0.2)
    assert g.union_edges() == sorted(
        {
            E(1, 0, "tanh"),
            E(2, 0, "relu"),
            E(2, 1, "relu"),
            E(3, 1, "identity"),
            E(3, 1, "sigmoid"),
            E(3, 2, "sigmoid"),
        }
    )


def test_multimodel_param_count_by_hand():
    g = three_domain_genotype()
    # Default sharing: one module per (edge, op).
    #   (0,1) tanh   en de fr -> 10 once
    #   (1,2) relu   en de    -> 20 once
    #   (1,3) sigmoid en      -> 30
    #   (2,3) sigmoid de      -> 30 (same op, different edge: not shared)
    #   (0,2) relu   fr       -> 20
    #   (1,3) identity fr     -> 40
    #   150 + 100 shared = 250
    assert multimodel_param_count(g, op_params, shared_params=100) == 250
    # Separate models would hold 3 * 100 + (10+20+30) + (10+20+30) + (10+20+40) = 490.
    # One domain: 100 + 10 + 20 + 30 = 160; en + de: 100 + 10 + 20 + 30 + 30 = 190.
    assert multimodel_param_count(g, op_params, 100, domains=["en"]) == 160
    assert multimodel_param_count(g, op_params, 100, domains=["fr"]) == 170
    assert multimodel_param_count(g, op_params, 100, domains=["en", "de"]) == 190
    # share_key (node, op): ops at the same node share whatever their input.
    #   (1, tanh) 10, (2, relu) 20 [inputs 1 and 0 share], (3, sigmoid) 30 [inputs 1 and 2 share],
    #   (3, identity) 40 -> 100 + 100 = 200
    assert multimodel_param_count(g, op_params, 100, share_key=lambda e: (e.node, e.op)) == 200


def test_agreeing_domains_cost_no_extra_parameters():
    space = darts_rnn_space(3)
    cell = (E(1, 0, "relu"), E(2, 0, "tanh"), E(3, 2, "identity"))
    g = MultiDomainGenotype(space, ("a", "b"), {"a": cell, "b": cell})
    assert g.agreement() == 1.0
    # 100 + 20 + 10 + 40 for one domain, and the same for both (every op chosen twice counts once)
    assert multimodel_param_count(g, op_params, 100) == 170
    assert multimodel_param_count(g, op_params, 100, domains=["a"]) == 170
    assert all(ds == ("a", "b") for ops in g.union().values() for ds in ops.values())


def test_invalid_genotypes_are_rejected():
    space = darts_rnn_space(3)
    ok = (E(1, 0, "relu"), E(2, 0, "tanh"), E(3, 2, "identity"))
    with pytest.raises(GenotypeError, match="none"):
        MultiDomainGenotype(
            space, ("a",), {"a": (E(1, 0, "none"), E(2, 0, "tanh"), E(3, 2, "identity"))}
        )
    with pytest.raises(GenotypeError, match="node 2"):
        MultiDomainGenotype(
            space,
            ("a",),
            {"a": (E(1, 0, "relu"), E(2, 0, "tanh"), E(2, 1, "tanh"), E(3, 2, "relu"))},
        )
    with pytest.raises(GenotypeError):
        MultiDomainGenotype(
            space, ("a",), {"a": (E(1, 0, "relu"), E(2, 0, "tanh"), E(4, 2, "relu"))}
        )
    with pytest.raises(GenotypeError):
        MultiDomainGenotype(space, ("a", "b"), {"a": ok})
    with pytest.raises(GenotypeError):
        MultiDomainGenotype(space, ("a", "a"), {"a": ok})


# ------------------------------------------------------------------------------------ files
def test_save_load_round_trip(tmp_path):
    g = three_domain_genotype()
    path = str(tmp_path / "genotype.json")
    extra = {"alpha": [[0.5, -1.0]], "metrics": {"val_loss": 1.25}}
    save_genotype(path, g, extra=extra)
    loaded = load_genotype(path, domains=["en", "de", "fr"], space=darts_rnn_space(3))
    assert loaded == g
    assert loaded.union() == g.union()
    raw = read_genotype_json(path)
    assert raw["format"] == GENOTYPE_FORMAT and raw["version"] == GENOTYPE_VERSION
    assert raw["alpha"] == extra["alpha"] and raw["metrics"] == extra["metrics"]
    # writing the loaded genotype again gives byte-identical text
    path2 = str(tmp_path / "again.json")
    save_genotype(path2, loaded, extra=extra)
    assert open(path, "rb").read() == open(path2, "rb").read()
    # the round trip also works for derived genotypes of a custom space
    space = SearchSpace(
        "toy", ("none", "conv", "pool"), num_input_nodes=2, num_nodes=3, edges_per_node=2
    )
    derived = derive_genotype(
        torch.randn(2, space.num_edges, 3, generator=torch.Generator().manual_seed(2)),
        space,
        ["x", "y"],
    )
    save_genotype(path, derived)
    assert load_genotype(path) == derived
    assert load_genotype(path).space == space


def _write(path, data):
    with open(path, "w", encoding="utf-8") as f:
        if isinstance(data, str):
            f.write(data)
        else:
            json.dump(data, f)


def _expect_error(path, *fragments, **kwargs):
    with pytest.raises(GenotypeError) as info:
        load_genotype(str(path), **kwargs)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_bad_files_are_rejected_with_clear_errors(tmp_path):
    g = three_domain_genotype()
    good = g.to_dict()
    path = tmp_path / "bad.json"

    _write(path, '{"format": "mdnas-genotype", "version": 1,')
    _expect_error(path, "malformed JSON")

    _write(path, "[1, 2]")
    _expect_error(path, "JSON object")

    _expect_error(tmp_path / "missing.json", "not found")

    data = json.loads(json.dumps(good))
    data["cells"]["de"][1]["op"] = "conv9"
    _write(path, data)
    _expect_error(path, "unknown operation", "conv9", "'de'")

    data = json.loads(json.dumps(good))
    data["cells"]["fr"].append({"node": 2, "input": 1, "op": "tanh"})  # node 2 now has 2 edges
    _write(path, data)
    _expect_error(path, "'fr'", "node 2", "2 incoming edge")

    data = json.loads(json.dumps(good))
    data["cells"]["en"] = [e for e in data["cells"]["en"] if e["node"] != 3]  # node 3 has none
    _write(path, data)
    _expect_error(path, "'en'", "node 3", "0 incoming edge")

    data = json.loads(json.dumps(good))
    data["search_space"]["num_nodes"] = 4  # the cells only cover nodes 1..3
    _write(path, data)
    _expect_error(path, "node 4")

    data = json.loads(json.dumps(good))
    data["format"] = "darts-genotype"
    _write(path, data)
    _expect_error(path, "format", "darts-genotype")

    data = json.loads(json.dumps(good))
    data["version"] = 2
    _write(path, data)
    _expect_error(path, "version 2")

    data = json.loads(json.dumps(good))
    data["union"][0]["op"] = "relu"  # (0,1) is tanh for every domain
    _write(path, data)
    _expect_error(path, "union")

    data = json.loads(json.dumps(good))
    del data["cells"]
    _write(path, data)
    _expect_error(path, "cells")

    data = json.loads(json.dumps(good))
    del data["cells"]["en"][0]["op"]
    _write(path, data)
    _expect_error(path, "'en'", "edge 0")

    data = json.loads(json.dumps(good))
    data["domains"] = ["en", "de"]  # fr has a cell but is not a domain
    _write(path, data)
    _expect_error(path, "fr")

    # a good file that does not fit the run
    _write(path, good)
    assert load_genotype(str(path)) == g
    _expect_error(path, "3 domain", "2 domain", domains=["en", "de"])
    _expect_error(path, "domain", domains=["en", "fr", "de"])  # same names, other order
    _expect_error(path, "search space", space=darts_rnn_space(4))
    load_genotype(str(path), domains=["en", "de", "fr"], space=darts_rnn_space(3))


def test_failed_save_leaves_existing_file_and_no_temp_file(tmp_path):
    g = three_domain_genotype()
    path = tmp_path / "genotype.json"
    save_genotype(str(path), g, extra={"step": 1})
    before = path.read_bytes()

    with pytest.raises(TypeError):
        save_genotype(str(path), g, extra={"step": 2, "model": object()})  # not JSON-serialisable
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["genotype.json"]

    with pytest.raises(ValueError):
        save_genotype(str(path), g, extra={"domains": ["x"]})  # would overwrite a genotype field
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["genotype.json"]


def test_atomic_write_failing_mid_write_keeps_old_file(tmp_path, monkeypatch):
    # A failure after the temporary file was written (here: fsync) must leave the old file and
    # remove the temporary one.
    g = three_domain_genotype()
    path = tmp_path / "genotype.json"
    save_genotype(str(path), g)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    other = MultiDomainGenotype(g.space, ("en",), {"en": g.cells["en"]})
    with pytest.raises(OSError, match="simulated"):
        save_genotype(str(path), other)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["genotype.json"]

    monkeypatch.undo()
    with pytest.raises(RuntimeError):
        with atomic_path(str(path)) as tmp:
            with open(tmp, "w") as f:
                f.write("half a file")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["genotype.json"]

    save_genotype(str(path), other)  # and a successful write replaces it
    assert load_genotype(str(path)) == other
    assert os.listdir(tmp_path) == ["genotype.json"]
