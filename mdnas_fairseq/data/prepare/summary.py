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


def print_extension_summary(out, old_data, tsv, meta, seconds):
    """The summary of ``mdnas-prepare --extend-data``: what was kept, and per new language its
    splits, sentencepiece model, valid unknown-token rate and appended dictionary entries."""
    ext = meta["extensions"][-1]
    old, new = ext["old_langs"], ext["langs"]
    print(
        f"{out}: {old_data} ({', '.join(old)}) extended with {', '.join(new)} from {tsv} "
        f"({ext['rows_read']} rows read), {seconds:.1f}s"
    )
    print(
        f"  {', '.join(old)}: every split's .bin/.idx copied byte-identical from {old_data}, "
        f"encoded with {_models_of(meta, old)}; "
        f"the dictionary's first {ext['old_dict_size']} symbols unchanged (dict.txt's old lines "
        "are the first lines of the new one, so every old token id stays)"
    )
    print(
        f"  {'split':<6} {'lines':>8}"
        + "".join(f" {x + ' tokens':>12} {x + ' unk':>8}" for x in new)
    )
    for s in SPLITS:
        row = f"  {s:<6} {meta['splits_by_lang'][new[0]][s]:>8}"
        for lang in new:
            row += f" {meta['tokens'][s][lang]:>12} {meta['unk_tokens'][s][lang]:>8}"
        print(row)
    if ext["splits"] == "drawn":
        how = f"column {ext['split_column']!r}" if ext["split_column"] else f"seed {ext['seed']}"
        print(
            f"  {', '.join(new)}: splits drawn from {how}, NOT line-aligned with {', '.join(old)} "
            f"({ext['not_aligned']}): the contrastive term cannot pair them with the old languages"
        )
    else:
        print(
            f"  {', '.join(new)}: the old rows' text, split for split (line i is the translation "
            f"of line i of {', '.join(old)})"
        )
    for lang in new:
        info = ext["new"][lang]
        rate = 100.0 * info["old_model_unknown_rate"]
        if info["spm_policy"] == "own":
            size = info["spm_vocab_size"]
            asked = info["spm_vocab_size_requested"]
            size = f"{size} pieces" + (f", {asked} asked" if asked != size else "")
            why = f"the old model leaves {rate:.1f}% of its train pieces unknown"
            print(
                f"  {lang}: own sentencepiece model {info['spm_model'][3:]} ({ext['spm_model_type']}, {size}): {why}"
            )
        else:
            print(
                f"  {lang}: the old sentencepiece model {info['spm_model'][3:]} "
                f"({rate:.2f}% of its train pieces unknown)"
            )
        n_unk, n_tok = meta["unk_tokens"]["valid"][lang], meta["tokens"]["valid"][lang]
        flag = "" if info["valid_unk_rate"] < 0.01 else " (ABOVE the 1% goal)"
        print(
            f"  {lang}: valid unk {100.0 * info['valid_unk_rate']:.2f}% ({n_unk} of {n_tok} "
            f"pieces){flag}; {info['appended']} dictionary entries appended"
        )
    parts = [f"+{ext['new'][lang]['appended']} {lang}" for lang in new]
    parts.append(f"+{ext['appended_padding']} padding to x8")
    print(
        f"  dict.txt: {ext['old_dict_size']} -> {meta['dict_size']} symbols ({', '.join(parts)}); "
        f"{ext['appended']} appended in all"
    )


def _models_of(meta, langs):
    """'spm.model (en, de), spm.fr.model (fr)': the sentencepiece model of each language."""
    by_model = {}
    for lang in langs:
        by_model.setdefault(meta["spm_models"][lang][3:], []).append(lang)
    return ", ".join(f"{m} ({', '.join(x)})" for m, x in by_model.items())


def print_domain_summary(out, tsv, meta, info, seconds):
    """The summary of ``mdnas-prepare --domain-column``: per domain its rows per split, its
    train tokens and its valid/test <unk>, then the shared vocabulary."""
    domains, col, lang = meta["langs"], meta["domain_column"], meta["lang"]
    dropped = f", {info['dropped_empty']} dropped (empty text)" if info["dropped_empty"] else ""
    dropped += (
        f", {info['dropped_duplicate']} dropped (duplicate text within a domain)"
        if info["dropped_duplicate"]
        else ""
    )
    print(
        f"{out}: from {tsv} ({info['rows_read']} rows read{dropped}), seed {meta['seed']}, {seconds:.1f}s"
    )
    print(
        f"  {len(domains)} domains = the values of column {col!r}, text of column {lang!r}; "
        "not parallel (rows of different domains are not translations of each other: the "
        "contrastive term does not apply)"
    )
    for d, n in meta["domains_dropped"].items():
        print(f"  dropped domain {d!r}: {n} rows (--min-domain-rows {meta['min_domain_rows']})")
    width = max(8, *(len(d) for d in domains))
    print(
        f"  {'domain':<{width}}"
        + "".join(f" {s:>8}" for s in SPLITS)
        + f" {'train tokens':>13} {'valid+test unk':>15}"
    )
    total = {s: 0 for s in SPLITS}
    for d in domains:
        lines = meta["splits_by_lang"][d]
        unk = meta["unk_tokens"]["valid"][d] + meta["unk_tokens"]["test"][d]
        print(
            f"  {d:<{width}}"
            + "".join(f" {lines[s]:>8}" for s in SPLITS)
            + f" {meta['tokens']['train'][d]:>13} {unk:>15}"
        )
        for s in SPLITS:
            total[s] += lines[s]
    train_tokens = sum(meta["tokens"]["train"].values())
    print(
        f"  {'(all)':<{width}}"
        + "".join(f" {total[s]:>8}" for s in SPLITS)
        + f" {train_tokens:>13}"
    )
    print(
        f"  sentencepiece {meta['spm_model_type']}: {meta['spm_vocab_size']} pieces and fairseq "
        f"dict.txt: {meta['dict_size']} symbols, shared by all domains (trained on their train "
        "splits only)"
    )
    small = [d for d in domains if min(meta["splits_by_lang"][d][s] for s in ("valid", "test")) < 8]
    if small:
        print(
            f"  note: {', '.join(small)}: valid or test under 8 sentences; fairseq's batching "
            "(--required-batch-size-multiple 8, its default) makes no batch of them, so pass "
            "--required-batch-size-multiple 1 to fairseq-train / fairseq-eval-lm"
        )
