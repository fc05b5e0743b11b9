"""The rotated_mnist_nas task through fairseq: bad command lines, search -> derive -> retrain -> test,
and what the structural term adds to the alpha gradient."""

import json
import os
import subprocess
import sys

import pytest
import torch

from mdnas_fairseq.search import darts_cnn_space, load_genotype
from tests.helpers.fairseq_runs import ROOT, USER_DIR, build_from_argv
from tests.helpers.vision_runs import search_argv as _search_argv
from tests.helpers.vision_runs import train_in_child as _train_in_child


def test_cli_broken_mnist_root_and_bad_rotations(tmp_path):
    code = "import sys, mdnas_fairseq; from fairseq_cli.train import cli_main; sys.argv[0]='fairseq-train'; cli_main()"
    base = [
        sys.executable,
        "-c",
        code,
        "--user-dir",
        USER_DIR,
        "--task",
        "rotated_mnist_nas",
        "--arch",
        "mdnas_conv_tiny",
        "--criterion",
        "multidomain_nas_loss",
        "--optimizer",
        "adam",
        "--batch-size",
        "8",
        "--max-epoch",
        "1",
        "--cpu",
        "--save-dir",
        str(tmp_path / "ckpt"),
    ]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    broken = tmp_path / "broken_mnist"
    broken.mkdir()
    out = subprocess.run(
        base + ["--mnist-root", str(broken)], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode != 0
    assert "broken_mnist" in out.stderr and "torchvision" in out.stderr, out.stderr[-2000:]
    out = subprocess.run(
        base + ["--rotations", "0,ninety", "--no-mnist-download"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode != 0 and "--rotations" in out.stderr and "ninety" in out.stderr, (
        out.stderr[-2000:]
    )


def test_tiny_search_then_retrain_end_to_end(tmp_path):
    save = str(tmp_path / "search")
    _train_in_child(
        _search_argv(save, "0,90", ["--max-epoch", "2", "--contrastive-coef", "0.1", "--no-save"])
    )
    path = os.path.join(save, "genotype.json")
    genotype = load_genotype(path, domains=["rot0", "rot90"], space=darts_cnn_space(2))
    raw = json.load(open(path))
    assert raw["epoch"] == 2 and raw["settings"]["contrastive_coef"] == 0.1
    assert raw["settings"]["mnist_source"] and raw["settings"]["rotations"] == [0.0, 90.0]
    assert raw["param_counts"]["multimodel"] > 0
    assert open(os.path.join(save, "mnist_source.txt")).read().strip()
    # retrain the derived multimodel from that genotype; its size is the genotype's count
    retrain = str(tmp_path / "retrain")
    _train_in_child(
        _search_argv(
            retrain,
            "0,90",
            [
                "--max-epoch",
                "1",
                "--genotype",
                path,
                "--disable-validation",
                "--no-epoch-checkpoints",
            ],
        )
    )
    from fairseq import checkpoint_utils

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [os.path.join(retrain, "checkpoint_last.pt")]
    )
    model = models[0]
    assert not model.is_search
    assert (
        sum(p.numel() for p in model.parameters())
        == raw["param_counts"]["multimodel"]
        == model.genotype_param_count(genotype)
    )
    # one domain of the full test set, scored through the task's valid_step / reduce_metrics
    from fairseq import metrics

    ds = task.load_dataset("test.rot90")
    assert ds.domain_indices == [1] and len(ds) == (
        10000 if task.mnist_source.startswith("torchvision") else 2000
    )
    itr = task.get_batch_iterator(dataset=ds, max_sentences=500, seed=1).next_epoch_itr(
        shuffle=False
    )
    logs = [
        task.valid_step(next(itr), model, task.build_criterion(_cfg.criterion))[2] for _ in range(2)
    ]
    with metrics.aggregate() as agg:
        task.reduce_metrics(logs, task.build_criterion(_cfg.criterion))
        values = agg.get_smoothed_values()
    assert (
        "acc_rot90" in values and "acc_rot0" not in values and values["acc"] == values["acc_rot90"]
    )
    # the logged accuracy is the share of correct predictions, counted here image by image
    itr = task.get_batch_iterator(dataset=ds, max_sentences=500, seed=1).next_epoch_itr(
        shuffle=False
    )
    correct = 0
    with torch.no_grad():
        for _ in range(2):
            batch = next(itr)
            for image, label in zip(batch["net_input"]["images"], batch["target"]):
                logits, _ = model.net(image[None], torch.tensor([1]))
                correct += int(logits.argmax()) == int(label)
    assert values["acc_rot90"] == pytest.approx(100.0 * correct / 1000, abs=0.006)


def _js_by_hand(alpha):
    """The structural regularizer written out: mean over ordered domain pairs of the summed edge JS."""
    p = torch.softmax(alpha.double(), -1)
    total = 0.0
    pairs = 0
    for a in range(p.shape[0]):
        for b in range(p.shape[0]):
            if a != b:
                m = (p[a] + p[b]) / 2
                total = total + 0.5 * (
                    (p[a] * (p[a] / m).log()).sum() + (p[b] * (p[b] / m).log()).sum()
                )
                pairs += 1
    return total / pairs


def test_struct_coefficient_reaches_the_architecture_gradient(tmp_path):
    from mdnas_fairseq.criterions.multidomain_nas_loss import MultiDomainNASLoss
    from mdnas_fairseq.search import alphas_trainable, architecture_parameters

    coef = 5.0
    task, model, criterion, _ = build_from_argv(
        _search_argv(str(tmp_path), "0,90,180", ["--struct-coef", str(coef)])
    )
    without = MultiDomainNASLoss(task, struct_coef=0.0)
    alpha = architecture_parameters(model)[0]
    with torch.no_grad():
        alpha.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))  # domains that disagree
    batch = task.search.heldout.next(2)
    with alphas_trainable(model):
        (with_struct,) = torch.autograd.grad(criterion.alpha_objective(model, batch)[0], alpha)
        (plain,) = torch.autograd.grad(without.alpha_objective(model, batch)[0], alpha)
    reference = alpha.detach().clone().requires_grad_(True)
    (js_grad,) = torch.autograd.grad(_js_by_hand(reference), reference)
    js_grad = js_grad.double()
    assert float(js_grad.abs().max()) > 1e-3
    torch.testing.assert_close((with_struct - plain).double(), coef * js_grad, rtol=1e-4, atol=1e-6)


