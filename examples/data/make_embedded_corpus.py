#!/usr/bin/env python3
"""Rebuild the embedded parallel corpora in examples/data/ from the offline Debian-derived TSVs.

    python examples/data/make_embedded_corpus.py --source-dir ../shared/data/parallel

(--source-dir is required: the folder of the offline source TSVs, which is not part of the
repository; the project keeps it in its shared data beside the repository, see examples/data/README.md).

Writes (deterministic for a given --seed and source files):
  en_de_small.tsv     every handbook paragraph with 4..40 words in both en and de, plus a
                      seeded random sample of gettext messages (4..40 words on both sides, no
                      printf/markup characters) to reach --total-rows rows; rows shuffled.
  en_de_fr_small.tsv  every handbook paragraph with 4..60 words in en, de and fr.
Rows whose chosen fields are identical across languages (untranslated text) are dropped, and
rows are unique by their English side.
"""
import argparse
import os
import random
import re
import sys

# printf conversions, XML/markup, shell/escape characters: frequent in GCC and LibreOffice
# messages and not natural-language text.
MARKUP = re.compile(r"[%$<>{}\\&_|#@]")


def read_tsv(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header = lines[0].split("\t")
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            sys.exit(f"{path} line {lineno}: {len(fields)} fields, header has {len(header)}")
        rows.append(dict(zip(header, fields)))
    return header, rows


def n_words(s):
    return len(s.split())


def keep(row, langs, min_words, max_words, no_markup=False):
    fields = [row[lang] for lang in langs]
    if len(set(fields)) != len(fields):  # untranslated
        return False
    if not all(min_words <= n_words(x) <= max_words for x in fields):
        return False
    if no_markup and any(MARKUP.search(x) for x in fields):
        return False
    return True


def write_tsv(path, langs, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(langs) + "\n")
        for row in rows:
            f.write("\t".join(" ".join(row[lang].split()) for lang in langs) + "\n")


def unique_by_en(rows):
    seen, out = set(), []
    for row in rows:
        if row["en"] not in seen:
            seen.add(row["en"])
            out.append(row)
    return out


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source-dir", required=True,
                   help="input: the folder holding handbook.tsv and gettext.en-de.tsv (the offline "
                   "Debian-derived corpus; in the project's shared data: ../shared/data/parallel beside "
                   "the repository)")
    p.add_argument("--out-dir", default=here,
                   help="output: where en_de_small.tsv and en_de_fr_small.tsv are written "
                   "(default: examples/data)")
    p.add_argument("--seed", type=int, default=20221)
    p.add_argument("--total-rows", type=int, default=5000, help="rows of en_de_small.tsv")
    args = p.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)

    _, handbook = read_tsv(os.path.join(args.source_dir, "handbook.tsv"))
    _, gettext = read_tsv(os.path.join(args.source_dir, "gettext.en-de.tsv"))
    rng = random.Random(args.seed)

    hb_ende = unique_by_en([r for r in handbook if keep(r, ["en", "de"], 4, 40)])
    hb_en = {r["en"] for r in hb_ende}
    gt_pool = unique_by_en([r for r in gettext if keep(r, ["en", "de"], 4, 40, no_markup=True)
                            and r["en"] not in hb_en])
    n_gettext = args.total_rows - len(hb_ende)
    if not 0 < n_gettext <= len(gt_pool):
        sys.exit(f"--total-rows {args.total_rows}: need {n_gettext} gettext rows, pool has {len(gt_pool)}")
    ende = hb_ende + rng.sample(gt_pool, n_gettext)
    rng.shuffle(ende)
    write_tsv(os.path.join(args.out_dir, "en_de_small.tsv"), ["en", "de"], ende)

    endefr = unique_by_en([r for r in handbook if keep(r, ["en", "de", "fr"], 4, 60)])
    rng.shuffle(endefr)
    write_tsv(os.path.join(args.out_dir, "en_de_fr_small.tsv"), ["en", "de", "fr"], endefr)

    for name, langs, rows in (("en_de_small.tsv", ["en", "de"], ende),
                              ("en_de_fr_small.tsv", ["en", "de", "fr"], endefr)):
        words = ", ".join(f"{lang} {sum(n_words(r[lang]) for r in rows)}" for lang in langs)
        size = os.path.getsize(os.path.join(args.out_dir, name))
        print(f"{name}: {len(rows)} rows ({words} words), {size} bytes")
    print(f"en_de_small.tsv: {len(hb_ende)} handbook rows + {n_gettext} gettext rows "
          f"(sampled from {len(gt_pool)} eligible)")


if __name__ == "__main__":
    main()
