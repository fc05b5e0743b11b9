"""Extending a trained multimodel to a third language through fairseq's own commands (issue 24),
for both search spaces: search en,de and retrain; then, on a data-bin whose en/de files are the
old ones byte for byte and whose dict.txt is the old one with French pieces appended, extend the
search to fr (--extend-from) and the multimodel (--genotype ... --extend-from); evaluate.

Checked: the old domains' logits are torch.equal between the old and the extended checkpoints
(search and multimodel), fairseq-eval-lm prints the same line for them, every old tensor is
bitwise the old one after training, the old domains' genotype cells are the old ones, the new
language learns (perplexity far below an untrained model's), an interrupted extension search
resumes exactly, and every bad input stops fairseq-train with its error and nothing written.
"""

import glob
import json
import math
import os
import shutil

import pytest
import torch

from mdnas_fairseq.search import GenotypeEdge, MultiDomainGenotype, load_genotype, save_genotype
from tests.helpers.extension_data import make_extension_corpora
from tests.helpers.fairseq_runs import BIN, RNN_TEST_SIZES, run, train_args
from tests.integration.test_lm_fairseq import _eval_lm_ppl
from tests.integration.test_transformer_fairseq import SIZES as TF_SIZES

SPACES = {
    "rnn": ("mdnas_rnn_tiny", RNN_TEST_SIZES),
    "transformer": ("mdnas_transformer_lm_tiny", TF_SIZES),
}
SEARCH = ["--struct-coef", "0.3", "--contrastive-coef", "0.1", "--alpha-lr", "0.05"]
FINGERPRINT = "decoder.lm.dictionary_fingerprint"
ALPHA = "decoder.lm.alphas.alpha"


def load_ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """(old data-bin en,de; new data-bin en,de,fr with appended entries; how many appended)."""
    return make_extension_corpora(str(tmp_path_factory.mktemp("extension_data")), rows=240)


def space_args(space, data_bin, save_dir, domains, extra):
    arch, sizes = SPACES[space]
    return train_args(data_bin, save_dir, domains=domains, arch=arch, extra=extra, sizes=sizes)


def with_own_module(genotype_path, out_path, domain="fr"):
    """The genotype with ``domain``'s first node that can differ from every other domain's choice
    there given an operation of its own (so the extended multimodel has a module only it uses)."""
    g = load_genotype(genotype_path)
    space, cells = g.space, dict(g.cells)
    for edge in cells[domain]:
        used = {e.op for d in g.domains if d != domain for e in cells[d] if e.node == edge.node}
        index = space.edge_index(edge.input, edge.node)
        free = [op for op in space.allowed(index) if op != space.none_op and op not in used]
        if free:
            mine = GenotypeEdge(node=edge.node, input=edge.input, op=free[0])
            cells[domain] = tuple(mine if e == edge else e for e in cells[domain])
            break
    save_genotype(out_path, MultiDomainGenotype(space, g.domains, cells))
    return out_path


def with_changed_cell(genotype_path, out_path, domain="en"):
    """The genotype with ``domain``'s first edge given another operation."""
    g = load_genotype(genotype_path)
    space, cells = g.space, dict(g.cells)
    edge = cells[domain][0]
    index = space.edge_index(edge.input, edge.node)
    other = [op for op in space.allowed(index) if op not in (space.none_op, edge.op)][0]
    moved = GenotypeEdge(node=edge.node, input=edge.input, op=other)
    cells[domain] = tuple(moved if e == edge else e for e in cells[domain])
    save_genotype(out_path, MultiDomainGenotype(space, g.domains, cells))
    return out_path


@pytest.fixture(scope="module")
def pipelines(corpora, tmp_path_factory):
    """``pipelines(space)``: the run dirs of search -> retrain -> extended search -> extended
    retrain in that search space, made once."""
    made = {}
    old_bin, new_bin, _ = corpora

    def get(space):
        if space in made:
            return made[space]
        root = str(tmp_path_factory.mktemp(f"extend_{space}"))
        d = {k: os.path.join(root, k) for k in ("search", "retrain", "xsearch", "xretrain")}
        run(space_args(space, old_bin, d["search"], "en,de", SEARCH + ["--max-epoch", "1"]))
        g = os.path.join(d["search"], "genotype.json")
        retrain = ["--max-epoch", "8", "--lr", "0.02"]
        run(space_args(space, old_bin, d["retrain"], "en,de", ["--genotype", g] + retrain))
        extend = ["--extend-from", os.path.join(d["search"], "checkpoint_last.pt")]
        run(
            space_args(
                space, new_bin, d["xsearch"], "en,de,fr", SEARCH + ["--max-epoch", "2"] + extend
            )
        )
        own = with_own_module(
            os.path.join(d["xsearch"], "genotype.json"), os.path.join(root, "genotype_fr_own.json")
        )
        extend = [
            "--genotype",
            own,
            "--extend-from",
            os.path.join(d["retrain"], "checkpoint_last.pt"),
        ]
        run(space_args(space, new_bin, d["xretrain"], "en,de,fr", retrain + extend))
        d["own_genotype"] = own
        made[space] = d
        return d

    return get


