#!/usr/bin/env python
"""Training throughput of the LM search and of the derived multimodel, side by side in one run.

For every hidden size (``--hidden 32,256``), on the same token batches (B sentences of T tokens):

  search o1 / o2   architecture step (first / DARTS second order) + weight step of the mixed cell,
                   per weight layout (``--search-weights node,op``: DARTS' one matrix per node, or
                   one per (node, operation))
  search o2 fwd    second order with the forward-difference Hessian-vector product
                   (--alpha-hessian-difference forward: one training pass fewer)
  derived          weight step of the concordant multimodel of a D-domain genotype (eager: its
                   edges batched in waves, rnn_steps.wave_step; "derived chain": node by node)
  fairseq lstm_lm  weight step of fairseq's LSTM decoder (as in --arch lstm_lm), same sizes

each with the cell compiled (``compile="on"``) and eager (``"off"``, what short runs use). A step
is forward + backward + Adam. Printed per row: tokens/s, FLOPs per step (FlopCounterMode), GFLOP/s,
% of the GEMM peak (torch.matmul at the search cell's own shapes: the node products
(jB x H)(H x 8H), j = 1..N, and their two backward products, measured in the same run), the
ratio to lstm_lm, the compile time (first step minus a steady one, wall clock) and, for eager
rows, the kernel operations dispatched per step ("ops", views excluded: where the host is the
bottleneck, as on a GPU at these sizes, the step time follows this count). Then the
second/first order ratio and the step time for D = 1, 2, 4, 8 domains relative to D = 1: with
one domain per batch (how the task feeds batches) and with the batch spread over all D domains
(per-sample routing). Step times are this process's CPU time (1 thread), the fastest of
``--repeats`` blocks of ``--steps`` steps, so that other jobs on a shared machine distort them
less; compile times are wall clock. ``--device cuda`` runs the same rows on a GPU, timed by the
wall clock after synchronising (the GEMM peak then is the GPU's at the same shapes).

``--fairseq-train`` adds the end-to-end figure: fairseq-train words/s of the search
(task multidomain_nas, compiled and eager cell) and of ``--arch lstm_lm`` (task
language_modeling) on the same prepared data (the demo's), same sizes, and of the derived
multimodel; then the goals of the search-cost issue as ratios, all from this one run (``goals``).

DARTS' FLOPs per token of the same cell (:func:`darts_flops_per_token`; matrix products only, as
FlopCounterMode counts them, 2 per multiply-add): forward ``2 (E + H) 2H`` (the first state's
``W_0``) ``+ N (N + 1) / 2 * 2 H 2H`` (node ``j`` multiplies each of its ``j`` input states by its
one (H, 2H) matrix) ``+ 2 H V`` (the tied output layer); a training pass (forward, then the input
and weight gradients of every product) is 3 times that. The search's weight step is compared with
it (the architecture step skips the weight gradients: 2 times the forward).
"""

import argparse
import logging
import os
import platform
import time

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from mdnas_fairseq.cells.compiled import CompiledStep
from mdnas_fairseq.cells.rnn import DartsRNNLanguageModel
from mdnas_fairseq.search import (
    BilevelArchitect,
    SGDVirtualStep,
    architecture_parameters,
    derive_genotype,
    weight_parameters,
)


def lm_loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


DEVICE = torch.device("cpu")  # set by --device


