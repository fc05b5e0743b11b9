r"""Prepare a parallel corpus (one TSV column per language) for --task multidomain_nas.

example:
  mdnas-prepare --tsv examples/data/en_de_small.tsv --langs en,de --out build/demo-data \
      --vocab-size 4000
  (python scripts/prepare_parallel.py takes the same options and does the same)

reads --tsv FILE:
  a tab-separated UTF-8 file whose first row names the columns (language codes, e.g.
  en<TAB>de); it may hold more columns than --langs. Every field is whitespace-normalised
  (runs of whitespace -> one space, stripped); rows with an empty field in any chosen language
  are dropped, and so are exact duplicate rows (the same text in every chosen language: one
  copy is kept, so no sentence pair is both trained on and held out; the summary says how
  many, and how many valid/test sentences still occur in train in one language only).
  With --split-column NAME the split of each row is read from that column (values train,
  valid, test, and optionally heldout) instead of being drawn at random; if no row says
  heldout, the heldout rows are drawn from the train rows (--heldout-fraction of them, or
  --heldout-rows).

steps:
  shuffle the rows with --seed and split them into train / heldout (held-out part of the
  training data for the DARTS alpha step) / valid / test, the same rows for every language,
  so line i of {split}.en is the translation of line i of {split}.de; train ONE sentencepiece
  model on the train split of all chosen languages (never on heldout/valid/test); encode
  every split; build one fairseq dictionary from the train split of all languages; binarize
  every split and language with fairseq-preprocess --only-source --srcdict.

writes under --out DIR:
  DIR/spm.model, DIR/spm.vocab                 the shared sentencepiece model
  DIR/raw/{train,heldout,valid,test}.{lang}    plain text, one sentence a line
  DIR/tok/{split}.{lang}                       sentencepiece pieces separated by spaces
  DIR/data-bin/dict.txt                        shared fairseq dictionary
  DIR/data-bin/{split}.{lang}.bin/.idx         fairseq mmap datasets
  DIR/data-bin/mdnas_data.json                 metadata read by the multidomain_nas task
  DIR is built in a temporary folder next to it and renamed into place at the end, so a
  failed run leaves nothing behind; an existing non-empty DIR is replaced only with --force.
"""

import argparse
import sys

from .errors import DataError
from .pipeline import prepare
from .vocab import DEFAULT_VOCAB_SIZE


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Option defaults in the help, the description and epilog laid out as written."""


def build_parser(prog=None):
    description, _, epilog = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=_HelpFormatter
    )
    p.add_argument(
        "--tsv", required=True, help="tab-separated UTF-8 file, header row = language codes"
    )
    p.add_argument(
        "--langs", required=True, help="comma-separated languages (columns) to use, e.g. en,de"
    )
    p.add_argument("--out", required=True, help="output folder DIR")
    p.add_argument(
        "--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, help="sentencepiece vocabulary size"
    )
    p.add_argument("--spm-model-type", choices=("bpe", "unigram"), default="bpe")
    p.add_argument(
        "--character-coverage",
        type=float,
        default=0.9995,
        help="sentencepiece character coverage (1.0 keeps every character of the train split)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the shuffle that draws the splits")
    p.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="use at most this many usable rows (a seeded random subset) before splitting",
    )
    for name, frac, what in (
        ("heldout", 0.1, "alpha-step rows (held out of train)"),
        ("valid", 0.05, "validation rows"),
        ("test", 0.05, "test rows"),
    ):
        g = p.add_mutually_exclusive_group()
        g.add_argument(
            f"--{name}-fraction",
            type=float,
            default=frac,
            help=f"fraction of usable rows used as {what}"
            + (" (of the train-labelled rows with --split-column)" if name == "heldout" else ""),
        )
        g.add_argument(
            f"--{name}-rows",
            type=int,
            default=None,
            help=f"number of {what} (overrides the fraction)",
        )
    p.add_argument(
        "--split-column",
        default=None,
        help="column holding each row's split (train/valid/test[/heldout]) instead of a random split",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="threads/processes (default: min(8, CPUs))"
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing non-empty --out folder"
    )
    p.add_argument("--quiet", action="store_true", help="do not print the summary")
    return p


def main(argv=None, prog=None):
    """Command line: ``prog`` names the program in usage and error lines (default: the name it
    was started by, e.g. mdnas-prepare). Returns 0, or 2 after printing a DataError."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        prepare(
            args.tsv,
            args.langs,
            args.out,
            vocab_size=args.vocab_size,
            seed=args.seed,
            max_rows=args.max_rows,
            heldout_fraction=args.heldout_fraction,
            valid_fraction=args.valid_fraction,
            test_fraction=args.test_fraction,
            heldout_rows=args.heldout_rows,
            valid_rows=args.valid_rows,
            test_rows=args.test_rows,
            split_column=args.split_column,
            spm_model_type=args.spm_model_type,
            character_coverage=args.character_coverage,
            workers=args.workers,
            force=args.force,
            quiet=args.quiet,
        )
    except DataError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
