"""A recurrent language model over the DARTS cell, one architecture per domain (pure PyTorch).

The cell itself (its equations, search and derived modes, speed) is :mod:`.rnn_cell`; this module
re-exports it, so ``from mdnas_fairseq.cells.rnn import DartsRNNCell`` keeps working.
"""

from __future__ import annotations

import uuid
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..search import GenotypeEdge, MultiDomainGenotype, ParamTable, darts_rnn_space
from .network import MultiDomainNetwork
from .rnn_cell import ACTIVATIONS, SEARCH_WEIGHTS, DartsRNNCell, rnn_share_key
from .vocabulary import TiedVocabulary, VocabularyBlocks

__all__ = [
    "ACTIVATIONS",
    "SEARCH_WEIGHTS",
    "DartsRNNCell",
    "DartsRNNLanguageModel",
    "rnn_share_key",
]


class DartsRNNLanguageModel(TiedVocabulary, MultiDomainNetwork):
    """Sentence-level recurrent LM over one DARTS cell, one architecture per domain.

    Args:
        vocab_size, padding_idx: the (shared) dictionary.
        embed_dim, hidden_dim: sizes; equal, since input and output embeddings are tied.
        domains: the data domains, in the order of the domain indices fed to :meth:`forward`.
        num_nodes: intermediate nodes of the cell (DARTS: 8).
        genotype, shared_architecture, alpha_init_scale: see :class:`MultiDomainNetwork`.
        compile_cell: the cell's ``compile`` mode (``"auto"``, ``"on"``, ``"off"``).
        search_weights: the search cell's weight layout, ``"op"`` or ``"node"`` (DARTS'; see
            :mod:`.rnn_cell`); the derived multimodel has one matrix per chosen (node, operation)
            either way.
        appended_vocabulary: (entries, first domain) of the dictionary blocks extensions appended
            (:mod:`.vocabulary`); ``vocab_size`` counts them.
        frozen_architectures: see :class:`MultiDomainNetwork`.

    Incremental decoding (fairseq's generation): ``forward(..., incremental_state=state)`` with a
    dict ``state`` runs the cell from the recurrent state kept in ``state`` over the tokens it has
    not seen (all of ``tokens`` the first time, the last one afterwards), and keeps the new last
    state there; :meth:`reorder_incremental_state` follows the beams. A step is the full pass's
    computation from that state, so it gives the full pass's scores (tested).
    """

    def __init__(
        self,
        vocab_size: int,
        padding_idx: int,
        embed_dim: int,
        hidden_dim: int,
        domains: Sequence[str],
        num_nodes: int = 8,
        genotype: Optional[MultiDomainGenotype] = None,
        shared_architecture: bool = False,
        dropout: float = 0.0,
        dropout_emb: float = 0.0,
        dropout_x: float = 0.0,
        dropout_h: float = 0.0,
        alpha_init_scale: float = 1e-3,
        compile_cell: str = "auto",
        search_weights: str = "op",
        appended_vocabulary: VocabularyBlocks = (),
        frozen_architectures: int = 0,
    ):
        if embed_dim != hidden_dim:
            raise ValueError(
                f"tied embeddings need embed_dim == hidden_dim, got {embed_dim} and {hidden_dim}"
            )
        super().__init__(
            domains,
            darts_rnn_space(num_nodes),
            genotype,
            shared_architecture,
            alpha_init_scale,
            frozen_architectures,
        )
        base = self.base_vocabulary_size(vocab_size, appended_vocabulary)
        self.embedding = nn.Embedding(base, embed_dim, padding_idx=padding_idx)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        self.output_bias = nn.Parameter(torch.zeros(base))
        self.init_appended_vocabulary(
            embed_dim, appended_vocabulary, True, lambda w: nn.init.uniform_(w, -0.1, 0.1)
        )
        # Every sentence starts from this learned state. A zero start state with a dropped (zero)
        # first embedding makes every state of the first step exactly 0: the parameter-free
        # LayerNorm then multiplies gradients by 1/sqrt(eps) per node (an fp16 overflow, and
        # huge gradients in fp32).
        self.initial_state = nn.Parameter(torch.empty(hidden_dim).uniform_(-1.0, 1.0))
        self.dropout, self.dropout_emb = dropout, dropout_emb
        self.cell = DartsRNNCell(
            embed_dim,
            hidden_dim,
            self.space,
            genotype,
            dropout_x,
            dropout_h,
            compile_cell,
            search_weights,
        )
        # this network's entry in an incremental state (fairseq's convention: one key per module)
        self.incremental_state_key = f"{uuid.uuid4()}.rnn_state"

    def _embed(self, tokens: Tensor) -> Tensor:
        """Input embeddings; in training, DARTS' embedding dropout drops whole word types (rows of the
        input embedding matrix, one mask per batch; the tied output projection is not masked)."""
        weight = self.vocabulary_weight()
        if self.training and self.dropout_emb > 0:
            keep = torch.empty(weight.shape[0], 1, device=weight.device, dtype=weight.dtype)
            weight = weight * (keep.bernoulli_(1 - self.dropout_emb) / (1 - self.dropout_emb))
        return F.embedding(tokens, weight, self.embedding.padding_idx)

    def forward(
        self,
        tokens: Tensor,
        domain: Tensor,
        batch_domain: Optional[int] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
    ) -> Tuple[Tensor, Tensor]:
        """``tokens`` (B, T), ``domain`` (B,) domain indices -> (logits (B, T, V), states (B, T, H)).

        ``batch_domain``: the single domain of the whole batch, known on the host (see :meth:`route`).
        ``incremental_state``: decode incrementally (class docstring); the outputs are those of the
        positions not seen before (the last one after the first call).
        """
        saved = None
        if incremental_state is not None:
            saved = incremental_state.get(self.incremental_state_key)
            if saved is not None:
                tokens = tokens[:, -1:]
        x = self._embed(tokens).transpose(0, 1)  # (T, B, E)
        h0 = self.initial_state.expand(tokens.shape[0], -1) if saved is None else saved["h"]
        states = self.cell(x, h0, **self.route(domain, batch_domain, tokens.shape[0], x.dtype))
        if incremental_state is not None:
            incremental_state[self.incremental_state_key] = {"h": states[-1]}
        states = states.transpose(0, 1)  # (B, T, H)
        out = F.dropout(states, self.dropout, self.training)
        return self.output_logits(out, domain, batch_domain), states

    def reorder_incremental_state(
        self, incremental_state: Dict[str, Dict[str, Optional[Tensor]]], new_order: Tensor
    ) -> None:
        """Beam search: keep the recurrent state of the hypotheses ``new_order`` (fairseq calls it)."""
        saved = incremental_state.get(self.incremental_state_key)
        if saved is not None:
            incremental_state[self.incremental_state_key] = {
                "h": saved["h"].index_select(0, new_order)
            }

    # ------------------------------------------------------------------ sizes
    def shared_param_count(self) -> int:
        return (
            self.vocabulary_param_count()
            + self.initial_state.numel()
            + self.cell.shared_param_count()
        )

    def param_table(self) -> ParamTable:
        """Parameter counts of this network's modules: one matrix per (node, operation) whatever the
        input (:func:`rnn_share_key`), plus embeddings, output bias and the first matrix."""
        rows = [
            [
                0
                if op == self.space.none_op
                else self.cell.op_param_count(GenotypeEdge(node=j, input=i, op=op))
                for op in self.space.operations
            ]
            for i, j in self.space.edges
        ]
        return ParamTable(self.space, rows, "node", self.shared_param_count())
