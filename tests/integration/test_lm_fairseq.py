"""End-to-end checks of the language-model pipeline through fairseq's own commands.

A tiny real corpus (rows of the embedded En/De corpus) is prepared once; tiny searches run
through ``fairseq-train`` / ``fairseq-eval-lm`` as users run them.
"""

import json
import math
import os
import shutil

import pytest
import torch

from mdnas_fairseq.search import darts_rnn_space, load_genotype
from tests.helpers.fairseq_runs import BIN, USER_DIR, make_tiny_corpus, run, train_args

ALPHA = "decoder.lm.alphas.alpha"


@pytest.fixture(scope="module")
def data_bin(tiny_corpus):
    return tiny_corpus(400)


@pytest.fixture(scope="module")
def search_dir(data_bin, tmp_path_factory):
    """A 2-epoch second-order search with both regularizers (heatmaps on)."""
    save = str(tmp_path_factory.mktemp("search"))
    cmd = train_args(
        data_bin,
        save,
        extra=[
            "--max-epoch",
            "2",
            "--struct-coef",
            "0.5",
            "--contrastive-coef",
            "0.1",
            "--alpha-order",
            "2",
            "--alpha-lr",
            "0.01",
            "--eta-p",
            "0.5",
            "--tensorboard-logdir",
            os.path.join(save, "tb"),
            "--log-interval",
            "5",
        ],
    )
    cmd.remove("--no-alpha-heatmaps")
    run(cmd)
    return save


def load_ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_search_writes_valid_genotypes(search_dir):
    g = load_genotype(
        os.path.join(search_dir, "genotype.json"), domains=["en", "de"], space=darts_rnn_space(3)
    )
    for epoch in (1, 2):
        load_genotype(
            os.path.join(search_dir, "genotypes", f"genotype_epoch{epoch}.json"),
            domains=["en", "de"],
        )
        for d in ("en", "de"):
            assert (
                os.path.getsize(os.path.join(search_dir, "heatmaps", f"alpha_{d}_epoch{epoch}.png"))
                > 0
            )
    with open(os.path.join(search_dir, "alpha_history.jsonl")) as f:
        history = [json.loads(line) for line in f]
    assert [h["epoch"] for h in history] == [1, 2]
    raw = json.load(open(os.path.join(search_dir, "genotype.json")))
    # the genotype is the argmax of the checkpoint's alpha
    alpha = load_ckpt(os.path.join(search_dir, "checkpoint_last.pt"))["model"][ALPHA]
    probs = torch.softmax(alpha.double(), -1)
    for k, d in enumerate(("en", "de")):
        for e in g.cells[d]:
            edge = g.space.edge_index(e.input, e.node)
            row = probs[k, edge].clone()
            row[0] = -1  # none is never chosen
            assert g.space.operations[int(row.argmax())] == e.op
        assert torch.allclose(torch.tensor(raw["alpha"][d], dtype=torch.float64), probs[k])
    assert raw["settings"]["struct_coef"] == 0.5 and raw["settings"]["alpha_order"] == 2


def test_tensorboard_gets_the_search_scalars(search_dir):
    """fairseq's --tensorboard-logdir writes our per-domain and search metrics (tensorboardX)."""
    tb = os.path.join(search_dir, "tb")
    for split, tags in (
        ("train", ["ppl_en", "ppl_de", "js", "triplet", "p_en", "alpha_entropy_de", "alpha_loss"]),
        ("valid", ["ppl_en", "ppl_de", "loss_de"]),
    ):
        files = [
            os.path.join(tb, split, f)
            for f in os.listdir(os.path.join(tb, split))
            if "tfevents" in f
        ]
        assert files, split
        raw = b"".join(open(f, "rb").read() for f in files)
        for tag in tags:
            assert tag.encode() in raw, (split, tag)


