r"""Prepare a parallel corpus (one TSV column per language), or the domains of one language
(the values of a column), for --task multidomain_nas.

example:
  mdnas-prepare --tsv examples/data/en_de_small.tsv --langs en,de --out build/demo-data \
      --vocab-size 4000
  mdnas-prepare --extend-data build/demo-data/data-bin --tsv more.tsv --langs fr \
      --out build/demo-data-fr
  mdnas-prepare --tsv ../shared/data/parallel/gettext.en-de.tsv --translation en-de \
      --domain-column source --out build/gettext-mt
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
  With --domain-column NAME (and exactly one language in --langs, e.g. --langs en) the domains
  are not languages but the distinct values of column NAME (e.g. a genre or program name), each
  domain's text being that language's column of its rows; --min-domain-rows N drops the
  domains with fewer than N rows (see "with --domain-column" below).

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
  (with --domain-column every {lang} above is a domain, a value of the column)
  DIR is built in a temporary folder next to it and renamed into place at the end, so a
  failed run leaves nothing behind; an existing non-empty DIR is replaced only with --force.

with --domain-column NAME --langs LANG (domains from a column, e.g. genres of one language):
  - every distinct value of column NAME is a domain, named exactly as written: a value must be
    a valid domain name (letters, digits, '_' and '-', the rule of language codes) and must not
    be empty; otherwise it is an error naming the value (or the empty row) and the column,
    never silently renamed. An unknown column is an error naming the TSV and its columns;
  - --min-domain-rows N (default 1) drops every domain with fewer than N usable rows (after
    dropping empty and duplicate rows), printing each dropped domain and its row count; a kept
    domain too small for its splits is an error naming it;
  - duplicate rows are the same text in the same domain (one copy kept); the same text in two
    domains stays in both;
  - the splits are drawn per domain, as above (--seed, the fractions or row counts, --max-rows
    per domain) or read from --split-column; ONE sentencepiece model and ONE dictionary are
    trained on the train splits of all domains;
  - DIR gets the same layout with the domains in place of languages ({split}.{domain}.bin/.idx,
    raw/{split}.{domain}, ...). mdnas_data.json: langs = the domains (sorted), which the
    multidomain_nas task takes as its domains without --domains; domain_column and lang say
    where they came from; splits_by_lang gives each domain's sentence counts (splits: their
    sums); rows_by_domain and domains_dropped the row counts; parallel is false: line i of one
    domain is NOT a translation of line i of another, so the contrastive term
    (--contrastive-coef) does not apply (the task refuses it when the domains' sizes differ);
  - the summary prints per domain its rows per split, train tokens and valid+test <unk>.

with --translation SRC-TGT (a translation data-bin for --task multidomain_nas_translation):
  - columns SRC and TGT hold each row's source and target text; the domains are the values of
    --domain-column NAME (checked as above; --min-domain-rows applies), or without it one domain
    named SRC-TGT; splits are drawn per domain (or read from --split-column);
  - ONE sentencepiece model on the train split of both languages of every domain and ONE joined
    dictionary, written as data-bin/dict.SRC.txt and data-bin/dict.TGT.txt (identical; no dict.txt);
  - data-bin/{split}.{domain}.SRC-TGT.{SRC,TGT}.bin/.idx: fairseq language-pair datasets (fairseq's
    translation loader reads split {split}.{domain}); raw/ and tok/ use the same names;
  - mdnas_data.json: kind "translation", source_lang, target_lang, domains, parallel false,
    splits_by_domain; tokens and unk_tokens per split, domain and language.

with --extend-data OLD (a data-bin made by mdnas-prepare, or the folder holding it as data-bin/):
  --langs names only NEW languages (a language OLD already has is an error). OLD is read, never
  written; --out must lie outside OLD's folder. DIR gets the same layout, and:
  - the old languages' {split}.{lang}.bin/.idx, raw/, tok/ and sentencepiece model(s) are copied
    byte-identical, and their records in mdnas_data.json are kept as they were;
  - data-bin/dict.txt is OLD's dict.txt with entries appended (its old lines unchanged, in
    order), so a model trained on OLD keeps every token id: each piece a new language's train
    split uses that the dictionary lacks is appended (most frequent first; pieces it shares with
    OLD keep their old ids), then madeupwordNNNN entries pad the size to a multiple of 8;
  - the new languages' rows: when the TSV has every old language's column and each row of OLD
    (matched on its old-language text, OLD/../raw/) has text in every new language, the new
    languages get exactly the old rows, split for split and line for line (parallel: the
    contrastive term can pair them with the old languages); otherwise (or with --split-column)
    their splits are drawn as without --extend-data (--seed, --max-rows and the split-size
    options apply only then), and the summary says why;
  - sentencepiece (--extend-spm auto): a new language whose train split the old model encodes
    with under 1% unknown pieces (characters the old model lacks) is encoded with the old model;
    any other gets a model of its own, DIR/spm.{lang}.model, trained on its train split with the
    old model's type and character coverage (unless --spm-model-type/--character-coverage say
    otherwise) and --vocab-size pieces (default: as many as an old language's train split uses,
    scaled by sqrt(new/old train sentences); a size sentencepiece cannot make from the text
    becomes the nearest one it can). --extend-spm old / own forces either choice;
  - mdnas_data.json: langs = old + new in order; spm_models maps every language to the model
    that encodes it (encode new text of a language with that model, then dict.txt); splits_by_lang
    gives each language's sentence counts; extensions[-1] records the old dictionary's size and
    sha256 and per new language the model chosen, its unknown rates and the entries appended;
  - the summary prints, per new language, the unknown-token rate of its valid split (goal: under
    1%) and how many dictionary entries were appended.
"""