@pytest.fixture(scope="module", params=sorted(SPACES))
def space(request):
    return request.param


# ------------------------------------------------------------------ the old domains, bit for bit
def _model(checkpoint, data_bin):
    from fairseq import checkpoint_utils

    import mdnas_fairseq  # noqa: F401

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [checkpoint], arg_overrides={"data": data_bin}
    )
    return models[0].eval(), task


def _batches(task, split, size=8):
    dataset = task.load_dataset(split)
    for start in range(0, len(dataset), size):
        yield dataset.collater([dataset[i] for i in range(start, min(start + size, len(dataset)))])


@pytest.mark.parametrize("kind", [("search", "xsearch"), ("retrain", "xretrain")])
def test_old_domains_logits_are_bitwise_the_old_checkpoints(pipelines, space, corpora, kind):
    old_bin, new_bin, appended = corpora
    runs = pipelines(space)
    old, old_task = _model(os.path.join(runs[kind[0]], "checkpoint_last.pt"), old_bin)
    new, new_task = _model(os.path.join(runs[kind[1]], "checkpoint_last.pt"), new_bin)
    v_old = len(old_task.source_dictionary)
    assert len(new_task.source_dictionary) == v_old + appended > v_old
    for domain in ("en", "de"):
        batches = list(
            zip(_batches(old_task, f"test.{domain}"), _batches(new_task, f"test.{domain}"))
        )
        assert batches
        for a, b in batches:
            assert torch.equal(a["net_input"]["src_tokens"], b["net_input"]["src_tokens"])
            with torch.no_grad():
                out_a, out_b = old(**a["net_input"]), new(**b["net_input"])
            assert torch.equal(out_a[0], out_b[0][..., :v_old]), domain
            assert torch.isneginf(out_b[0][..., v_old:]).all()
            lp_a = old.get_normalized_probs(out_a, log_probs=True)
            lp_b = new.get_normalized_probs(out_b, log_probs=True)
            assert torch.equal(lp_a, lp_b[..., :v_old])


def _eval_lm(data_bin, checkpoint, domain):
    """(loss, perplexity) as fairseq-eval-lm prints them."""
    return _eval_lm_ppl(data_bin, checkpoint, "--gen-subset", "test", "--eval-domain", domain)


def _untrained_ppl(checkpoint, data_bin, domain):
    """Perplexity of the checkpoint's model freshly initialised (no weights loaded)."""
    from fairseq import checkpoint_utils, tasks

    import mdnas_fairseq  # noqa: F401

    state = checkpoint_utils.load_checkpoint_to_cpu(checkpoint, {"data": data_bin})
    task = tasks.setup_task(state["cfg"].task)
    task.load_state_dict(state["task_state"])
    torch.manual_seed(0)
    model = task.build_model(state["cfg"].model, from_checkpoint=True).eval()
    total, count = 0.0, 0
    for batch in _batches(task, f"test.{domain}"):
        with torch.no_grad():
            lprobs = model.get_normalized_probs(model(**batch["net_input"]), log_probs=True)
        target = batch["target"]
        real = target.ne(task.source_dictionary.pad())
        total -= lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)[real].sum().item()
        count += int(real.sum())
    return math.exp(total / count)


def test_eval_lm_prints_the_old_perplexity_and_the_new_language_learned(pipelines, space, corpora):
    old_bin, new_bin, _ = corpora
    runs = pipelines(space)
    old = _eval_lm(old_bin, os.path.join(runs["retrain"], "checkpoint_last.pt"), "en")
    new = _eval_lm(new_bin, os.path.join(runs["xretrain"], "checkpoint_last.pt"), "en")
    assert old == new  # loss and perplexity to the last printed digit
    fr = _eval_lm(new_bin, os.path.join(runs["xretrain"], "checkpoint_last.pt"), "fr")[1]
    untrained = _untrained_ppl(os.path.join(runs["xretrain"], "checkpoint_last.pt"), new_bin, "fr")
    print(f"{space}: fr perplexity {fr} after the extension, {untrained:.2f} untrained")
    assert math.isfinite(fr) and fr < 0.5 * untrained, (fr, untrained)