def test_alpha_trained_by_architect_only(search_dir, data_bin):
    ckpt = load_ckpt(os.path.join(search_dir, "checkpoint_last.pt"))
    alpha = ckpt["model"][ALPHA]
    assert alpha.abs().max() > 1e-2  # moved far from its 1e-3 initialisation
    # the weight optimizer (fairseq's Adam) holds every parameter except alpha
    from fairseq import checkpoint_utils

    import mdnas_fairseq  # noqa: F401

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [os.path.join(search_dir, "checkpoint_last.pt")], arg_overrides={"data": data_bin}
    )
    params = list(models[0].parameters())
    in_optimizer = ckpt["last_optimizer_state"]["param_groups"][0]["params"]
    assert len(in_optimizer) == len(params) - 1
    assert (
        task.architect is not None and task.architect.alphas[0] is models[0].decoder.lm.alphas.alpha
    )
    # the alpha optimizer state is in the task state, with DARTS' Adam settings
    arch_state = ckpt["task_state"]["architect"]["optimizer"]
    assert arch_state["param_groups"][0]["betas"] == (0.5, 0.999)
    assert arch_state["param_groups"][0]["weight_decay"] == 1e-3
    assert int(arch_state["state"][0]["step"]) > 0


def test_resume_continues_the_search_exactly(data_bin, tmp_path):
    common = [
        "--struct-coef",
        "0.3",
        "--alpha-lr",
        "0.02",
        "--eta-p",
        "0.5",
        "--contrastive-coef",
        "0.1",
    ]
    full, split = str(tmp_path / "full"), str(tmp_path / "split")
    run(train_args(data_bin, full, extra=common + ["--max-epoch", "2"]))
    run(train_args(data_bin, split, extra=common + ["--max-update", "7"]))  # stops mid-epoch
    proc = run(train_args(data_bin, split, extra=common + ["--max-epoch", "2"]))
    assert "restoring alpha optimizer" in proc.stdout + proc.stderr
    a, b = (
        load_ckpt(os.path.join(full, "checkpoint_last.pt")),
        load_ckpt(os.path.join(split, "checkpoint_last.pt")),
    )
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"]
    assert torch.equal(a["model"][ALPHA], b["model"][ALPHA])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(
        a["task_state"]["domain_sampler"]["probs"], b["task_state"]["domain_sampler"]["probs"]
    )


def _eval_lm_ppl(data_bin, checkpoint, *extra):
    proc = run(
        [
            os.path.join(BIN, "fairseq-eval-lm"),
            data_bin,
            "--user-dir",
            USER_DIR,
            "--task",
            "multidomain_nas",
            "--path",
            checkpoint,
            "--sample-break-mode",
            "eos",
            "--batch-size",
            "8",
            "--cpu",
            "--num-workers",
            "0",
        ]
        + list(extra)
    )
    line = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "Perplexity:" in ln][-1]
    return float(line.split("Loss (base 2):")[1].split(",")[0]), float(
        line.rsplit("Perplexity:", 1)[1]
    )


def _direct_ppl(data_bin, checkpoint, domain):
    """exp(mean token loss) over test.<domain>, sentence by sentence with the model itself."""
    from fairseq import checkpoint_utils

    import mdnas_fairseq  # noqa: F401

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [checkpoint], arg_overrides={"data": data_bin}
    )
    model = models[0].eval()
    dataset = task.load_dataset(f"test.{domain}")
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = dataset.collater([dataset[i]])
            assert batch["net_input"]["domain"].tolist() == [task.domain_names.index(domain)]
            logits, _ = model(**batch["net_input"])
            lprobs = torch.log_softmax(logits.double(), -1)[0]
            target = batch["target"][0]
            total -= lprobs[torch.arange(len(target)), target].sum().item()
            count += len(target)
    return math.exp(total / count)


