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


def pad_batch(rows, pad, side, pads_per_row):
    """Sequences ``rows`` (lists) padded with ``pad`` on ``side`` ("left" / "right") by
    ``pads_per_row[b]`` beyond the longest; returns (tokens (B, T), where (B, T) True at real positions)."""
    steps = max(len(r) + p for r, p in zip(rows, pads_per_row))
    tokens = torch.full((len(rows), steps), pad, dtype=torch.long)
    real = torch.zeros(len(rows), steps, dtype=torch.bool)
    for b, r in enumerate(rows):
        start = steps - len(r) if side == "left" else 0
        tokens[b, start : start + len(r)] = torch.tensor(r)
        real[b, start : start + len(r)] = True
    return tokens, real


def assert_candidate_ignores_pads(module, dim, side, lengths=(5, 3, 6), extra=(2, 0, 1), seed=0):
    """The outputs at the real positions of a padded batch (pads holding random states, as a network's
    pad positions do) equal those of each sequence alone, unpadded; the pads' outputs stay finite;
    and the padded batch is still causal at its real positions."""
    gen = torch.Generator().manual_seed(seed)
    module = module.double().eval()
    alone = [torch.randn(n, 1, dim, generator=gen, dtype=torch.float64) for n in lengths]
    _, real = pad_batch([[0] * n for n in lengths], 1, side, extra)
    steps = real.shape[1]
    x = torch.randn(steps, len(lengths), dim, generator=gen, dtype=torch.float64)
    for b, seq in enumerate(alone):
        x[real[b], b] = seq[:, 0]
    with torch.no_grad():
        y = module(x, padding_mask=~real)
        assert torch.isfinite(y).all()
        for b, seq in enumerate(alone):
            expected = module(seq)[:, 0]
            assert torch.allclose(y[real[b], b], expected, rtol=0, atol=1e-10), (side, b)
        # changing the pads' states changes no real position
        x2 = torch.where(real.t().unsqueeze(-1), x, 100 * torch.randn_like(x))
        assert torch.allclose(
            module(x2, padding_mask=~real)[real.t()], y[real.t()], rtol=0, atol=1e-10
        )
        # causal: a change at real position t (and after) leaves the real positions before it alone
        for t in range(1, steps):
            x3 = x.clone()
            x3[t:] += 1.0
            y3 = module(x3, padding_mask=~real)
            assert torch.equal(y3[:t][real.t()[:t]], y[:t][real.t()[:t]]), (side, t)


def assert_network_ignores_pads(net, vocab, pad, side, domains=(1, 0, 1), seed=0, atol=1e-10):
    """Logits and features at the real positions of a left- or right-padded batch equal those of each
    sentence alone (unpadded); the batch stays causal at its real positions."""
    gen = torch.Generator().manual_seed(seed)
    lengths, extra = (5, 3, 6), (2, 0, 1)
    rows = [torch.randint(4, vocab, (n,), generator=gen).tolist() for n in lengths]
    tokens, real = pad_batch(rows, pad, side, extra)
    domain = torch.tensor(domains)
    net.eval()
    with torch.no_grad():
        logits, feats = net(tokens, domain)
        assert torch.isfinite(logits).all()
        for b, r in enumerate(rows):
            alone_logits, alone_feats = net(torch.tensor([r]), domain[b : b + 1])
            assert torch.allclose(logits[b, real[b]], alone_logits[0], rtol=0, atol=atol), (side, b)
            assert torch.allclose(feats[b, real[b]], alone_feats[0], rtol=0, atol=atol), (side, b)
        for t in range(1, tokens.shape[1]):  # causal: changing real tokens at >= t
            changed = tokens.clone()
            changed[:, t:] = torch.where(
                real[:, t:], (tokens[:, t:] - 4 + 1) % (vocab - 4) + 4, pad
            )
            logits2, _ = net(changed, domain)
            before = real.clone()
            before[:, t:] = False
            assert torch.equal(logits2[before], logits[before]), (side, t)