# ------------------------------------------------------------------ what the extension changed
def test_every_old_tensor_is_bitwise_the_old_one_after_training(pipelines, space):
    runs = pipelines(space)
    for old_dir, new_dir in (("search", "xsearch"), ("retrain", "xretrain")):
        old = load_ckpt(os.path.join(runs[old_dir], "checkpoint_last.pt"))["model"]
        new = load_ckpt(os.path.join(runs[new_dir], "checkpoint_last.pt"))["model"]
        for key, value in old.items():
            if key in (FINGERPRINT, ALPHA):
                continue
            assert torch.equal(new[key], value), (new_dir, key)
        added = sorted(set(new) - set(old))
        assert "decoder.lm.appended_vocabulary.weights.0" in added
        if old_dir == "search":
            assert torch.equal(new["decoder.lm.alphas.frozen_alpha"], old[ALPHA])
            assert new[ALPHA].shape[0] == 1 and new[ALPHA].abs().sum() > 0  # fr's row, trained
        else:  # the module only fr uses (with_own_module) is new
            assert any(".op_weights." in k or ".ops." in k for k in added), added


def test_genotype_files_hold_every_domain_and_the_old_cells(pipelines, space):
    runs = pipelines(space)
    old = json.load(open(os.path.join(runs["search"], "genotype.json")))
    files = [os.path.join(runs["xsearch"], "genotype.json")] + glob.glob(
        os.path.join(runs["xsearch"], "genotypes", "*.json")
    )
    assert len(files) == 3
    for path in files:
        new = json.load(open(path))
        assert new["domains"] == ["en", "de", "fr"]
        assert new["cells"]["en"] == old["cells"]["en"] and new["cells"]["de"] == old["cells"]["de"]
        assert new["settings"]["frozen_domains"] == ["en", "de"]
    retrained = load_ckpt(os.path.join(runs["xretrain"], "checkpoint_last.pt"))
    stored = json.loads(retrained["cfg"]["model"]["extension_data"])
    assert stored["old_domains"] == ["en", "de"]


def test_a_moved_old_cell_is_refused_before_any_file_is_written(pipelines, corpora, tmp_path):
    """The guard of every genotype write: an old domain whose cell moved is a bug, raised."""
    from mdnas_fairseq.search import load_genotype as load
    from mdnas_fairseq.tasks.bilevel import outputs

    runs = pipelines("rnn")
    model, _ = _model(os.path.join(runs["xsearch"], "checkpoint_last.pt"), corpora[1])
    old = load(os.path.join(runs["search"], "genotype.json"))
    kept = {d: old.cells[d] for d in old.domains}
    outputs.write_search_outputs(model, str(tmp_path / "kept"), 1, {}, False, fixed_cells=kept)
    moved = load(
        with_changed_cell(os.path.join(runs["search"], "genotype.json"), str(tmp_path / "m.json"))
    )
    with pytest.raises(RuntimeError, match=r"old domain\(s\) \['en'\] changed"):
        outputs.write_search_outputs(
            model, str(tmp_path / "moved"), 1, {}, False, fixed_cells={"en": moved.cells["en"]}
        )
    assert not os.path.exists(tmp_path / "moved")


def test_interrupted_extension_search_resumes_exactly(pipelines, space, corpora, tmp_path):
    _, new_bin, _ = corpora
    runs = pipelines(space)
    extend = SEARCH + ["--extend-from", os.path.join(runs["search"], "checkpoint_last.pt")]
    split = str(tmp_path / "split")
    run(space_args(space, new_bin, split, "en,de,fr", extend + ["--max-update", "4"]))  # mid-epoch
    proc = run(space_args(space, new_bin, split, "en,de,fr", extend + ["--max-epoch", "2"]))
    assert "restoring alpha optimizer" in proc.stdout + proc.stderr
    a = load_ckpt(os.path.join(runs["xsearch"], "checkpoint_last.pt"))
    b = load_ckpt(os.path.join(split, "checkpoint_last.pt"))
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in ("probs", "loss_estimates"):  # (estimates of never-drawn domains: NaN)
        sa, sb = a["task_state"]["domain_sampler"][key], b["task_state"]["domain_sampler"][key]
        assert torch.equal(sa.nan_to_num(-1.0), sb.nan_to_num(-1.0)), key
    assert a["task_state"]["domain_sampler"]["probs"].tolist() == [0.0, 0.0, 1.0]


# ------------------------------------------------------------------ bad inputs
def test_extension_into_the_old_runs_save_dir_is_refused(pipelines, corpora, tmp_path):
    """fairseq would resume from the old run's checkpoint_last.pt: refused, the dir left as it was."""
    runs = pipelines("rnn")
    old_dir = str(tmp_path / "search")
    shutil.copytree(runs["search"], old_dir)
    before = {f: os.path.getmtime(os.path.join(old_dir, f)) for f in os.listdir(old_dir)}
    extend = ["--max-epoch", "1", "--extend-from", os.path.join(old_dir, "checkpoint_best.pt")]
    proc = run(space_args("rnn", corpora[1], old_dir, "en,de,fr", extend), check=False)
    assert proc.returncode != 0 and "which is not an extension of it" in proc.stderr
    assert {f: os.path.getmtime(os.path.join(old_dir, f)) for f in os.listdir(old_dir)} == before


