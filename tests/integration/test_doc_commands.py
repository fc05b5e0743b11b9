"""The commands in README.md and docs/*.md run as written on a fresh clone.

Every command line of the pages' code blocks that calls one of the project's programs is checked:
the script it names exists, every ``--flag`` it passes is one the program accepts (fairseq commands
are parsed by fairseq's own parser with the project's task, model and criterion; the project's
scripts and console commands are checked against their ``--help``). Lines holding placeholders
(``...``, ``OLD_DATA``) are not commands as written; the pages say what they stand for.

The README's two recipes (search, retrain, evaluate per domain; extend to a new language) are run
for real, exactly as written but for the sizes (300 rows, the tiny recurrent model, one epoch) and
with recipe 1's flags where recipe 2 writes ``...``; the extended model's perplexity on an old
language must equal the first model's, as the README says.
"""

import contextlib
import functools
import glob
import io
import os
import re
import shlex
import subprocess
from importlib import metadata

import pytest

from tests.helpers.fairseq_runs import BIN, RNN_TEST_SIZES, ROOT, load_script

PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
FAIRSEQ = (
    "fairseq-train",
    "fairseq-eval-lm",
    "fairseq-validate",
    "fairseq-generate",
    "fairseq-interactive",
)
CONSOLE = ("mdnas-prepare", "mdnas-derive", "mdnas-draw", "mdnas-report")
PLACEHOLDER = re.compile(r"\.\.\.|\b[A-Z][A-Z_]*_(?:DATA|DIR|OUT)\b|\bDIR\b|\bFILE\b|\bT\b|\bNEW\b")
ENV = re.compile(r"^[A-Z_]+=\S*$")
RENDERED = re.compile(r"<!-- render: ([\w.-]+) -->.*?<!-- /render: \1 -->", re.S)


def page_commands(path):
    """(page, command line) for every line of a code block that calls a known program."""
    with open(path, encoding="utf-8") as f:
        text = RENDERED.sub("", f.read())  # rendered results (benchmark output) are no commands
    out = []
    for block in BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#\s", line.strip(), maxsplit=1)[0].strip()
            if not line or line.startswith("#"):
                continue
            line = line.split("; done")[0]
            line = re.sub(r"^for \w+ in [\w ]+; do ", "", line).replace("$SEED", "1")
            words = line.split()
            while words and (ENV.match(words[0]) or words[0] in ("time", "nice")):
                words = words[1:]
            if words and program(words):
                out.append((os.path.relpath(path, ROOT), " ".join(words)))
    return out


def program(words):
    if words[0] in FAIRSEQ + CONSOLE:
        return words[0]
    if words[0] in ("python", "bash") and len(words) > 1 and "/" in words[1]:
        return words[1]
    return None


ALL = [c for page in PAGES for c in page_commands(page)]
RUNNABLE = [c for c in ALL if not PLACEHOLDER.search(c[1])]


def test_the_pages_have_commands_to_check():
    assert len(RUNNABLE) >= 20 and any(c[0] == "README.md" for c in RUNNABLE)


@functools.cache
def help_text(prog):
    """What ``prog --help`` prints, asked in this process (the programs are argparse mains)."""
    if prog.endswith(".sh"):  # a wrapper: its extra flags go to the script it passes "$@" to
        with open(os.path.join(ROOT, prog), encoding="utf-8") as f:
            lines = f.read().replace("\\\n", " ").splitlines()
        wrapped = [re.search(r"python (scripts/\w+\.py)", x) for x in lines if '"$@"' in x]
        assert wrapped and wrapped[0], f"{prog} passes no flags on"
        return help_text(wrapped[0].group(1))
    if prog in CONSOLE:
        main = metadata.entry_points(group="console_scripts", name=prog)[prog].load()
    else:
        assert prog.startswith("scripts/"), f"no help check for {prog}"
        main = load_script(os.path.basename(prog)[: -len(".py")]).main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0, f"{prog} --help failed"
    return out.getvalue()


def flags(argv):
    """The ``--flags`` of a command line, up to a bare ``--`` (what follows goes to fairseq)."""
    out = []
    for token in argv:
        if token == "--":
            break
        if token.startswith("--") and " " not in token:
            out.append(token.split("=")[0])
    return out