def test_param_coefficient_pushes_alpha_toward_cheaper_operations(tmp_path):
    from mdnas_fairseq.criterions.multidomain_nas_loss import MultiDomainNASLoss
    from mdnas_fairseq.search import alphas_trainable, architecture_parameters

    coef = 2.0
    task, model, criterion, _ = build_from_argv(
        _search_argv(str(tmp_path), "0,90", ["--param-coef", str(coef)])
    )
    without = MultiDomainNASLoss(task, param_coef=0.0)
    alpha = architecture_parameters(model)[0]
    batch = task.search.heldout.next(1)
    with alphas_trainable(model):
        (with_penalty,) = torch.autograd.grad(criterion.alpha_objective(model, batch)[0], alpha)
        (plain,) = torch.autograd.grad(without.alpha_objective(model, batch)[0], alpha)
    # by hand: the expected parameters of domain 1's cell, each edge's softmax-weighted operation sizes,
    # an edge into node j weighted 2/j (two of its j inputs are kept), over the largest cell
    table = model.network.param_table()
    space = model.search_space
    reference = alpha.detach().clone().requires_grad_(True)
    probs = torch.softmax(reference[1].double(), -1)
    sizes = torch.tensor(table.op_params, dtype=torch.float64)
    weights = torch.tensor([2.0 / j for (_, j) in space.edges], dtype=torch.float64)
    expected = (probs * sizes * weights[:, None]).sum() / (sizes.max(1).values * weights).sum()
    (penalty_grad,) = torch.autograd.grad(expected, reference)
    difference = (with_penalty - plain).double()
    assert float(difference[0].abs().max()) == 0.0  # only the batch's architecture is penalised
    torch.testing.assert_close(difference, coef * penalty_grad.double(), rtol=1e-4, atol=1e-7)
    # on every edge the gradient raises the most expensive operation's logit's cost (it goes down in
    # the step) and lowers a parameter-free one's
    costly, free = space.op_index("sep_conv_5x5"), space.op_index("skip_connect")
    assert bool((difference[1, :, costly] > 0).all()) and bool((difference[1, :, free] < 0).all())