@pytest.fixture(scope="module")
def other_model_checkpoint(corpora, tmp_path_factory):
    """A checkpoint of fairseq's own transformer_lm (task language_modeling), one update."""
    old_bin = corpora[0]
    save = str(tmp_path_factory.mktemp("transformer_lm"))
    run(
        [
            os.path.join(BIN, "fairseq-train"),
            old_bin,
            "--task",
            "language_modeling",
            "--arch",
            "transformer_lm",
            "--decoder-layers",
            "1",
            "--decoder-embed-dim",
            "16",
            "--decoder-ffn-embed-dim",
            "16",
            "--decoder-attention-heads",
            "2",
            "--sample-break-mode",
            "eos",
            "--tokens-per-sample",
            "64",
            "--train-subset",
            "train.en",
            "--valid-subset",
            "valid.en",
            "--optimizer",
            "adam",
            "--lr",
            "0.001",
            "--batch-size",
            "8",
            "--max-update",
            "1",
            "--cpu",
            "--save-dir",
            save,
            "--no-epoch-checkpoints",
            "--num-workers",
            "0",
        ]
    )
    return os.path.join(save, "checkpoint_last.pt")


def _reordered_dictionary(new_bin, out_dir):
    """The new data-bin with two of the old dictionary's entries swapped (same size, same symbols)."""
    shutil.copytree(new_bin, out_dir)
    path = os.path.join(out_dir, "dict.txt")
    lines = open(path, encoding="utf-8").read().splitlines(keepends=True)
    lines[10], lines[11] = lines[11], lines[10]
    open(path, "w", encoding="utf-8").write("".join(lines))
    return out_dir


BAD = {
    "domains out of order": (
        "search",
        "en,fr,de",
        [],
        "must list the checkpoint's domains en,de first",
    ),
    "domain already there": ("search", "en,de,en", [], "lists a domain twice"),
    "no new domain": ("search", "en,de", [], "adds no domain"),
    "dictionary not the old one appended": (
        "search",
        "en,de,fr",
        [],
        "does not start with the checkpoint's dictionary",
    ),
    "genotype changes an old domain": (
        "retrain",
        "en,de,fr",
        ["changed"],
        "changes the architecture of old domain 'en'",
    ),
    "not a torch file": ("dict", "en,de,fr", [], "not a checkpoint"),
    "another fairseq model": ("other", "en,de,fr", [], "not of a language model of this plugin"),
    "search checkpoint for a retrain": ("search", "en,de,fr", ["own"], "a search checkpoint"),
    "multimodel checkpoint for a search": (
        "retrain",
        "en,de,fr",
        [],
        "retrained multimodel's checkpoint",
    ),
    "another search space": (
        "search",
        "en,de,fr",
        ["transformer"],
        "a mdnas_rnn checkpoint; this run builds mdnas_transformer_lm",
    ),
    "init from a new domain": (
        "search",
        "en,de,fr",
        ["init fr"],
        "--extend-init-from fr: not one of",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_named_and_nothing_is_written(
    case, pipelines, corpora, other_model_checkpoint, tmp_path
):
    source, domains, flags, message = BAD[case]
    old_bin, new_bin, _ = corpora
    runs = pipelines("rnn")
    checkpoint = {
        "search": os.path.join(runs["search"], "checkpoint_last.pt"),
        "retrain": os.path.join(runs["retrain"], "checkpoint_last.pt"),
        "dict": os.path.join(new_bin, "dict.txt"),
        "other": other_model_checkpoint,
    }[source]
    data = new_bin
    if case == "dictionary not the old one appended":
        data = _reordered_dictionary(new_bin, str(tmp_path / "reordered"))
    extra = ["--max-epoch", "1", "--extend-from", checkpoint]
    if "changed" in flags:
        extra += [
            "--genotype",
            with_changed_cell(runs["own_genotype"], str(tmp_path / "changed.json")),
        ]
    if "own" in flags:
        extra += ["--genotype", runs["own_genotype"]]
    if "init fr" in flags:
        extra += ["--extend-init-from", "fr"]
    space = "transformer" if "transformer" in flags else "rnn"
    save = str(tmp_path / "save")
    proc = run(space_args(space, data, save, domains, extra), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    written = os.listdir(save) if os.path.isdir(save) else []
    assert written == [], written
