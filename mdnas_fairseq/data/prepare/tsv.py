"""Reading the input TSV: language codes, whitespace normalisation, the header and every row
checked, rows with an empty chosen field and duplicate rows dropped; with a domain column, each
row's domain name checked (the rule of language codes)."""

import collections
import os
import re

from .errors import DataError
from .splits import SPLITS, drop_duplicate_rows

LANG_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def normalize(text):
    return " ".join(text.split())


def parse_langs(langs):
    if isinstance(langs, str):
        langs = langs.split(",")
    langs = [x.strip() for x in langs]
    if not langs or any(not x for x in langs):
        raise DataError(
            f"--langs {','.join(langs)!r}: give a comma-separated list of language codes, e.g. en,de"
        )
    for lang in langs:
        if not LANG_RE.match(lang):
            raise DataError(
                f"--langs: language code {lang!r} may only contain letters, digits, '_' and '-' "
                "(it becomes part of file names such as train.{lang}.bin)"
            )
    dup = [x for x, c in collections.Counter(langs).items() if c > 1]
    if dup:
        raise DataError(f"--langs: language {dup[0]!r} given twice")
    return langs


def check_domain_name(value, column, path, lineno):
    """A value of --domain-column becomes a domain name (file names such as train.{domain}.bin):
    the rule of language codes. Invalid or empty values are errors, never sanitized, so a domain
    is always named exactly as in the TSV."""
    if not value:
        raise DataError(
            f"{path} line {lineno}: empty value in --domain-column {column!r} "
            "(every row needs the name of its domain)"
        )
    if not LANG_RE.match(value):
        raise DataError(
            f"{path} line {lineno}: --domain-column {column!r} value {value!r} is not a valid domain "
            "name: it may only contain letters, digits, '_' and '-' (it becomes part of file names "
            f"such as train.{{domain}}.bin)"
        )
    return value


def read_tsv(path, langs, split_column=None, domain_column=None):
    """Read the chosen columns of a TSV file.

    Returns (rows, info): rows is a list of (line_number, [field per lang], split_label_or_None)
    for the rows kept; info counts what was read and dropped. With ``domain_column`` the row's
    domain name (checked by :func:`check_domain_name`) is appended to the fields, so duplicate
    rows are those with the same text in the same domain.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        data = f.read()
    if not data.strip():
        raise DataError(
            f"{path}: empty file (expected a header row naming the languages, e.g. 'en\\tde')"
        )
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()

    def decode(lineno, raw):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path} line {lineno}: not valid UTF-8 ({e.reason} at byte {e.start})"
            ) from None

    header = decode(1, lines[0])
    if header.startswith("\ufeff"):
        header = header[1:]
    columns = [c.strip() for c in header.split("\t")]
    if any(not c for c in columns):
        raise DataError(
            f"{path} line 1: empty column name in header {columns} (the header names the languages)"
        )
    dup = [c for c, n in collections.Counter(columns).items() if n > 1]
    if dup:
        raise DataError(f"{path} line 1: column {dup[0]!r} appears twice in the header {columns}")
    for lang in langs:
        if lang not in columns:
            raise DataError(
                f"{path} line 1: language {lang!r} is not a column of the header {columns}"
            )
    if split_column is not None:
        if split_column not in columns:
            raise DataError(
                f"{path} line 1: --split-column {split_column!r} is not a column of the header {columns}"
            )
        if split_column in langs:
            raise DataError(f"--split-column {split_column!r} is also one of --langs")
    if domain_column is not None:
        if domain_column not in columns:
            raise DataError(
                f"{path} line 1: --domain-column {domain_column!r} is not a column of the header "
                f"{columns}"
            )
        if domain_column in langs:
            raise DataError(f"--domain-column {domain_column!r} is also one of --langs")
        if domain_column == split_column:
            raise DataError(
                f"--domain-column and --split-column are the same column {domain_column!r}"
            )
    col = [columns.index(lang) for lang in langs]
    split_col = columns.index(split_column) if split_column is not None else None
    domain_col = columns.index(domain_column) if domain_column is not None else None

    rows, n_empty = [], 0
    for lineno, raw in enumerate(lines[1:], start=2):
        fields = decode(lineno, raw).split("\t")
        if len(fields) != len(columns):
            what = "an empty line" if fields == [""] else f"{len(fields)} field(s)"
            raise DataError(
                f"{path} line {lineno}: expected {len(columns)} tab-separated fields "
                f"(as in the header), found {what}"
            )
        label = None
        if split_col is not None:
            label = fields[split_col].strip()
            if label not in SPLITS:
                raise DataError(
                    f"{path} line {lineno}: column {split_column!r} is {label!r}, expected one of {list(SPLITS)}"
                )
        texts = [normalize(fields[i]) for i in col]
        if domain_col is not None:
            domain = check_domain_name(fields[domain_col].strip(), domain_column, path, lineno)
        if not all(texts):
            n_empty += 1
            continue
        if domain_col is not None:
            texts.append(domain)
        rows.append((lineno, texts, label))
    rows, n_duplicate = drop_duplicate_rows(rows)
    info = {
        "rows_read": len(lines) - 1,
        "dropped_empty": n_empty,
        "dropped_duplicate": n_duplicate,
        "columns": columns,
    }
    return rows, info
