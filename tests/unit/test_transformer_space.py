"""The Transformer's search space: an explicit chain topology and per-edge allowed operations, and the
genotype machinery (derivation, validation, files, masked alpha) over it; DARTS spaces unchanged."""

import json

import pytest
import torch

from mdnas_fairseq.search import (
    MASKED_LOGIT,
    ArchitectureParameters,
    DomainArchitectures,
    GenotypeEdge,
    GenotypeError,
    MultiDomainGenotype,
    SearchSpace,
    darts_cnn_space,
    darts_rnn_space,
    derive_cell,
    derive_genotype,
    js_structural_loss,
    load_genotype,
    save_genotype,
    transformer_lm_space,
)

E = GenotypeEdge
TOKEN = ("none", "identity", "attention", "lightconv_3", "dwconv_3")
CHANNEL = ("none", "identity", "ffn_relu", "ffn_gelu", "ffn_sqrelu")


def test_transformer_space_is_a_chain_with_two_slot_kinds():
    space = transformer_lm_space(num_layers=2, kernel_sizes=(3,))
    assert space.operations == TOKEN + CHANNEL[2:]
    assert space.edges == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert [space.edge_index(i, j) for i, j in space.edges] == [0, 1, 2, 3]
    assert [space.node_inputs(j) for j in space.node_ids] == [[0], [1], [2], [3]]
    assert space.node_edge_slice(3) == slice(2, 3)
    assert space.output_nodes == [4]
    assert (
        space.allowed(0) == space.allowed(2) == TOKEN
        and space.allowed(1) == space.allowed(3) == CHANNEL
    )
    mask = space.allowed_mask()
    assert mask[0] == [op in TOKEN for op in space.operations] and mask[3] == [
        op in CHANNEL for op in space.operations
    ]
    with pytest.raises(KeyError):
        space.edge_index(0, 2)  # a DARTS edge, not in the chain
    # the DARTS spaces keep their full DAG, every node feeding the output
    rnn = darts_rnn_space(3)
    assert (
        rnn.output_nodes == [1, 2, 3]
        and rnn.allowed(0) == rnn.operations
        and rnn.node_inputs(3) == [0, 1, 2]
    )
    assert darts_cnn_space().node_edge_slice(5) == slice(9, 14)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(topology=((0, 1), (0, 2), (1, 2))), None),  # fine: node 2 has two inputs
        (dict(topology=((0, 1), (1, 3))), "node"),  # (1, 3) ok but node 2 has no edge
        (dict(topology=((1, 2), (0, 1))), "grouped by node"),
        (dict(topology=((0, 1), (2, 2))), "earlier state"),
        (dict(topology=((0, 1), (1, 2)), allowed_ops=(("a",),)), "lists 1 edge"),
        (dict(topology=((0, 1), (1, 2)), allowed_ops=(("a",), ("z",))), "unknown or repeated"),
        (dict(topology=((0, 1), (1, 2)), allowed_ops=(("a",), ("none",))), "other than 'none'"),
    ],
)
def test_bad_topologies_and_masks_are_rejected(kwargs, message):
    build = lambda: SearchSpace("toy", ("none", "a", "b"), 1, 2, 1, **kwargs)  # noqa: E731
    if message is None:
        assert build().edges == [(0, 1), (0, 2), (1, 2)]
        with pytest.raises(
            ValueError, match="edges_per_node=2 must be between 1 and the 1 incoming"
        ):
            SearchSpace("toy", ("none", "a"), 1, 2, 2, **kwargs)  # node 1 has a single input
        return
    with pytest.raises(ValueError, match=message):
        build()


def test_derivation_never_picks_none_or_a_disallowed_operation():
    space = transformer_lm_space(1, (3,))
    alpha = torch.zeros(1, space.num_edges, space.num_ops)
    ops = space.operations
    alpha[0, 0, ops.index("ffn_relu")] = 50.0  # channel op on the token slot: disallowed
    alpha[0, 0, ops.index("none")] = 40.0
    alpha[0, 0, ops.index("dwconv_3")] = 1.0  # the best allowed non-none op
    alpha[0, 1, ops.index("attention")] = 50.0  # token op on the channel slot
    alpha[0, 1, ops.index("ffn_gelu")] = 2.0
    alpha[0, 1, ops.index("ffn_sqrelu")] = 1.0
    g = derive_genotype(alpha, space, ["en"])
    assert g.cells["en"] == (E(1, 0, "dwconv_3"), E(2, 1, "ffn_gelu"))
    # derive_cell on weights that are not a masked softmax (e.g. computed elsewhere) obeys the mask too
    assert derive_cell(torch.softmax(alpha[0], -1), space) == g.cells["en"]


