"""Incremental decoding of the translation model (mdnas_fairseq/models/mdnas_transformer.py,
cells/transformer_mt.py): for every decoder operation, the logits of step-by-step decoding with an
incremental state equal those of one full forward pass (a different code path: the causal mask,
the band-matrix lightweight convolution, the padded depthwise convolution), also after the beams
are reordered mid-sentence as beam search does; and fairseq's SequenceGenerator (incremental,
beam 1) finds the sequence and scores of a greedy search written here over full forward passes.

The model runs in float64, but fairseq's attention computes its incremental softmax in float32
(``fairseq.utils.softmax``), so the two paths agree to about 1e-7: the tolerance is 1e-5.
"""

from types import SimpleNamespace

import pytest
import torch
from fairseq.data import Dictionary
from fairseq.sequence_generator import SequenceGenerator

from mdnas_fairseq.cells.transformer_mt import SearchableTransformerMT, transformer_mt_space
from mdnas_fairseq.models.mdnas_transformer import (
    CrossAttention,
    MDNASTransformerMTModel,
    SearchableEncoder,
    SearchableIncrementalDecoder,
    decoder_candidates,
    encoder_candidates,
)
from mdnas_fairseq.search import GenotypeEdge, MultiDomainGenotype

KERNELS = (3, 5)
TOKEN_OPS = ["attention", "lightconv_3", "lightconv_5", "dwconv_3", "dwconv_5", "identity"]
CHANNEL_OPS = ["ffn_relu", "ffn_gelu", "ffn_sqrelu", "identity"]
CFG = SimpleNamespace(
    embed_dim=16, ffn_embed_dim=24, attention_heads=2, activation_dropout=0.0,
    attention_dropout=0.0, weight_dropout=0.0,
)  # fmt: skip
DOMAINS = ("a", "b")


def dictionary(n=20):
    d = Dictionary()
    for i in range(n):
        d.add_symbol(f"w{i}")
    return d


def cell(space, decoder_ops, encoder_op="attention"):
    """Encoder: ``encoder_op`` + ffn_relu; decoder slots: ``decoder_ops`` in order."""
    ops = [encoder_op, "ffn_relu"] + list(decoder_ops)
    return tuple(GenotypeEdge(j, i, ops[e]) for e, (i, j) in enumerate(space.edges))


def build(decoder_ops=None, seed=0, encoder_op="attention"):
    """A model with 1 encoder and 2 decoder layers: derived (domain a's slots ``encoder_op``
    and ``decoder_ops``, domain b identity / attention / ffn_gelu) or, with None, the search model."""
    torch.manual_seed(seed)
    space = transformer_mt_space(1, 2, KERNELS)
    genotype = None
    if decoder_ops is not None:
        cells = {
            "a": cell(space, decoder_ops, encoder_op),
            "b": cell(space, ["attention", "ffn_gelu"] * 2, "identity"),
        }
        genotype = MultiDomainGenotype(space, DOMAINS, cells)
    d = dictionary()
    net = SearchableTransformerMT(
        len(d), d.pad(), CFG.embed_dim, 1, 2, DOMAINS, encoder_candidates(CFG),
        decoder_candidates(CFG), lambda: CrossAttention(CFG.embed_dim, 2, 0.0), KERNELS,
        genotype=genotype, alpha_init_scale=1.0,
    )  # fmt: skip
    # positions: fairseq's, as the model builds them
    from fairseq.modules import PositionalEmbedding

    net.encoder_positions = PositionalEmbedding(64, CFG.embed_dim, d.pad(), learned=False)
    net.decoder_positions = PositionalEmbedding(64, CFG.embed_dim, d.pad(), learned=True)
    model = MDNASTransformerMTModel(
        SearchableEncoder(d, net, 64), SearchableIncrementalDecoder(d, net, 64), None
    )
    return model.double().eval(), d


def batch(d, seed=1):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(d.nspecial, len(d), (3, 6), generator=gen)
    src[:, -1] = d.eos()
    src[1, :2] = d.pad()  # a left-padded source
    prev = torch.randint(d.nspecial, len(d), (3, 9), generator=gen)
    prev[:, 0] = d.eos()
    domain = torch.zeros(3, dtype=torch.long)  # domain a
    return src, prev, domain


