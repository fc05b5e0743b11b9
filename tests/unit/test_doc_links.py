"""Every relative link of README.md and docs/*.md leads to a file of the checkout, and every
``#anchor`` to a heading of that page (GitHub's anchor rule: lower case, punctuation dropped,
spaces to hyphens)."""

import glob
import os
import re

from tests.helpers.fairseq_runs import ROOT

PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
# written by work in progress elsewhere; a link to it may come first
PENDING = {os.path.join(ROOT, "benchmarks", "README.md")}


def anchors(path):
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    return {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.*)$", text, re.M)
    }


def test_relative_links_resolve():
    broken = []
    for page in PAGES:
        with open(page, encoding="utf-8") as f:
            text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
        for url in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", url):
                continue
            path, _, anchor = url.partition("#")
            target = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            where = f"{os.path.relpath(page, ROOT)}: {url}"
            if not os.path.exists(target):
                if target not in PENDING:
                    broken.append(where + " (no such file)")
            elif anchor and target.endswith(".md") and anchor not in anchors(target):
                broken.append(where + " (no such heading)")
    assert not broken, "\n".join(broken)


def test_anchor_rule_matches_a_heading():
    assert "recipe-1-search-retrain-and-evaluate-per-domain-on-your-data" in anchors(
        os.path.join(ROOT, "README.md")
    )
