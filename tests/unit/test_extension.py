"""The pure-PyTorch side of extending a network to more domains (mdnas_fairseq.cells.extension):
frozen alpha rows, the appended vocabulary, copying and freezing an old network's state, the
genotype check, p restricted to the trained domains, and the normalisation over a domain's prefix."""

import types

import pytest
import torch

from mdnas_fairseq.cells.extension import ExtensionError, extend_network
from mdnas_fairseq.cells.rnn import DartsRNNLanguageModel
from mdnas_fairseq.cells.transformer import SearchableTransformerLM
from mdnas_fairseq.cells.transformer_ops import torch_candidates
from mdnas_fairseq.cells.vocabulary import AppendedVocabulary
from mdnas_fairseq.search import (
    ArchitectureParameters,
    BilevelArchitect,
    DomainSampler,
    GenotypeEdge,
    GenotypeError,
    MultiDomainGenotype,
    architecture_logits,
    architecture_parameters,
    check_extension,
    darts_rnn_space,
    derive_genotype,
    weight_parameters,
)

V_OLD, V_NEW = 40, 47


def rnn(domains, vocab=V_OLD, blocks=(), frozen=0, genotype=None, seed=0):
    torch.manual_seed(seed)
    return DartsRNNLanguageModel(
        vocab,
        1,
        8,
        8,
        domains,
        num_nodes=3,
        genotype=genotype,
        appended_vocabulary=blocks,
        frozen_architectures=frozen,
        compile_cell="off",
    )


def transformer(domains, vocab=V_OLD, blocks=(), frozen=0, genotype=None, seed=0):
    torch.manual_seed(seed)
    return SearchableTransformerLM(
        vocab,
        1,
        16,
        1,
        domains,
        torch_candidates(16, 2, 32),
        kernel_sizes=(3,),
        genotype=genotype,
        dropout=0.1,
        appended_vocabulary=blocks,
        frozen_architectures=frozen,
    )


def tokens_of(domain, vocab=V_OLD, batch=3, steps=6, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (batch, steps), generator=gen), torch.full(
        (batch,), domain, dtype=torch.long
    )


# ----------------------------------------------------------------------- frozen alpha rows
def test_frozen_alpha_rows_never_move_under_adam_with_weight_decay():
    params = ArchitectureParameters(3, 4, 5, frozen=2)
    params.extend(torch.randn(2, 4, 5), init_from=None)
    before = params.frozen_alpha.detach().clone()
    assert params.num_domains == 3 and params.num_frozen == 2
    assert torch.equal(params.alpha, torch.zeros(1, 4, 5))  # uniform mixing for the new row
    assert architecture_parameters(params) == [params.alpha]  # what the alpha optimizer holds
    assert weight_parameters(params) == []
    architect = BilevelArchitect([], architecture_parameters(params), lr=0.1, weight_decay=0.5)
    target = torch.randn(3, 4, 5)
    for _ in range(20):
        architect.step(None, lambda: ((params.masked_logits() - target) ** 2).sum())
    assert torch.equal(params.frozen_alpha, before)
    assert not torch.equal(params.alpha, torch.zeros(1, 4, 5))
    assert torch.equal(params.masked_logits()[:2], before)


def test_new_rows_may_start_as_an_old_domains_row_and_disallowed_entries_stay_zero():
    allowed = torch.ones(4, 5, dtype=torch.bool)
    allowed[:, 0] = False
    params = ArchitectureParameters(3, 4, 5, allowed=allowed, frozen=2)
    old = torch.randn(2, 4, 5)
    params.extend(old, init_from=1)
    assert torch.equal(params.alpha[0, :, 1:], old[1, :, 1:])
    assert (params.alpha[..., 0] == 0).all() and (params.frozen_alpha[..., 0] == 0).all()
    state = params.state_dict()
    rows = ArchitectureParameters.rows_in_state(state)
    assert rows.shape[0] == 3 and torch.equal(rows[:2, :, 1:], old[:, :, 1:])
    with pytest.raises(ValueError, match="at least one row to train"):
        ArchitectureParameters(2, 4, 5, frozen=2)


# ----------------------------------------------------------------------- appended vocabulary
def test_appended_vocabulary_masks_the_domains_before_its_block():
    vocab = AppendedVocabulary(4, [(3, 2)], bias=True, init=torch.nn.init.normal_)
    x = torch.randn(2, 5, 4)
    base = torch.randn(2, 5, 6)
    old = vocab.logits(x, base, None, batch_domain=1)
    assert torch.equal(old[..., :6], base) and torch.isneginf(old[..., 6:]).all()
    new = vocab.logits(x, base, None, batch_domain=2)
    assert torch.isfinite(new).all()
    mixed = vocab.logits(x, base, torch.tensor([1, 2]), batch_domain=None)
    assert torch.isneginf(mixed[0, :, 6:]).all() and torch.equal(mixed[1], new[1])
    assert vocab.limit(6, 1) == 6 and vocab.limit(6, 2) == 9
    with pytest.raises(ValueError, match="growing first domains"):
        AppendedVocabulary(4, [(3, 2), (2, 2)], bias=False, init=torch.nn.init.normal_)


