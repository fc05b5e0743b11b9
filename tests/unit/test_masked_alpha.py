"""Operations a slot does not allow stay out of the search (issue 23, defect 4): the alpha optimizer's
weight decay cannot move their stored entries, and every reader of alpha (mixing, the JS regularizer,
the logged entropy / margin / JS, genotype.json's alpha, alpha_history, heatmaps) sees them at
-inf (probability exactly 0) whatever is stored there, old checkpoints included."""

import json
import os
import types

import pytest
import torch
from fairseq.data import Dictionary

import mdnas_fairseq  # noqa: F401
import mdnas_fairseq.viz.heatmap as heatmap
from mdnas_fairseq import log_schema
from mdnas_fairseq.criterions.multidomain_nas_loss import MultiDomainNASLoss
from mdnas_fairseq.models.mdnas_transformer_lm import MDNASTransformerConfig, MDNASTransformerModel
from mdnas_fairseq.search import (
    MASKED_LOGIT,
    BilevelArchitect,
    architecture_logits,
    architecture_parameters,
    decisiveness,
    derive_genotype,
    js_structural_loss,
    weight_parameters,
)
from mdnas_fairseq.tasks.bilevel.outputs import write_search_outputs
from mdnas_fairseq.tasks.bilevel.step import search_statistics

DOMAINS = ["en", "de"]


def build_model(seed=0):
    torch.manual_seed(seed)
    cfg = MDNASTransformerConfig(
        decoder_layers=2,
        decoder_embed_dim=8,
        decoder_ffn_embed_dim=16,
        decoder_attention_heads=2,
        dropout=0.0,
    )
    cfg.max_update = 0
    d = Dictionary()
    for w in "the a cat dog sat on mat der die das katze hund".split():
        d.add_symbol(w)
    task = types.SimpleNamespace(domain_names=DOMAINS, source_dictionary=d)
    return MDNASTransformerModel.build_model(cfg, task), len(d)


def mask_of(model):
    return torch.tensor(model.search_space.allowed_mask())


def reference_logits(model):
    """alpha with the disallowed entries at -inf: what every reader must see."""
    return (
        architecture_parameters(model)[0].detach().double().masked_fill(~mask_of(model), -torch.inf)
    )


def reference_js(model):
    """The JS regularizer over the allowed operations of each slot alone (no masked entry at all)."""
    alpha, mask = architecture_parameters(model)[0].detach().double(), mask_of(model)
    return sum(js_structural_loss(alpha[:, e : e + 1, mask[e]]) for e in range(mask.shape[0]))


def what_the_readers_see(model, tmp_path, monkeypatch):
    """Every consumer of alpha: mixing, the criterion's JS, the search log record, genotype files, heatmaps."""
    seen = {"mixing": model.lm.alphas.mixing_probs().double()}
    seen["criterion_js"] = MultiDomainNASLoss.structural_loss(model).double()
    host = types.SimpleNamespace(
        search=types.SimpleNamespace(
            penalty=None, domain_sampler=types.SimpleNamespace(probs=torch.full((2,), 0.5))
        )
    )
    record = search_statistics(host, model, True, None, 0, 0)
    seen.update(
        {k: record[k].double() for k in (log_schema.JS, log_schema.ENTROPY, log_schema.MARGIN)}
    )
    captured = {}
    monkeypatch.setattr(
        heatmap, "save_alpha_heatmaps", lambda probs, *a, **k: captured.setdefault("probs", probs)
    )
    path = write_search_outputs(model, str(tmp_path), 1, {}, heatmaps=True)
    with open(path) as f:
        saved = json.load(f)
    seen["genotype_alpha"] = torch.tensor([saved["alpha"][d] for d in DOMAINS], dtype=torch.float64)
    with open(os.path.join(tmp_path, "alpha_history.jsonl")) as f:
        history = json.loads(f.readline())["alpha"]
    seen["history_alpha"] = torch.tensor([history[d] for d in DOMAINS], dtype=torch.float64)
    seen["heatmap"] = captured["probs"].double()
    seen["cells"] = saved["cells"]
    return seen


