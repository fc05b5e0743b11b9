"""Sampling from the language models with fairseq's own commands (issue 27): ``fairseq-generate``
and ``fairseq-interactive`` on tiny derived multimodels of both spaces (the recurrent and the
Transformer one), trained a few updates through ``fairseq-train --genotype``, the two domains with
different genotypes.

The hypotheses' per-token scores (fairseq's ``P-`` lines: incremental decoding in the domain the
task gives the decoder) are checked against an independent path: the checkpoint loaded in this
process, each hypothesis run through one full forward pass with its domain in ``net_input``, and
the log-probabilities of its tokens read off.
"""

import math
import os

import pytest
import torch

from mdnas_fairseq.search import (
    GenotypeEdge,
    MultiDomainGenotype,
    darts_rnn_space,
    save_genotype,
    transformer_lm_space,
)
from tests.helpers.fairseq_runs import BIN, USER_DIR, make_tiny_corpus, run, train_args

DOMAINS = ("en", "de")
TRANSFORMER_SIZES = (
    "--decoder-embed-dim", "16", "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads",
    "2", "--decoder-layers", "2", "--decoder-conv-kernel-sizes", "3",
)  # fmt: skip


def chain(space, ops):
    return tuple(GenotypeEdge(j, i, op) for (i, j), op in zip(space.edges, ops))


SPACES = {
    "rnn": (
        "mdnas_rnn_tiny",
        ("--embed-dim", "16", "--hidden-dim", "16", "--num-nodes", "3"),
        lambda: MultiDomainGenotype(
            darts_rnn_space(3),
            DOMAINS,
            {
                "en": (
                    GenotypeEdge(1, 0, "tanh"),
                    GenotypeEdge(2, 1, "relu"),
                    GenotypeEdge(3, 1, "sigmoid"),
                ),
                "de": (
                    GenotypeEdge(1, 0, "identity"),
                    GenotypeEdge(2, 0, "sigmoid"),
                    GenotypeEdge(3, 2, "tanh"),
                ),
            },
        ),
    ),
    "transformer": (
        "mdnas_transformer_lm_tiny",
        TRANSFORMER_SIZES,
        lambda: MultiDomainGenotype(
            transformer_lm_space(2, (3,)),
            DOMAINS,
            {
                "en": chain(
                    transformer_lm_space(2, (3,)), ["attention", "ffn_relu", "dwconv_3", "ffn_gelu"]
                ),
                "de": chain(
                    transformer_lm_space(2, (3,)),
                    ["lightconv_3", "ffn_sqrelu", "attention", "identity"],
                ),
            },
        ),
    ),
}


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory):
    return make_tiny_corpus(str(tmp_path_factory.mktemp("gendata")), rows=200, vocab_size=200)


@pytest.fixture(scope="module")
def checkpoints(data_bin, tmp_path_factory):
    """space -> a derived multimodel's checkpoint, trained 5 updates."""
    made = {}

    def get(space):
        if space not in made:
            arch, sizes, genotype = SPACES[space]
            save = str(tmp_path_factory.mktemp(f"gen_{space}"))
            path = os.path.join(save, "genotype.json")
            save_genotype(path, genotype())
            extra = ["--genotype", path, "--max-update", "5"]
            run(train_args(data_bin, save, arch=arch, extra=extra, sizes=sizes))
            made[space] = os.path.join(save, "checkpoint_last.pt")
        return made[space]

    return get


def load(checkpoint, data_bin):
    from fairseq import checkpoint_utils

    import mdnas_fairseq  # noqa: F401

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [checkpoint], arg_overrides={"data": data_bin}
    )
    return models[0].eval(), task


def hypotheses(output):
    """{id: (hypothesis string, per-token scores in base 2)} of fairseq's H- and P- lines."""
    found, strings = {}, {}
    for line in output.splitlines():
        if line.startswith("H-"):
            key, _, text = line.split("\t")
            strings[key[2:]] = text
        elif line.startswith("P-"):
            key, scores = line.split("\t")
            found[key[2:]] = (strings[key[2:]], [float(s) for s in scores.split()])
    return found


