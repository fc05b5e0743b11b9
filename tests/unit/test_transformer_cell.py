"""The searchable Transformer network (pure PyTorch candidates): causality of every candidate and of
the network in both modes, derived vs search mode, per-sample domains, parameter counts, dtypes."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn

from mdnas_fairseq.cells.transformer import SearchableTransformerLM
from mdnas_fairseq.cells.transformer_ops import torch_candidates
from mdnas_fairseq.search import (
    TRANSFORMER_CHANNEL_OPS,
    MultiDomainGenotype,
    budget_sequence,
    derive_genotype,
    random_genotype,
    transformer_lm_space,
)
from tests.helpers.transformer import (
    assert_candidate_causal,
    assert_candidate_ignores_pads,
    assert_network_causal,
    assert_network_ignores_pads,
    uniform_genotype,
)

C, F, H, V, LAYERS, KERNELS = 8, 16, 2, 40, 2, (3, 7)
SPACE = transformer_lm_space(LAYERS, KERNELS)
WEIGHTED = [op for op in SPACE.operations if op != "none"]
TOKEN_OPS = [op for op in SPACE.allowed(0) if op != "none"]
CHANNEL_OPS = [op for op in TRANSFORMER_CHANNEL_OPS if op != "none"]


class Positions(nn.Module):
    def __init__(self, n=64):
        super().__init__()
        self.table = nn.Embedding(n, C)

    def forward(self, tokens):
        return self.table(torch.arange(tokens.shape[1], device=tokens.device)).expand(
            tokens.shape[0], -1, -1
        )


def network(genotype=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    return SearchableTransformerLM(
        V,
        1,
        C,
        LAYERS,
        ["en", "de"],
        torch_candidates(C, H, F),
        KERNELS,
        positions=Positions(),
        genotype=genotype,
        **kwargs,
    ).double()


@pytest.mark.parametrize("op", WEIGHTED)
@pytest.mark.parametrize("steps", [9, 3])  # 3: shorter than the 7-wide kernels
def test_every_candidate_is_causal(op, steps):
    sees_past = assert_candidate_causal(torch_candidates(C, H, F)(op), C, steps=steps)
    assert sees_past == (op in TOKEN_OPS and op != "identity"), op


def test_network_is_causal_in_search_and_derived_modes():
    net = network(alpha_init_scale=1.0)
    assert_network_causal(net, V, domain=1)
    for token_op, channel_op in zip(TOKEN_OPS, itertools.cycle(CHANNEL_OPS)):
        g = uniform_genotype(SPACE, ["en", "de"], token_op, channel_op)
        assert_network_causal(network(g), V)


class PadAwarePositions(nn.Module):
    """Positions counted from each sentence's first real token, pads at 0 (fairseq's make_positions)."""

    def __init__(self, pad=1, n=64):
        super().__init__()
        self.pad, self.table = pad, nn.Embedding(n, C, padding_idx=0)

    def forward(self, tokens):
        real = tokens.ne(self.pad).long()
        return self.table(torch.cumsum(real, 1) * real)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("op", WEIGHTED)
def test_every_candidate_ignores_left_and_right_padding(op, side):
    assert_candidate_ignores_pads(torch_candidates(C, H, F)(op), C, side)


@pytest.mark.parametrize("positions", [Positions, PadAwarePositions])
@pytest.mark.parametrize("side", ["left", "right"])
def test_network_ignores_left_and_right_padding_in_search_and_derived_modes(side, positions):
    """Every real position of a padded batch (domains mixed in it) computes what the sentence alone
    does, with positions counted from the row's start (Positions) or from its first real token."""
    net = network(alpha_init_scale=1.0)
    net.positions = positions().double()
    assert_network_ignores_pads(net, V, 1, side)
    genotypes = [uniform_genotype(SPACE, ["en", "de"], op, "ffn_relu") for op in TOKEN_OPS]
    genotypes.append(
        derive_genotype(torch.randn(2, SPACE.num_edges, SPACE.num_ops), SPACE, ["en", "de"])
    )
    for g in genotypes:
        derived = network(g)
        derived.positions = positions().double()
        assert_network_ignores_pads(derived, V, 1, side)


def _copy_search_into_derived(search, derived, genotype):
    for name in ("embedding", "slot_norms", "final_norm", "positions"):
        getattr(derived, name).load_state_dict(getattr(search, name).state_dict())
    for e in genotype.union_edges():
        derived.ops[f"node{e.node}_{e.op}"].load_state_dict(
            search.slot_ops[e.node - 1][e.op].state_dict()
        )


def test_derived_network_equals_search_network_with_one_hot_alpha():
    search = network(seed=1)
    with torch.no_grad():  # LayerNorms start as identical identities: make every parameter distinct
        for p in search.parameters():
            p.add_(0.1 * torch.randn_like(p))
    genotype = derive_genotype(torch.randn(2, SPACE.num_edges, SPACE.num_ops), SPACE, ["en", "de"])
    derived = network(genotype, seed=2)
    _copy_search_into_derived(search, derived, genotype)
    with torch.no_grad():  # softmax(alpha) exactly one-hot on each domain's choices
        search.alphas.alpha.fill_(-1e9)
        for d, name in enumerate(("en", "de")):
            for e in genotype.cells[name]:
                search.alphas.alpha[d, SPACE.edge_index(e.input, e.node), SPACE.op_index(e.op)] = (
                    0.0
                )
    tokens = torch.randint(4, V, (3, 6))
    for d in (0, 1):
        dom = torch.full((3,), d)
        expected, _ = search.eval()(tokens, dom)
        got, _ = derived.eval()(tokens, dom)
        assert torch.allclose(got, expected, atol=1e-10)
        # and the one-hot search differs from the other domain's architecture
        assert not torch.allclose(derived(tokens, torch.full((3,), 1 - d))[0], expected)