def clock():
    """This process's CPU time on a CPU (other jobs on a shared machine distort it less); wall clock
    after the queued kernels have finished on a GPU."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
        return time.perf_counter()
    return time.process_time()


def step_seconds(step, steps, repeats):
    """Seconds per call of ``step``: the fastest of ``repeats`` blocks of ``steps`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        for _ in range(steps):
            step()
        best = min(best, (clock() - start) / steps)
    return best


def measure(step, args):
    """(first step wall seconds, steady seconds per step as :func:`clock` counts them)."""
    clock()
    start = time.perf_counter()
    step()
    clock()
    first = time.perf_counter() - start
    return first, step_seconds(step, args.steps, args.repeats)


def kernel_stats(step, steps):
    """(GPU kernels launched, seconds the GPU spent in them) per call of ``step``, from
    torch.profiler's device events: how much of a step's wall time the GPU works."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize(DEVICE)
    device = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    busy = sum(e.time_range.elapsed_us() for e in device) * 1e-6
    return len(device) / steps, busy / steps


class _OpCounter(TorchDispatchMode):
    """Counts the operations dispatched to kernels (views excluded), forward and backward."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view
        return func(*args, **(kwargs or {}))


def ops_of(step):
    """Kernel operations one eager call of ``step`` dispatches: on a host-bound device (a GPU at
    these sizes) its time is about proportional to this count. Counted in a pass of its own: the
    FLOP counter's module tracking dispatches operations of its own."""
    with _OpCounter() as counter:
        step()
    return counter.count


def flops_of(step):
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def gemm_peak(H, B, nodes, k=4, reps=5):
    """FLOP/s of torch.matmul at the search cell's node shapes (forward and both backward products)."""
    total_flops, total_time = 0, 0.0
    for j in range(1, nodes + 1):
        s, w, dz = (
            torch.randn(*shape, device=DEVICE)
            for shape in ((j * B, H), (H, 2 * k * H), (j * B, 2 * k * H))
        )
        for f in (
            lambda s=s, w=w: s @ w,
            lambda dz=dz, w=w: dz @ w.t(),
            lambda s=s, dz=dz: s.t() @ dz,
        ):
            f()
            total_time += step_seconds(f, reps, 3)
            total_flops += 2 * j * B * H * 2 * k * H
    return total_flops / total_time


def batches(V, B, T, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        tokens = torch.randint(4, V, (B, T + 1), generator=g).to(DEVICE)
        out.append((tokens[:, :-1], tokens[:, 1:]))
    return out


# (order, Hessian-vector difference, row name)
SEARCH_ROWS = (
    (1, "central", "search o1"),
    (2, "central", "search o2"),
    (2, "forward", "search o2 fwd"),
)


def search_step_fn(model, order, train_b, val_b, domain, difference="central"):
    opt = torch.optim.Adam(weight_parameters(model), lr=1e-3)
    architect = BilevelArchitect(
        weight_parameters(model), architecture_parameters(model), order=order, difference=difference
    )

    def train_loss():
        return lm_loss(model(train_b[0], domain)[0], train_b[1])

    def val_loss():
        return lm_loss(model(val_b[0], domain)[0], val_b[1])

    def step():
        architect.step(train_loss, val_loss, SGDVirtualStep(lr=1e-3) if order == 2 else None)
        opt.zero_grad()
        train_loss().backward()
        opt.step()

    return step


def weight_step_fn(model, forward, b):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def step():
        opt.zero_grad()
        lm_loss(forward(b[0]), b[1]).backward()
        opt.step()

    return step


def inductor_cudagraphs(gm, example_inputs):
    """Inductor with CUDA graphs (what ``torch.compile(mode="reduce-overhead")`` sets): a compiled
    step replays as one graph launch on a GPU; on a CPU it is plain inductor."""
    from torch._inductor.compile_fx import compile_fx

    return compile_fx(gm, example_inputs, config_patches={"triton.cudagraphs": True})


COMPILE_BACKENDS = {"inductor": "inductor", "inductor-cudagraphs": inductor_cudagraphs}


def darts_flops_per_token(H, V, nodes, E=None):
    """Matrix-product FLOPs of one token through DARTS' recurrent LM (one matrix per node shared by
    the candidates; tied embeddings), forward + backward (3 times the forward); see the module
    docstring."""
    E = H if E is None else E
    forward = 2 * (E + H) * 2 * H + nodes * (nodes + 1) // 2 * 2 * H * 2 * H + 2 * H * V
    return 3 * forward


def make_lm(args, H, domains, compile, genotype=None, seed=1, search_weights="op"):
    torch.manual_seed(seed)
    model = DartsRNNLanguageModel(
        args.vocab,
        1,
        H,
        H,
        domains,
        num_nodes=args.nodes,
        genotype=genotype,
        compile_cell=compile,
        search_weights=search_weights,
    ).to(DEVICE)
    backend = COMPILE_BACKENDS.get(args.compile_backend, args.compile_backend)
    # the cell's compiled steps (search, or derived and several-domain) get the backend
    for module in model.modules():
        for step in vars(module).values():
            if isinstance(step, CompiledStep):
                step.backend = backend
    return model


def random_genotype(args, domains, seed):
    space = make_lm(args, 8, ["x"], "off").space
    alpha = torch.randn(
        len(domains), space.num_edges, space.num_ops, generator=torch.Generator().manual_seed(seed)
    )
    return derive_genotype(alpha, space, domains)


def lstm_lm(V, H):
    from fairseq.data import Dictionary
    from fairseq.models.lstm import LSTMDecoder

    dictionary = Dictionary()
    for i in range(V - len(dictionary)):
        dictionary.add_symbol(f"w{i}")
    return LSTMDecoder(
        dictionary,
        embed_dim=H,
        hidden_size=H,
        out_embed_dim=H,
        num_layers=1,
        attention=False,
        encoder_output_units=0,
        share_input_output_embed=True,
    ).to(DEVICE)


def section(args, H):
    """All rows for one hidden size; returns (rows, scaling, peak)."""
    torch._dynamo.reset()  # a fresh compile cache per size: compile times are this size's own
    B, T, V = args.batch, args.length, args.vocab
    train_b, val_b = batches(V, B, T)
    domains = ["d0", "d1"]
    zero = torch.zeros(B, dtype=torch.long, device=DEVICE)
    peak = gemm_peak(H, B, args.nodes)
    rows = {}

    def row(name, build, modes=None):
        eager = build("off")
        flops = flops_of(eager)  # identical arithmetic in both modes; counted eagerly
        ops = ops_of(eager)
        baseline = name == "fairseq lstm_lm"  # no compiled variant: one row
        for mode in modes or args.modes:
            step = eager if mode == "off" else build("on")
            first, sec = measure(step, args)
            label = name if baseline else f"{name}, {'compiled' if mode == 'on' else 'eager'}"
            rows[label] = dict(
                sec=sec,
                flops=flops,
                ops=ops if mode == "off" or baseline else None,
                compile=max(first - sec, 0.0) if mode == "on" and not baseline else None,
            )
            if args.kernel_profile and DEVICE.type == "cuda":
                try:
                    rows[label]["kernels"], rows[label]["busy"] = kernel_stats(step, args.steps)
                except Exception as e:  # the profiler is a diagnostic: report, go on
                    print(f"  kernel profile of {label} failed: {type(e).__name__}: {e}")
            print(
                f"  [H={H}] {label}: {B * T / sec:.0f} tokens/s (first step {first:.1f} s)",
                flush=True,
            )
            if baseline:
                break

    extra = {}
    for layout in args.search_weights if not args.scaling_only else ():
        for order, difference, name in SEARCH_ROWS:
            if order == 2 and layout not in args.second_order:
                continue
            row(
                f"{name} {layout}",
                lambda c, o=order, f=difference, w=layout: search_step_fn(
                    make_lm(args, H, domains, c, search_weights=w), o, train_b, val_b, zero, f
                ),
            )
        # the weight step alone (alpha fixed), for the FLOPs per token against DARTS' formula
        model = make_lm(args, H, domains, "off", search_weights=layout)
        extra[f"weight step flops {layout}"] = flops_of(
            weight_step_fn(model, lambda x, m=model: m(x, zero)[0], train_b)
        )
    geno = random_genotype(args, domains, seed=3)

    def derived(c, batch_edges=True):
        model = make_lm(args, H, domains, c, geno)
        model.cell.batch_edges = batch_edges
        return weight_step_fn(model, lambda x: model(x, zero)[0], train_b)

    if not args.scaling_only:
        row("derived", derived)
        if "off" in args.modes:  # compiled, the chain is one graph of tensors either way
            row("derived chain", lambda c: derived(c, batch_edges=False), modes=["off"])
        lstm = lstm_lm(V, H)
        row("fairseq lstm_lm", lambda c: weight_step_fn(lstm, lambda x: lstm(x)[0], train_b))

    # step time against the number of domains D (compiled cell where --modes has it)
    mode = "on" if "on" in args.modes else "off"
    scaling = {}
    for D in args.domain_counts:
        names = [f"d{i}" for i in range(D)]
        spread = torch.arange(B, device=DEVICE) % D
        geno_d = random_genotype(args, names, seed=D)
        times = []
        for dom in (zero, spread):
            search = make_lm(args, H, names, mode)
            times.append(measure(search_step_fn(search, 1, train_b, val_b, dom), args)[1])
            model = make_lm(args, H, names, mode, geno_d)
            times.append(
                measure(weight_step_fn(model, lambda x, m=model, d=dom: m(x, d)[0], train_b), args)[
                    1
                ]
            )
        scaling[D] = times
        print(f"  [H={H}] D={D}: " + ", ".join(f"{t:.3f}" for t in times) + " s", flush=True)
    return rows, scaling, peak, extra


def report(args, H, rows, scaling, peak, extra):
    B, T = args.batch, args.length
    lines = [
        f"hidden {H}: vocab {args.vocab}, batch {B}x{T}, {args.nodes} nodes, 2 domains, "
        f"GEMM peak at the cell's shapes {peak / 1e9:.1f} GFLOP/s",
        f"{'step':<28}{'tokens/s':>10}{'GFLOP/step':>12}{'GFLOP/s':>9}{'% peak':>8}{'vs lstm':>9}"
        f"{'compile s':>11}{'ops':>8}"
        + (f"{'kernels':>9}{'GPU busy':>10}" if any("kernels" in r for r in rows.values()) else ""),
    ]
    base = rows["fairseq lstm_lm"]["sec"] if rows else None
    for name, r in rows.items():
        rate = r["flops"] / r["sec"]
        comp = f"{r['compile']:.0f}" if r["compile"] is not None else "-"
        lines.append(
            f"{name:<28}{B * T / r['sec']:>10.0f}{r['flops'] / 1e9:>12.2f}{rate / 1e9:>9.1f}"
            f"{100 * rate / peak:>7.0f}%{base / r['sec']:>9.2f}{comp:>11}"
            + (f"{r['ops']:>8}" if r["ops"] is not None else f"{'-':>8}")
            + (f"{r['kernels']:>9.0f}{100 * r['busy'] / r['sec']:>9.0f}%" if "kernels" in r else "")
        )
    for layout in args.search_weights:
        for mode in ("compiled", "eager"):
            o1 = rows.get(f"search o1 {layout}, {mode}")
            ratios = [
                f"{label} {rows[f'{name} {layout}, {mode}']['sec'] / o1['sec']:.2f}"
                for name, label in (
                    ("search o2", "central"),
                    ("search o2 fwd", "forward difference"),
                )
                if o1 and f"{name} {layout}, {mode}" in rows
            ]
            if ratios:
                lines.append(
                    f"second/first order search time ({layout}, {mode}): " + ", ".join(ratios)
                )
    lines += goals(args, H, rows, extra)
    if scaling:
        d1 = scaling[min(scaling)]
        lines.append(
            "step time vs D=1 (" + ("compiled" if "on" in args.modes else "eager") + " cell): "
            "search o1 | derived, one domain per batch;  search o1 | derived, batch spread over D"
        )
        for D, t in scaling.items():
            lines.append(f"  D={D}: " + "  ".join(f"{a / b:5.2f}" for a, b in zip(t, d1)))
    return lines


def length_probe(args, spec):
    """In this (fresh) process: one row at one sequence length; prints its tokens/s and the peak
    resident memory a step adds (``ru_maxrss`` after a warm-up step and a timed block, minus the
    resident size before them: the step's activations, gradients and optimizer state)."""
    import json
    import resource

    name, H, T, B = spec.split(",")
    H, T, B = int(H), int(T), int(B)
    train_b, val_b = batches(args.vocab, B, T)
    zero = torch.zeros(B, dtype=torch.long, device=DEVICE)
    domains = ["d0", "d1"]
    if name == "derived":
        model = make_lm(args, H, domains, "off", random_genotype(args, domains, seed=3))
        step = weight_step_fn(model, lambda x: model(x, zero)[0], train_b)
    else:
        layout = name.split()[-1]
        model = make_lm(args, H, domains, "off", search_weights=layout)
        step = search_step_fn(model, 1, train_b, val_b, zero)
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    step()
    sec = step_seconds(step, args.steps, args.repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"tokens_per_s": B * T / sec, "peak_bytes": peak - before}))


def length_rows(args, H):
    """Cost per token against the sequence length: each (row, T) in a fresh process, batches of
    about ``--length-tokens`` tokens (B = tokens / T sentences), or of ``--length-batch``
    sentences (fairseq's ``--batch-size``)."""
    import json
    import subprocess
    import sys

    rows = [f"search o1 {w}" for w in args.search_weights] + ["derived"]
    lines = [
        f"cost per token against the sentence length, hidden {H} (eager cell, batches of "
        + (
            f"{args.length_batch} sentences"
            if args.length_batch
            else f"~{args.length_tokens} tokens"
        )
        + ", each in a fresh process)",
        f"{'row':<22}{'T':>5}{'B':>5}{'tokens/s':>10}{'vs T=' + str(args.lengths[0]):>9}"
        f"{'peak KB/token':>15}{'vs T=' + str(args.lengths[0]):>9}",
    ]
    for name in rows:
        first = None
        for T in args.lengths:
            B = args.length_batch or max(1, round(args.length_tokens / T))
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--length-probe",
                f"{name},{H},{T},{B}",
            ]
            cmd += [
                "--vocab",
                str(args.vocab),
                "--nodes",
                str(args.nodes),
                "--steps",
                str(args.steps),
            ]
            cmd += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
            cmd += ["--search-weights", ",".join(args.search_weights)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            per_token = r["peak_bytes"] / (B * T) / 1024
            first = first or (r["tokens_per_s"], per_token)
            lines.append(
                f"{name:<22}{T:>5}{B:>5}{r['tokens_per_s']:>10.0f}{r['tokens_per_s'] / first[0]:>9.2f}"
                f"{per_token:>15.1f}{per_token / first[1]:>9.2f}"
            )
            print(lines[-1], flush=True)
    return lines


def goals(args, H, rows, extra):
    """The search-cost issue's goals that the in-process rows measure, as ratios (eager cell)."""
    if "fairseq lstm_lm" not in rows:
        return []
    tokens = args.batch * args.length
    darts = darts_flops_per_token(H, args.vocab, args.nodes)
    lstm = rows["fairseq lstm_lm"]
    rate = {name: r["flops"] / r["sec"] for name, r in rows.items()}
    derived = rows.get("derived, eager")
    lines = [
        f"goals at hidden {H} (eager cell; DARTS' training pass {darts / 1e6:.2f} MFLOP/token):"
    ]
    for layout in args.search_weights:
        o1 = rows.get(f"search o1 {layout}, eager")
        if o1 is None:
            continue
        per_token = extra[f"weight step flops {layout}"] / tokens
        items = [
            f"weight-step FLOPs/token / DARTS {per_token / darts:.2f} (<= 1.2)",
            f"FLOP/s / lstm_lm's {rate[f'search o1 {layout}, eager'] / rate['fairseq lstm_lm']:.2f}"
            " (>= 0.5 at 256)",
        ]
        if derived is not None and o1["ops"] and derived["ops"]:
            items.append(f"kernels / derived's {o1['ops'] / derived['ops']:.2f} (<= 2)")
        for name, label in (("search o2", "central"), ("search o2 fwd", "forward")):
            if f"{name} {layout}, eager" in rows:
                r = rows[f"{name} {layout}, eager"]["sec"] / o1["sec"]
                items.append(f"o2 {label}/o1 time {r:.2f} (<= 2.3)")
        lines.append(f"  search {layout}: " + "; ".join(items))
    if derived is not None:
        lines.append(
            f"  derived: FLOP/s / lstm_lm's {rate['derived, eager'] / rate['fairseq lstm_lm']:.2f}"
            f" (>= 0.8 at 256); tokens/s / lstm_lm's {lstm['sec'] / derived['sec']:.2f}"
        )
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", default="32,256", help="comma-separated hidden sizes")
    p.add_argument("--vocab", type=int, default=10000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=30)
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="timed steps per block")
    p.add_argument("--repeats", type=int, default=2, help="timed blocks (the fastest counts)")
    p.add_argument(
        "--modes", default="on,off", help="cell compile modes to time: on (compiled), off (eager)"
    )
    p.add_argument(
        "--domain-counts",
        default="1,2,4,8",
        help="D values of the domain-scaling rows ('' to skip)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu, or cuda: the same rows on the GPU (wall clock after synchronising)",
    )
    p.add_argument(
        "--fairseq-train", action="store_true", help="also time fairseq-train end to end"
    )
    p.add_argument("--only-fairseq-train", action="store_true", help="skip the in-process rows")
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend of the compiled rows: inductor (the cell's own), "
        "inductor-cudagraphs (CUDA graphs on a GPU, as mode='reduce-overhead'), or any "
        "registered dynamo backend (e.g. cudagraphs: the eager kernels in CUDA graphs)",
    )
    p.add_argument(
        "--kernel-profile",
        action="store_true",
        help="on a GPU, also the kernels launched per step and the share of the step's wall "
        "time the GPU spends in them (torch.profiler)",
    )
    p.add_argument(
        "--scaling-only", action="store_true", help="of the in-process rows, the D scaling alone"
    )
    p.add_argument(
        "--search-weights",
        default="node,op",
        help="search weight layouts of the search rows (node: DARTS' one matrix per node; op)",
    )
    p.add_argument(
        "--second-order",
        default="node,op",
        help="layouts that also get the second-order rows ('' for none)",
    )
    p.add_argument(
        "--lengths",
        default="",
        help="sentence lengths of the cost-per-token rows, e.g. 30,300 ('' to skip)",
    )
    p.add_argument("--length-tokens", type=int, default=960, help="tokens per batch there")
    p.add_argument(
        "--length-batch", type=int, default=0, help="sentences per batch there instead (0: off)"
    )
    p.add_argument(
        "--lengths-only", action="store_true", help="of the in-process rows, the length rows alone"
    )
    p.add_argument("--length-probe", default="", help=argparse.SUPPRESS)
    p.add_argument("--e2e-updates", type=int, default=40)
    p.add_argument("--e2e-dir", default="build/lm_speed_demo")
    p.add_argument(
        "--e2e-modes", default="off", help="cell compile modes of the fairseq-train search rows"
    )
    args = p.parse_args(argv)
    args.search_weights = [w for w in args.search_weights.split(",") if w]
    args.second_order = [w for w in args.second_order.split(",") if w]
    args.e2e_modes = [m for m in args.e2e_modes.split(",") if m]
    args.lengths = [int(t) for t in args.lengths.split(",") if t]
    args.modes = [m for m in args.modes.split(",") if m]
    args.domain_counts = [int(d) for d in args.domain_counts.split(",") if d]
    torch.set_num_threads(args.threads)
    logging.getLogger("filelock").setLevel(logging.WARNING)  # inductor's cache locks, at DEBUG
    global DEVICE
    DEVICE = torch.device(args.device)
    gpu = f", GPU {torch.cuda.get_device_name(DEVICE)}" if DEVICE.type == "cuda" else ""
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} thread(s), torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"
        f"{gpu}, compile backend {args.compile_backend}"
    )
    if args.length_probe:
        torch.set_num_threads(args.threads)
        return length_probe(args, args.length_probe)
    for H in [int(h) for h in args.hidden.split(",")] if not args.only_fairseq_train else []:
        if not args.lengths_only:
            print("\n".join(report(args, H, *section(args, H)) + [""]), flush=True)
        if args.lengths:
            print("\n".join(length_rows(args, H) + [""]), flush=True)
    if args.fairseq_train or args.only_fairseq_train:
        from fairseq_speed import end_to_end  # benchmarks/fairseq_speed.py

        hiddens = [int(h) for h in args.hidden.split(",")]
        lines, rates = end_to_end(args, hiddens, lambda H: genotype_file(args, H))
        print("\n".join(lines), flush=True)
        print("goals through fairseq-train (ratios of words/s to lstm_lm's):")
        for (H, name), r in rates.items():
            goal = {32: "search >= 0.25, derived >= 0.7"}.get(H, "")
            if not name.startswith("lstm"):
                print(f"  hidden {H}: {name}: {r:.2f}" + (f"  ({goal})" if goal else ""))


def genotype_file(args, H):
    """The derived rows' genotype (a random one, seed 3, as in-process) as a file for --genotype."""
    from mdnas_fairseq.search import save_genotype

    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), args.e2e_dir)
    path = os.path.join(folder, f"random_genotype_{args.nodes}.json")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        save_genotype(path, random_genotype(args, ["en", "de"], seed=3))
    return os.path.abspath(path)


if __name__ == "__main__":
    main()
