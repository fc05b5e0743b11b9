"""The bilevel step inside fairseq: one alpha step per update, the robust p's input, no host
reads in the hot path, the files written at the end, and refused options."""

import copy
import json
import os
import traceback

import pytest
import torch
import torch.nn.functional as F

from mdnas_fairseq.tasks.bilevel.optimizers import virtual_step_for
from mdnas_fairseq.tasks.bilevel.precision import to_model
from tests.helpers.fairseq_runs import ROOT, build_in_process, first_batches, run, train_args

PACKAGE = os.path.join(ROOT, "mdnas_fairseq")
ALPHA = "decoder.lm.alphas.alpha"


@pytest.fixture(scope="module")
def data_bin(tiny_corpus):
    return tiny_corpus(200)


def load_ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_one_architecture_step_per_update(data_bin, tmp_path):
    run(
        train_args(
            data_bin,
            str(tmp_path),
            extra=["--update-freq", "3", "--max-update", "4", "--alpha-lr", "0.01"],
        )
    )
    ckpt = load_ckpt(tmp_path / "checkpoint_last.pt")
    assert ckpt["optimizer_history"][-1]["num_updates"] == 4
    adam = ckpt["task_state"]["architect"]["optimizer"]["state"][0]
    assert int(adam["step"]) == 4  # not 12: the 3 sub-batches of an update share one alpha step


def test_one_step_on_the_first_sub_batch_in_process(data_bin, tmp_path):
    task, model, criterion, optimizer = build_in_process(
        data_bin, str(tmp_path), extra=["--alpha-lr", "0.05"]
    )
    batches = first_batches(task, 4)
    alpha = task.architect.alphas[0]
    history = [alpha.detach().clone()]
    for sample in batches[:3]:  # three sub-batches of update 0
        task.train_step(sample, model, criterion, optimizer, update_num=0)
        history.append(alpha.detach().clone())
    assert not torch.equal(history[1], history[0])  # the first sub-batch stepped
    assert torch.equal(history[2], history[1]) and torch.equal(history[3], history[1])
    task.train_step(batches[3], model, criterion, optimizer, update_num=1)
    assert not torch.equal(alpha, history[3])
    assert int(task.architect.optimizer.state[alpha]["step"]) == 2


def test_robust_p_follows_the_held_out_cross_entropy(data_bin, tmp_path):
    # a huge contrastive coefficient: the architecture objective is ~1000x the cross-entropy
    task, model, criterion, optimizer = build_in_process(
        data_bin,
        str(tmp_path),
        extra=["--eta-p", "1.0", "--contrastive-coef", "1000", "--dropout", "0"],
    )
    drawn = []
    original = task.search.heldout.next

    def recording_next(domain):
        batch = original(domain)
        drawn.append((domain, batch))
        return batch

    task.search.heldout.next = recording_next
    sample = first_batches(task, 1)[0]
    reference = copy.deepcopy(model)  # the weights and alpha the alpha step starts from
    task.train_step(sample, model, criterion, optimizer, update_num=0)
    ((domain, batch),) = drawn
    assert domain == sample["domain"]
    with torch.no_grad():  # the held-out cross-entropy per token, by hand
        logits, _ = reference(**batch["net_input"])
        ce = (
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(),
                batch["target"].reshape(-1),
                ignore_index=task.dictionary.pad(),
                reduction="sum",
            )
            / batch["ntokens"]
        )
    estimates = task.search.domain_sampler.loss_estimates
    assert float(estimates[domain]) == pytest.approx(float(ce), rel=1e-5)
    assert torch.isnan(estimates[1 - domain])


def test_second_order_finite_differences_see_one_draw_of_dropout(data_bin, tmp_path):
    """The real model (dropout 0.1 by default) through the task's closures: the central and the
    forward difference estimate the same Hessian term only if every training pass of the step
    replays the first pass's dropout masks (with fresh masks each is off by several times the
    gradient's norm)."""
    task, model, criterion, optimizer = build_in_process(
        data_bin,
        str(tmp_path),
        extra=["--alpha-order", "2", "--optimizer", "sgd", "--lr", "1.0"]
        + ["--alpha-hessian-difference", "forward"],
    )
    sample = first_batches(task, 1)[0]
    heldout = to_model(task.search.heldout.next(sample["domain"]), model)
    architect = task.architect
    assert architect.difference == "forward"  # the flag reaches the architect
    assert task.search_settings(model)["alpha_hessian_difference"] == "forward"

    def alpha_gradient(difference, order=2):
        architect.difference, architect.order = difference, order
        torch.manual_seed(5)
        return architect.alpha_gradients(
            lambda: criterion.weight_objective(model, sample),
            lambda: criterion.alpha_objective(model, heldout),
            virtual_step=virtual_step_for(optimizer, architect.trainable_weights),
        )["grads"][0]

    central, forward = alpha_gradient("central"), alpha_gradient("forward")
    first = alpha_gradient("central", order=1)
    relative = float((forward - central).norm() / central.norm())
    # the Hessian term is a large part of the gradient here, and the two differences agree on it
    # up to fp32 rounding and the forward difference's O(eps) (2-14% over random initialisations;
    # with fresh dropout masks at each point 290-940%)
    assert float((first - central).norm() / central.norm()) > 0.3
    assert relative < 0.25
    assert torch.equal(alpha_gradient("central"), central)


