"""Models the Transformer benchmarks compare, all at the same sizes (used by transformer_memory.py and
transformer_speed.py): the search model and derived multimodels of ``mdnas_transformer_lm`` built
by the fairseq glue (fairseq's attention and lightweight convolutions), and fairseq's own
``transformer_lm`` (pre-LayerNorm, sinusoidal positions, tied embeddings) as the baseline."""

import argparse
import json
import os
import sys
import types

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fairseq.data import Dictionary  # noqa: E402
from fairseq.models.transformer_lm import TransformerLanguageModel, base_lm_architecture  # noqa: E402

from mdnas_fairseq.models.mdnas_transformer_lm import MDNASTransformerConfig, MDNASTransformerModel  # noqa: E402
from mdnas_fairseq.search import GenotypeEdge, MultiDomainGenotype, derive_genotype  # noqa: E402

DOMAINS = ["en", "de"]


def add_size_args(parser, layers=4, dim=256, ffn=1024, heads=4, vocab=10000, batch=32, length=30):
    parser.add_argument("--layers", type=int, default=layers)
    parser.add_argument("--dim", type=int, default=dim)
    parser.add_argument("--ffn", type=int, default=ffn)
    parser.add_argument("--heads", type=int, default=heads)
    parser.add_argument(
        "--kernels", default="3,7", help="convolution kernel sizes of the search space"
    )
    parser.add_argument("--vocab", type=int, default=vocab)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--length", type=int, default=length)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default="cpu")


def dictionary(vocab):
    d = Dictionary()
    for i in range(vocab - len(d)):
        d.add_symbol(f"w{i}")
    return d


def mdnas_model(args, layers=None, kernels=None, genotype=None):
    cfg = MDNASTransformerConfig(
        decoder_layers=layers or args.layers,
        decoder_embed_dim=args.dim,
        decoder_ffn_embed_dim=args.ffn,
        decoder_attention_heads=args.heads,
        decoder_conv_kernel_sizes=kernels or args.kernels,
        dropout=args.dropout,
        genotype_data=None if genotype is None else json.dumps(genotype.to_dict()),
    )
    cfg.max_update = 0
    task = types.SimpleNamespace(domain_names=DOMAINS, source_dictionary=dictionary(args.vocab))
    return MDNASTransformerModel.build_model(cfg, task).to(args.device)


def transformer_lm(args, layers=None):
    ns = argparse.Namespace(
        decoder_layers=layers or args.layers,
        decoder_embed_dim=args.dim,
        decoder_ffn_embed_dim=args.ffn,
        decoder_attention_heads=args.heads,
        share_decoder_input_output_embed=True,
        dropout=args.dropout,
        tokens_per_sample=1024,
        max_target_positions=None,
        decoder_layers_to_keep=None,
        character_embeddings=False,
        adaptive_input=False,
        tie_adaptive_weights=False,
    )
    base_lm_architecture(ns)
    d = dictionary(args.vocab)
    task = types.SimpleNamespace(source_dictionary=d, target_dictionary=d)
    return TransformerLanguageModel.build_model(ns, task).to(args.device)


def transformer_genotype(space, token_op="attention", channel_op="ffn_relu"):
    """Every domain's cell = fairseq's transformer_lm layer: attention, then a ReLU feed-forward block."""
    cell = tuple(GenotypeEdge(j, j - 1, token_op if j % 2 else channel_op) for j in space.node_ids)
    return MultiDomainGenotype(space, tuple(DOMAINS), {d: cell for d in DOMAINS})


def random_genotype(space, seed=0):
    """The multimodel of a random alpha: the domains disagree on most slots."""
    gen = torch.Generator().manual_seed(seed)
    return derive_genotype(
        torch.randn(len(DOMAINS), space.num_edges, space.num_ops, generator=gen), space, DOMAINS
    )


def batch(args, gen=None):
    tokens = torch.randint(4, args.vocab, (args.batch, args.length + 1), generator=gen)
    return tokens[:, :-1].to(args.device), tokens[:, 1:].to(args.device)


def lm_loss(output, targets):
    logits = output[0]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


def forward(model, tokens, domain=0):
    if isinstance(
        model, MDNASTransformerModel
    ):  # as the task's batches: one domain, known on the host
        domains = torch.full((tokens.shape[0],), domain, dtype=torch.long, device=tokens.device)
        return model(tokens, domain=domains, batch_domain=domain)
    return model(tokens)


def param_count(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
