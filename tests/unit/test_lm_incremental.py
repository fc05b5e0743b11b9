"""Incremental decoding of the language models (fairseq's generation, issue 27): for the recurrent
(``mdnas_rnn``) and the Transformer (``mdnas_transformer_lm``) spaces, tiny derived multimodels
and search supernetworks built as fairseq builds them.

* The log-probabilities of step-by-step decoding with an incremental state (the decoder called as
  fairseq's ``SequenceGenerator`` calls it: no domain, the domain set by the task with
  ``decoding_domain``) equal those of one full forward pass (another code path: the whole
  sequence through the cell, the causal mask, the band-matrix lightweight convolution), also after
  the hypotheses are reordered and dropped mid-sentence as beam search does.
* fairseq's ``SequenceGenerator`` (beam search with a prefix, as ``LanguageModelingTask`` runs it)
  returns hypotheses whose positional scores are the full forward pass's log-probabilities.
* The domain matters: two domains of different genotypes (or alpha) score the same tokens
  differently, each as its own full forward pass.

Models run in float64; fairseq's attention computes its incremental softmax in float32 and the
generator keeps scores in float32, so the tolerance is 1e-5.
"""

import types

import pytest
import torch
from fairseq.data import Dictionary
from fairseq.sequence_generator import SequenceGenerator

import mdnas_fairseq  # noqa: F401
from mdnas_fairseq.models.mdnas_rnn import MDNASRNNConfig, MDNASRNNModel
from mdnas_fairseq.models.mdnas_transformer_lm import MDNASTransformerConfig, MDNASTransformerModel
from mdnas_fairseq.search import (
    GenotypeEdge,
    MultiDomainGenotype,
    darts_rnn_space,
    save_genotype,
    transformer_lm_space,
)

DOMAINS = ("a", "b")
ATOL = 1e-5


def dictionary(n=20):
    d = Dictionary()
    for i in range(n):
        d.add_symbol(f"w{i}")
    return d


def task(d):
    return types.SimpleNamespace(domain_names=list(DOMAINS), source_dictionary=d)


def chain(space, ops):
    """A cell of a chain space: slot (edge) e holds ops[e]."""
    return tuple(GenotypeEdge(j, i, op) for (i, j), op in zip(space.edges, ops))


def write_genotype(tmp_path, space, cells):
    path = str(tmp_path / "genotype.json")
    save_genotype(path, MultiDomainGenotype(space, DOMAINS, cells))
    return path


def build_rnn(tmp_path, derived=True, seed=0):
    """3 nodes of 8 dims; domains a and b with different (input, operation) choices."""
    torch.manual_seed(seed)
    space = darts_rnn_space(3)
    genotype = None
    if derived:
        cells = {
            "a": (GenotypeEdge(1, 0, "tanh"), GenotypeEdge(2, 1, "relu"),
                  GenotypeEdge(3, 1, "sigmoid")),
            "b": (GenotypeEdge(1, 0, "identity"), GenotypeEdge(2, 0, "sigmoid"),
                  GenotypeEdge(3, 2, "tanh")),
        }  # fmt: skip
        genotype = write_genotype(tmp_path, space, cells)
    cfg = MDNASRNNConfig(
        embed_dim=8, hidden_dim=8, num_nodes=3, dropout=0.0, genotype=genotype,
        alpha_init_scale=1.0, compile_cell="off",
    )  # fmt: skip
    cfg.max_update = 0
    d = dictionary()
    return MDNASRNNModel.build_model(cfg, task(d)).double().eval(), d


def build_transformer(tmp_path, token_op=None, learned=False, seed=0):
    """2 layers of 8 dims (kernel 3); derived: domain a ``token_op`` in both token slots, domain b
    other operations in every slot; ``token_op`` None: the search supernetwork."""
    torch.manual_seed(seed)
    space = transformer_lm_space(2, (3,))
    genotype = None
    if token_op is not None:
        cells = {
            "a": chain(space, [token_op, "ffn_relu", token_op, "ffn_gelu"]),
            "b": chain(space, ["lightconv_3", "ffn_sqrelu", "attention", "identity"]),
        }
        genotype = write_genotype(tmp_path, space, cells)
    cfg = MDNASTransformerConfig(
        decoder_layers=2, decoder_embed_dim=8, decoder_ffn_embed_dim=16,
        decoder_attention_heads=2, decoder_conv_kernel_sizes="3", decoder_learned_pos=learned,
        dropout=0.0, genotype=genotype, alpha_init_scale=1.0,
    )  # fmt: skip
    cfg.max_update = 0
    d = dictionary()
    return MDNASTransformerModel.build_model(cfg, task(d)).double().eval(), d


CASES = {
    "rnn-derived": lambda p: build_rnn(p),
    "rnn-search": lambda p: build_rnn(p, derived=False),
    **{
        f"transformer-derived-{op}": (lambda p, op=op: build_transformer(p, op))
        for op in ("attention", "lightconv_3", "dwconv_3", "identity")
    },
    "transformer-derived-learned-positions": lambda p: build_transformer(p, "dwconv_3", True),
    "transformer-search": lambda p: build_transformer(p),
}


