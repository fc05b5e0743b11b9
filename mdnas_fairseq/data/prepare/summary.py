"""The summary printed after a data folder is made: lines, tokens and <unk> per split and
language, and notes on the vocabulary size, held-out overlap and unknown pieces."""

from .splits import SPLITS


def print_summary(out, tsv, meta, info, seconds):
    langs = meta["langs"]
    dropped = f", {info['dropped_empty']} dropped (empty field)" if info["dropped_empty"] else ""
    dropped += (
        f", {info['dropped_duplicate']} dropped (duplicate row)"
        if info["dropped_duplicate"]
        else ""
    )
    print(
        f"{out}: from {tsv} ({info['rows_read']} rows read{dropped}), seed {meta['seed']}, {seconds:.1f}s"
    )
    head = f"  {'split':<6} {'lines':>8}" + "".join(
        f" {lang + ' tokens':>12} {lang + ' unk':>8}" for lang in langs
    )
    print(head)
    for s in SPLITS:
        row = f"  {s:<6} {meta['splits'][s]:>8}"
        for lang in langs:
            row += f" {meta['tokens'][s][lang]:>12} {meta['unk_tokens'][s][lang]:>8}"
        print(row)
    print(
        f"  sentencepiece {meta['spm_model_type']}: {meta['spm_vocab_size']} pieces (trained on train only); "
        f"fairseq dict.txt: {meta['dict_size']} symbols (with <s> <pad> </s> <unk> and padding to x8)"
    )
    used = meta["dict_size"] - 4
    if used < 0.8 * meta["spm_vocab_size"]:
        print(
            f"  note: only about {used} of the {meta['spm_vocab_size']} sentencepiece pieces occur in the "
            "encoded train split; a smaller --vocab-size would suit this corpus better"
        )
    overlap = meta["held_out_sentences_also_in_train"]
    if any(overlap.values()):
        print(
            "  note: valid/test sentences whose text also occurs in train (in a row that differs in another "
            "language): " + ", ".join(f"{lang} {n}" for lang, n in overlap.items())
        )
    held_out = sum(meta["tokens"][s][lang] for s in ("valid", "test") for lang in langs)
    held_unk = sum(meta["unk_tokens"][s][lang] for s in ("valid", "test") for lang in langs)
    if held_out and held_unk > 0.01 * held_out:
        print(
            f"  note: {100.0 * held_unk / held_out:.1f}% of valid/test tokens map to <unk> "
            "(pieces or characters not seen in the train split)"
        )
