#!/usr/bin/env python
"""Training memory per token of the searchable Transformer LM vs fairseq's transformer_lm, in one run.

Measured quantity: the activation memory of one training step, i.e. the bytes of the distinct
tensor storages autograd keeps for the backward pass of forward(batch) + cross-entropy (weights
excluded; dropout on, as in training), divided by the batch's tokens. It is exact and independent
of the machine and the allocator; with ``--device cuda`` the true peak of a whole step
(``torch.cuda.max_memory_allocated`` minus the memory held before it) is printed beside it.

Tables:
  1. search model, derived multimodels and transformer_lm at the same sizes;
  2. growth of the search model with the layers (kernels fixed) and with the candidates per slot
     (more convolution kernel sizes, layers fixed), each beside transformer_lm of the same depth;
  3. what one candidate holds: activation bytes per token of ``op(LayerNorm(x))`` alone.
Usage: python benchmarks/transformer_memory.py [--layers 4 --dim 256 --ffn 1024 --heads 4 ...]
"""

import argparse
import logging

import torch
from transformer_common import (
    add_size_args,
    batch,
    forward,
    lm_loss,
    mdnas_model,
    param_count,
    random_genotype,
    transformer_genotype,
    transformer_lm,
)


def saved_bytes(model, run):
    """Bytes of the distinct non-parameter storages saved for backward while ``run()`` builds the loss."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = run()
    loss.backward()
    return sum(saved.values())


def step_peak_bytes(model, run, device):
    """CUDA only: peak allocated during forward + backward, above what was allocated before."""
    if not str(device).startswith("cuda"):
        return None
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run().backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def measure(model, args, tokens, targets):
    model.train()
    run = lambda: lm_loss(forward(model, tokens), targets)  # noqa: E731
    return saved_bytes(model, run), step_peak_bytes(model, run, args.device)


def row(name, model, args, tokens, targets, base=None):
    act, peak = measure(model, args, tokens, targets)
    n = tokens.numel()
    ratio = f"{act / base:10.2f}" if base else f"{'-':>10}"
    peak_text = f"{peak / n / 1024:14.1f}" if peak is not None else f"{'n/a':>14}"
    print(f"{name:<58}{param_count(model):>11,}{act / n / 1024:>13.1f}{ratio}{peak_text}")
    return act


def candidates_per_layer(model):
    space = model.search_space
    return sum(len([op for op in space.allowed(e) if op != space.none_op]) for e in (0, 1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_size_args(p, batch=8, length=64)
    p.add_argument("--growth-layers", default="1,2,4")
    p.add_argument("--growth-kernels", default="3;3,7;3,7,15")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    tokens, targets = batch(args, torch.Generator().manual_seed(args.seed))
    logging.getLogger("mdnas_fairseq").setLevel(logging.WARNING)
    header = f"{'model':<58}{'params':>11}{'act KiB/tok':>13}{'vs tf_lm':>10}{'peak KiB/tok':>14}"
    print(
        f"activation memory per token: dim {args.dim}, ffn {args.ffn}, heads {args.heads}, vocab {args.vocab}, "
        f"batch {args.batch}x{args.length}, dropout {args.dropout}, kernels {args.kernels}, fp32, {args.device}"
    )

    print("\n1. same sizes, " + f"{args.layers} layers")
    print(header)
    base = row("fairseq transformer_lm", transformer_lm(args), args, tokens, targets)
    search = mdnas_model(args)
    row(
        f"search ({candidates_per_layer(search)} candidates per layer)",
        search,
        args,
        tokens,
        targets,
        base,
    )
    space = search.search_space
    row(
        "derived, transformer_lm cell (attention, ffn_relu)",
        mdnas_model(args, genotype=transformer_genotype(space)),
        args,
        tokens,
        targets,
        base,
    )
    g = random_genotype(space)
    row(
        f"derived multimodel, random 2-domain genotype ({args.layers * 2} slots)",
        mdnas_model(args, genotype=g),
        args,
        tokens,
        targets,
        base,
    )
    del search

    print("\n2. growth of the search model")
    print(header)
    n, by_layers, by_candidates = tokens.numel() * 1024, [], []
    for layers in [int(x) for x in args.growth_layers.split(",")]:
        base = row(
            f"transformer_lm, {layers} layers", transformer_lm(args, layers), args, tokens, targets
        )
        model = mdnas_model(args, layers=layers)
        act = row(
            f"search, {layers} layers, kernels {args.kernels} ({candidates_per_layer(model)}/layer)",
            model,
            args,
            tokens,
            targets,
            base,
        )
        by_layers.append((layers, act / n, base / n))
    base = row(f"transformer_lm, {args.layers} layers", transformer_lm(args), args, tokens, targets)
    for kernels in args.growth_kernels.split(";"):
        model = mdnas_model(args, kernels=kernels)
        act = row(
            f"search, {args.layers} layers, kernels {kernels} ({candidates_per_layer(model)}/layer)",
            model,
            args,
            tokens,
            targets,
            base,
        )
        by_candidates.append((candidates_per_layer(model), act / n))
    (l0, s0, b0), (l1, s1, b1) = by_layers[0], by_layers[-1]
    (c0, a0), (c1, a1) = by_candidates[0], by_candidates[-1]
    print(
        f"per layer: search +{(s1 - s0) / (l1 - l0):.2f} KiB/token, transformer_lm +{(b1 - b0) / (l1 - l0):.2f} "
        f"(ratio {(s1 - s0) / (b1 - b0):.2f}); per extra candidate in every layer: "
        f"+{(a1 - a0) / (c1 - c0) / args.layers:.2f} KiB/token per layer"
    )

    print(
        "\n3. one candidate alone: what op(LayerNorm(x)) keeps beyond LayerNorm(x), KiB per token"
    )
    model = mdnas_model(args, layers=1)
    x = torch.randn(args.length, args.batch, args.dim, device=args.device, requires_grad=True)
    norm = model.lm.slot_norms[0]
    alone = saved_bytes(norm, lambda: norm(x).sum())
    for e in range(2):
        for op, module in model.lm.slot_ops[e].items():
            act = saved_bytes(module, lambda m=module: m(norm(x)).sum()) - alone
            print(f"  {op:<14}{act / x.shape[0] / x.shape[1] / 1024:8.2f}")
    print(
        f"  (the search's mixing also keeps every candidate's output, {args.dim * 4 / 1024:.2f} KiB/token each)"
    )


if __name__ == "__main__":
    main()
