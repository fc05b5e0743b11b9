"""benchmarks/translation_decoding_speed.py at a tiny size (issue 27's decoding-speed goal).

No wall-clock asserts. References are independent of the code under test: fairseq's transformer's
parameter count is written out here by hand for these sizes (pre-LayerNorm, shared embeddings, no
learned positions), the hypotheses' lengths are the forced N + EOS, the ratios are recomputed from
the printed sentences/s, and the --data run reads sources of the tiny TSV written here.
"""

import contextlib
import importlib.util
import io
import os
import re

import pytest

from tests.helpers.fairseq_runs import ROOT
from tests.integration.test_translation_prepare import write_tsv

N = 5
V, C = 100, 32
SIZES = [
    "--encoder-layers", "1", "--decoder-layers", "1", "--embed-dim", str(C),
    "--ffn-embed-dim", "64", "--attention-heads", "2", "--conv-kernel-sizes", "3",
]  # fmt: skip
TINY = [
    "--batch", "4", "--beam", "2", "--steps", str(N), "--repeats", "1",
    "--arch", "mdnas_transformer_tiny",
]  # fmt: skip


def fairseq_params(ffn):
    """fairseq's transformer, 1 + 1 layers of width C, pre-LN, --share-all-embeddings, V words."""
    attention = 4 * (C * C + C)
    norm = 2 * C
    ffn_block = C * ffn + ffn + ffn * C + C
    encoder = attention + 2 * norm + ffn_block
    decoder = 2 * attention + 3 * norm + ffn_block
    return V * C + encoder + norm + decoder + norm  # embedding, layers, the two final LayerNorms


PER_FFN_UNIT = fairseq_params(2) - fairseq_params(1)  # 2 layers x (2C + 1) = 130


def run_benchmark(argv):
    spec = importlib.util.spec_from_file_location(
        "translation_decoding_speed",
        os.path.join(ROOT, "benchmarks", "translation_decoding_speed.py"),
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = module.main(argv)
    return module, result, out.getvalue()


@pytest.fixture(scope="module")
def made_up():
    argv = [*TINY, "--vocab", str(V), "--source-length", "6", "--", *SIZES]
    return run_benchmark(argv)


@pytest.fixture(scope="module")
def from_data(tmp_path_factory):
    from mdnas_fairseq.data.prepare.translation import prepare_translation

    tmp = tmp_path_factory.mktemp("mt_speed")
    out = tmp / "prepared"
    prepare_translation(
        write_tsv(tmp / "in.tsv"), "en-de", str(out), vocab_size=V, domain_column="source",
        workers=1, quiet=True,
    )  # fmt: skip
    # the test split has 2 sentences per domain: the first 4 of train
    argv = [*TINY, "--data", str(out / "data-bin"), "--split", "train", "--no-domain-size"]
    return (*run_benchmark([*argv, "--", *SIZES]), out / "data-bin")


def printed_params(text):
    multi = re.search(r"^multimodel: .*: ([\d,]+) parameters", text, re.M)
    base = re.search(r"^fairseq transformer: ffn (\d+), ([\d,]+) parameters", text, re.M)
    return (
        int(multi.group(1).replace(",", "")),
        int(base.group(1)),
        int(base.group(2).replace(",", "")),
    )


def test_parameter_counts_agree_within_the_matching(made_up):
    _, result, text = made_up
    multi, ffn, base = printed_params(text)
    assert base == fairseq_params(ffn)  # it is fairseq's transformer of the multimodel's shape
    # the nearest FFN width: within half a unit of the multimodel's count
    assert abs(base - multi) <= PER_FFN_UNIT // 2
    assert multi == result["multimodel"]["params"]
    for d, info in result["fairseq_domain"].items():
        target = result["multimodel"]["domain_params"][d]
        assert info["target"] == target and info["params"] == fairseq_params(info["ffn"])
        if info["ffn"] > 1:  # width 1 may still be larger than a domain's small model
            assert abs(info["params"] - target) <= PER_FFN_UNIT // 2


def test_every_hypothesis_has_exactly_n_tokens(made_up, from_data):
    for _, result, text, *_ in (made_up, from_data):
        assert result["lengths"] and all(v == [N + 1] for v in result["lengths"].values())
        assert f"N = {N} tokens per hypothesis + EOS ({N + 1} decoder steps" in text
        assert f"multimodel [{N + 1}], fairseq [{N + 1}]" in text


def test_check_lengths_refuses_other_lengths(made_up):
    import torch

    module = made_up[0]
    eos = 2
    good = {"tokens": torch.tensor([5] * N + [eos])}
    module.check_lengths([[good, good]], N, eos, "x")
    for tokens in ([5] * (N + 1) + [eos], [5] * (N - 1) + [eos], [5, eos, 5, 5, 5, eos]):
        with pytest.raises(SystemExit, match="x: hypotheses not of"):
            module.check_lengths([[good, {"tokens": torch.tensor(tokens)}]], N, eos, "x")


def test_printed_ratios_and_goal_line(made_up):
    _, result, text = made_up
    printed = {}
    for line in text.splitlines():
        m = re.match(
            r"^(\S.*?, \w+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+\d+%\s*([\d.]*)$", line
        )
        if m:
            printed[m.group(1)] = (float(m.group(2)), m.group(3))
    domains = ["gcc", "libreoffice"]
    expected = {f"{m}, {d}" for d in domains for m in ("multimodel", "fairseq")}
    expected |= {f"fairseq ({d}'s size), {d}" for d in domains}
    assert set(printed) == expected
    ratios = {}
    for d in domains:
        multi = printed[f"multimodel, {d}"][0]
        sps, ratio = printed[f"fairseq, {d}"]
        assert float(ratio) == pytest.approx(multi / sps, rel=0.01, abs=0.002)
        ratios[d] = float(ratio)
    met = min(ratios.values()) >= 1 / 1.5
    assert result["goal_met"] == met
    assert ("): MET (" if met else "): NOT MET (") in text


def test_transformer_genotype_is_fairseqs_transformer():
    """--genotype transformer: every domain's cell fairseq's transformer layer; both domains share
    its modules, so the multimodel is exactly fairseq's transformer of the same FFN width."""
    argv = [*TINY, "--genotype", "transformer", "--no-domain-size", "--vocab"]
    _, result, text = run_benchmark([*argv, str(V), "--source-length", "6", "--", *SIZES])
    multi, ffn, base = printed_params(text)
    assert ffn == 64 and multi == base == fairseq_params(64)
    for cell in result["multimodel"]["cells"].values():
        assert cell == "encoder attention ffn_relu | decoder attention ffn_relu"


def test_data_bin_sources(from_data):
    _, result, text, data_bin = from_data
    words = (data_bin / "dict.de.txt").read_text(encoding="utf-8").splitlines()
    assert list(result["ratios"]) == ["gcc", "libre"] and result["vocab"] == 4 + len(words)
    assert "fairseq (" not in text  # --no-domain-size
    low, high = re.search(r"source lengths (\d+)-(\d+)", text).groups()
    assert int(low) < int(high)  # sentences of several lengths, left-padded into one batch
