"""The DARTS conv cell and its classifier (pure PyTorch): parameter counts, derived routing, alpha."""

import pytest
import torch

from mdnas_fairseq.cells.conv import DartsConvClassifier, make_op, op_param_count
from mdnas_fairseq.search import (
    CNN_OPERATIONS,
    GenotypeEdge,
    MultiDomainGenotype,
    darts_cnn_space,
    derive_genotype,
)


def random_genotype(space, names, seed):
    g = torch.Generator().manual_seed(seed)
    return derive_genotype(
        torch.randn(len(names), space.num_edges, space.num_ops, generator=g), space, names
    )


# ---------------------------------------------------------------------------- cell
@pytest.mark.parametrize("name", CNN_OPERATIONS)
@pytest.mark.parametrize("channels", [4, 8])
def test_op_param_count_closed_form(name, channels):
    op = make_op(name, channels)
    assert sum(p.numel() for p in op.parameters()) == op_param_count(name, channels)
    x = torch.randn(2, channels, 7, 7)
    assert op(x).shape == x.shape


@pytest.mark.parametrize(
    "num_domains,shared,channels,nodes",
    [(1, False, 8, 4), (2, False, 16, 4), (3, False, 4, 2), (4, False, 8, 3), (4, True, 8, 4)],
)
def test_param_count_from_genotype_matches_built_model(num_domains, shared, channels, nodes):
    domains = [f"rot{90 * k}" for k in range(num_domains)]
    names = ["+".join(domains)] if shared else domains
    space = darts_cnn_space(nodes)
    for seed in range(4):
        genotype = random_genotype(space, names, seed)
        model = DartsConvClassifier(
            domains,
            channels=channels,
            num_nodes=nodes,
            genotype=genotype,
            shared_architecture=shared,
            stem_stride=2,
            stem_pool=2,
        )
        assert model.genotype_param_count(genotype) == sum(p.numel() for p in model.parameters())
        # one module per distinct (input, node, op) of the union
        assert len(model.cell.ops) == len(genotype.union_edges())


def _two_domain_genotype():
    """Two domains sharing some edges and differing on others (4 nodes)."""
    space = darts_cnn_space(4)
    a = [
        GenotypeEdge(2, 0, "sep_conv_3x3"),
        GenotypeEdge(2, 1, "skip_connect"),
        GenotypeEdge(3, 0, "dil_conv_3x3"),
        GenotypeEdge(3, 2, "sep_conv_5x5"),
        GenotypeEdge(4, 1, "max_pool_3x3"),
        GenotypeEdge(4, 3, "dil_conv_5x5"),
        GenotypeEdge(5, 2, "sep_conv_3x3"),
        GenotypeEdge(5, 4, "avg_pool_3x3"),
    ]
    b = [
        GenotypeEdge(2, 0, "sep_conv_3x3"),
        GenotypeEdge(2, 1, "dil_conv_3x3"),  # (0,2) shared
        GenotypeEdge(3, 0, "sep_conv_5x5"),
        GenotypeEdge(3, 2, "sep_conv_5x5"),  # (2,3) shared
        GenotypeEdge(4, 0, "dil_conv_5x5"),
        GenotypeEdge(4, 3, "dil_conv_5x5"),  # (3,4) shared
        GenotypeEdge(5, 1, "sep_conv_3x3"),
        GenotypeEdge(5, 4, "skip_connect"),
    ]
    return MultiDomainGenotype(space, ("rot0", "rot90"), {"rot0": tuple(a), "rot90": tuple(b)})


def test_derived_domain_runs_only_its_own_operations():
    torch.manual_seed(0)
    genotype = _two_domain_genotype()
    model = DartsConvClassifier(
        ["rot0", "rot90"], channels=4, genotype=genotype, stem_stride=2, stem_pool=2
    )
    # shared operations are one module
    assert len(model.cell.ops) == len(genotype.union_edges()) == 13
    calls = {}
    for name, module in model.cell.ops.items():
        module.register_forward_hook(
            lambda m, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)
        )
    x = torch.randn(5, 1, 28, 28)
    for d, domain in enumerate(["rot0", "rot90"]):
        calls.clear()
        model.zero_grad(set_to_none=True)
        logits, _ = model(x, torch.full((5,), d, dtype=torch.long))
        logits.sum().backward()
        own = {f"e{e.input}_{e.node}_{e.op}" for e in genotype.cells[domain]}
        assert set(calls) == own and all(v == 1 for v in calls.values())
        for name, module in model.cell.ops.items():
            grads = [p.grad for p in module.parameters()]
            if name in own:
                assert all(g is not None and g.abs().sum() > 0 for g in grads), name
            else:
                assert all(g is None for g in grads), name


def test_mixed_domain_batches_match_per_domain_forward():
    torch.manual_seed(0)
    x = torch.randn(6, 1, 28, 28)
    dom = torch.tensor([0, 1, 0, 1, 1, 0])
    search = DartsConvClassifier(
        ["rot0", "rot90"], channels=4, num_nodes=2, stem_stride=2, stem_pool=2
    )
    with torch.no_grad():
        search.alphas.alpha.normal_()
    derived = DartsConvClassifier(
        ["rot0", "rot90"], channels=4, genotype=_two_domain_genotype(), stem_stride=2, stem_pool=2
    )
    for model in (search, derived):
        model.eval()
        with torch.no_grad():
            mixed, _ = model(x, dom)
            for d in (0, 1):
                idx = (dom == d).nonzero().squeeze(1)
                alone, _ = model(x[idx], torch.full((len(idx),), d, dtype=torch.long))
                assert torch.allclose(mixed[idx], alone, atol=1e-5)
    # the two domains really differ in search mode (different alpha rows)
    with torch.no_grad():
        a0, _ = search(x, torch.zeros(6, dtype=torch.long))
        a1, _ = search(x, torch.ones(6, dtype=torch.long))
    assert not torch.allclose(a0, a1)


def test_search_alpha_is_not_a_weight_and_gets_gradients_only_when_trainable():
    model = DartsConvClassifier(
        ["rot0", "rot90"], channels=4, num_nodes=2, stem_stride=2, stem_pool=2
    )
    assert not model.alphas.alpha.requires_grad
    x = torch.randn(3, 1, 28, 28)
    with model.alphas.trainable():
        logits, _ = model(x, torch.zeros(3, dtype=torch.long))
        logits.sum().backward()
    assert model.alphas.alpha.grad is not None
    assert (
        model.alphas.alpha.grad[0].abs().sum() > 0 and model.alphas.alpha.grad[1].abs().sum() == 0
    )
