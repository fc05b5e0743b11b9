#!/usr/bin/env python
"""Training throughput (tokens per second) of the LM search, measured side by side in one run.

Rows, all on the same token batches (B sentences of T tokens, one domain each step):
  search, 1st order  - alpha step (first order) + weight step of the mixed cell
  search, 2nd order  - alpha step (DARTS second order) + weight step
  derived multimodel - weight step of the concordant multimodel of a 2-domain genotype
  fairseq lstm_lm    - weight step of fairseq's LSTM decoder (as in --arch lstm_lm), same sizes

Each step is forward + backward + Adam update. Printed: tokens/s and the ratio to lstm_lm.
Usage: python benchmarks/lm_search_speed.py [--hidden 256] [--batch 32] [--length 30] [--steps 5]
"""
import argparse
import time

import torch
import torch.nn.functional as F

from mdnas_fairseq.cells.rnn import DartsRNNLanguageModel
from mdnas_fairseq.search import BilevelArchitect, architecture_parameters, derive_genotype, weight_parameters


def lm_loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def time_steps(step, n_steps, warmup=1):
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(n_steps):
        step()
    return (time.perf_counter() - start) / n_steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=30)
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    V, H, B, T = args.vocab, args.hidden, args.batch, args.length
    domains = ["en", "de"]

    def batch():
        tokens = torch.randint(4, V, (B, T + 1))
        return tokens[:, :-1], tokens[:, 1:]

    train_b, val_b = batch(), batch()
    domain = torch.zeros(B, dtype=torch.long)
    results = {}

    # ---- search model, first and second order
    for order in (1, 2):
        model = DartsRNNLanguageModel(V, 1, H, H, domains, num_nodes=args.nodes)
        opt = torch.optim.Adam(weight_parameters(model), lr=1e-3)
        architect = BilevelArchitect(weight_parameters(model), architecture_parameters(model), order=order)

        def train_loss(b=train_b):
            return lm_loss(model(b[0], domain)[0], b[1])

        def val_loss(b=val_b):
            return lm_loss(model(b[0], domain)[0], b[1])

        def search_step():
            architect.step(train_loss, val_loss, weight_lr=1e-3)
            opt.zero_grad()
            train_loss().backward()
            opt.step()

        results[f"search, order {order}"] = B * T / time_steps(search_step, args.steps)

    # ---- derived multimodel (genotype from random alpha: domains disagree on most nodes)
    search = DartsRNNLanguageModel(V, 1, H, H, domains, num_nodes=args.nodes)
    genotype = derive_genotype(torch.randn(2, search.space.num_edges, search.space.num_ops), search.space, domains)
    derived = DartsRNNLanguageModel(V, 1, H, H, domains, num_nodes=args.nodes, genotype=genotype)
    opt_d = torch.optim.Adam(derived.parameters(), lr=1e-3)

    def derived_step():
        opt_d.zero_grad()
        lm_loss(derived(train_b[0], domain)[0], train_b[1]).backward()
        opt_d.step()

    results["derived multimodel"] = B * T / time_steps(derived_step, args.steps)

    # ---- fairseq's lstm_lm decoder with the same embedding / hidden size
    from fairseq.data import Dictionary
    from fairseq.models.lstm import LSTMDecoder

    dictionary = Dictionary()
    for i in range(V - len(dictionary)):
        dictionary.add_symbol(f"w{i}")
    lstm = LSTMDecoder(dictionary, embed_dim=H, hidden_size=H, out_embed_dim=H, num_layers=1,
                       attention=False, encoder_output_units=0, share_input_output_embed=True)
    opt_l = torch.optim.Adam(lstm.parameters(), lr=1e-3)

    def lstm_step():
        opt_l.zero_grad()
        lm_loss(lstm(train_b[0])[0], train_b[1]).backward()
        opt_l.step()

    results["fairseq lstm_lm"] = B * T / time_steps(lstm_step, args.steps)

    base = results["fairseq lstm_lm"]
    print(f"tokens/s, hidden {H}, vocab {V}, batch {B}x{T}, {args.nodes} nodes, {args.threads} thread(s), "
          f"{args.steps} timed steps each")
    print(f"{'step':<22}{'tokens/s':>12}{'vs lstm_lm':>12}")
    for name, tps in results.items():
        print(f"{name:<22}{tps:>12.0f}{tps / base:>12.3f}")
    print(f"second/first order search: {results['search, order 2'] / results['search, order 1']:.3f}")
    print(f"derived/first-order search: {results['derived multimodel'] / results['search, order 1']:.3f}")
    return results


if __name__ == "__main__":
    main()
