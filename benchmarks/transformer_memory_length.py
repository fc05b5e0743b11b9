#!/usr/bin/env python
"""Training activation memory per token against the sentence length T: the searchable Transformer LM,
derived cells and fairseq's transformer_lm, and each candidate alone, at several T in one run.

The measured quantity is that of ``transformer_memory.py`` (the bytes of the distinct tensor storages
autograd keeps for the backward pass of forward + cross-entropy, weights excluded, dropout on; exact
and allocator-independent, but it depends on the attention kernel PyTorch picks on the device). Each
T runs batches of ``--tokens`` tokens (batch ``tokens // T``), so a row's figure is per token and
only a term that grows with T makes it change along a row. fairseq's ``LightweightConv1dTBC`` (the
``lightconv_k`` candidates) multiplies by an expanded (B H, T, T + k - 1) band matrix in training,
H (T + k - 1) floats per token, which autograd keeps; this run shows how much that weighs.

Per T: transformer_lm and the search network at ``--layers`` and at ``--layers / 2`` (the growth per
layer), the search with kernels 3 and 3,7,15 (the growth per extra candidate per layer), the derived
transformer_lm cell and a derived all-``lightconv_7`` cell, and what each candidate keeps alone.
Usage: python benchmarks/transformer_memory_length.py [--lengths 64,256,1024 --tokens 1024 ...]
"""

import argparse
import logging
import time

import torch
from transformer_common import (
    add_size_args,
    batch,
    forward,
    lm_loss,
    mdnas_model,
    transformer_genotype,
    transformer_lm,
)
from transformer_memory import candidates_per_layer, saved_bytes


def per_token(model, args, tokens, targets):
    """Activation KiB per token of one training step of ``model`` on ``tokens``."""
    model.train()
    act = saved_bytes(model, lambda: lm_loss(forward(model, tokens), targets))
    return act / tokens.numel() / 1024


def candidate_alone(module, norm, x):
    """KiB per token that ``module(LayerNorm(x))`` keeps beyond ``LayerNorm(x)``."""
    alone = saved_bytes(norm, lambda: norm(x).sum())
    act = saved_bytes(module, lambda: module(norm(x)).sum()) - alone
    return act / x.shape[0] / x.shape[1] / 1024


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_size_args(p)
    p.add_argument("--lengths", default="64,256,1024")
    p.add_argument("--tokens", type=int, default=1024, help="tokens per batch at every length")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("mdnas_fairseq").setLevel(logging.WARNING)
    lengths = [int(t) for t in args.lengths.split(",")]
    half = max(1, args.layers // 2)
    print(
        f"activation memory per token (KiB) against the length T: dim {args.dim}, ffn {args.ffn}, heads "
        f"{args.heads}, vocab {args.vocab}, {args.layers} layers, kernels {args.kernels}, "
        f"{args.tokens} tokens per batch, dropout {args.dropout}, fp32, {args.device}"
    )
    torch.manual_seed(args.seed)
    search = mdnas_model(args)
    space = search.search_space
    rows = {
        "fairseq transformer_lm": transformer_lm(args),
        f"search ({candidates_per_layer(search)} candidates per layer)": search,
        "derived, transformer_lm cell (attention, ffn_relu)": mdnas_model(
            args, genotype=transformer_genotype(space)
        ),
        "derived, lightconv_7 + ffn_relu cell": mdnas_model(
            args, genotype=transformer_genotype(space, token_op="lightconv_7")
        ),
        f"transformer_lm, {half} layers": transformer_lm(args, half),
        f"search, {half} layers": mdnas_model(args, layers=half),
        "search, kernels 3": mdnas_model(args, kernels="3"),
        "search, kernels 3,7,15": mdnas_model(args, kernels="3,7,15"),
    }
    cands = {
        "search, kernels 3": candidates_per_layer(rows["search, kernels 3"]),
        "search, kernels 3,7,15": candidates_per_layer(rows["search, kernels 3,7,15"]),
    }
    one_layer = mdnas_model(args, layers=1)
    results = {name: [] for name in rows}
    alone = {}
    for steps in lengths:
        args.length, args.batch = steps, max(1, args.tokens // steps)
        tokens, targets = batch(args, torch.Generator().manual_seed(args.seed))
        start = time.time()
        for name, model in rows.items():
            results[name].append(per_token(model, args, tokens, targets))
        x = torch.randn(args.length, args.batch, args.dim, device=args.device, requires_grad=True)
        norm = one_layer.lm.slot_norms[0]
        for e in range(2):
            for op, module in one_layer.lm.slot_ops[e].items():
                if op != "identity":
                    alone.setdefault(op, []).append(candidate_alone(module.train(), norm, x))
        print(f"  (T={steps}: batch {args.batch}, measured in {time.time() - start:.0f} s)")

    head = "".join(f"{f'T={t}':>10}" for t in lengths)
    print(f"\n1. models, activation KiB/token\n{'model':<62}{head}")
    for name, values in results.items():
        print(f"{name:<62}" + "".join(f"{v:>10.1f}" for v in values))
    base, full = results["fairseq transformer_lm"], results[list(rows)[1]]
    print(
        f"{'search / transformer_lm':<62}" + "".join(f"{s / b:>10.2f}" for s, b in zip(full, base))
    )
    k = len(lengths)
    per_layer = [
        (full[i] - results[f"search, {half} layers"][i]) / (args.layers - half) for i in range(k)
    ]
    per_layer_tf = [
        (base[i] - results[f"transformer_lm, {half} layers"][i]) / (args.layers - half)
        for i in range(k)
    ]
    extra = cands["search, kernels 3,7,15"] - cands["search, kernels 3"]
    per_cand = [
        (results["search, kernels 3,7,15"][i] - results["search, kernels 3"][i])
        / extra
        / args.layers
        for i in range(k)
    ]
    print(f"{'search: KiB/token per layer':<62}" + "".join(f"{v:>10.1f}" for v in per_layer))
    print(
        f"{'transformer_lm: KiB/token per layer':<62}"
        + "".join(f"{v:>10.1f}" for v in per_layer_tf)
    )
    print(
        f"{'search / transformer_lm, per layer':<62}"
        + "".join(f"{s / b:>10.2f}" for s, b in zip(per_layer, per_layer_tf))
    )
    print(
        f"{'search: per extra candidate, per layer (kernels 3 -> 3,7,15)':<62}"
        + "".join(f"{v:>10.2f}" for v in per_cand)
    )
    print(
        f"\n2. one candidate alone: what op(LayerNorm(x)) keeps beyond LayerNorm(x), KiB/token\n{'op':<62}{head}"
    )
    for op, values in alone.items():
        print(f"{op:<62}" + "".join(f"{v:>10.2f}" for v in values))
    print(
        f"(the search's mixing also keeps every candidate's output, {args.dim * 4 / 1024:.2f} KiB/token each)"
    )


if __name__ == "__main__":
    main()