@pytest.mark.parametrize("mode", ["search", "derived"])
def test_a_batch_mixing_domains_equals_each_sample_alone(mode):
    genotype = None
    if mode == "derived":
        genotype = derive_genotype(
            torch.randn(2, SPACE.num_edges, SPACE.num_ops), SPACE, ["en", "de"]
        )
    net = network(genotype, alpha_init_scale=1.0).eval()
    tokens, domains = torch.randint(4, V, (3, 6)), torch.tensor([1, 0, 1])
    logits, feats = net(tokens, domains)
    for b in range(3):
        alone, alone_feats = net(tokens[b : b + 1], domains[b : b + 1])
        assert torch.allclose(logits[b], alone[0], atol=1e-10) and torch.allclose(
            feats[b], alone_feats[0], atol=1e-10
        )
    for d in (0, 1):  # a batch of one domain given on the host computes the same
        same = torch.full((3,), d)
        assert torch.equal(net(tokens, same, batch_domain=d)[0], net(tokens, same)[0])


def closed_form_op_params(op):
    if op == "attention":
        return 4 * C * C + 4 * C
    if op.startswith("lightconv_"):
        return (2 * C * C + 2 * C) + H * int(op.split("_")[1]) + (C * C + C)
    if op.startswith("dwconv_"):
        return C * int(op.split("_")[1]) + C
    if op.startswith("ffn_"):
        return 2 * C * F + F + C
    return 0


def test_derived_domain_runs_only_its_modules_and_counts_match_the_genotype():
    torch.manual_seed(5)
    genotype = derive_genotype(torch.randn(2, SPACE.num_edges, SPACE.num_ops), SPACE, ["en", "de"])
    derived, search = network(genotype), network()
    shared = V * C + 64 * C + (2 * LAYERS + 1) * 2 * C  # embeddings, positions, LayerNorms
    for d in ("en", "de"):
        by_hand = shared + sum(closed_form_op_params(e.op) for e in genotype.cells[d])
        assert (
            search.genotype_param_count(genotype, [d])
            == derived.genotype_param_count(genotype, [d])
            == by_hand
        )
    union = shared + sum(closed_form_op_params(e.op) for e in genotype.union_edges())
    assert (
        sum(p.numel() for p in derived.parameters())
        == derived.genotype_param_count(genotype)
        == union
    )
    assert search.genotype_param_count(genotype) == union
    logits, _ = derived.train()(
        torch.randint(4, V, (2, 5)), torch.zeros(2, dtype=torch.long)
    )  # English
    logits.sum().backward()
    mine = {f"node{e.node}_{e.op}" for e in genotype.cells["en"]}
    for name, module in derived.ops.items():
        touched = any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
        assert touched == (name in mine and closed_form_op_params(name.split("_", 1)[1]) > 0), name


def test_low_precision_activations_with_fp32_alpha():
    torch.manual_seed(0)
    net = SearchableTransformerLM(V, 1, C, LAYERS, ["en", "de"], torch_candidates(C, H, F), KERNELS)
    net = net.to(torch.bfloat16)
    net.alphas.alpha.data = (
        net.alphas.alpha.data.float()
    )  # alpha stays fp32, as under mixed precision
    logits, feats = net(torch.randint(4, V, (2, 5)), torch.tensor([0, 1]))
    assert logits.dtype == feats.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_param_table_random_genotypes_and_budgets_over_the_chain():
    names = ["en", "de", "fr"]
    table = SearchableTransformerLM(
        V, 1, C, LAYERS, names, torch_candidates(C, H, F), KERNELS
    ).param_table()
    build = lambda g: SearchableTransformerLM(
        V, 1, C, LAYERS, names, torch_candidates(C, H, F), KERNELS, genotype=g
    )  # noqa
    for e in range(
        SPACE.num_edges
    ):  # one module per (slot, op), 0 where the slot does not allow it
        assert [table.op_params[e][k] for k in range(SPACE.num_ops)] == [
            closed_form_op_params(op) if op in SPACE.allowed(e) else 0 for op in SPACE.operations
        ]
    # every valid choice of a slot is one allowed op on its single edge, kept with probability 1
    assert list(table.node_choices(2)) == [((1, op),) for op in CHANNEL_OPS]
    assert table.expected_cost_matrix() == [list(map(float, row)) for row in table.op_params]
    for seed in range(3):
        g = random_genotype(SPACE, names, np.random.default_rng(seed))
        MultiDomainGenotype(
            SPACE, g.domains, g.cells
        )  # valid: the validator checks topology and mask
        assert table.multimodel_count(g) == sum(p.numel() for p in build(g).parameters())
    probs = torch.softmax(
        torch.randn(3, SPACE.num_edges, SPACE.num_ops).masked_fill(
            ~torch.tensor(SPACE.allowed_mask()), float("-inf")
        ),
        -1,
    )
    counts = [table.multimodel_count(derive_genotype(probs.log(), SPACE, names))]
    for step, g in budget_sequence(probs.numpy(), table, names):
        assert (
            step.params_after
            == table.multimodel_count(g)
            == sum(p.numel() for p in build(g).parameters())
        )
        counts.append(step.params_after)
    assert counts == sorted(counts, reverse=True) and counts[-1] == table.smallest_multimodel()
    # the smallest multimodel: identity in every slot, shared by all domains
    assert table.smallest_multimodel() == table.shared_params
