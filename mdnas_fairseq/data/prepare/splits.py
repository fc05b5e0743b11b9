"""The splits of the rows: duplicate rows, the seeded train/heldout/valid/test split, and the
valid/test sentences that also occur in train."""

import random

from .errors import DataError

SPLITS = ("train", "heldout", "valid", "test")
SPLIT_PRIORITY = {"test": 0, "valid": 1, "heldout": 2, "train": 3, None: 4}


def drop_duplicate_rows(rows):
    """Keep one row of every group of rows with identical texts in all chosen languages, so no
    sentence pair is both trained on and held out. Without split labels the first row in file order
    is kept; with labels the held-out copy (test, then valid, then heldout) wins over a train copy.
    Returns (rows in file order, number dropped)."""
    best = {}
    for k, (_, texts, label) in enumerate(rows):
        key = tuple(texts)
        if key not in best or SPLIT_PRIORITY[label] < SPLIT_PRIORITY[rows[best[key]][2]]:
            best[key] = k
    kept = sorted(best.values())
    return [rows[k] for k in kept], len(rows) - len(kept)


def held_out_overlap(splits, langs):
    """Per language: valid/test sentences whose text also occurs in train (in a different row)."""
    out = {}
    for k, lang in enumerate(langs):
        train = {r[1][k] for r in splits["train"]}
        out[lang] = sum(r[1][k] in train for s in ("valid", "test") for r in splits[s])
    return out


def _count(n, fraction, rows, name):
    if rows is not None:
        if rows < 1:
            raise DataError(f"--{name}-rows must be at least 1, got {rows}")
        return rows
    if not 0 < fraction < 1:
        raise DataError(f"--{name}-fraction must be in (0, 1), got {fraction}")
    return max(1, int(round(fraction * n)))


def split_rows(
    rows,
    seed,
    path,
    heldout_fraction=0.1,
    valid_fraction=0.05,
    test_fraction=0.05,
    heldout_rows=None,
    valid_rows=None,
    test_rows=None,
    max_rows=None,
    dropped_note="",
):
    """Shuffle and split rows into {split: [row, ...]}; deterministic for a seed."""
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    if max_rows is not None:
        if max_rows < 1:
            raise DataError(f"--max-rows must be at least 1, got {max_rows}")
        order = order[:max_rows]
    n = len(order)
    labelled = rows and rows[0][2] is not None
    if not labelled:
        k_test = _count(n, test_fraction, test_rows, "test")
        k_valid = _count(n, valid_fraction, valid_rows, "valid")
        k_heldout = _count(n, heldout_fraction, heldout_rows, "heldout")
        need = k_test + k_valid + k_heldout + 1
        if n < need:
            raise DataError(
                f"{path}: {n} usable rows{dropped_note}, but the splits need at least {need} "
                f"(test {k_test} + valid {k_valid} + heldout {k_heldout} + at least 1 train row); "
                "use a bigger file or fewer --test/--valid/--arch rows"
            )
        a, b, c = k_test, k_test + k_valid, k_test + k_valid + k_heldout
        picked = {"test": order[:a], "valid": order[a:b], "heldout": order[b:c], "train": order[c:]}
    else:
        if valid_rows is not None or test_rows is not None:
            raise DataError(
                "--valid-rows/--test-rows do not apply with --split-column (the column gives those splits)"
            )
        picked = {s: [i for i in order if rows[i][2] == s] for s in SPLITS}
        if not picked["heldout"]:
            train = picked["train"]
            k_heldout = _count(len(train), heldout_fraction, heldout_rows, "heldout")
            if len(train) < k_heldout + 1:
                raise DataError(
                    f"{path}: {len(train)} usable rows labelled train{dropped_note}, but the heldout split "
                    f"needs {k_heldout} of them and at least 1 must stay in train"
                )
            picked["heldout"], picked["train"] = train[:k_heldout], train[k_heldout:]
        # keep the file order of the given valid/test (and heldout) sets
        for s in ("heldout", "valid", "test"):
            picked[s] = sorted(picked[s])
        missing = [s for s in SPLITS if not picked[s]]
        if missing:
            raise DataError(f"{path}: no usable rows for split(s) {missing}{dropped_note}")
    return {s: [rows[i] for i in picked[s]] for s in SPLITS}