def tokens(d, rows=3, steps=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    prev = torch.randint(d.nspecial, len(d), (rows, steps), generator=gen)
    prev[:, 0] = d.eos()
    return prev


def full_lprobs(model, prev, domain):
    """Log-probabilities of one full forward pass with the batch's domain in ``net_input``."""
    out = model(prev, domain=torch.full((prev.shape[0],), domain), batch_domain=domain)
    return model.get_normalized_probs(out, log_probs=True)


def step_lprobs(model, prev, state, steps):
    """The decoder as SequenceGenerator calls it: the prefix so far, no domain, the state."""
    outs = []
    for t in steps:
        out = model.decoder(prev[:, : t + 1], encoder_out=None, incremental_state=state)
        outs.append(model.get_normalized_probs((out[0][:, -1:], out[1]), log_probs=True))
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("case", list(CASES))
def test_incremental_equals_full_forward_and_follows_beam_reorders(case, tmp_path):
    model, d = CASES[case](tmp_path)
    prev = tokens(d)
    with torch.no_grad():
        for domain in range(len(DOMAINS)):
            full = full_lprobs(model, prev, domain)
            with model.decoder.decoding_domain(domain):
                steps = step_lprobs(model, prev, {}, range(prev.shape[1]))
            assert steps.shape == full.shape
            torch.testing.assert_close(steps, full, atol=ATOL, rtol=0)

        # beam search: 3 hypotheses per sentence, reordered within their sentence (some
        # duplicated) after 3 steps, then the first sentence finished (dropped) after 6
        hypotheses = torch.cat([prev[:2], prev[:2].flip(1), prev[:2].roll(1, dims=1)])
        hypotheses[:, 0] = d.eos()
        for domain in range(len(DOMAINS)):
            prev = hypotheses
            with model.decoder.decoding_domain(domain):
                state = {}
                out = [step_lprobs(model, prev, state, range(3))]
                for order, steps in (([2, 0, 0, 4, 5, 3], range(3, 6)), ([3, 5], range(6, 8))):
                    order = torch.tensor(order)
                    model.decoder.reorder_incremental_state_scripting(state, order)
                    prev = prev[order]
                    out = [o[order] for o in out] + [step_lprobs(model, prev, state, steps)]
            torch.testing.assert_close(
                torch.cat(out, dim=1), full_lprobs(model, prev, domain), atol=ATOL, rtol=0
            )


@pytest.mark.parametrize(
    "case", ["rnn-derived", "transformer-derived-lightconv_3", "transformer-search"]
)
def test_the_domain_matters(case, tmp_path):
    """Domains a and b (different genotypes, or alpha rows) score the same tokens differently, each
    decoding step by step as its own full forward pass."""
    model, d = CASES[case](tmp_path)
    prev = tokens(d, seed=2)
    scores = []
    with torch.no_grad():
        for domain in range(len(DOMAINS)):
            with model.decoder.decoding_domain(domain):
                scores.append(step_lprobs(model, prev, {}, range(prev.shape[1])))
            torch.testing.assert_close(
                scores[-1], full_lprobs(model, prev, domain), atol=ATOL, rtol=0
            )
    assert (scores[0] - scores[1]).abs().max() > 1e-2


def test_a_decoder_call_without_a_domain_names_the_way_to_give_one(tmp_path):
    model, d = build_rnn(tmp_path)
    with pytest.raises(ValueError, match="--eval-domain"):
        model.decoder(tokens(d), encoder_out=None, incremental_state={})
    with model.decoder.decoding_domain(1):
        pass
    assert model.decoder.generation_domain is None  # restored


@pytest.mark.parametrize(
    "case", ["rnn-derived", "transformer-derived-attention", "transformer-search"]
)
def test_sequence_generator_scores_are_the_full_forward_log_probs(case, tmp_path):
    """Beam search (3 beams, fairseq's SequenceGenerator, incremental, with a prefix of 2 tokens as
    LanguageModelingTask.inference_step gives it) in domain b: every hypothesis' positional scores
    are the full forward pass's log-probabilities of its tokens."""
    model, d = CASES[case](tmp_path)
    src = tokens(d, rows=2, steps=3, seed=3)  # <eos> + a 2-token prefix, as MonolingualDataset's
    gen = SequenceGenerator([model], d, beam_size=3, max_len_b=6)
    sample = {"net_input": {"src_tokens": src, "src_lengths": torch.full((2,), 3)}}
    with torch.no_grad():
        with model.decoder.decoding_domain(1):
            hypos = gen.generate([model], sample, prefix_tokens=src[:, 1:], bos_token=d.eos())
        for b, hyps in enumerate(hypos):
            assert len(hyps) == 3
            for h in hyps:
                assert torch.equal(h["tokens"][:2], src[b, 1:])  # the prefix, forced
                assert h["tokens"][-1] == d.eos()
                prev = torch.cat([torch.tensor([d.eos()]), h["tokens"][:-1]])[None]
                full = full_lprobs(model, prev, 1)[0].gather(1, h["tokens"][:, None])[:, 0]
                torch.testing.assert_close(
                    h["positional_scores"], full.to(h["positional_scores"]), atol=ATOL, rtol=0
                )