def assert_readers_see_minus_inf(model, tmp_path, monkeypatch):
    seen = what_the_readers_see(model, tmp_path, monkeypatch)
    mask, logits = mask_of(model), reference_logits(model)
    probs = torch.softmax(logits, -1)
    assert torch.all(probs[:, ~mask] == 0)
    for key in ("mixing", "genotype_alpha", "history_alpha", "heatmap"):
        assert torch.all(seen[key][:, ~mask] == 0), key  # exactly 0, not merely small
        assert torch.allclose(seen[key], probs, rtol=0, atol=1e-6), key
    js = reference_js(model)
    assert torch.allclose(seen["criterion_js"], js, rtol=1e-4, atol=1e-7)  # computed in fp32
    assert torch.allclose(seen[log_schema.JS], js, rtol=1e-9, atol=1e-12)
    entropy, margin = decisiveness(probs, model.search_space)
    assert torch.allclose(seen[log_schema.ENTROPY], entropy, rtol=1e-9, atol=1e-12)
    assert torch.allclose(seen[log_schema.MARGIN], margin, rtol=1e-9, atol=1e-12)
    expected_cells = derive_genotype(logits, model.search_space, DOMAINS).to_dict()["cells"]
    assert seen["cells"] == expected_cells


def test_weight_decay_leaves_disallowed_entries_fixed_and_unread(tmp_path, monkeypatch):
    """200 alpha steps of Adam with coupled weight decay at a large learning rate: the stored
    disallowed entries do not move by one bit, and every reader sees them at -inf. (Storing -1e4
    there, the decay moved them by ~lr per step.)"""
    model, vocab = build_model()
    mask = mask_of(model)
    alpha = architecture_parameters(model)[0]
    stored = alpha.detach().clone()
    architect = BilevelArchitect(
        weight_parameters(model), [alpha], order=1, lr=3.0, weight_decay=1e-3
    )
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, vocab, (4, 6), generator=gen)
    domain = torch.tensor([0, 1, 0, 1])

    def val_loss():
        logits = model(tokens, domain=domain)[0]
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, vocab), tokens[:, 1:].reshape(-1)
        )
        return ce + 0.5 * MultiDomainNASLoss.structural_loss(model)

    for _ in range(200):
        architect.step(val_loss, val_loss)
    assert torch.equal(alpha.detach()[:, ~mask], stored[:, ~mask])  # not moved at all
    assert (alpha.detach()[:, mask] - stored[:, mask]).abs().max() > 1.0  # the allowed ones did
    assert torch.all(architecture_logits(model)[0][:, ~mask] == MASKED_LOGIT)
    assert_readers_see_minus_inf(model, tmp_path, monkeypatch)


@pytest.mark.parametrize("stored_value", [0.0, 25.0, -3.0])
def test_readers_ignore_whatever_is_stored_at_disallowed_entries(
    stored_value, tmp_path, monkeypatch
):
    """A checkpoint whose disallowed entries drifted (or hold anything) reads as if they were -inf."""
    model, _ = build_model(seed=1)
    mask = mask_of(model)
    with torch.no_grad():
        alpha = architecture_parameters(model)[0]
        alpha.normal_(0.0, 2.0)
        alpha[:, ~mask] = stored_value
    assert_readers_see_minus_inf(model, tmp_path, monkeypatch)


def test_masked_entries_get_no_gradient_and_old_checkpoints_load(tmp_path, monkeypatch):
    model, _ = build_model(seed=2)
    mask = mask_of(model)
    with model.lm.alphas.trainable() as alpha:
        (
            MultiDomainNASLoss.structural_loss(model) + model.lm.alphas.mixing_probs()[..., 0].sum()
        ).backward()
        assert torch.all(alpha.grad[:, ~mask] == 0) and alpha.grad[:, mask].abs().sum() > 0
    # an older checkpoint stored MASKED_LOGIT at the disallowed entries: it loads, reads the same,
    # and its stored disallowed entries are reset to 0 (where weight decay has nothing to pull)
    state = model.state_dict()
    key = next(k for k in state if k.endswith("alphas.alpha"))
    old = state[key].clone()
    old[:, ~mask] = MASKED_LOGIT
    state[key] = old
    fresh, _ = build_model(seed=3)
    fresh.load_state_dict(state)
    loaded = architecture_parameters(fresh)[0].detach()
    assert torch.equal(loaded[:, mask], old[:, mask]) and torch.all(loaded[:, ~mask] == 0)
    assert torch.equal(architecture_logits(fresh)[0], old)
    assert_readers_see_minus_inf(fresh, tmp_path, monkeypatch)