def full_forward_log2_probs(model, task, text, domain):
    """log2 p(token | prefix) of every token of ``text`` and its <eos>, one full forward pass with
    the domain in net_input."""
    d = task.source_dictionary
    target = d.encode_line(text, add_if_not_exist=False, append_eos=True).long()
    assert d.unk() not in target.tolist() or "<unk>" in text.split()
    src = torch.cat([torch.tensor([d.eos()]), target[:-1]])[None]
    d_index = task.domain_names.index(domain)
    with torch.no_grad():
        out = model(src, domain=torch.tensor([d_index]), batch_domain=d_index)
        lprobs = model.get_normalized_probs(out, log_probs=True)[0]
    return (lprobs.gather(1, target[:, None])[:, 0] / math.log(2)).tolist()


def assert_scores_are_the_model_s(found, model, task, domain):
    for key, (text, scores) in found.items():
        expected = full_forward_log2_probs(model, task, text, domain)
        assert len(scores) == len(expected), (key, text)
        worst = max(abs(a - b) for a, b in zip(scores, expected))
        assert worst < 2e-4, (key, text, scores, expected)  # fairseq prints 4 decimals


@pytest.mark.parametrize("space,search", [("rnn", "sampling"), ("transformer", "beam")])
def test_generate_samples_a_domain_and_scores_are_the_model_s(space, search, checkpoints, data_bin):
    checkpoint = checkpoints(space)
    how = ["--sampling", "--beam", "1", "--seed", "7"] if search == "sampling" else ["--beam", "3"]
    proc = run(
        [
            os.path.join(BIN, "fairseq-generate"), data_bin, "--user-dir", USER_DIR,
            "--task", "multidomain_nas", "--path", checkpoint, "--gen-subset", "test",
            "--eval-domain", "de", "--prefix-size", "2", "--max-len-b", "8", "--batch-size", "4",
            "--cpu", "--num-workers", "0",
        ]
        + how
    )  # fmt: skip
    found = hypotheses(proc.stdout)
    model, task = load(checkpoint, data_bin)
    task.load_dataset("test.de")
    assert len(found) == len(task.dataset("test.de")) > 0
    targets = {
        line.split("\t")[0][2:]: line.split("\t")[1].split()
        for line in proc.stdout.splitlines()
        if line.startswith("T-")
    }
    for key, (text, scores) in found.items():
        assert text.split()[:2] == targets[key][:2]  # the prefix, forced
        # the prefix, then <eos> by itself or forced after 8 tokens (the prefix counted)
        assert 3 <= len(scores) <= 9 and len(text.split()) == len(scores) - 1
    assert_scores_are_the_model_s(found, model, task, "de")


@pytest.mark.parametrize("space", ["rnn", "transformer"])
def test_interactive_continues_a_prefix_and_the_domain_matters(
    space, checkpoints, data_bin, tmp_path
):
    """The same prefix in the two domains: each domain's scores are its own model's (different
    genotypes), so they differ."""
    checkpoint = checkpoints(space)
    model, task = load(checkpoint, data_bin)
    d = task.source_dictionary
    prefix = " ".join(d[i] for i in range(d.nspecial, d.nspecial + 3))
    lines = tmp_path / "prefix.txt"
    lines.write_text(prefix + "\n", encoding="utf-8")
    scores = {}
    for domain in DOMAINS:
        proc = run(
            [
                os.path.join(BIN, "fairseq-interactive"), data_bin, "--user-dir", USER_DIR,
                "--task", "multidomain_nas", "--path", checkpoint, "--eval-domain", domain,
                "--beam", "2", "--max-len-b", "7", "--cpu", "--input", str(lines),
            ]
        )  # fmt: skip
        found = hypotheses(proc.stdout)
        assert list(found) == ["0"]
        text, scores[domain] = found["0"]
        assert text.split()[:3] == prefix.split()
        assert_scores_are_the_model_s(found, model, task, domain)
    assert max(abs(a - b) for a, b in zip(scores["en"], scores["de"])) > 1e-2
    # fairseq-interactive's batches carry no domain: without --eval-domain the task names the flag
    with pytest.raises(ValueError, match="give the domain to generate in with --eval-domain"):
        task.inference_step(None, [model], {"net_input": {"src_tokens": torch.tensor([[2]])}})
