"""The LM pipeline's parameter column: a model's parameters, each tensor once.

fairseq's ``transformer_lm`` with ``--share-decoder-input-output-embed`` lists the tied embedding
twice in its state dict (``embed_tokens.weight`` and ``output_projection.weight``), plus buffers; the
pipeline once summed the state dict and reported 481,921 parameters for a 290,944-parameter model.
"""

import os

import torch

from tests.helpers.fairseq_runs import build_from_argv, load_script, run, train_args

DIM, VOCAB_MIN = 16, 100


def test_pipeline_counts_a_tied_transformer_lm_once(tiny_corpus, tmp_path):
    data = tiny_corpus()
    save = str(tmp_path / "tlm")
    sizes = ["--decoder-layers", "1", "--decoder-embed-dim", str(DIM)]
    sizes += ["--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2"]
    sizes += ["--decoder-input-dim", str(DIM), "--decoder-output-dim", str(DIM)]
    sizes += ["--share-decoder-input-output-embed"]
    argv = train_args(data, save, arch="transformer_lm", sizes=sizes, extra=["--max-update", "1"])
    run(argv)
    checkpoint = os.path.join(save, "checkpoint_last.pt")
    # second path: the same model built in this process from the same arguments
    _task, model, _criterion, _optimizer = build_from_argv(argv[1:])
    expected = sum(p.numel() for p in model.parameters())
    vocab = model.decoder.embed_tokens.weight.shape[0]
    assert vocab >= VOCAB_MIN
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    naive = sum(v.numel() for v in state.values())
    assert naive >= expected + vocab * DIM  # the state dict holds the tied matrix twice
    assert load_script("lm_pipeline").count_parameters(checkpoint) == expected