@pytest.mark.parametrize("page,line", RUNNABLE, ids=[f"{p}:{c[:60]}" for p, c in RUNNABLE])
def test_command_is_valid_as_written(page, line, monkeypatch):
    argv = shlex.split(line)
    prog = program(argv)
    monkeypatch.chdir(ROOT)
    if prog in FAIRSEQ:
        from fairseq import options

        make = {
            "fairseq-train": options.get_training_parser,
            "fairseq-eval-lm": options.get_eval_lm_parser,
            "fairseq-validate": options.get_validation_parser,
            "fairseq-generate": options.get_generation_parser,
            "fairseq-interactive": options.get_interactive_generation_parser,
        }[prog]
        try:
            options.parse_args_and_arch(make(), argv[1:])
        except SystemExit as e:
            pytest.fail(f"{page}: fairseq refuses `{line}` (exit {e.code})")
        return
    if prog not in CONSOLE:
        assert os.path.isfile(os.path.join(ROOT, prog)), f"{page}: no such file {prog}"
    known = help_text(prog)
    unknown = [f for f in flags(argv) if not re.search(re.escape(f) + r"\b", known)]
    assert not unknown, f"{page}: `{prog}` does not know {unknown}"


def readme_block(contains):
    """The command lines of the README code block whose text contains ``contains``."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    for block in BLOCK.findall(text):
        if contains in block:
            lines = [
                " ".join(re.split(r"\s+#\s", x.strip(), maxsplit=1)[0].split())
                for x in block.replace("\\\n", " ").splitlines()
            ]
            return [x for x in lines if x and not x.startswith("#")]
    raise AssertionError(f"README has no code block holding {contains!r}")


def tiny(line):
    """A README command at test sizes: 300 rows, the tiny recurrent model, one epoch, CPU."""
    argv = shlex.split(line)
    if argv[0] == "mdnas-prepare":
        argv = [a if a != "4000" else "300" for a in argv] + ["--max-rows", "300", "--quiet"]
    if argv[0] == "fairseq-train":
        argv = [{"mdnas_rnn_small": "mdnas_rnn_tiny"}.get(a, a) for a in argv]
        i = argv.index("--max-epoch")
        argv[i + 1] = "1"
        argv += list(RNN_TEST_SIZES) + ["--cpu", "--num-workers", "0", "--no-progress-bar"]
    if argv[0] == "fairseq-eval-lm":
        argv += ["--cpu", "--num-workers", "0"]
    return [os.path.join(BIN, argv[0])] + argv[1:]


def run(argv, cwd):
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), OMP_NUM_THREADS="1")
    r = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert r.returncode == 0, f"{' '.join(argv)} failed:\n{(r.stdout + r.stderr)[-3000:]}"
    return r.stdout + r.stderr


def perplexity(log):
    return float(re.findall(r"Perplexity: ([0-9.]+)", log)[-1])


def test_readme_recipes_run_as_written(tmp_path):
    for name in ("mdnas_fairseq", "examples"):
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    prepare = readme_block("mdnas-prepare --tsv")
    search = readme_block("--save-dir runs/search")
    retrain, evaluate = readme_block("--genotype runs/search/genotype.json")
    for line in prepare + search + [retrain]:
        run(tiny(line), tmp_path)
    run(tiny(evaluate), tmp_path)
    en_before = perplexity(
        run(tiny(evaluate.replace("--eval-domain de", "--eval-domain en")), tmp_path)
    )

    # recipe 2: `...` stands for recipe 1's own flags (the data path, domains and outputs aside)
    def own_flags(line):
        argv = shlex.split(line)[2:]  # after `fairseq-train DATA`
        out, skip = [], 0
        for a in argv:
            if skip:
                skip -= 1
            elif a in ("--domains", "--save-dir", "--genotype"):
                skip = 1
            else:
                out.append(a)
        return shlex.join(out)

    extend = readme_block("mdnas-prepare --extend-data")
    extend[1] = extend[1].replace("...", own_flags(search[0]), 1)
    extend[2] = extend[2].replace("...", own_flags(retrain), 1)
    for line in extend[:3]:
        run(tiny(line), tmp_path)
    en_after = perplexity(run(tiny(extend[3]), tmp_path))
    assert en_after == en_before, "the extended model changed an old language's perplexity"