def step_by_step(model, prev, encoder_out, state, steps):
    return torch.cat(
        [
            model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)[0]
            for t in steps
        ],
        dim=1,
    )


CASES = [[op, "ffn_relu", op, "ffn_relu"] for op in TOKEN_OPS]
CASES += [["attention", op, "attention", op] for op in CHANNEL_OPS]
CASES += [None]  # the search model: every candidate mixed with random alpha


@pytest.mark.parametrize(
    "ops", CASES, ids=lambda ops: "search" if ops is None else ops[0] + "+" + ops[1]
)
def test_incremental_equals_full_forward_and_reorders(ops):
    model, d = build(ops)
    src, prev, domain = batch(d)
    with torch.no_grad():
        enc = model.encoder(src, domain=domain)
        full = model.decoder(prev, encoder_out=enc)[0]
        state = {}
        steps = step_by_step(model, prev, enc, state, range(prev.shape[1]))
        assert steps.shape == full.shape
        torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)

        # beam search: 3 hypotheses per sentence, reordered within their sentence (some
        # duplicated) after 3 steps, then the finished first sentence dropped after 6
        src = src[:2].repeat_interleave(3, 0)
        prev = torch.cat([prev, prev.flip(1).roll(1, dims=1)])  # 6 different prefixes
        prev[:, 0] = d.eos()
        domain = torch.zeros(6, dtype=torch.long)
        enc, state = model.encoder(src, domain=domain), {}
        out = [step_by_step(model, prev, enc, state, range(3))]
        for order, steps in (([2, 0, 0, 4, 5, 3], range(3, 6)), ([3, 5], range(6, 9))):
            order = torch.tensor(order)
            model.decoder.reorder_incremental_state_scripting(state, order)
            enc, src, prev, domain = (
                model.encoder.reorder_encoder_out(enc, order), src[order], prev[order],
                domain[order],
            )  # fmt: skip
            out = [o[order] for o in out] + [step_by_step(model, prev, enc, state, steps)]
        reference = model.decoder(prev, encoder_out=model.encoder(src, domain=domain))[0]
        torch.testing.assert_close(torch.cat(out, dim=1), reference, atol=1e-5, rtol=0)


def greedy(model, d, src, domain, max_len):
    """Greedy search over full forward passes, with SequenceGenerator's rules: no pad, no <eos>
    before min_len = 1, <eos> forced after max_len steps."""
    tokens = torch.full((src.shape[0], 1), d.eos())
    scores = []
    enc = model.encoder(src, domain=domain)
    for step in range(max_len + 1):
        lprobs = torch.log_softmax(model.decoder(tokens, encoder_out=enc)[0][:, -1], dim=-1)
        lprobs[:, d.pad()] = -float("inf")
        if step == 0:
            lprobs[:, d.eos()] = -float("inf")
        if step >= max_len:
            keep = lprobs[:, d.eos()].clone()
            lprobs.fill_(-float("inf"))
            lprobs[:, d.eos()] = keep
        best = lprobs.argmax(-1)
        scores.append(lprobs.gather(1, best[:, None]))
        tokens = torch.cat([tokens, best[:, None]], dim=1)
    return tokens[:, 1:], torch.cat(scores, dim=1)


@pytest.mark.parametrize("ops", [["lightconv_5", "ffn_sqrelu", "dwconv_3", "identity"], None])
def test_beam_one_is_greedy(ops):
    model, d = build(ops, seed=3)
    src, _, domain = batch(d, seed=4)
    max_len = 7
    gen = SequenceGenerator([model], d, beam_size=1, max_len_b=max_len)
    with torch.no_grad():
        sample = {"net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1),
                                "domain": domain, "batch_domain": 0}}  # fmt: skip
        hypos = gen.generate([model], sample)
        tokens, scores = greedy(model, d, src, domain, max_len)
    for b, hyps in enumerate(hypos):
        n = len(hyps[0]["tokens"])
        ends = (tokens[b] == d.eos()).nonzero()
        assert n == int(ends[0]) + 1  # up to and with the first <eos>
        assert torch.equal(hyps[0]["tokens"], tokens[b, :n])
        torch.testing.assert_close(
            hyps[0]["positional_scores"], scores[b, :n].to(hyps[0]["positional_scores"]),
            atol=1e-6, rtol=0,
        )  # fmt: skip


