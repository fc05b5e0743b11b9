#!/usr/bin/env python
"""Training throughput (tokens per second) of the searchable Transformer LM vs fairseq's transformer_lm,
side by side in one run, all at the same sizes and on the same token batches.

Rows (each step is forward + backward + Adam update; a search step adds the architecture step):
  search, order 1 / 2            - architecture step (first order / DARTS second order) + weight step
  derived multimodel             - weight step of the concordant multimodel of a random 2-domain
                                   genotype, batches alternating between the two domains
  derived, transformer_lm cell   - weight step of a derived model whose every layer is attention +
                                   ReLU feed-forward: fairseq's transformer_lm function, our code
  fairseq transformer_lm         - weight step of fairseq's own transformer_lm (pre-LN, tied embeddings)
The rows are timed in turns (``--rounds`` rounds of ``--steps`` steps each, every row once per
round), so a change in the machine's load hits every row alike; printed: the median tokens/s
over the rounds and its ratio to transformer_lm.
Usage: python benchmarks/transformer_speed.py [--layers 4 --dim 256 --ffn 1024 --heads 4 --steps 2 --rounds 3]
"""

import argparse
import logging
import statistics
import time

import torch
from transformer_common import (
    add_size_args,
    batch,
    forward,
    lm_loss,
    mdnas_model,
    random_genotype,
    transformer_genotype,
    transformer_lm,
)

from mdnas_fairseq.search import (
    AdamVirtualStep,
    BilevelArchitect,
    architecture_parameters,
    weight_parameters,
)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step, n_steps, device):
    sync(device)
    start = time.perf_counter()
    for i in range(n_steps):
        step(i)
    sync(device)
    return (time.perf_counter() - start) / n_steps


def weight_step(model, opt, data, domains=(0,)):
    def step(i):
        opt.zero_grad()
        lm_loss(forward(model, data[0], domains[i % len(domains)]), data[1]).backward()
        opt.step()

    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_size_args(p)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    logging.getLogger("mdnas_fairseq").setLevel(logging.WARNING)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    train_b, val_b = batch(args, gen), batch(args, gen)
    tokens = args.batch * args.length
    steps = {}

    for order in (1, 2):
        model = mdnas_model(args).train()
        opt = torch.optim.Adam(weight_parameters(model), lr=1e-4)
        architect = BilevelArchitect(
            weight_parameters(model), architecture_parameters(model), order=order
        )

        def search_step(i, model=model, opt=opt, architect=architect, order=order):
            # second order: the virtual step is the weight optimizer's own (Adam) update
            virtual = AdamVirtualStep(
                lr=1e-4, states=[opt.state.get(w, {}) for w in architect.trainable_weights]
            )
            architect.step(
                lambda: lm_loss(forward(model, train_b[0]), train_b[1]),
                lambda: lm_loss(forward(model, val_b[0]), val_b[1]),
                virtual if order == 2 else None,
            )
            weight_step(model, opt, train_b)(i)

        steps[f"search, order {order}"] = search_step
        space = model.search_space

    rows = (
        ("derived multimodel", random_genotype(space), (0, 1)),
        ("derived, transformer_lm cell", transformer_genotype(space), (0,)),
    )
    for name, genotype, domains in rows:
        model = mdnas_model(args, genotype=genotype).train()
        steps[name] = weight_step(
            model, torch.optim.Adam(model.parameters(), lr=1e-4), train_b, domains
        )
    baseline = transformer_lm(args).train()
    steps["fairseq transformer_lm"] = weight_step(
        baseline, torch.optim.Adam(baseline.parameters(), lr=1e-4), train_b
    )

    for step in steps.values():  # warm-up
        step(0)
    timings = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            timings[name].append(tokens / time_steps(step, args.steps, args.device))
    results = {name: statistics.median(t) for name, t in timings.items()}

    base = results["fairseq transformer_lm"]
    print(
        f"tokens/s, {args.layers} layers, dim {args.dim}, ffn {args.ffn}, heads {args.heads}, "
        f"kernels {args.kernels}, "
        f"vocab {args.vocab}, batch {args.batch}x{args.length}, {args.device}, {args.threads} thread(s), "
        f"median of {args.rounds} rounds of {args.steps} timed steps each"
    )
    print(f"{'step':<32}{'tokens/s':>12}{'vs transformer_lm':>20}")
    for name, tps in results.items():
        print(f"{name:<32}{tps:>12.0f}{tps / base:>20.3f}")
    print(
        f"second/first order search: {results['search, order 2'] / results['search, order 1']:.3f}"
    )
    print(
        f"derived multimodel/first-order search: {results['derived multimodel'] / results['search, order 1']:.3f}"
    )
    return results


if __name__ == "__main__":
    main()