import argparse
import sys

from .errors import DataError
from .extension import SPM_POLICIES, extend
from .pipeline import prepare
from .translation import prepare_translation
from .vocab import DEFAULT_VOCAB_SIZE


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Option defaults in the help (none for options without one), the description and epilog
    laid out as written."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser(prog=None):
    description, _, epilog = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=_HelpFormatter
    )
    p.add_argument(
        "--tsv", required=True, help="tab-separated UTF-8 file, header row = language codes"
    )
    p.add_argument(
        "--langs",
        default=None,
        help="comma-separated languages (columns) to use, e.g. en,de (required unless --translation)",
    )
    p.add_argument(
        "--translation",
        metavar="SRC-TGT",
        default=None,
        help="write a translation data-bin (columns SRC and TGT) for --task "
        "multidomain_nas_translation; domains from --domain-column (see above)",
    )
    p.add_argument("--out", required=True, help="output folder DIR")
    p.add_argument(
        "--extend-data",
        metavar="OLD",
        default=None,
        help="data-bin made by mdnas-prepare to add the --langs (new languages) to (see above)",
    )
    p.add_argument(
        "--extend-spm",
        choices=SPM_POLICIES,
        default="auto",
        help="with --extend-data: a new language's sentencepiece model (auto: the old one if it "
        "leaves under 1%% of the language's train pieces unknown, else its own)",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        help=f"sentencepiece vocabulary size (default {DEFAULT_VOCAB_SIZE}; with --extend-data "
        "the size of a new language's own model, default scaled to its data)",
    )
    p.add_argument(
        "--spm-model-type",
        choices=("bpe", "unigram"),
        default=None,
        help="sentencepiece model type (default bpe; with --extend-data the old model's)",
    )
    p.add_argument(
        "--character-coverage",
        type=float,
        default=None,
        help="sentencepiece character coverage, 1.0 keeps every character of the train split "
        "(default 0.9995; with --extend-data the old model's)",
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
        "--domain-column",
        metavar="NAME",
        default=None,
        help="column whose distinct values are the domains (with exactly one language in --langs, "
        "whose column holds the text); see above",
    )
    p.add_argument(
        "--min-domain-rows",
        type=int,
        metavar="N",
        default=None,
        help="with --domain-column: drop domains with fewer than N usable rows, naming each "
        "(default 1: keep all)",
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
    common = {  # the options prepare() and extend() share
        k: getattr(args, k)
        for k in (
            "seed max_rows heldout_fraction valid_fraction test_fraction heldout_rows valid_rows "
            "test_rows split_column workers force quiet"
        ).split()
    }
    if args.translation is not None:
        return _translation(parser, args, common)
    if args.langs is None:
        parser.error("the following arguments are required: --langs (or --translation SRC-TGT)")
    if args.domain_column is not None or args.min_domain_rows is not None:
        if args.extend_data is not None:
            print(
                f"{parser.prog}: error: --domain-column/--min-domain-rows do not apply with "
                "--extend-data",
                file=sys.stderr,
            )
            return 2
        common.update(domain_column=args.domain_column, min_domain_rows=args.min_domain_rows)
    if args.extend_data is not None:
        run, old = extend, [args.extend_data]
        vocab = dict(
            vocab_size=args.vocab_size,
            spm_policy=args.extend_spm,
            spm_model_type=args.spm_model_type,
            character_coverage=args.character_coverage,
        )
    else:  # prepare() has defaults of its own for these
        run, old = prepare, []
        given = ("vocab_size", "spm_model_type", "character_coverage")
        vocab = {k: getattr(args, k) for k in given if getattr(args, k) is not None}
    try:
        run(*old, args.tsv, args.langs, args.out, **vocab, **common)
    except DataError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


def _translation(parser, args, common):
    """``--translation SRC-TGT`` (:mod:`.translation`)."""
    if args.langs is not None or args.extend_data is not None:
        parser.error(
            "--translation SRC-TGT names the languages itself: no --langs or --extend-data"
        )
    split_options = {
        k: common.pop(k)
        for k in (
            "heldout_fraction valid_fraction test_fraction heldout_rows valid_rows test_rows "
            "max_rows"
        ).split()
    }
    common.pop("seed")
    vocab = {
        k: getattr(args, k)
        for k in ("spm_model_type", "character_coverage")
        if getattr(args, k) is not None
    }
    try:
        prepare_translation(
            args.tsv,
            args.translation,
            args.out,
            vocab_size=args.vocab_size or DEFAULT_VOCAB_SIZE,
            seed=args.seed,
            domain_column=args.domain_column,
            min_domain_rows=args.min_domain_rows,
            split_options=split_options,
            **vocab,
            **common,
        )
    except DataError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
