#!/usr/bin/env python3
"""Prepare a parallel corpus for ``--task multidomain_nas``; the same as the console script
``mdnas-prepare`` (code in mdnas_fairseq/data/prepare; ``--help`` says what it reads and writes)."""

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout
# importing fairseq scripts torch.jit functions, which recent torch flags as deprecated
warnings.filterwarnings(
    "ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning
)

from mdnas_fairseq.data.prepare import DataError, prepare, read_tsv, split_rows  # noqa: E402,F401
from mdnas_fairseq.data.prepare.cli import main as _main  # noqa: E402


def main(argv=None):
    return _main(argv, prog="prepare_parallel.py")


if __name__ == "__main__":
    sys.exit(main())
