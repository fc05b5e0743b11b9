"""Data preparation for ``--task multidomain_nas``: a parallel TSV (one column per language)
becomes a data folder with one shared sentencepiece model, one fairseq dictionary and a fairseq
dataset per split and language (``mdnas-prepare --help`` lists what it reads and writes). With
``--domain-column`` the domains are the values of a column, all of one language (not parallel).

Modules, each one step (each imports only the ones above it):

* :mod:`.errors`: :class:`DataError`, the one-line error for bad input or options;
* :mod:`.splits`: duplicate rows, the seeded train/heldout/valid/test split, held-out overlap;
* :mod:`.tsv`: language codes, reading and checking the TSV (and its domain column);
* :mod:`.vocab`: the shared sentencepiece model, the encoded splits, the fairseq dictionary;
* :mod:`.binarize`: fairseq-preprocess and the check of its datasets;
* :mod:`.outdir`: the output folder, built next to --out and renamed into place;
* :mod:`.summary`: the printed summary;
* :mod:`.pipeline`: :func:`prepare`, all the steps for one folder (domains from a column too);
* :mod:`.extension`: :func:`extend`, new languages added to a prepared folder (``--extend-data``),
  the old languages' files and token ids unchanged;
* :mod:`.cli`: the command line ``mdnas-prepare`` (``scripts/prepare_parallel.py`` is the same).

fairseq is imported inside the functions that need it, never when these modules are imported.
"""

from .errors import DataError
from .extension import extend
from .pipeline import prepare
from .splits import SPLITS, drop_duplicate_rows, held_out_overlap, split_rows
from .tsv import normalize, parse_langs, read_tsv
from .vocab import DEFAULT_VOCAB_SIZE

__all__ = [
    "DEFAULT_VOCAB_SIZE",
    "SPLITS",
    "DataError",
    "drop_duplicate_rows",
    "extend",
    "held_out_overlap",
    "normalize",
    "parse_langs",
    "prepare",
    "read_tsv",
    "split_rows",
]
