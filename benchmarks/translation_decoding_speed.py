#!/usr/bin/env python
"""Decoding speed (sentences/s) of a derived translation multimodel against fairseq's ``transformer``
of the same size, side by side in one run (issue 27: "within 1.5x of fairseq's transformer").

Models, built as fairseq-train builds them (nothing trained; every weight random):
  multimodel   ``--arch`` (default mdnas_transformer_small; more model flags after ``--``) with a
               genotype of the transformer_mt space: ``--genotype FILE``; ``--genotype transformer``
               (every domain's cell fairseq's transformer layer: attention, then ffn_relu; the same
               FLOPs as fairseq's transformer at one domain's size: the code's own overhead); by
               default a random one (every domain's cell drawn with ``--random-seed``,
               mdnas_fairseq.search.random_genotype)
  fairseq      fairseq's own ``--arch transformer`` as scripts/translation_table.py's baseline row
               builds it (pre-LayerNorm, ``--share-all-embeddings``, the multimodel's layers, width
               and heads) with the FFN width that table's ``baseline_ffn`` solves for so that the
               parameter count is nearest the multimodel's (all domains' cells counted)
both on one joined dictionary: ``--data``'s (a data-bin of ``mdnas-prepare --translation``; the
sources are the first ``--batch`` sentences of each domain's ``--split``) or, without ``--data``, a
made-up one of ``--vocab`` words (the sources ``--batch`` random sentences of ``--source-length``
tokens per domain). ``--from-checkpoints MULTI.pt FAIRSEQ.pt --data DATA-BIN`` times two trained
checkpoints instead (e.g. translation_table.py's multi_struct and baseline rows).

Decoding: fairseq's SequenceGenerator, beam ``--beam``, one batch of ``--batch`` sources per domain
(the multimodel in that domain, fairseq's transformer on the same batch), ``torch.set_num_threads
(--threads)``. Every hypothesis is forced to ``--steps`` N tokens and EOS (min_len = N, max_len_a 0,
max_len_b N: N + 1 decoder steps for both models), so untrained weights decode exactly the work of a
trained model's N-token translations; checked on every hypothesis. The rows are timed in turns
(``--repeats`` rounds, every row once per round, after one untimed warm-up round): the median
sentences/s of this process's CPU time (wall clock in brackets: the machine may be shared), the
FLOPs of one decode (torch's FlopCounterMode, matrix products), their rate against torch.matmul's
one-thread peak at the decoder's shapes measured in the same run, and the ratio multimodel/fairseq
per domain. The goal is met when in every domain the multimodel decodes at least 1/1.5 of fairseq's
sentences/s (its time at most 1.5x).

Usage: python benchmarks/translation_decoding_speed.py [--data DATA-BIN] [--genotype FILE]
           [--steps 25 --batch 64 --beam 5 --repeats 3] [--json OUT.json] [-- --embed-dim 128 ...]
"""

import argparse
import json
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "scripts")]  # a checkout; translation_table's matching

import translation_table as table  # noqa: E402

from mdnas_fairseq.provenance import git_commit  # noqa: E402

USER_DIR = os.path.join(ROOT, "mdnas_fairseq")
GOAL = 1.5
NO_WEIGHTS_ONLY = table.NO_WEIGHTS_ONLY