# ----------------------------------------------------------------------- extend_network
def reloaded(network, build):
    """``network`` as evaluation loads it: its state in a fresh network, every parameter requiring
    grad, as the old checkpoint's. (ATen's matmul takes another kernel for a non-contiguous 3-D
    input when the weight does not require grad, e.g. in the lightweight-convolution block: a
    frozen network differs from the old one in the last bit while it trains, not once saved.)"""
    fresh = build()
    fresh.load_state_dict(network.state_dict())
    return fresh.eval()


@pytest.mark.parametrize("build", [rnn, transformer])
def test_extended_search_network_computes_the_old_domains_bitwise(build):
    old = build(["en", "de"]).eval()
    new = build(["en", "de", "fr"], V_NEW, blocks=[(V_NEW - V_OLD, 2)], frozen=2, seed=5).eval()
    report = extend_network(new, old.state_dict())
    assert "appended_vocabulary.weights.0" in report.trained and "alphas.alpha" in report.trained
    trained = {n for n, p in new.named_parameters() if p.requires_grad}
    assert trained == {"appended_vocabulary.weights.0"} | (
        {"appended_vocabulary.biases.0"} if build is rnn else set()
    )
    loaded = reloaded(
        new, lambda: build(["en", "de", "fr"], V_NEW, [(V_NEW - V_OLD, 2)], 2, seed=9)
    )
    for d in (0, 1):
        tokens, domain = tokens_of(d)
        with torch.no_grad():
            a, sa = old(tokens, domain, d)
            b, sb = loaded(tokens, domain, d)
            c, _ = loaded(tokens, domain)  # per-sample routing
        assert torch.equal(a, b[..., :V_OLD]) and torch.equal(sa, sb)
        assert torch.isneginf(b[..., V_OLD:]).all() and torch.equal(b, c)
        assert new.vocabulary_limit(d) == V_OLD
    assert new.vocabulary_limit(2) == V_NEW
    tokens, domain = tokens_of(2, V_NEW)
    logits, _ = new(tokens, domain, 2)
    assert torch.isfinite(logits).all()
    fixed = derive_genotype(architecture_logits(old)[0], old.space, ["en", "de"])
    now = derive_genotype(architecture_logits(new)[0], new.space, ["en", "de", "fr"])
    assert all(now.cells[d] == fixed.cells[d] for d in ("en", "de"))


def test_an_extended_network_extends_again():
    """en,de -> +fr (one appended block) -> +es (a second block): en and fr keep their outputs."""
    v1, v2 = V_NEW, V_NEW + 5
    base = rnn(["en", "de"]).eval()
    first = rnn(["en", "de", "fr"], v1, blocks=[(v1 - V_OLD, 2)], frozen=2, seed=1)
    extend_network(first, base.state_dict())
    with torch.no_grad():
        first.alphas.alpha.add_(torch.randn_like(first.alphas.alpha))  # fr's searched row
        first.appended_vocabulary.weights[0].add_(1.0)
    blocks = [(v1 - V_OLD, 2), (v2 - v1, 3)]
    second = rnn(["en", "de", "fr", "es"], v2, blocks=blocks, frozen=3, seed=2)
    report = extend_network(second, first.state_dict(), init_from=2)
    assert {n for n, p in second.named_parameters() if p.requires_grad} == {
        "appended_vocabulary.weights.1",
        "appended_vocabulary.biases.1",
    }
    assert "appended_vocabulary.weights.0" in report.frozen
    assert torch.equal(second.alphas.alpha[0], first.alphas.alpha[0])  # es starts as fr
    loaded = reloaded(second, lambda: rnn(["en", "de", "fr", "es"], v2, blocks=blocks, frozen=3))
    old = reloaded(first, lambda: rnn(["en", "de", "fr"], v1, blocks=blocks[:1], frozen=2))
    for d, vocab in ((0, V_OLD), (2, v1)):
        tokens, domain = tokens_of(d, vocab)
        with torch.no_grad():
            a, b = old(tokens, domain, d)[0], loaded(tokens, domain, d)[0]
        assert torch.equal(a[..., :vocab], b[..., :vocab]) and torch.isneginf(b[..., vocab:]).all()


def rnn_genotype(domains, ops):
    space = darts_rnn_space(3)
    cells = {
        d: tuple(GenotypeEdge(node=j, input=j - 1, op=op) for j, op in zip(space.node_ids, ops[d]))
        for d in domains
    }
    return MultiDomainGenotype(space, tuple(domains), cells)


