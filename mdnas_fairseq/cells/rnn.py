"""The DARTS recurrent cell and a recurrent language model built on it (pure PyTorch).

Cell (DARTS, Liu et al. 2019, section 2 / appendix): with input ``x_t`` and previous state
``h_{t-1}``

    [c_0, g_0] = [x_t, h_{t-1}] W_0
    s_0 = h_{t-1} + sigmoid(c_0) * (tanh(g_0) - h_{t-1})

and every node ``j = 1..N`` applies highway-style operations to earlier states ``s_i``:

    [c, g] = s_i W_{j,k}
    op_k(s_i) = s_i + sigmoid(c) * (act_k(g) - s_i)        act_k in {tanh, relu, sigmoid, identity}

(``none`` contributes zero). The cell output is ``h_t = mean(s_1 .. s_N)``.

Each candidate operation of a node has its own weight matrix ``W_{j,k}`` (as in the authors'
later code), so a derived multimodel holds one matrix per distinct (node, operation) that some
domain chose: its size depends on how much the domains agree.

* Search mode: node ``j`` mixes every (input ``i``, operation ``k``) with softmax(alpha_d)
  weights; all candidates of a node are computed with one batched matrix product; as in DARTS'
  search cell, the first state and each node's sum are normalised (LayerNorm without affine
  parameters, where DARTS used BatchNorm: see ``DartsRNNCell.__init__``); the derived cell keeps
  the same parameter-free normalisation.
* Derived mode: a :class:`MultiDomainGenotype` fixes for every domain one (input, operation)
  per node; a domain's forward pass only touches its own operations' matrices.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..search import (
    search_architecture,
    GenotypeEdge,
    MultiDomainGenotype,
    ParamTable,
    SearchSpace,
    darts_rnn_space,
)

ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}


def _init_uniform(t: Tensor, bound: float = 0.04) -> Tensor:
    """DARTS initialises the recurrent matrices uniformly in [-0.04, 0.04]."""
    with torch.no_grad():
        return t.uniform_(-bound, bound)


def rnn_share_key(edge: GenotypeEdge):
    """Recurrent-cell modules are one matrix per (node, operation), whatever the input state."""
    return (edge.node, edge.op)


class DartsRNNCell(nn.Module):
    """One DARTS recurrent cell over a whole sequence.

    Args:
        input_size, hidden_size: sizes of ``x_t`` and ``h_t``.
        space: a recurrent search space (``darts_rnn_space(num_nodes)``).
        genotype: None for search mode; otherwise the derived multimodel's genotype.
        dropout_x, dropout_h: variational (per-sequence) dropout on the inputs and on the states
            entering the node matrices, active in training mode.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        space: Optional[SearchSpace] = None,
        genotype: Optional[MultiDomainGenotype] = None,
        dropout_x: float = 0.0,
        dropout_h: float = 0.0,
    ):
        super().__init__()
        self.space = space or (genotype.space if genotype is not None else darts_rnn_space())
        if self.space.num_input_nodes != 1 or self.space.edges_per_node != 1:
            raise ValueError(f"the recurrent cell needs a space with one input and one edge per node, got {self.space}")
        unknown = [op for op in self.space.operations if op != self.space.none_op and op not in ACTIVATIONS]
        if unknown:
            raise ValueError(f"recurrent cell: unknown operations {unknown}; known: {sorted(ACTIVATIONS)}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.dropout_x, self.dropout_h = dropout_x, dropout_h
        self.genotype = genotype
        self.w0 = nn.Parameter(_init_uniform(torch.empty(input_size + hidden_size, 2 * hidden_size)))
        # operations with weights, in the order of the alpha axis without `none`
        self.weighted_ops = [op for op in self.space.operations if op != self.space.none_op]
        self.weighted_op_index = [self.space.op_index(op) for op in self.weighted_ops]
        # A search node sums the mixed operations of all its incoming edges, so without
        # normalisation the state grows with every node and time step. DARTS' search cell
        # batch-normalises (no affine parameters); here every sentence starts from the same
        # state (<eos>, h = 0), which makes batch statistics degenerate (zero variance, huge
        # gradients) at the first step, so each state is layer-normalised per sample instead.
        # The derived cell keeps the same normalisation (no parameters), so it computes the
        # function that was searched, and its unbounded relu/identity highways stay stable.
        self.node_norms = nn.ModuleList(
            [nn.LayerNorm(hidden_size, elementwise_affine=False) for _ in range(self.space.num_states)]
        )
        if genotype is None:
            k = len(self.weighted_ops)
            self.node_weights = nn.ParameterList(
                [nn.Parameter(_init_uniform(torch.empty(k, hidden_size, 2 * hidden_size))) for _ in self.space.node_ids]
            )
        else:
            if genotype.space != self.space:
                raise ValueError("genotype search space differs from the cell's search space")
            self.op_weights = nn.ParameterDict(
                {
                    self._module_name(e): nn.Parameter(_init_uniform(torch.empty(hidden_size, 2 * hidden_size)))
                    for e in genotype.union_edges()
                }
            )
            # per cell: node -> (input, op)
            self.choices: Dict[str, Dict[int, Tuple[int, str]]] = {
                d: {e.node: (e.input, e.op) for e in genotype.cells[d]} for d in genotype.domains
            }

    @staticmethod
    def _module_name(edge: GenotypeEdge) -> str:
        return f"node{edge.node}_{edge.op}"

    @property
    def is_search(self) -> bool:
        return self.genotype is None

    # ------------------------------------------------------------------ pieces
    def _masks(self, batch: int, device, dtype) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        def mask(p, size):
            if not self.training or p <= 0:
                return None
            return torch.empty(batch, size, device=device, dtype=dtype).bernoulli_(1 - p) / (1 - p)

        return mask(self.dropout_x, self.input_size), mask(self.dropout_h, self.hidden_size)

    def _first_state(self, x: Tensor, h: Tensor, mask_x, mask_h) -> Tensor:
        if mask_x is not None:
            x = x * mask_x
        hm = h * mask_h if mask_h is not None else h
        c0, g0 = torch.cat([x, hm], dim=-1).matmul(self.w0).chunk(2, dim=-1)
        return h + torch.sigmoid(c0) * (torch.tanh(g0) - h)

    def _search_step(self, x: Tensor, h: Tensor, weights: Tensor, mask_x, mask_h) -> Tensor:
        """One time step of the mixed cell. ``weights``: (E, K) or (B, E, K)."""
        states = [self.node_norms[0](self._first_state(x, h, mask_x, mask_h))]
        hidden = self.hidden_size
        for n, j in enumerate(self.space.node_ids):
            s = torch.stack(states, dim=0)  # (j, B, H)
            s_in = s * mask_h if mask_h is not None else s
            # all candidate matrices of node j at once: (j, 1, B, H) @ (K', H, 2H) -> (j, K', B, 2H)
            ch = torch.matmul(s_in.unsqueeze(1), self.node_weights[n])
            c, g = torch.sigmoid(ch[..., :hidden]), ch[..., hidden:]
            acts = torch.stack([ACTIVATIONS[op](g[:, k]) for k, op in enumerate(self.weighted_ops)], dim=1)
            s_ = s.unsqueeze(1)
            out = s_ + c * (acts - s_)  # (j, K', B, H)
            w = weights[..., self.space.node_edge_slice(j), :][..., self.weighted_op_index]
            if w.dim() == 2:  # one architecture for the whole batch: (j, K')
                mixed = torch.einsum("ikbh,ik->bh", out, w)
            else:  # one per sample: (B, j, K')
                mixed = torch.einsum("ikbh,bik->bh", out, w)
            states.append(self.node_norms[j](mixed))
        return torch.stack(states[1:], dim=0).mean(dim=0)

    def _derived_step(self, x: Tensor, h: Tensor, cell: str, mask_x, mask_h) -> Tensor:
        states = [self.node_norms[0](self._first_state(x, h, mask_x, mask_h))]
        hidden = self.hidden_size
        for j in self.space.node_ids:
            i, op = self.choices[cell][j]
            s = states[i]
            s_in = s * mask_h if mask_h is not None else s
            ch = s_in.matmul(self.op_weights[f"node{j}_{op}"])
            c, g = torch.sigmoid(ch[..., :hidden]), ch[..., hidden:]
            states.append(self.node_norms[j](s + c * (ACTIVATIONS[op](g) - s)))
        return torch.stack(states[1:], dim=0).mean(dim=0)

    # ------------------------------------------------------------------ sequences
    def forward(
        self,
        inputs: Tensor,
        h0: Optional[Tensor] = None,
        mixing_weights: Optional[Tensor] = None,
        cells: Optional[Sequence[str]] = None,
    ) -> Tensor:
        """Run the cell over ``inputs`` (T, B, input_size); returns all states (T, B, H).

        Search mode needs ``mixing_weights`` ((E, K) or (B, E, K)); derived mode needs
        ``cells``, the genotype cell name of every sample (length B).
        """
        steps, batch, _ = inputs.shape
        h = h0 if h0 is not None else inputs.new_zeros(batch, self.hidden_size)
        mask_x, mask_h = self._masks(batch, inputs.device, inputs.dtype)
        outputs = []
        if self.is_search:
            if mixing_weights is None:
                raise ValueError("a search-mode cell needs mixing weights")
            for t in range(steps):
                h = self._search_step(inputs[t], h, mixing_weights, mask_x, mask_h)
                outputs.append(h)
            return torch.stack(outputs, dim=0)
        if cells is None or len(cells) != batch:
            raise ValueError("a derived-mode cell needs the cell name of every sample")
        unique = sorted(set(cells))
        if len(unique) == 1:
            for t in range(steps):
                h = self._derived_step(inputs[t], h, unique[0], mask_x, mask_h)
                outputs.append(h)
            return torch.stack(outputs, dim=0)
        # several domains in one batch: run each domain's samples through its own cell
        result = inputs.new_zeros(steps, batch, self.hidden_size)
        for cell in unique:
            idx = torch.tensor([b for b, c in enumerate(cells) if c == cell], device=inputs.device)
            sub_mask_x = mask_x[idx] if mask_x is not None else None
            sub_mask_h = mask_h[idx] if mask_h is not None else None
            hc = h[idx]
            for t in range(steps):
                hc = self._derived_step(inputs[t, idx], hc, cell, sub_mask_x, sub_mask_h)
                result[t, idx] = hc
        return result

    # ------------------------------------------------------------------ sizes
    def op_param_count(self, edge: GenotypeEdge) -> int:
        """Parameters of one (node, operation) module."""
        return self.hidden_size * 2 * self.hidden_size

    def shared_param_count(self) -> int:
        return self.w0.numel()


class DartsRNNLanguageModel(nn.Module):
    """Sentence-level recurrent LM over one DARTS cell, one architecture per domain.

    Args:
        vocab_size, padding_idx: the (shared) dictionary.
        embed_dim, hidden_dim: sizes; equal, since input and output embeddings are tied.
        domains: the data domains, in the order of the domain indices fed to :meth:`forward`.
        num_nodes: intermediate nodes of the cell (DARTS: 8).
        genotype: None to search; a genotype to build the derived (concordant) multimodel.
        shared_architecture: one architecture for all domains (the "single model on the union"
            baseline): alpha has one row / the genotype has one cell, named ``"+".join(domains)``.
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
    ):
        super().__init__()
        if embed_dim != hidden_dim:
            raise ValueError(f"tied embeddings need embed_dim == hidden_dim, got {embed_dim} and {hidden_dim}")
        self.domains = list(domains)
        self.architecture_names = ["+".join(self.domains)] if shared_architecture else list(self.domains)
        self.space = darts_rnn_space(num_nodes)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size))
        # Every sentence starts from this learned state. A zero start state with a dropped (zero)
        # first embedding makes every state of the first step exactly 0: the parameter-free
        # LayerNorm then multiplies gradients by 1/sqrt(eps) per node (an fp16 overflow, and
        # huge gradients in fp32).
        self.initial_state = nn.Parameter(torch.empty(hidden_dim).uniform_(-1.0, 1.0))
        self.dropout, self.dropout_emb = dropout, dropout_emb
        self.temperature, self.gumbel = 1.0, False
        self.arch = search_architecture(genotype, self.space, self.architecture_names, alpha_init_scale)
        self.cell = DartsRNNCell(embed_dim, hidden_dim, self.space, genotype, dropout_x, dropout_h)
        rows = [0] * len(self.domains) if shared_architecture else list(range(len(self.domains)))
        self.architecture_rows = rows  # host copy: domain index -> architecture row
        self.register_buffer("domain_to_architecture", torch.tensor(rows, dtype=torch.long), persistent=False)

    @property
    def is_search(self) -> bool:
        return self.arch is not None

    def _embed(self, tokens: Tensor) -> Tensor:
        """Input embeddings; in training, DARTS' embedding dropout drops whole word types (rows of the
        input embedding matrix, one mask per batch; the tied output projection is not masked)."""
        weight = self.embedding.weight
        if self.training and self.dropout_emb > 0:
            keep = torch.empty(weight.shape[0], 1, device=weight.device, dtype=weight.dtype)
            weight = weight * (keep.bernoulli_(1 - self.dropout_emb) / (1 - self.dropout_emb))
        return F.embedding(tokens, weight, self.embedding.padding_idx)

    def forward(self, tokens: Tensor, domain: Tensor, batch_domain: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """``tokens`` (B, T), ``domain`` (B,) domain indices -> (logits (B, T, V), states (B, T, H)).

        ``batch_domain``: the single domain of the whole batch when the caller knows it on the host
        (the tasks' batches always hold one domain): then nothing is read back from the device.
        """
        x = self._embed(tokens).transpose(0, 1)  # (T, B, E)
        h0 = self.initial_state.expand(tokens.shape[0], -1)
        if batch_domain is not None:
            if not 0 <= batch_domain < len(self.domains):
                raise IndexError(f"domain {batch_domain} out of range for domains {self.domains}")
            row = self.architecture_rows[batch_domain]
            if self.is_search:
                weights = self.arch.mixing_weights(row, temperature=self.temperature, gumbel=self.gumbel)
                states = self.cell(x, h0, mixing_weights=weights.to(x.dtype))
            else:
                states = self.cell(x, h0, cells=[self.architecture_names[row]] * tokens.shape[0])
        else:  # a batch mixing domains: per-sample architectures (reads the domains on the host)
            if domain.dim() == 0:
                domain = domain.expand(tokens.shape[0])
            if int(domain.min()) < 0 or int(domain.max()) >= len(self.domains):
                raise IndexError(f"domain index out of range for domains {self.domains}")
            rows = self.domain_to_architecture[domain]
            if self.is_search:
                weights = self.arch.mixing_weights(rows, temperature=self.temperature, gumbel=self.gumbel)
                states = self.cell(x, h0, mixing_weights=weights.to(x.dtype))
            else:
                states = self.cell(x, h0, cells=[self.architecture_names[r] for r in rows.tolist()])
        states = states.transpose(0, 1)  # (B, T, H)
        out = F.dropout(states, self.dropout, self.training)
        logits = F.linear(out, self.embedding.weight, self.output_bias)
        return logits, states

    # ------------------------------------------------------------------ sizes
    def shared_param_count(self) -> int:
        return (self.embedding.weight.numel() + self.output_bias.numel() + self.initial_state.numel()
                + self.cell.shared_param_count())

    def param_table(self) -> ParamTable:
        """Parameter counts of this network's modules: one matrix per (node, operation) whatever the
        input (:func:`rnn_share_key`), plus embeddings, output bias and the first matrix."""
        rows = [
            [0 if op == self.space.none_op else self.cell.op_param_count(GenotypeEdge(node=j, input=i, op=op))
             for op in self.space.operations]
            for i, j in self.space.edges
        ]
        return ParamTable(self.space, rows, "node", self.shared_param_count())

    def genotype_param_count(self, genotype: MultiDomainGenotype, cells: Optional[Sequence[str]] = None) -> int:
        """Parameters of the multimodel built from ``genotype`` (or of the model of some ``cells``)."""
        return self.param_table().multimodel_count(genotype, cells)
