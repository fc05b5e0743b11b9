"""The fairseq model ``mdnas_transformer_lm`` in process: fairseq's candidate modules against the
fairseq-free ones, causality of every fairseq candidate and of the built model (both position kinds),
the search API (domain representation at <eos>, fp32 probabilities), derived parameter counts."""

import types

import pytest
import torch
from fairseq.data import Dictionary

import mdnas_fairseq  # noqa: F401
from mdnas_fairseq.cells.transformer_ops import (
    CausalLightweightConv,
    CausalSelfAttention,
    LightConvBlock,
    torch_candidates,
)
from mdnas_fairseq.models.mdnas_transformer_lm import (
    MDNASTransformerConfig,
    MDNASTransformerModel,
    fairseq_candidates,
)
from mdnas_fairseq.search import GenotypeError, derive_genotype, save_genotype, transformer_lm_space
from tests.helpers.transformer import (
    assert_candidate_causal,
    assert_candidate_ignores_pads,
    assert_network_causal,
    assert_network_ignores_pads,
    uniform_genotype,
)

C, F, H = 8, 16, 2


def config(**overrides):
    cfg = MDNASTransformerConfig(
        decoder_layers=2,
        decoder_embed_dim=C,
        decoder_ffn_embed_dim=F,
        decoder_attention_heads=H,
        dropout=0.0,
    )
    cfg.max_update = 0
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def task(domains=("en", "de")):
    d = Dictionary()
    for w in "the a cat dog sat on mat der die das katze hund".split():
        d.add_symbol(w)
    return types.SimpleNamespace(domain_names=list(domains), source_dictionary=d)


@pytest.mark.parametrize("steps", [9, 3])
def test_fairseq_attention_and_lightconv_equal_the_plain_pytorch_ones(steps):
    fairseq_ops, plain_ops = fairseq_candidates(config()), torch_candidates(C, H, F)
    x = torch.randn(steps, 3, C, dtype=torch.float64)
    for name in ("attention", "lightconv_3", "lightconv_7"):
        ours, theirs = plain_ops(name).double().eval(), fairseq_ops(name).double().eval()
        if name == "attention":
            assert isinstance(ours, CausalSelfAttention)
            state = {k.replace("attn.", ""): v for k, v in theirs.state_dict().items()}
        else:
            assert isinstance(ours, LightConvBlock) and isinstance(ours.conv, CausalLightweightConv)
            state = theirs.state_dict()
        ours.load_state_dict(state)
        assert sum(p.numel() for p in ours.parameters()) == sum(
            p.numel() for p in theirs.parameters()
        )
        with torch.no_grad():
            assert torch.allclose(theirs(x), ours(x), atol=1e-12), name


def test_the_attention_modules_of_a_model_share_one_causal_mask_of_any_length():
    """As fairseq's transformer_lm: one (N, N) mask for every layer (autograd keeps it once), sliced
    to each batch's length, grown when a longer batch comes."""
    build = fairseq_candidates(config())
    first, second = build("attention").double().eval(), build("attention").double().eval()
    assert first.future_mask is second.future_mask
    plain = torch_candidates(C, H, F)("attention").double().eval()
    plain.load_state_dict({k.replace("attn.", ""): v for k, v in first.state_dict().items()})
    with torch.no_grad():
        for steps in (5, 3, 9):
            x = torch.randn(steps, 2, C, dtype=torch.float64)
            assert torch.allclose(first(x), plain(x), atol=1e-12)
            assert first.future_mask.mask.shape[0] == max(5, steps)  # grown, never shrunk
            assert second(x).shape == x.shape


@pytest.mark.parametrize("op", [op for op in transformer_lm_space(1).operations if op != "none"])
def test_every_fairseq_candidate_is_causal(op):
    token_mixer = op == "attention" or "conv" in op
    for steps in (9, 3):
        assert (
            assert_candidate_causal(fairseq_candidates(config())(op), C, steps=steps) == token_mixer
        )


@pytest.mark.parametrize("learned", [False, True])
def test_built_model_is_causal_in_search_and_derived_modes(learned, tmp_path):
    torch.manual_seed(0)
    t = task()
    search = MDNASTransformerModel.build_model(
        config(decoder_learned_pos=learned, alpha_init_scale=1.0), t
    )
    vocab = len(t.source_dictionary)
    assert_network_causal(search.lm, vocab, domain=1)
    space = search.search_space
    for token_op, channel_op in (
        ("attention", "ffn_gelu"),
        ("lightconv_7", "ffn_sqrelu"),
        ("dwconv_3", "identity"),
    ):
        path = str(tmp_path / f"{token_op}.json")
        save_genotype(path, uniform_genotype(space, ["en", "de"], token_op, channel_op))
        derived = MDNASTransformerModel.build_model(
            config(decoder_learned_pos=learned, genotype=path), t
        )
        assert not derived.is_search
        assert_network_causal(derived.lm, vocab)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("op", [op for op in transformer_lm_space(1).operations if op != "none"])
def test_every_fairseq_candidate_ignores_left_and_right_padding(op, side):
    assert_candidate_ignores_pads(fairseq_candidates(config())(op), C, side)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("learned", [False, True])