# ---------------------------------------------------------------------------- models
def build(argv):
    """(task, model) of ``fairseq-train argv`` (argv without the program), as fairseq builds them."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    cfg = convert_namespace_to_omegaconf(
        options.parse_args_and_arch(options.get_training_parser(), argv)
    )
    task = tasks.setup_task(cfg.task)
    return task, task.build_model(cfg.model)


def made_up_data_bin(folder, vocab, domains, src="en", tgt="de"):
    """A data-bin with a joined dictionary of ``vocab`` entries (fairseq's 4 specials included) and
    the ``mdnas_data.json`` the translation task reads; no datasets (the sources are made here)."""
    os.makedirs(folder, exist_ok=True)
    for lang in (src, tgt):
        with open(os.path.join(folder, f"dict.{lang}.txt"), "w", encoding="utf-8") as f:
            f.writelines(f"w{i} {vocab - i}\n" for i in range(vocab - 4))
    meta = {"kind": "translation", "source_lang": src, "target_lang": tgt, "domains": domains}
    with open(os.path.join(folder, "mdnas_data.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f)
    return folder


def made_genotype_file(args, data, path):
    """The genotype of ``--genotype transformer`` (every domain's cell fairseq's transformer's:
    attention in every token slot, ``ffn_relu`` in every channel slot) or, without ``--genotype``,
    ``--random-seed``'s random one, in the space of the multimodel ``--arch`` and flags build."""
    from mdnas_fairseq.cells.transformer_mt import transformer_mt_space
    from mdnas_fairseq.models.mdnas_transformer import kernel_sizes
    from mdnas_fairseq.search import GenotypeEdge, MultiDomainGenotype, random_genotype
    from mdnas_fairseq.search.genotype import save_genotype

    task, search_model = build(multimodel_argv(args, data))
    cfg = search_model.cfg
    space = transformer_mt_space(cfg.encoder_layers, cfg.decoder_layers, kernel_sizes(cfg))
    names = task.domain_names
    if args.genotype == "transformer":
        cell = []
        for j in space.node_ids:
            i = space.node_inputs(j)[0]  # one incoming edge per node: the chain
            allowed = space.allowed(space.edge_index(i, j))
            cell.append(GenotypeEdge(j, i, "attention" if "attention" in allowed else "ffn_relu"))
        genotype = MultiDomainGenotype(space, tuple(names), {d: tuple(cell) for d in names})
    else:
        genotype = random_genotype(space, names, np.random.default_rng(args.random_seed))
    save_genotype(path, genotype)
    return path


def multimodel_argv(args, data, genotype=None):
    argv = [data, "--user-dir", USER_DIR, "--task", "multidomain_nas_translation"]
    argv += ["--arch", args.arch, "--criterion", "multidomain_nas_loss", "--cpu", *args.extra]
    return argv + (["--genotype", genotype] if genotype else [])


def model_sizes(model):
    cfg = model.cfg
    keys = ("encoder_layers", "decoder_layers", "embed_dim", "attention_heads")
    return {k: int(getattr(cfg, k)) for k in keys}


def matched_transformer(data, meta, sizes, target):
    """fairseq's transformer as translation_table.py's baseline row builds it, with the FFN width
    its ``baseline_ffn`` solves for (parameters nearest ``target``); (model, ffn, predicted count)."""
    targs = table.build_parser().parse_args(["--data", data, "--out", "unused"])  # its defaults
    targs.meta, targs.model_sizes = meta, sizes
    save = os.path.join(tempfile.gettempdir(), "unused-save-dir")  # parsed, never written
    ffn, predicted = table.baseline_ffn(targs, data, save, target)
    argv = table.baseline_command(targs, data, save, ffn)[1:]
    _task, model = build(argv)
    return model, ffn, predicted


def load_checkpoint(path, data):
    from fairseq import checkpoint_utils

    # fairseq's transformer keeps an argparse.Namespace in its checkpoint: PyTorch 2.6's
    # weights_only torch.load refuses it (a checkpoint the user names: loaded as fairseq-generate
    # would with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1)
    previous = os.environ.get(NO_WEIGHTS_ONLY)
    os.environ[NO_WEIGHTS_ONLY] = "1"
    try:
        models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
            [path], arg_overrides={"data": data}
        )
    finally:
        if previous is None:
            del os.environ[NO_WEIGHTS_ONLY]
        else:
            os.environ[NO_WEIGHTS_ONLY] = previous
    return task, models[0]


