"""A data-bin and its extension to a third language, built by hand with fairseq's own tools.

``make_extension_corpora`` prepares the first rows of the embedded En/De/Fr corpus once (one
sentencepiece model, ``tok/{split}.{lang}`` piece files), then writes

* the old data-bin: en and de binarised with a dictionary of the pieces their training text uses;
* the new data-bin: the old one's en and de files copied byte for byte, its dict.txt the old one
  with the pieces only the French training text uses appended (no entry moved), and fr binarised
  with it; French also uses old pieces.

This is what preparing a new language against an old data-bin (issue 24's ``--extend-data``, not
built yet) has to write; the model side only relies on it.
"""

import collections
import json
import os
import shutil

from tests.helpers.fairseq_runs import make_tiny_corpus

SPLITS = ("train", "heldout", "valid", "test")


def _pieces(path):
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f]


def _binarize(tok_file, dictionary, prefix):
    from fairseq.data import indexed_dataset

    builder = indexed_dataset.make_builder(prefix + ".bin", impl="mmap", vocab_size=len(dictionary))
    with open(tok_file, encoding="utf-8") as f:
        for line in f:
            builder.add_item(
                dictionary.encode_line(line, add_if_not_exist=False, append_eos=True).long()
            )
    builder.finalize(prefix + ".idx")


def _metadata(data_bin, langs):
    with open(os.path.join(data_bin, "mdnas_data.json"), "w", encoding="utf-8") as f:
        json.dump({"format": "mdnas-data", "version": 1, "langs": list(langs)}, f)


def make_extension_corpora(out_dir, rows=300, vocab_size=300):
    """(old data-bin of en, de; new data-bin of en, de, fr; pieces appended for fr)."""
    from fairseq.data import Dictionary

    full = make_tiny_corpus(
        os.path.join(out_dir, "full"), rows=rows, langs=("en", "de", "fr"), vocab_size=vocab_size
    )
    tok = os.path.join(os.path.dirname(full), "tok")
    old_counts = collections.Counter(
        p
        for lang in ("en", "de")
        for line in _pieces(os.path.join(tok, f"train.{lang}"))
        for p in line
    )
    fr_counts = collections.Counter(
        p for line in _pieces(os.path.join(tok, "train.fr")) for p in line
    )
    old_dict = Dictionary()
    for piece, count in old_counts.most_common():
        old_dict.add_symbol(piece, count)
    old_dict.finalize(threshold=0, nwords=-1, padding_factor=8)
    old_bin = os.path.join(out_dir, "old", "data-bin")
    new_bin = os.path.join(out_dir, "new", "data-bin")
    os.makedirs(old_bin)
    os.makedirs(new_bin)
    old_dict.save(os.path.join(old_bin, "dict.txt"))
    for split in SPLITS:
        for lang in ("en", "de"):
            _binarize(
                os.path.join(tok, f"{split}.{lang}"),
                old_dict,
                os.path.join(old_bin, f"{split}.{lang}"),
            )
    _metadata(old_bin, ("en", "de"))
    new_dict = Dictionary.load(os.path.join(old_bin, "dict.txt"))
    appended = [p for p, _ in fr_counts.most_common() if new_dict.index(p) == new_dict.unk()]
    for piece in appended:
        new_dict.add_symbol(piece, fr_counts[piece])
    new_dict.save(os.path.join(new_bin, "dict.txt"))
    for name in os.listdir(old_bin):
        if name.endswith((".bin", ".idx")):
            shutil.copyfile(os.path.join(old_bin, name), os.path.join(new_bin, name))
    for split in SPLITS:
        _binarize(os.path.join(tok, f"{split}.fr"), new_dict, os.path.join(new_bin, f"{split}.fr"))
    _metadata(new_bin, ("en", "de", "fr"))
    return old_bin, new_bin, len(appended)
