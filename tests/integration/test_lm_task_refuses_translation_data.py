"""The language-model task given a translation data-bin (issue 27, item 5): ``fairseq-train --task
multidomain_nas`` stops with one clear error naming the data-bin, its metadata file and what it is
(``"kind": "translation"``, written by ``mdnas-prepare --translation``), not a missing dict.txt."""

import os

import pytest

from tests.helpers.fairseq_runs import run, train_args
from tests.integration.test_translation_prepare import write_tsv


@pytest.fixture(scope="module")
def translation_bin(tmp_path_factory):
    from mdnas_fairseq.data.prepare.translation import prepare_translation

    tmp = tmp_path_factory.mktemp("mt_for_lm")
    tsv = write_tsv(tmp / "in.tsv")
    prepare_translation(
        tsv,
        "en-de",
        str(tmp / "out"),
        vocab_size=100,
        domain_column="source",
        workers=1,
        quiet=True,
    )
    return str(tmp / "out" / "data-bin")


def test_fairseq_train_names_the_translation_data_bin(translation_bin, tmp_path):
    proc = run(train_args(translation_bin, str(tmp_path / "s"), domains="gcc,libre"), check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: ")
    assert f"{translation_bin} is a translation data-bin" in last
    assert os.path.join(translation_bin, "mdnas_data.json") + " says kind 'translation'" in last
    assert "use --task multidomain_nas_translation with it" in last
    assert not os.path.exists(tmp_path / "s" / "checkpoint_last.pt")


def test_the_same_without_domains_and_for_fairseq_eval_lm(translation_bin):
    """Without --domains (taken from the metadata) the task is refused before anything else."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import mdnas_fairseq  # noqa: F401

    parser = options.get_eval_lm_parser()
    argv = [translation_bin, "--task", "multidomain_nas", "--path", "unused.pt", "--cpu"]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, argv))
    with pytest.raises(ValueError, match="is a translation data-bin .* not a language-model one"):
        tasks.setup_task(cfg.task)
