"""Run ``fairseq-train`` or ``fairseq-validate`` in this process and record what it logged and what
this worker holds (test helper; one process per data-parallel rank).

Usage: python tests/helpers/fairseq_capture.py OUT_DIR {train|validate} <the command's arguments>

Writes into OUT_DIR, for this worker's rank R:
  rankR_epochE.pt      the model's state dict at each validation (train);
  rankR_meters.json    the UNROUNDED meter averages fairseq logged: {"train": [one dict per epoch],
                       "valid": [one dict per validation]} (the printed logs are rounded);
  rankR_steps.json     {"train": one [update_num, domain] per train_step call (domain null for a padding
                       batch), "valid": the number of valid_step calls (padding batches included)}.
"""

import contextlib
import json
import os
import sys

import torch

OUT, COMMAND = sys.argv[1], sys.argv[2]
sys.argv = [f"fairseq-{COMMAND}"] + sys.argv[3:]

import fairseq_cli.train as train_cli  # noqa: E402
import fairseq_cli.validate as validate_cli  # noqa: E402
from fairseq.logging import metrics  # noqa: E402
from fairseq.tasks import FairseqTask  # noqa: E402

import mdnas_fairseq  # noqa: E402,F401
from mdnas_fairseq.models.searchable import unwrap_model  # noqa: E402
from mdnas_fairseq.tasks.bilevel import BilevelSearchMixin  # noqa: E402

record = {"train": [], "valid": []}
steps = []
valid_steps = [0]


def rank():
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def raw(meters):
    out = {}
    for key, meter in meters.items():
        avg = getattr(meter, "avg", None)
        if avg is not None:
            out[key] = float(avg)
    return out


def dump():
    with open(os.path.join(OUT, f"rank{rank()}_meters.json"), "w") as f:
        json.dump(record, f)
    with open(os.path.join(OUT, f"rank{rank()}_steps.json"), "w") as f:
        json.dump({"train": steps, "valid": valid_steps[0]}, f)


original_aggregate = metrics.aggregate


@contextlib.contextmanager
def aggregate(name=None, new_root=False):
    with original_aggregate(name, new_root) as agg:
        yield agg
    if new_root or (COMMAND == "validate" and name is None):  # the validation loops' aggregators
        record["valid"].append(raw(agg))
        dump()


metrics.aggregate = aggregate
original_training_stats = train_cli.get_training_stats


def get_training_stats(stats):
    record["train"].append(raw(metrics.get_meters("train")))
    dump()
    return original_training_stats(stats)


train_cli.get_training_stats = get_training_stats
original_step = BilevelSearchMixin.train_step


def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
    steps.append([int(update_num), None if ignore_grad else int(sample["domain"])])
    return original_step(self, sample, model, criterion, optimizer, update_num, ignore_grad)


BilevelSearchMixin.train_step = train_step
original_valid_step = FairseqTask.valid_step


def valid_step(self, sample, model, criterion):
    valid_steps[0] += 1
    return original_valid_step(self, sample, model, criterion)


FairseqTask.valid_step = valid_step
original_valid_epoch = BilevelSearchMixin.begin_valid_epoch


def begin_valid_epoch(self, epoch, model):
    original_valid_epoch(self, epoch, model)
    state = {k: v.detach().cpu().clone() for k, v in unwrap_model(model).state_dict().items()}
    torch.save(state, os.path.join(OUT, f"rank{rank()}_epoch{epoch}.pt"))


BilevelSearchMixin.begin_valid_epoch = begin_valid_epoch
os.makedirs(OUT, exist_ok=True)
(train_cli if COMMAND == "train" else validate_cli).cli_main()
dump()