def params(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- batches
def sources(args, task, domains):
    """Per domain: ``--batch`` source sentences (token tensors ending with EOS)."""
    d = task.source_dictionary
    if args.data is None:
        g = torch.Generator().manual_seed(args.seed)
        out = {}
        for dom in domains:
            words = torch.randint(d.nspecial, len(d), (args.batch, args.source_length), generator=g)
            eos = torch.full((args.batch, 1), d.eos())
            out[dom] = list(torch.cat([words, eos], 1))
        return out
    out = {}
    for dom in domains:
        subset = f"{args.split}.{dom}"
        task.load_dataset(subset)
        ds = task.dataset(subset)
        if len(ds) < args.batch:
            raise SystemExit(f"--data: {subset} has {len(ds)} sentences, fewer than --batch")
        out[dom] = [ds[i]["item"]["source"] for i in range(args.batch)]
    return out


def net_inputs(sentences, dictionary, domain_index):
    """The multimodel's and fairseq's net_input of one batch (left-padded sources, as fairseq's
    translation collater makes them; the multimodel's also carries the batch's domain)."""
    from fairseq.data import data_utils

    tokens = data_utils.collate_tokens(sentences, dictionary.pad(), dictionary.eos(), left_pad=True)
    lengths = torch.tensor([len(s) for s in sentences])
    plain = {"src_tokens": tokens, "src_lengths": lengths}
    multi = dict(
        plain, domain=torch.full((len(sentences),), domain_index), batch_domain=domain_index
    )
    return {"net_input": multi}, {"net_input": plain}


# ---------------------------------------------------------------------------- timing
def generator(model, dictionary, args):
    from fairseq.sequence_generator import SequenceGenerator

    return SequenceGenerator(
        [model], dictionary, beam_size=args.beam, max_len_a=0, max_len_b=args.steps,
        min_len=args.steps,
    )  # fmt: skip


def decode(gen, sample):
    with torch.no_grad():
        return gen.generate(gen.model.models, sample)


def check_lengths(hypos, n, eos, name):
    """Every hypothesis: exactly n tokens, then EOS; returns the lengths seen (with EOS)."""
    lengths = {len(h["tokens"]) for beams in hypos for h in beams}
    bad = [
        h["tokens"].tolist()
        for beams in hypos
        for h in beams
        if len(h["tokens"]) != n + 1 or h["tokens"][-1] != eos or (h["tokens"][:-1] == eos).any()
    ]
    if bad:
        raise SystemExit(f"{name}: hypotheses not of {n} tokens + EOS, e.g. {bad[0]}")
    return sorted(lengths)


def flops(gen, sample):
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        decode(gen, sample)
    return counter.get_total_flops()


def gemm_peak(rows, dim, ffn, vocab, reps=5):
    """FLOP/s of torch.matmul at a decoder step's shapes (beam rows x width, x FFN, x vocabulary)."""
    total_flops, total_time = 0, 0.0
    for k, n in ((dim, dim), (dim, ffn), (ffn, dim), (dim, vocab)):
        a, b = torch.randn(rows, k), torch.randn(k, n)
        a @ b
        start = time.process_time()
        for _ in range(reps):
            a @ b
        total_time += time.process_time() - start
        total_flops += 2 * rows * k * n * reps
    return total_flops / total_time


def timed(gen, sample):
    cpu, wall = time.process_time(), time.perf_counter()
    decode(gen, sample)
    return time.process_time() - cpu, time.perf_counter() - wall


# ---------------------------------------------------------------------------- report
def describe_cell(cell, encoder_edges):
    enc = [e.op for e in cell if e.node - 2 < encoder_edges]
    dec = [e.op for e in cell if e.node - 2 >= encoder_edges]
    return f"encoder {' '.join(enc)} | decoder {' '.join(dec)}"


def report(r):
    s, m, f = r["settings"], r["multimodel"], r["fairseq"]
    lines = [
        f"Decoding speed, commit {r['commit']}, {r['date']}: beam {s['beam']}, batch {s['batch']}, "
        f"{s['threads']} thread(s), N = {s['steps']} tokens per hypothesis + EOS "
        f"({s['steps'] + 1} decoder steps, every model), median of {s['repeats']} rounds",
        f"data: {r['data']}; vocabulary {r['vocab']:,}; source lengths {r['source_lengths']}",
        f"multimodel: {m['arch']} {m['sizes']}, genotype {m['genotype']}: {m['params']:,} "
        "parameters (one domain's model: "
        + ", ".join(f"{d} {n:,}" for d, n in m["domain_params"].items())
        + ")",
    ]
    lines += [f"  {d}: {cell}" for d, cell in m["cells"].items()]
    diff = f["params"] - m["params"]
    lines.append(
        f"fairseq transformer: ffn {f['ffn']}, {f['params']:,} parameters ({diff:+,} = "
        f"{100 * diff / m['params']:+.3f}% of the multimodel's; {f['how']})"
    )
    for d, g in r["fairseq_domain"].items():
        lines.append(
            f"fairseq transformer at {d}'s size: ffn {g['ffn']}, {g['params']:,} parameters "
            f"({g['params'] - g['target']:+,} of {d}'s model)"
        )
    lines.append(
        "tokens per hypothesis (with EOS), every hypothesis: "
        + ", ".join(f"{k} {v}" for k, v in r["lengths"].items())
    )
    lines.append(
        f"GEMM peak (torch.matmul, decoder step shapes): {r['gemm_peak'] / 1e9:.1f} GFLOP/s"
    )
    lines.append(
        f"{'row':<40}{'sentences/s':>12}{'(wall)':>10}{'GFLOP/decode':>14}{'GFLOP/s':>9}"
        f"{'% peak':>8}{'multi/this':>12}"
    )
    for row in r["rows"]:
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.3f}"
        lines.append(
            f"{row['name']:<40}{row['sentences_per_s']:>12.2f}{row['wall_sentences_per_s']:>10.2f}"
            f"{row['gflop']:>14.3f}{row['gflop_per_s']:>9.1f}{row['percent_peak']:>7.0f}%"
            f"{ratio:>12}"
        )
    lines.append(
        "multimodel/fairseq sentences/s (fairseq of the multimodel's size): "
        + ", ".join(f"{d} {x:.3f}" for d, x in r["ratios"].items())
        + f"; all domains together {r['ratio_all']:.3f}"
    )
    if r["ratios_domain_size"]:
        lines.append(
            "multimodel/fairseq sentences/s (fairseq of the domain's model's size): "
            + ", ".join(f"{d} {x:.3f}" for d, x in r["ratios_domain_size"].items())
        )
    worst = min(r["ratios"], key=r["ratios"].get)
    lines.append(
        f"goal (multimodel within {GOAL}x of the decoding time of fairseq's transformer of the same "
        f"size, i.e. >= {1 / GOAL:.3f} of its sentences/s, in every domain): "
        f"{'MET' if r['goal_met'] else 'NOT MET'} (slowest domain {worst}: "
        f"{r['ratios'][worst]:.3f}, time {1 / r['ratios'][worst]:.2f}x fairseq's)"
    )
    if r["ratios_domain_size"]:
        worst = min(r["ratios_domain_size"], key=r["ratios_domain_size"].get)
        x = r["ratios_domain_size"][worst]
        lines.append(
            f"against fairseq at each domain's model's size: {'met' if x >= 1 / GOAL else 'not met'}"
            f" (slowest domain {worst}: {x:.3f}, time {1 / x:.2f}x fairseq's)"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.partition("\n\n")[2],
    )
    p.add_argument("--data", help="a data-bin of mdnas-prepare --translation (default: made up)")
    p.add_argument("--split", default="test", help="with --data: the sources' split")
    p.add_argument("--vocab", type=int, default=8000, help="without --data: dictionary size")
    p.add_argument("--domains", default="gcc,libreoffice", help="without --data: the domains")
    p.add_argument("--source-length", type=int, default=25, help="without --data: source tokens")
    p.add_argument("--arch", default="mdnas_transformer_small", help="the multimodel's preset")
    p.add_argument(
        "--genotype",
        help="the multimodel's genotype: a file, or 'transformer' (every cell fairseq's transformer "
        "layer's: attention, ffn_relu); default a random one",
    )
    p.add_argument("--random-seed", type=int, default=1, help="seed of the random genotype")
    p.add_argument(
        "--from-checkpoints",
        nargs=2,
        metavar=("MULTI.pt", "FAIRSEQ.pt"),
        help="time two trained checkpoints (needs --data) instead of building the models",
    )
    p.add_argument(
        "--no-domain-size",
        dest="domain_size",
        action="store_false",
        help="leave out the fairseq rows matched to one domain's model (the active path)",
    )
    p.add_argument("--batch", type=int, default=64, help="source sentences per batch")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--steps", type=int, default=25, help="N: tokens of every hypothesis (+ EOS)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (the median is printed)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1, help="weights and made-up sources")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("extra", nargs="*", help="after --: more model flags for the multimodel")
    return p