def test_beam_five_is_greedy_where_the_beam_cannot_matter():
    """A derived multimodel made decisive: the learned position of step s points at the embedding
    of a token chosen for it (<eos> at step 5, so greedy stops there) and the output is sharpened
    30x. Then every deviation from the greedy path costs more than the whole greedy path,
    length-normalised (checked below), so beam search (5 beams, fairseq's SequenceGenerator,
    incremental) must return the greedy path."""
    model, d = build(["lightconv_5", "ffn_sqrelu", "dwconv_3", "identity"], seed=5)
    net = model.network
    wanted = [d.nspecial + 2 * s + 1 for s in range(5)] + [d.eos()]
    with torch.no_grad():
        for s, w in enumerate(wanted):
            net.decoder_positions.weight[d.pad() + 1 + s] = 50 * net.embedding.weight[w]
        net.decoder_norm.weight.mul_(30)
        net.decoder_norm.bias.mul_(30)
    src, _, domain = batch(d, seed=6)
    max_len = 9
    with torch.no_grad():
        tokens, scores = greedy(model, d, src, domain, max_len)
        enc = model.encoder(src, domain=domain)
        gaps = []
        for b in range(src.shape[0]):
            n = int((tokens[b] == d.eos()).nonzero()[0]) + 1
            assert n < max_len + 1  # ends by itself, not by the length limit
            prefix = torch.cat([torch.tensor([d.eos()]), tokens[b, : n - 1]])[None]
            one = model.encoder.reorder_encoder_out(enc, torch.tensor([b]))
            lprobs = torch.log_softmax(model.decoder(prefix, encoder_out=one)[0][0], dim=-1)
            lprobs[:, d.pad()] = -float("inf")
            lprobs[0, d.eos()] = -float("inf")
            top2 = lprobs.topk(2, dim=-1).values
            gap = float((top2[:, 0] - top2[:, 1]).min())
            cost = -float(scores[b, :n].sum())
            assert cost / n < gap / (max_len + 1), "the beam could matter: not decisive enough"
            gaps.append(gap)
        gen = SequenceGenerator([model], d, beam_size=5, max_len_b=max_len)
        sample = {"net_input": {"src_tokens": src, "src_lengths": src.ne(d.pad()).sum(1),
                                "domain": domain, "batch_domain": 0}}  # fmt: skip
        hypos = gen.generate([model], sample)
    for b, hyps in enumerate(hypos):
        n = len(hyps[0]["tokens"])
        assert torch.equal(hyps[0]["tokens"], tokens[b, :n])
        torch.testing.assert_close(
            hyps[0]["positional_scores"], scores[b, :n].to(hyps[0]["positional_scores"]),
            atol=1e-5, rtol=0,
        )  # fmt: skip


ENCODER_CASES = ["attention", "lightconv_3", "lightconv_5", "dwconv_3", "dwconv_5", "identity"]


@pytest.mark.parametrize("op", ENCODER_CASES + [None])
def test_left_padded_source_is_encoded_as_if_alone(op):
    """Every encoder candidate (and the search model's mix) ignores the pads of a left-padded
    source: the states at its real positions and the decoder's logits equal those of the
    sentence alone, unpadded (LayerNorm biases made nonzero, so pads do not start as zeros)."""
    model, d = build(None if op is None else ["attention", "ffn_relu"] * 2, 7, op)
    src, prev, domain = batch(d, seed=8)  # row 1 has 2 leading pads
    with torch.no_grad():
        for m in model.modules():  # as after training: a pad's state is not 0 after a LayerNorm
            if isinstance(m, torch.nn.LayerNorm):
                m.bias.normal_()
        enc = model.encoder(src, domain=domain)
        logits = model.decoder(prev, encoder_out=enc)[0]
        alone_src = src[1:2, 2:]
        alone = model.encoder(alone_src, domain=domain[:1])
        assert alone["encoder_padding_mask"] is None
        torch.testing.assert_close(
            enc["encoder_out"][2:, 1], alone["encoder_out"][:, 0], atol=1e-10, rtol=0
        )
        alone_logits = model.decoder(prev[1:2], encoder_out=alone)[0]
        torch.testing.assert_close(logits[1], alone_logits[0], atol=1e-10, rtol=0)
