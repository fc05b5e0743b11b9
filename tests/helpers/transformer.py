"""Checks shared by the Transformer tests: causality of a candidate and of a whole network."""

import torch

from mdnas_fairseq.search import GenotypeEdge, MultiDomainGenotype


def assert_candidate_causal(module, dim, steps=9, batch=2, seed=0):
    """Changing inputs after position t never changes outputs at <= t; a token mixer sees the past."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, batch, dim, generator=gen, dtype=torch.float64)
    module = module.double().eval()
    with torch.no_grad():
        y = module(x)
        assert y.shape == x.shape
        for t in range(steps - 1):
            x2 = x.clone()
            x2[t + 1 :] = torch.randn(steps - t - 1, batch, dim, generator=gen, dtype=torch.float64)
            y2 = module(x2)
            assert torch.equal(y2[: t + 1], y[: t + 1]), (
                f"output at <= {t} changed when inputs after {t} did"
            )
            assert not torch.allclose(y2[t + 1 :], y[t + 1 :]), (
                "the changed positions' outputs did not change"
            )
        x3 = x.clone()
        x3[0] += 1.0
        return not torch.allclose(module(x3)[1], y[1])  # does position 1 see position 0?


def assert_network_causal(net, vocab, steps=7, batch=2, domain=0, seed=0):
    """Changing token t+1 never changes the logits or features at positions <= t."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, vocab, (batch, steps), generator=gen)
    domains = torch.full((batch,), domain, dtype=torch.long)
    net.eval()
    with torch.no_grad():
        logits, feats = net(tokens, domains)
        for t in range(steps - 1):
            changed = tokens.clone()
            changed[:, t + 1] = (tokens[:, t + 1] - 4 + 1) % (vocab - 4) + 4
            logits2, feats2 = net(changed, domains)
            assert torch.equal(logits2[:, : t + 1], logits[:, : t + 1]), t
            assert torch.equal(feats2[:, : t + 1], feats[:, : t + 1]), t
            assert not torch.allclose(logits2[:, t + 1], logits[:, t + 1]), t


def uniform_genotype(space, domains, token_op, channel_op):
    """Every token slot holds ``token_op``, every channel slot ``channel_op``, for every domain."""
    cell = tuple(GenotypeEdge(j, j - 1, token_op if j % 2 else channel_op) for j in space.node_ids)
    return MultiDomainGenotype(space, tuple(domains), {d: cell for d in domains})