def build_models(args, data, meta, tmp):
    """(task, multimodel, genotype name, {baseline name: (model, info)}) of the flags."""
    if args.from_checkpoints:
        task, multi = load_checkpoint(args.from_checkpoints[0], data)
        _, base = load_checkpoint(args.from_checkpoints[1], data)
        info = {"ffn": base.encoder.layers[0].fc1.out_features}
        info.update(params=params(base), how=f"from {args.from_checkpoints[1]}")
        return task, multi, f"of {args.from_checkpoints[0]}", {"fairseq": (base, info)}
    genotype = args.genotype
    if genotype in (None, "transformer"):
        genotype = made_genotype_file(args, data, os.path.join(tmp, "genotype.json"))
    task, multi = build(multimodel_argv(args, data, genotype))
    sizes = model_sizes(multi)
    base, ffn, predicted = matched_transformer(data, meta, sizes, params(multi))
    how = (
        f"FFN width solved by scripts/translation_table.py's baseline_ffn, predicted {predicted:,}"
    )
    baselines = {"fairseq": (base, {"ffn": ffn, "params": params(base), "how": how})}
    if args.domain_size:
        net = multi.network
        for d in task.domain_names:
            target = net.genotype_param_count(genotype_of(multi), [d])
            model, ffn, _ = matched_transformer(data, meta, sizes, target)
            baselines[f"fairseq ({d}'s size)"] = (
                model,
                {"ffn": ffn, "params": params(model), "target": target, "domain": d},
            )
    name = {None: f"random, seed {args.random_seed}", "transformer": "transformer (every cell "
            "attention, ffn_relu)"}.get(args.genotype, args.genotype)  # fmt: skip
    return task, multi, name, baselines


