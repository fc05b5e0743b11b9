"""Binarizing the encoded splits with fairseq-preprocess and checking what it wrote.

fairseq is imported inside the functions, never when this module is imported."""

import logging
import os
import shutil

from .splits import SPLITS


def run_fairseq_preprocess(work, langs, workers):
    """Binarize every tok/{split}.{lang} with fairseq-preprocess (``fairseq_cli.preprocess``,
    run in-process with ``--only-source --srcdict data-bin/dict.txt``) and rename its output
    to data-bin/{split}.{lang}.bin/.idx."""
    from fairseq import options
    from fairseq_cli import preprocess as fairseq_preprocess

    log = logging.getLogger("fairseq_cli.preprocess")
    for split in SPLITS:
        for lang in langs:
            dest = os.path.join(work, f"fp-{split}-{lang}")
            argv = [
                "--only-source",
                "--srcdict",
                os.path.join(work, "data-bin", "dict.txt"),
                "--dataset-impl",
                "mmap",
                "--trainpref",
                os.path.join(work, "tok", f"{split}.{lang}"),
                "--destdir",
                dest,
                "--workers",
                str(workers if split == "train" else 1),
            ]
            args = options.get_preprocessing_parser().parse_args(argv)
            handlers, level = list(log.handlers), log.level
            log.setLevel(logging.WARNING)
            try:
                fairseq_preprocess.main(args)
            finally:
                for h in log.handlers:
                    if h not in handlers:
                        log.removeHandler(h)
                        h.close()
                log.setLevel(level)
            for ext in ("bin", "idx"):
                src = os.path.join(
                    dest, f"train.{ext}"
                )  # --trainpref output name with --only-source
                if not os.path.isfile(src):
                    raise RuntimeError(
                        f"fairseq-preprocess did not write train.{ext} for {split}.{lang} "
                        f"(files: {sorted(os.listdir(dest))})"
                    )
                os.replace(src, os.path.join(work, "data-bin", f"{split}.{lang}.{ext}"))
            shutil.rmtree(dest)


def verify(work, langs, lines, ntokens):
    """Load every dataset with fairseq and check sentence and token counts; returns the dict."""
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(os.path.join(work, "data-bin", "dict.txt"))
    log = logging.getLogger("fairseq.data.data_utils")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        _verify(work, langs, lines, ntokens, d, data_utils)
    finally:
        log.setLevel(level)
    return d


def _verify(work, langs, lines, ntokens, d, data_utils):
    for split in SPLITS:
        sizes = {}
        for lang in langs:
            prefix = os.path.join(work, "data-bin", f"{split}.{lang}")
            ds = data_utils.load_indexed_dataset(prefix, d)
            if ds is None:
                raise RuntimeError(f"{prefix}: fairseq could not load the dataset")
            sizes[lang] = len(ds)
            if len(ds) != lines[split]:
                raise RuntimeError(f"{prefix}: {len(ds)} sentences, expected {lines[split]}")
            n_tok = int(ds.sizes.sum())
            if n_tok != ntokens[split][lang] + lines[split]:  # + one </s> per sentence
                raise RuntimeError(
                    f"{prefix}: {n_tok} tokens, expected {ntokens[split][lang] + lines[split]}"
                )
        if len(set(sizes.values())) != 1:
            raise RuntimeError(f"{split}: languages differ in sentence count: {sizes}")
