"""Budgeted genotypes against the fairseq models they configure: a search's genotype.json written
by the search task's own writer (from the fairseq search model, alpha set at random), budgets
derived by mdnas-derive, then the derived model built by fairseq's task from ``--genotype FILE`` as
fairseq-train builds it: its sum(p.numel()) is the file's count and at most the budget (recurrent
LM and conv)."""

import numpy as np
import pytest
import torch

from mdnas_fairseq import derive
from mdnas_fairseq.search import architecture_parameters, read_genotype_json
from tests.helpers.fairseq_runs import train_args
from tests.helpers.vision_runs import search_argv


def build(argv):
    """The model fairseq-train would build from ``argv`` (no data loaded)."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import mdnas_fairseq  # noqa: F401

    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    return tasks.setup_task(cfg.task).build_model(cfg.model)


@pytest.mark.parametrize("kind", ["lm", "vision"])
def test_budgeted_models_built_by_fairseq_have_the_counted_parameters(kind, tiny_corpus, tmp_path):
    from mdnas_fairseq.models.searchable import unwrap_model
    from mdnas_fairseq.tasks.bilevel.outputs import write_search_outputs

    save = str(tmp_path / "ckpt")
    if kind == "lm":
        data = tiny_corpus()
        argv = lambda extra: train_args(data, save, extra=extra)[1:]  # 16 dims, 3 nodes, en+de
    else:
        argv = lambda extra: search_argv(save, "0,90,180", extra)  # mdnas_conv_tiny
    model = build(argv([]))
    (alpha,) = architecture_parameters(model)
    with torch.no_grad():
        alpha.copy_(3 * torch.randn(alpha.shape, generator=torch.Generator().manual_seed(4)))
    search = tmp_path / "search"
    write_search_outputs(unwrap_model(model), str(search), 1, {}, heatmaps=False)
    _, searched, table = derive.load_search(str(search / "genotype.json"))
    own, smallest = table.multimodel_count(searched), table.smallest_multimodel()
    assert own > smallest
    counts = []
    for budget in np.linspace(own, smallest, 3).round().astype(int).tolist():
        out = str(tmp_path / f"budget{budget}.json")
        assert derive.main([str(search), "--param-budget", str(budget), "--out", out]) == 0
        counted = read_genotype_json(out)["param_counts"]["multimodel"]
        built = build(argv(["--genotype", out]))
        assert not unwrap_model(built).is_search
        assert sum(p.numel() for p in built.parameters()) == counted <= budget
        counts.append(counted)
    assert counts[0] == own and counts[-1] == smallest
