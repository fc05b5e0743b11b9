"""Run fairseq-train in this process and dump every worker's model after each epoch (test helper).

Usage: python tests/distributed_rank.py DUMP_DIR <fairseq-train arguments>
Only rank 0 writes checkpoints; this records what each rank holds, so a test can check that the
data-parallel workers keep identical architecture parameters and weights.
"""
import os
import sys

import torch

DUMP = sys.argv[1]
sys.argv = ["fairseq-train"] + sys.argv[2:]

from fairseq_cli import train  # noqa: E402

import mdnas_fairseq  # noqa: E402,F401
from mdnas_fairseq.criterions.multidomain_nas_loss import unwrap_model  # noqa: E402
from mdnas_fairseq.tasks.bilevel import BilevelSearchMixin  # noqa: E402

original = BilevelSearchMixin.begin_valid_epoch


def begin_valid_epoch_and_dump(self, epoch, model):
    original(self, epoch, model)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    state = {k: v.detach().cpu().clone() for k, v in unwrap_model(model).state_dict().items()}
    torch.save(state, os.path.join(DUMP, f"rank{rank}_epoch{epoch}.pt"))


BilevelSearchMixin.begin_valid_epoch = begin_valid_epoch_and_dump
train.cli_main()
