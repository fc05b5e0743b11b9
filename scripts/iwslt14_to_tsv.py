#!/usr/bin/env python3
"""Turn an extracted IWSLT14 De-En folder (``de-en/`` from de-en.tgz) into one TSV for
scripts/prepare_parallel.py, with the train/valid/test split of fairseq's
examples/translation/prepare-iwslt14.sh:

    python scripts/iwslt14_to_tsv.py ORIG/de-en OUT.tsv [--lowercase]

- train: ``train.tags.de-en.{de,en}`` without the metadata lines (<url>, <keywords>,
  <talkid>, <speaker>, <reviewer>, <translator>, ... any line that is only a tag or a tagged
  element), keeping the text of <title> and <description> as sentences; pairs are then cleaned
  like Moses' clean-corpus-n (1..--max-words words on each side, word-count ratio at most
  --ratio). Words are whitespace-separated here (fairseq counts Moses tokens), so the kept set
  differs slightly from fairseq's.
- valid: every --valid-every-th (23rd) line of the cleaned train pairs, removed from train.
- test: the <seg> texts of IWSLT14.TED.dev2010, IWSLT14.TEDX.dev2012, IWSLT14.TED.tst2010,
  tst2011 and tst2012, concatenated in that order, XML entities decoded.
The right single quotation mark is replaced by an apostrophe everywhere (fairseq does it for
the test sets), whitespace is normalised, and with --lowercase all text is lowercased (fairseq
lowercases). Output columns: ``en<TAB>de<TAB>split``.
"""

import argparse
import os
import re
import sys
from xml.sax.saxutils import unescape

LANGS = ("en", "de")
TEST_SETS = (
    "IWSLT14.TED.dev2010",
    "IWSLT14.TEDX.dev2012",
    "IWSLT14.TED.tst2010",
    "IWSLT14.TED.tst2011",
    "IWSLT14.TED.tst2012",
)
KEEP_TEXT_TAGS = ("title", "description")
TAGGED = re.compile(r"^<(\w+)(\s[^>]*)?>(.*)</\1>$", re.S)
BARE_TAG = re.compile(r"^</?\w+(\s[^>]*)?/?>$")
SEG = re.compile(r"<seg\s+id\s*=\s*\"?\d+\"?\s*>(.*?)</seg>", re.S)
ENTITIES = {"&quot;": '"', "&apos;": "'"}


class IWSLTError(ValueError):
    pass


def clean_text(text):
    return " ".join(text.replace("\u2019", "'").split())


def train_sentences(path):
    """Sentences of a train.tags file: metadata lines dropped, <title>/<description> unwrapped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = line.strip()
            if s.startswith("<"):
                m = TAGGED.match(s)
                if m:
                    if m.group(1) in KEEP_TEXT_TAGS:
                        out.append(m.group(3))
                    continue
                if BARE_TAG.match(s):
                    continue
            out.append(s)
    return out


def xml_segments(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [unescape(m.group(1), ENTITIES).strip() for m in SEG.finditer(text)]


def keep_pair(a, b, max_words, ratio):
    na, nb = len(a.split()), len(b.split())
    if not (1 <= na <= max_words and 1 <= nb <= max_words):
        return False
    return na <= ratio * nb and nb <= ratio * na


def _aligned(paths, lists):
    counts = {p: len(x) for p, x in zip(paths, lists)}
    if len(set(counts.values())) != 1:
        raise IWSLTError(
            "files are not line-aligned after removing tags: "
            + ", ".join(f"{p}: {n} lines" for p, n in counts.items())
        )


def build_rows(folder, lowercase=False, max_words=175, ratio=1.5, valid_every=23):
    """Rows (en, de, split) of the IWSLT14 folder; see the module docstring."""

    def need(name):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise IWSLTError(
                f"{folder}: missing {name} (is this the de-en folder of IWSLT14 de-en.tgz?)"
            )
        return path

    paths = [need(f"train.tags.de-en.{lang}") for lang in LANGS]
    train = [train_sentences(p) for p in paths]
    _aligned(paths, train)
    pairs = [(clean_text(e), clean_text(d)) for e, d in zip(*train)]
    pairs = [(e, d) for e, d in pairs if keep_pair(e, d, max_words, ratio)]
    rows = [
        (e, d, "valid" if i % valid_every == 0 else "train")
        for i, (e, d) in enumerate(pairs, start=1)
    ]
    for name in TEST_SETS:
        tpaths = [need(f"{name}.de-en.{lang}.xml") for lang in LANGS]
        segs = [xml_segments(p) for p in tpaths]
        _aligned(tpaths, segs)
        rows += [(clean_text(e), clean_text(d), "test") for e, d in zip(*segs)]
    if lowercase:
        rows = [(e.lower(), d.lower(), s) for e, d, s in rows]
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="extracted IWSLT14 de-en folder (holds train.tags.de-en.en, ...)")
    p.add_argument("out", help="output TSV (columns en, de, split)")
    p.add_argument("--lowercase", action="store_true")
    p.add_argument("--max-words", type=int, default=175)
    p.add_argument("--ratio", type=float, default=1.5)
    p.add_argument("--valid-every", type=int, default=23)
    args = p.parse_args(argv)
    try:
        rows = build_rows(args.folder, args.lowercase, args.max_words, args.ratio, args.valid_every)
    except IWSLTError as e:
        print(f"iwslt14_to_tsv.py: error: {e}", file=sys.stderr)
        return 2
    tmp = args.out + ".part"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("en\tde\tsplit\n")
        f.writelines(f"{e}\t{d}\t{s}\n" for e, d, s in rows)
    os.replace(tmp, args.out)
    counts = {s: sum(r[2] == s for r in rows) for s in ("train", "valid", "test")}
    print(f"{args.out}: " + ", ".join(f"{s} {n}" for s, n in counts.items()) + " pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