def test_built_model_ignores_left_and_right_padding(learned, side, tmp_path):
    """Search and derived models: the real positions of a padded batch compute what the sentence alone does
    (fairseq's positions count from the first real token)."""
    torch.manual_seed(0)
    t = task()
    vocab, pad = len(t.source_dictionary), t.source_dictionary.pad()
    search = MDNASTransformerModel.build_model(
        config(decoder_learned_pos=learned, alpha_init_scale=1.0), t
    )
    assert_network_ignores_pads(search.lm.double(), vocab, pad, side)
    for token_op in ("attention", "lightconv_7", "dwconv_3"):
        path = str(tmp_path / f"{token_op}.json")
        save_genotype(
            path, uniform_genotype(search.search_space, ["en", "de"], token_op, "ffn_relu")
        )
        derived = MDNASTransformerModel.build_model(
            config(decoder_learned_pos=learned, genotype=path), t
        )
        assert_network_ignores_pads(derived.lm.double(), vocab, pad, side)
    # float32 (the default precision) to ~1e-5
    float_model = MDNASTransformerModel.build_model(config(alpha_init_scale=1.0), t)
    assert_network_ignores_pads(float_model.lm, vocab, pad, side, atol=1e-5)


def test_domain_representation_is_the_last_real_token_on_either_side():
    """Left-padded and right-padded, the representation is the <eos> state, equal to the unpadded one."""
    torch.manual_seed(0)
    model = MDNASTransformerModel.build_model(config(), task()).double().eval()
    sentences = [[5, 6, 7, 2], [8, 9, 2]]
    alone = []
    for s in sentences:
        net_input = {
            "src_tokens": torch.tensor([s]),
            "src_lengths": torch.tensor([len(s)]),
            "domain": torch.tensor([1]),
        }
        alone.append(model.domain_representation(model(**net_input), {"net_input": net_input})[0])
    for padded in (
        [[5, 6, 7, 2], [1, 8, 9, 2]],
        [[5, 6, 7, 2], [8, 9, 2, 1]],
        [[1, 5, 6, 7, 2], [1, 1, 8, 9, 2]],
    ):
        tokens = torch.tensor(padded)
        net_input = {
            "src_tokens": tokens,
            "src_lengths": tokens.ne(1).sum(1),
            "domain": torch.tensor([1, 1]),
        }
        rep = model.domain_representation(model(**net_input), {"net_input": net_input})
        for b in range(2):
            assert torch.allclose(rep[b], alone[b], rtol=0, atol=1e-10), padded


def test_search_api_representation_at_eos_and_fp32_probabilities():
    torch.manual_seed(0)
    model = MDNASTransformerModel.build_model(config(), task()).eval()
    assert model.is_search and model.architecture_names == ["en", "de"]
    tokens = torch.tensor([[5, 6, 7, 2, 1], [8, 9, 2, 1, 1]])  # right-padded, <eos> = 2
    lengths = torch.tensor([4, 3])
    sample = {
        "net_input": {"src_tokens": tokens, "src_lengths": lengths, "domain": torch.tensor([0, 0])}
    }
    out = model(**sample["net_input"])
    rep = model.domain_representation(out, sample)
    assert torch.equal(rep, torch.stack([out[1]["states"][0, 3], out[1]["states"][1, 2]]))
    # the representation is the last LayerNorm's output, the input of the tied projection
    assert torch.allclose(out[0], out[1]["states"] @ model.lm.embedding.weight.t())
    half = (out[0].half(), out[1])
    assert model.get_normalized_probs(half, log_probs=True).dtype == torch.float32
    with pytest.raises(ValueError, match="needs the domain of every sentence"):
        model(tokens, src_lengths=lengths)


def test_derived_model_size_is_the_genotype_count_and_the_space_must_match(tmp_path):
    t = task()
    search = MDNASTransformerModel.build_model(config(), t)
    space = search.search_space
    genotype = derive_genotype(torch.randn(2, space.num_edges, space.num_ops), space, ["en", "de"])
    path = str(tmp_path / "g.json")
    save_genotype(path, genotype)
    derived = MDNASTransformerModel.build_model(config(genotype=path), t)
    n = sum(p.numel() for p in derived.parameters())
    assert n == derived.genotype_param_count(genotype) == search.genotype_param_count(genotype)
    assert n < sum(p.numel() for p in search.parameters())
    with pytest.raises(GenotypeError, match="search space"):  # other kernel sizes: another space
        MDNASTransformerModel.build_model(
            config(genotype=path, decoder_conv_kernel_sizes="3,5", genotype_data=None), t
        )
    union = MDNASTransformerModel.build_model(config(shared_architecture=True), t)
    assert union.architecture_names == ["en+de"] and tuple(union.lm.alphas.alpha.shape) == (
        1,
        4,
        space.num_ops,
    )


def test_presets_are_registered():
    from fairseq.models import ARCH_MODEL_REGISTRY

    for name in (
        "mdnas_transformer_lm",
        "mdnas_transformer_lm_tiny",
        "mdnas_transformer_lm_small",
        "mdnas_transformer_lm_base",
    ):
        assert ARCH_MODEL_REGISTRY[name] is MDNASTransformerModel


def test_a_checkpoint_of_another_dictionary_is_rejected():
    model = MDNASTransformerModel.build_model(config(), task())
    other = task()
    other.source_dictionary.symbols[-1] = "mouse"  # same size, another vocabulary
    with pytest.raises(ValueError, match="different dictionary"):
        MDNASTransformerModel.build_model(config(), other).load_state_dict(model.state_dict())
    MDNASTransformerModel.build_model(config(), task()).load_state_dict(
        model.state_dict()
    )  # same one: fine