def test_extended_multimodel_trains_only_the_new_domains_own_modules():
    ops = {"en": ["tanh", "relu", "tanh"], "de": ["tanh", "sigmoid", "tanh"]}
    old = rnn(["en", "de"], genotype=rnn_genotype(["en", "de"], ops)).eval()
    ops["fr"] = ["tanh", "identity", "relu"]  # node 1's tanh is shared with the old domains
    g = rnn_genotype(["en", "de", "fr"], ops)
    new = rnn(["en", "de", "fr"], V_NEW, blocks=[(V_NEW - V_OLD, 2)], genotype=g, seed=3)
    extend_network(new, old.state_dict())
    trained = {n for n, p in new.named_parameters() if p.requires_grad}
    assert trained == {
        "appended_vocabulary.weights.0",
        "appended_vocabulary.biases.0",
        "cell.op_weights.node2_identity",
        "cell.op_weights.node3_relu",
    }
    loaded = reloaded(new, lambda: rnn(["en", "de", "fr"], V_NEW, [(V_NEW - V_OLD, 2)], genotype=g))
    for d in (0, 1):
        tokens, domain = tokens_of(d)
        with torch.no_grad():
            a, b = old(tokens, domain, d)[0], loaded(tokens, domain, d)[0]
        assert torch.equal(a, b[..., :V_OLD])
    # with train_shared every copied weight trains too
    again = rnn(["en", "de", "fr"], V_NEW, blocks=[(V_NEW - V_OLD, 2)], genotype=g)
    extend_network(again, old.state_dict(), train_shared=True)
    assert all(p.requires_grad for p in again.parameters())


def test_old_state_that_does_not_fit_is_named():
    old = rnn(["en", "de"])
    new = rnn(["en", "de", "fr"], V_NEW, blocks=[(V_NEW - V_OLD, 2)], frozen=2)
    state = old.state_dict()
    with pytest.raises(ExtensionError, match="'cell.w0' has shape"):
        extend_network(new, dict(state, **{"cell.w0": torch.zeros(3, 3)}))
    with pytest.raises(ExtensionError, match="'stray' has no place"):
        extend_network(new, dict(state, stray=torch.zeros(1)))
    with pytest.raises(ExtensionError, match="3 architectures"):
        wider = rnn(["en", "de", "fr"])
        extend_network(new, wider.state_dict())


def test_genotype_that_changes_an_old_domain_is_rejected():
    ops = {"en": ["tanh", "relu", "tanh"], "de": ["tanh", "sigmoid", "tanh"]}
    old = rnn_genotype(["en", "de"], ops)
    check_extension(old, rnn_genotype(["en", "de", "fr"], dict(ops, fr=["relu"] * 3)))
    moved = dict(ops, de=["tanh", "relu", "tanh"], fr=["relu"] * 3)
    with pytest.raises(GenotypeError, match="old domain 'de'"):
        check_extension(old, rnn_genotype(["en", "de", "fr"], moved), "new.json")
    with pytest.raises(GenotypeError, match="do not extend"):
        check_extension(old, rnn_genotype(["de", "en", "fr"], dict(ops, fr=["relu"] * 3)))


# ----------------------------------------------------------------------- p
def test_robust_p_stays_on_the_drawn_domains():
    sampler = DomainSampler(3, [0.0, 0.0, 1.0], eta_p=1.0)
    sampler.observe(torch.tensor([0.0, 0.0, 2.0]), torch.tensor([False, False, True]))
    assert torch.equal(sampler.update(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    two = DomainSampler(4, [0.0, 0.0, 1.0, 1.0], eta_p=1.0)
    two.observe(torch.tensor([0.0, 0.0, 1.0, 2.0]), torch.tensor([False, False, True, True]))
    p = two.update()
    assert p[:2].tolist() == [0.0, 0.0] and p[3] > p[2] > 0


# ----------------------------------------------------------------------- normalisation
def test_a_domain_is_normalised_over_its_own_entries_bitwise():
    """log_softmax over [logits, -inf...] differs in the last bit for some sizes on CPU; the
    decoder normalises an old domain over its prefix, which is exactly the old computation."""
    from mdnas_fairseq.models.language_model import SearchableDecoder

    gen = torch.Generator().manual_seed(0)
    # short rows with long padding: where this machine's CPU kernel differs in the last bit
    sizes = [(6, 94), (10, 193), (13, 73), (14, 253), (301, 19), (2741, 250)]
    for (vocab, extra), scale in [(size, scale) for size in sizes for scale in (1, 5, 30)]:
        logits = torch.randn(43, vocab, generator=gen) * scale
        padded = torch.cat([logits, torch.full((43, extra), float("-inf"))], -1)
        out = SearchableDecoder.get_normalized_probs(
            types.SimpleNamespace(), (padded, {"vocabulary_limit": vocab}), log_probs=True
        )
        assert torch.equal(out[:, :vocab], torch.log_softmax(logits, -1))
        assert torch.isneginf(out[:, vocab:]).all()
        probs = SearchableDecoder.get_normalized_probs(
            types.SimpleNamespace(), (padded, {"vocabulary_limit": vocab}), log_probs=False
        )
        assert torch.equal(probs[:, :vocab], torch.softmax(logits, -1))
        assert (probs[:, vocab:] == 0).all()