def genotype_of(multi):
    from mdnas_fairseq.search.genotype import genotype_from_dict

    data = multi.cfg.genotype_data
    return genotype_from_dict(json.loads(data)) if data else None


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if min(args.repeats, args.batch, args.beam, args.steps, args.threads) < 1:
        raise SystemExit("--repeats, --batch, --beam, --steps and --threads must be at least 1")
    if args.from_checkpoints and not args.data:
        raise SystemExit(
            "--from-checkpoints needs --data (the data-bin the models were trained on)"
        )
    for name in ("fairseq", "mdnas_fairseq", "hydra"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import mdnas_fairseq  # noqa: F401  (registers the task and the model)
    from mdnas_fairseq.search.genotype import load_genotype
    from mdnas_fairseq.tasks.multidomain_nas_translation import translation_metadata

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            data = os.path.abspath(args.data)
        else:
            domains = (
                list(load_genotype(args.genotype).domains)
                if args.genotype not in (None, "transformer")
                else [d for d in args.domains.split(",") if d]
            )
            data = made_up_data_bin(os.path.join(tmp, "data-bin"), args.vocab, domains)
        try:
            meta = translation_metadata(data)
        except (ValueError, FileNotFoundError) as e:
            raise SystemExit(f"--data: {e}") from None
        task, multi, genotype_name, baselines = build_models(args, data, meta, tmp)
    dictionary = task.target_dictionary
    for name, (model, _) in baselines.items():
        if model.decoder.dictionary.symbols != dictionary.symbols:
            raise SystemExit(f"{name} and the multimodel do not share one dictionary")
    models = {"multimodel": multi, **{name: model for name, (model, _) in baselines.items()}}
    for model in models.values():
        model.eval()
    gens = {name: generator(model, dictionary, args) for name, model in models.items()}

    domains = list(task.domain_names)
    batches = sources(args, task, domains)
    rows = {}  # name -> (generator, sample, model name, domain): every model on every domain's batch
    for i, d in enumerate(domains):
        multi_sample, plain_sample = net_inputs(batches[d], task.source_dictionary, i)
        rows[f"multimodel, {d}"] = (gens["multimodel"], multi_sample, "multimodel", d)
        for name, (_, info) in baselines.items():
            if info.get("domain") in (None, d):
                rows[f"{name}, {d}"] = (gens[name], plain_sample, name, d)

    lengths = {name: set() for name in models}
    for name, (gen, sample, model, _) in rows.items():  # warm-up round; every hypothesis checked
        hypos = decode(gen, sample)
        lengths[model].update(check_lengths(hypos, args.steps, dictionary.eos(), name))
    gflop = {name: flops(gen, sample) / 1e9 for name, (gen, sample, _, _) in rows.items()}
    sizes = model_sizes(multi)
    peak = gemm_peak(
        args.batch * args.beam, sizes["embed_dim"], int(multi.cfg.ffn_embed_dim), len(dictionary)
    )
    cpu, wall = {n: [] for n in rows}, {n: [] for n in rows}
    for _ in range(args.repeats):
        for name, (gen, sample, _, _) in rows.items():
            c, w = timed(gen, sample)
            cpu[name].append(c)
            wall[name].append(w)

    seconds = {n: statistics.median(cpu[n]) for n in rows}
    out_rows, ratios, ratios_domain = [], {}, {}
    for name, (_, _, model, d) in rows.items():
        ratio = None
        if model != "multimodel":
            ratio = seconds[name] / seconds[f"multimodel, {d}"]
            (ratios if model == "fairseq" else ratios_domain)[d] = ratio
        out_rows.append(
            {
                "name": name,
                "model": model,
                "domain": d,
                "sentences_per_s": args.batch / seconds[name],
                "wall_sentences_per_s": args.batch / statistics.median(wall[name]),
                "seconds": cpu[name],
                "wall_seconds": wall[name],
                "gflop": gflop[name],
                "gflop_per_s": gflop[name] / seconds[name],
                "percent_peak": 100 * gflop[name] * 1e9 / seconds[name] / peak,
                "ratio": ratio,
            }
        )
    ratio_all = sum(seconds[f"fairseq, {d}"] for d in domains) / sum(
        seconds[f"multimodel, {d}"] for d in domains
    )
    genotype = genotype_of(multi)
    cells = domain_params = {}
    if genotype is not None:
        cells = {d: describe_cell(genotype.cells[d], 2 * sizes["encoder_layers"]) for d in domains}
        domain_params = {d: multi.network.genotype_param_count(genotype, [d]) for d in domains}
    src_lengths = sorted(len(s) for d in domains for s in batches[d])
    result = {
        "command": "python benchmarks/translation_decoding_speed.py " + shlex.join(argv),
        "commit": git_commit(ROOT),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {k: getattr(args, k) for k in ("beam", "batch", "threads", "steps", "repeats")},
        "data": args.data or "made up (random sources)",
        "vocab": len(dictionary),
        "source_lengths": f"{src_lengths[0]}-{src_lengths[-1]} (with EOS)",
        "multimodel": {
            "arch": "checkpoint" if args.from_checkpoints else args.arch,
            "sizes": sizes,
            "genotype": genotype_name,
            "params": params(multi),
            "domain_params": domain_params,
            "cells": cells,
        },
        "fairseq": baselines["fairseq"][1],
        "fairseq_domain": {
            info["domain"]: info for _, info in baselines.values() if info.get("domain")
        },
        "lengths": {k: sorted(v) for k, v in lengths.items()},
        "gemm_peak": peak,
        "rows": out_rows,
        "ratios": ratios,
        "ratios_domain_size": ratios_domain,
        "ratio_all": ratio_all,
        "goal_met": all(x >= 1 / GOAL for x in ratios.values()),
    }
    print(report(result), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    return result


if __name__ == "__main__":
    main()