@pytest.mark.parametrize("domain", ["en", "de"])
def test_eval_lm_perplexity_equals_direct_computation(search_dir, data_bin, domain):
    checkpoint = os.path.join(search_dir, "checkpoint_last.pt")
    loss2, ppl = _eval_lm_ppl(data_bin, checkpoint, "--gen-subset", "test", "--eval-domain", domain)
    direct = _direct_ppl(data_bin, checkpoint, domain)
    assert 2**loss2 == pytest.approx(direct, rel=1e-3)
    if domain == "de":  # the per-domain subset name gives the same figure (one domain suffices)
        by_subset = _eval_lm_ppl(data_bin, checkpoint, "--gen-subset", f"test.{domain}")[1]
        assert by_subset == pytest.approx(ppl)


def test_retrained_multimodel_and_union_baseline(search_dir, data_bin, tmp_path):
    genotype = os.path.join(search_dir, "genotype.json")
    retrain = str(tmp_path / "retrain")
    run(train_args(data_bin, retrain, extra=["--max-epoch", "1", "--genotype", genotype]))
    checkpoint = os.path.join(retrain, "checkpoint_last.pt")
    state = load_ckpt(checkpoint)
    g = load_genotype(genotype)
    n_params = sum(v.numel() for k, v in state["model"].items() if not k.endswith("fingerprint"))
    assert n_params == json.load(open(genotype))["param_counts"]["multimodel"]
    # one matrix per (node, op) chosen by some domain
    mats = sorted(k.split("op_weights.")[1] for k in state["model"] if "op_weights." in k)
    assert mats == sorted({f"node{e.node}_{e.op}" for e in g.union_edges()})
    loss2, _ = _eval_lm_ppl(data_bin, checkpoint, "--gen-subset", "test", "--eval-domain", "de")
    assert 2**loss2 == pytest.approx(_direct_ppl(data_bin, checkpoint, "de"), rel=1e-3)
    # eval-lm of the retrained model needs no genotype file: it is stored in the checkpoint
    moved = str(tmp_path / "moved.json")
    shutil.move(genotype, moved)
    try:
        _eval_lm_ppl(data_bin, checkpoint, "--gen-subset", "test.en")
    finally:
        shutil.move(moved, genotype)
    # union baseline: one shared architecture for both domains
    union = str(tmp_path / "union")
    run(train_args(data_bin, union, extra=["--max-epoch", "1", "--shared-architecture"]))
    ug = load_genotype(os.path.join(union, "genotype.json"))
    assert list(ug.domains) == ["en+de"]


def _fails(cmd):
    proc = run(cmd, check=False)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


def test_unknown_domain_is_named(data_bin, tmp_path):
    out = _fails(
        train_args(data_bin, str(tmp_path / "x"), domains="en,xx", extra=["--max-epoch", "1"])
    )
    assert "domain 'xx'" in out and "xx.bin/.idx" in out


def test_missing_architecture_split_is_named(data_bin, tmp_path):
    broken = str(tmp_path / "bin")
    shutil.copytree(data_bin, broken)
    for ext in ("bin", "idx"):
        os.remove(os.path.join(broken, f"heldout.de.{ext}"))
    out = _fails(train_args(broken, str(tmp_path / "x"), extra=["--max-epoch", "1"]))
    assert "domain 'de'" in out and "heldout.de" in out


def test_genotype_for_other_domains_is_rejected(search_dir, data_bin, tmp_path):
    out = _fails(
        train_args(
            data_bin,
            str(tmp_path / "x"),
            domains="en",
            extra=["--max-epoch", "1", "--genotype", os.path.join(search_dir, "genotype.json")],
        )
    )
    assert "genotype is for 2 domain(s) ['en', 'de']" in out and "this run needs 1" in out


def test_mismatched_dictionary_is_rejected(search_dir, tmp_path):
    other = make_tiny_corpus(str(tmp_path / "other"), rows=300, vocab_size=200, seed=2)
    out = _fails(
        [
            os.path.join(BIN, "fairseq-eval-lm"),
            other,
            "--user-dir",
            USER_DIR,
            "--task",
            "multidomain_nas",
            "--path",
            os.path.join(search_dir, "checkpoint_last.pt"),
            "--sample-break-mode",
            "eos",
            "--cpu",
            "--gen-subset",
            "test.en",
        ]
    )
    assert "different dictionary" in out
