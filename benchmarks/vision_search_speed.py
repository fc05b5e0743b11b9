#!/usr/bin/env python
"""Images per second of the rotated-MNIST search step (first and second order) and of the derived
model's training step, measured side by side in one run through fairseq's Trainer with the real
``rotated_mnist_nas`` task, ``mdnas_conv`` model and ``multidomain_nas_loss`` criterion.

A search step is the alpha step on a held-out batch plus the weight step; the derived
model's step is a plain weight step of the multimodel built from the genotype the search derives
at the end of its timed steps. Prints one line per setting and the ratios, and with ``--json``
writes them to a file.

    OMP_NUM_THREADS=1 python benchmarks/vision_search_speed.py --mnist-root ../shared/data/mnist
"""

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(ROOT, "mdnas_fairseq")
DEFAULT_MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")


def build(argv):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    parser = options.get_training_parser()
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, input_args=argv))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    return cfg, task, trainer


def batches(task, trainer, count):
    itr = trainer.get_train_iterator(epoch=1, load_dataset=False)
    out = []
    while len(out) < count:
        for sample in itr.next_epoch_itr(shuffle=True):
            out.append(sample)
            if len(out) >= count:
                break
        itr = trainer.get_train_iterator(epoch=itr.next_epoch_idx, load_dataset=False)
    return out


def measure(task, trainer, steps, warmup):
    samples = batches(task, trainer, steps + warmup)
    for s in samples[:warmup]:
        trainer.train_step([s])
    t = time.perf_counter()
    images = 0
    for s in samples[warmup:]:
        trainer.train_step([s])
        images += s["nsentences"]
    return images / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist-root", default=DEFAULT_MNIST if os.path.isdir(DEFAULT_MNIST) else "")
    p.add_argument("--rotations", default="0,90")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--num-nodes", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--contrastive-coef", type=float, default=0.0)
    p.add_argument("--json", default="", help="also write the results to this file")
    a = p.parse_args()

    import logging

    logging.getLogger().setLevel(logging.WARNING)
    import torch

    sys.path.insert(0, ROOT)
    import mdnas_fairseq  # noqa: F401

    work = tempfile.mkdtemp(prefix="vision_speed_")
    common = [
        "--user-dir",
        USER_DIR,
        "--task",
        "rotated_mnist_nas",
        "--rotations",
        a.rotations,
        "--train-images-per-domain",
        "128",
        "--arch",
        "mdnas_conv",
        "--channels",
        str(a.channels),
        "--num-nodes",
        str(a.num_nodes),
        "--criterion",
        "multidomain_nas_loss",
        "--contrastive-coef",
        str(a.contrastive_coef),
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--batch-size",
        str(a.batch_size),
        "--cpu",
        "--num-workers",
        "0",
        "--seed",
        "1",
        "--save-dir",
        work,
        "--no-alpha-heatmaps",
    ] + (["--mnist-root", a.mnist_root] if a.mnist_root else ["--no-mnist-download"])
    results = {
        "threads": torch.get_num_threads(),
        "batch_size": a.batch_size,
        "channels": a.channels,
        "rotations": a.rotations,
    }
    genotype_path = os.path.join(work, "genotype.json")
    for order in (1, 2):
        torch.manual_seed(0)
        _cfg, task, trainer = build(common + ["--alpha-order", str(order)])
        results[f"search_order{order}_img_s"] = measure(task, trainer, a.steps, a.warmup)
        if order == 1:
            task.write_search_outputs(trainer.model, 1)
        results["mnist_source"] = task.mnist_source
    torch.manual_seed(0)
    _cfg, task, trainer = build(common + ["--genotype", genotype_path])
    results["derived_params"] = sum(p.numel() for p in trainer.model.parameters())
    results["derived_img_s"] = measure(task, trainer, a.steps, a.warmup)
    d, s1, s2 = (
        results["derived_img_s"],
        results["search_order1_img_s"],
        results["search_order2_img_s"],
    )
    results["ratio_derived_over_order1"] = d / s1
    results["ratio_derived_over_order2"] = d / s2
    results["ratio_order1_over_order2"] = s1 / s2
    print(
        f"MNIST source: {results['mnist_source']}; rotations {a.rotations}; batch {a.batch_size}; "
        f"{a.channels} channels, {a.num_nodes} nodes; torch threads {results['threads']}"
    )
    print(f"search step, first order : {s1:9.1f} images/s")
    print(f"search step, second order: {s2:9.1f} images/s")
    print(f"derived training step    : {d:9.1f} images/s  ({results['derived_params']} parameters)")
    print(
        f"ratios: derived / first order {d / s1:.2f}x, derived / second order {d / s2:.2f}x, "
        f"first / second order {s1 / s2:.2f}x"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
