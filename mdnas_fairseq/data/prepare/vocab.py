"""The shared vocabulary: one sentencepiece model trained on the train split of every language,
the encoded (tokenised) splits, and the fairseq dictionary built from the encoded train split.

fairseq is imported inside the functions that need it, never when this module is imported."""

import collections
import os
import re
import shutil
import warnings

from .errors import DataError
from .splits import SPLITS

DEFAULT_VOCAB_SIZE = 4000


def _quiet_fairseq_import():
    # importing fairseq scripts torch.jit functions, which recent torch flags as deprecated
    warnings.filterwarnings(
        "ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning
    )


def train_spm(
    text_file, model_prefix, vocab_size, model_type, character_coverage, threads, fit=False
):
    """Train ``model_prefix``.model/.vocab on ``text_file``. With ``fit`` a ``vocab_size`` that
    sentencepiece cannot make from this text becomes the nearest size it can (the most pieces it
    can learn, or the fewest that hold every kept character) instead of a DataError; the size
    trained is the returned model's ``get_piece_size()``."""
    import sentencepiece as spm

    try:
        spm.SentencePieceTrainer.train(
            input=text_file,
            model_prefix=model_prefix,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            num_threads=threads,
            input_sentence_size=0,  # use every training sentence
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e)
        m = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", msg) or re.search(
            r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", msg
        )
        if fit and m and int(m.group(2)) != vocab_size:
            return train_spm(
                text_file, model_prefix, int(m.group(2)), model_type, character_coverage, threads
            )
        m = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", msg)
        if m:
            raise DataError(
                f"--vocab-size {m.group(1)} is too large for this training text: sentencepiece "
                f"({model_type}) can make at most {m.group(2)} pieces from it; use a smaller "
                f"--vocab-size (e.g. --vocab-size {int(m.group(2)) // 1000 * 1000 or m.group(2)}) "
                "or a bigger corpus"
            ) from None
        m = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", msg)
        if m:
            raise DataError(
                f"--vocab-size {m.group(1)} is smaller than the {m.group(2)} characters sentencepiece "
                "must keep; use a larger --vocab-size or a lower --character-coverage"
            ) from None
        raise RuntimeError(f"sentencepiece training failed: {msg}") from None
    return spm.SentencePieceProcessor(model_file=model_prefix + ".model")


def train_shared_spm(work, langs, vocab_size, model_type, character_coverage, threads):
    """One sentencepiece model ``work/spm.model`` on work/raw/train.{lang} of every language
    (never heldout/valid/test)."""
    spm_input = os.path.join(work, "spm_train.txt")
    with open(spm_input, "w", encoding="utf-8", newline="\n") as f:
        for lang in langs:
            with open(os.path.join(work, "raw", f"train.{lang}"), encoding="utf-8") as g:
                shutil.copyfileobj(g, f)
    sp = train_spm(
        spm_input,
        os.path.join(work, "spm"),
        vocab_size,
        model_type,
        character_coverage,
        threads,
    )
    os.remove(spm_input)
    return sp


def encode_splits(sp, splits, langs, work, threads):
    """Write work/tok/{split}.{lang} (pieces separated by spaces); returns the piece counts
    {split: {lang: n}}."""
    ntokens = {s: {} for s in SPLITS}
    for s in SPLITS:
        for k, lang in enumerate(langs):
            pieces = sp.encode([r[1][k] for r in splits[s]], out_type=str, num_threads=threads)
            ntokens[s][lang] = sum(len(p) for p in pieces)
            with open(
                os.path.join(work, "tok", f"{s}.{lang}"), "w", encoding="utf-8", newline="\n"
            ) as f:
                f.writelines(" ".join(p) + "\n" for p in pieces)
    return ntokens


def build_dictionary(tok_files):
    """fairseq dictionary from whitespace-separated token files, as fairseq-preprocess builds it
    (all symbols, threshold 0, padded to a multiple of 8)."""
    _quiet_fairseq_import()
    from fairseq.data import Dictionary

    counts = collections.Counter()
    for path in tok_files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                counts.update(line.split())
    d = Dictionary()
    for word, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        d.add_symbol(word, n=c)
    d.finalize(threshold=0, nwords=-1, padding_factor=8)
    return d


def count_unk(work, langs, dictionary):
    """{split: {lang: number of pieces of work/tok/{split}.{lang} that map to <unk>}}."""
    unk = {s: {} for s in SPLITS}
    for s in SPLITS:
        for lang in langs:
            with open(os.path.join(work, "tok", f"{s}.{lang}"), encoding="utf-8") as f:
                unk[s][lang] = sum(
                    dictionary.index(w) == dictionary.unk() for line in f for w in line.split()
                )
    return unk