READERS = ("item", "tolist", "__bool__", "__float__", "__int__")


def test_hot_path_reads_nothing_back_from_tensors(data_bin, tmp_path, monkeypatch):
    """No .item()/.tolist()/bool()/float()/int() of a tensor from the package's code in a train or
    valid step (on a GPU each is a host synchronisation)."""
    task, model, criterion, optimizer = build_in_process(
        data_bin,
        str(tmp_path),
        extra=[
            "--alpha-order",
            "2",
            "--eta-p",
            "0.5",
            "--struct-coef",
            "0.1",
            "--contrastive-coef",
            "0.1",
        ],
    )
    batches = first_batches(task, 3)
    task.train_step(
        batches[0], model, criterion, optimizer, update_num=0
    )  # warm-up: lazy set-up reads are fine
    calls = []
    for name in READERS:
        original = getattr(torch.Tensor, name)

        def reader(self, *args, _original=original, _name=name, **kwargs):
            caller = traceback.extract_stack()[
                -2
            ]  # the code that read the tensor (not torch's internals)
            if caller.filename.startswith(PACKAGE):
                calls.append(f"{_name} at {caller.filename}:{caller.lineno}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, reader)
    task.train_step(batches[1], model, criterion, optimizer, update_num=1)
    task.train_step(batches[2], model, criterion, optimizer, update_num=1)  # a second sub-batch
    model.eval()
    task.valid_step(batches[2], model, criterion)
    assert calls == []


def test_genotype_of_the_last_epoch_without_validation(data_bin, tmp_path):
    run(
        train_args(
            data_bin,
            str(tmp_path / "a"),
            extra=["--max-epoch", "2", "--disable-validation", "--alpha-lr", "0.05"],
        )
    )
    last = json.load(open(tmp_path / "a" / "genotypes" / "genotype_epoch2.json"))
    alpha = load_ckpt(tmp_path / "a" / "checkpoint_last.pt")["model"][ALPHA]
    probs = torch.softmax(alpha.double(), -1)
    assert torch.allclose(torch.tensor(last["alpha"]["en"], dtype=torch.float64), probs[0])
    assert json.load(open(tmp_path / "a" / "genotype.json"))["epoch"] == 2
    # stopped by --max-update in the middle of an epoch, no validation: the final alpha is written
    run(
        train_args(
            data_bin,
            str(tmp_path / "b"),
            extra=["--max-update", "5", "--disable-validation", "--alpha-lr", "0.05"],
        )
    )
    final = json.load(open(tmp_path / "b" / "genotype.json"))
    alpha = load_ckpt(tmp_path / "b" / "checkpoint_last.pt")["model"][ALPHA]
    assert torch.allclose(
        torch.tensor(final["alpha"]["de"], dtype=torch.float64),
        torch.softmax(alpha.double(), -1)[1],
    )


@pytest.mark.parametrize("subset", ["valid", "test", "valid.en"])
def test_evaluation_split_is_refused_for_the_architecture_step(data_bin, tmp_path, subset):
    proc = run(
        train_args(data_bin, str(tmp_path), extra=["--max-epoch", "1", "--heldout-subset", subset]),
        check=False,
    )
    assert proc.returncode != 0
    assert f"--heldout-subset {subset!r} is an evaluation split" in proc.stdout + proc.stderr


def test_second_order_with_fp16_is_refused(data_bin, tmp_path):
    proc = run(
        train_args(
            data_bin,
            str(tmp_path),
            extra=["--max-epoch", "1", "--alpha-order", "2", "--fp16", "--fp16-no-flatten-grads"],
        ),
        check=False,
    )
    assert proc.returncode != 0
    assert "--alpha-order 2 cannot run with --fp16" in proc.stdout + proc.stderr