def test_edges_compete_with_their_masked_mixing_probs():
    """DARTS keeps a node's strongest edges by the weights the mixing really used (masked softmax)."""
    allowed = (("none", "a"), ("none", "a"), ("none", "a", "b"))
    space = SearchSpace("toy", ("none", "a", "b"), 1, 2, 1, allowed_ops=allowed)
    alpha = torch.tensor(
        [[[0.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 0.5, 0.0]]]
    )  # edges (0,1), (0,2), (1,2)
    # edge (0,2): b is disallowed, so a has weight 1/2 > 0.45 = a's weight on (1,2)
    assert derive_genotype(alpha, space, ["x"]).cells["x"] == (E(1, 0, "a"), E(2, 0, "a"))


def test_genotype_validation_names_the_disallowed_op_and_the_missing_edge():
    space = transformer_lm_space(1, (3,))
    with pytest.raises(GenotypeError, match=r"'ffn_relu' is not allowed on edge 0->1.*attention"):
        MultiDomainGenotype(space, ("en",), {"en": (E(1, 0, "ffn_relu"), E(2, 1, "ffn_gelu"))})
    with pytest.raises(GenotypeError, match="edge from state 0 to node 2 does not exist"):
        MultiDomainGenotype(space, ("en",), {"en": (E(1, 0, "attention"), E(2, 0, "ffn_gelu"))})


def test_transformer_genotype_file_round_trip_and_old_files_still_load(tmp_path):
    space = transformer_lm_space(2, (3, 7))
    g = derive_genotype(torch.randn(2, space.num_edges, space.num_ops), space, ["en", "de"])
    path = str(tmp_path / "g.json")
    save_genotype(path, g)
    raw = json.load(open(path))
    assert raw["version"] == 1 and raw["search_space"]["topology"] == [
        [0, 1],
        [1, 2],
        [2, 3],
        [3, 4],
    ]
    assert raw["search_space"]["allowed_ops"][1] == list(CHANNEL)
    assert load_genotype(path, space=space) == g
    # a file written before topologies existed (no topology / allowed_ops fields) is the DARTS DAG
    old = {
        "format": "mdnas-genotype",
        "version": 1,
        "search_space": {
            "name": "darts_rnn",
            "operations": ["none", "tanh", "relu", "sigmoid", "identity"],
            "num_input_nodes": 1,
            "num_nodes": 2,
            "edges_per_node": 1,
            "none_op": "none",
        },
        "domains": ["en"],
        "cells": {
            "en": [{"node": 1, "input": 0, "op": "relu"}, {"node": 2, "input": 0, "op": "tanh"}]
        },
    }
    old_path = tmp_path / "old.json"
    old_path.write_text(json.dumps(old))
    loaded = load_genotype(str(old_path), space=darts_rnn_space(2))
    assert loaded.space.to_dict() == old["search_space"] and loaded.space.edges == [
        (0, 1),
        (0, 2),
        (1, 2),
    ]
    # a disallowed op in a file is named with the file
    raw["cells"]["en"][0]["op"] = "ffn_relu"
    del raw["union"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(
        GenotypeError, match=rf"{bad}: domain 'en': operation 'ffn_relu' is not allowed"
    ):
        load_genotype(str(bad))


def test_masked_alpha_gives_zero_weight_no_gradient_and_no_js():
    space = transformer_lm_space(2, (3,))
    arch = DomainArchitectures(["en", "de"]).alpha(space, init_scale=1.0)
    mask = torch.tensor(space.allowed_mask())
    # stored 0 (nothing for weight decay to pull), read as MASKED_LOGIT
    assert torch.all(arch.alpha[:, ~mask] == 0) and torch.all(arch.alpha[:, mask].abs() < 10)
    assert torch.all(arch.masked_logits()[:, ~mask] == MASKED_LOGIT)
    with torch.no_grad():  # even a large value on a disallowed entry is ignored by the mixing
        arch.alpha[0, 0, space.op_index("ffn_relu")] = 30.0
    with arch.trainable() as alpha:
        w = arch.mixing_probs()
        assert torch.all(w[:, ~mask] == 0) and torch.allclose(w.sum(-1), torch.ones(2, 4))
        # the allowed weights are the softmax over the allowed entries alone
        e0 = mask[0]
        assert torch.allclose(w[1, 0, e0], torch.softmax(alpha[1, 0, e0], -1))
        loss = (w * torch.randn_like(w)).sum() + js_structural_loss(arch.masked_logits())
        loss.backward()
    grad = arch.alpha.grad
    assert torch.all(grad[1, ~mask] == 0) and grad[:, mask].abs().sum() > 0
    # JS of alpha with masked entries equals JS over the allowed entries alone
    a = torch.randn(2, 1, 3)
    padded = torch.cat([a, torch.full((2, 1, 2), MASKED_LOGIT)], -1)
    assert torch.allclose(js_structural_loss(padded), js_structural_loss(a))
    plain = ArchitectureParameters(2, 4, 3)  # no mask: every op weighted, as before
    assert plain.allowed is None and torch.all(plain.mixing_probs() > 0)
