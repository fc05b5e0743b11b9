"""The DARTS recurrent cell (pure PyTorch); the language model over it is in :mod:`.rnn`.

Cell (DARTS, Liu et al. 2019, section 2 / appendix): with input ``x_t`` and previous state
``h_{t-1}``

    [c_0, g_0] = [x_t, h_{t-1}] W_0
    s_0 = h_{t-1} + sigmoid(c_0) * (tanh(g_0) - h_{t-1})

and every node ``j = 1..N`` applies highway-style operations to earlier states ``s_i``:

    [c, g] = s_i W_{j,k}
    op_k(s_i) = s_i + sigmoid(c) * (act_k(g) - s_i)        act_k in {tanh, relu, sigmoid, identity}

(``none`` contributes zero). The cell output is ``h_t = mean(s_1 .. s_N)``.

Where this cell differs from DARTS (quark0/darts, ``rnn/model_search.py`` and ``rnn/model.py``):

* Weights: the derived multimodel holds one matrix ``W_{j,k}`` per distinct (node, operation)
  that some domain chose (shared by the node's inputs and by the domains), so its size depends on
  how much the domains agree (the structural regularizer's point); DARTS' derived cell has one
  matrix per node. The search cell has two layouts (``search_weights``): ``"op"`` (the default),
  one matrix per (node, operation), each candidate its own product (``K'`` times DARTS' cost);
  ``"node"``, DARTS' own: ONE matrix ``W_j`` per node, shared by all candidate activations (and
  all domains), so the candidates differ only in the activation applied to the same
  pre-activation, ``[c, g] = s_i W_j``, ``op_k(s_i) = s_i + sigmoid(c) * (act_k(g) - s_i)``.
* Normalisation: LayerNorm without affine parameters where DARTS' search cell uses BatchNorm
  (also without affine parameters), and kept in the derived cell, which in DARTS has none.
* Initial state: learned (a vector of ``hidden`` parameters, see :mod:`.rnn`), DARTS starts at 0.

Everything else (the highway node, ``W_0`` on ``[x_t, h_{t-1}]``, the mean of the nodes' states
as output, variational dropout on ``x`` and ``h``, word-type embedding dropout) follows DARTS.

* Search mode: node ``j`` mixes every (input ``i``, operation ``k``) with softmax(alpha_d)
  weights; as in DARTS' search cell, the first state and each node's sum are normalised
  (LayerNorm without affine parameters, where DARTS used BatchNorm: see ``DartsRNNCell.__init__``);
  the derived cell keeps the same parameter-free normalisation.
* Derived mode: a :class:`MultiDomainGenotype` fixes for every domain one (input, operation)
  per node; a domain's forward pass only touches its own operations' matrices (a batch of several
  domains runs their chains together, one batched product per node: ``rnn_steps.domains_step``).

Speed (``rnn_steps``, ``compiled``): ``x_t W_0x`` for all steps in one matrix product before the
time loop, one matrix product per node for all its candidates and input states, in a derived cell
one per wave of nodes whose inputs are computed (batched edges, eager), and the per-step function
compiled with ``torch.compile`` where that pays (``compile="auto"``), else run eagerly.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ..search import GenotypeEdge, MultiDomainGenotype, SearchSpace, darts_rnn_space
from .compiled import CompiledStep, mark_batch_dynamic
from .deferred import DeferredWeightGrads
from .rnn_steps import (
    ACTIVATIONS,
    chain_waves,
    derived_step,
    domains_step,
    node_mixing_weights,
    search_step,
    wave_step,
)

__all__ = ["ACTIVATIONS", "SEARCH_WEIGHTS", "DartsRNNCell", "rnn_share_key"]

SEARCH_WEIGHTS = ("op", "node")  # the search cell's weight layouts, see the module docstring


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
        compile: ``"auto"`` (compile the per-step function with ``torch.compile`` once eager steps
            have cost as much as a compilation, see :mod:`.compiled`), ``"on"`` or ``"off"``.
        search_weights: search mode only: ``"op"``, one matrix per (node, operation), or
            ``"node"``, one per node shared by the candidate activations (DARTS).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        space: Optional[SearchSpace] = None,
        genotype: Optional[MultiDomainGenotype] = None,
        dropout_x: float = 0.0,
        dropout_h: float = 0.0,
        compile: str = "auto",
        search_weights: str = "op",
    ):
        super().__init__()
        if search_weights not in SEARCH_WEIGHTS:
            raise ValueError(
                f"search_weights must be one of {SEARCH_WEIGHTS}, got {search_weights!r}"
            )
        self.space = space or (genotype.space if genotype is not None else darts_rnn_space())
        if self.space.num_input_nodes != 1 or self.space.edges_per_node != 1:
            raise ValueError(
                f"the recurrent cell needs a space with one input and one edge per node, got {self.space}"
            )
        unknown = [
            op for op in self.space.operations if op != self.space.none_op and op not in ACTIVATIONS
        ]
        if unknown:
            raise ValueError(
                f"recurrent cell: unknown operations {unknown}; known: {sorted(ACTIVATIONS)}"
            )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.dropout_x, self.dropout_h = dropout_x, dropout_h
        self.genotype = genotype
        self.w0 = nn.Parameter(
            _init_uniform(torch.empty(input_size + hidden_size, 2 * hidden_size))
        )
        # operations with weights, in the order of the alpha axis without `none`
        self.weighted_ops = [op for op in self.space.operations if op != self.space.none_op]
        self.weighted_op_index = [self.space.op_index(op) for op in self.weighted_ops]
        # A search node sums the mixed operations of all its incoming edges, so without
        # normalisation the state grows with every node and time step. DARTS' search cell
        # batch-normalises (no affine parameters); here every sentence starts from the same
        # state (<eos>, h = 0), which makes batch statistics degenerate (zero variance, huge
        # gradients) at the first step, so each state is layer-normalised per sample instead
        # (F.layer_norm without parameters, eps 1e-5, in rnn_steps).
        # The derived cell keeps the same normalisation (no parameters), so it computes the
        # function that was searched, and its unbounded relu/identity highways stay stable.
        self.search_weights = search_weights if genotype is None else None
        if genotype is None:
            # "op": (K', H, 2H) per node; "node": (H, 2H) per node, shared by the K' activations
            k = (len(self.weighted_ops),) if search_weights == "op" else ()
            self.node_weights = nn.ParameterList(
                [
                    nn.Parameter(_init_uniform(torch.empty(*k, hidden_size, 2 * hidden_size)))
                    for _ in self.space.node_ids
                ]
            )
            self.steps = CompiledStep(search_step, "search", compile)
        else:
            if genotype.space != self.space:
                raise ValueError("genotype search space differs from the cell's search space")
            self.op_weights = nn.ParameterDict(
                {
                    self._module_name(e): nn.Parameter(
                        _init_uniform(torch.empty(hidden_size, 2 * hidden_size))
                    )
                    for e in genotype.union_edges()
                }
            )
            # per cell: node -> (input, op)
            self.choices: Dict[str, Dict[int, Tuple[int, str]]] = {
                d: {e.node: (e.input, e.op) for e in genotype.cells[d]} for d in genotype.domains
            }
            # compiled, a derived step was no faster than eager on CPU (a chain of small products;
            # results/speed/lm_search_speed_before_issue25.txt), so "auto" compiles it on CUDA only
            # eager, a one-domain batch runs its chain in waves of batched edges (wave_step; with
            # batch_edges False node by node, derived_step); compiled, the chain as tensors
            # (derived_step: one graph for every domain)
            self.steps = CompiledStep(derived_step, "derived", compile, eager_fn=wave_step)
            # a batch with several domains: their chains batched together (rnn_steps.domains_step)
            self.domain_steps = CompiledStep(domains_step, "derived several-domain", compile)
        self._chains: Dict[tuple, tuple] = {}  # chains as tensors, per (cell or cells, device)

    @staticmethod
    def _module_name(edge: GenotypeEdge) -> str:
        return f"node{edge.node}_{edge.op}"

    @property
    def batch_edges(self) -> bool:
        """Derived, eager: whether a one-domain batch runs its chain in waves of batched edges
        (:func:`wave_step`, the default) or node by node (:func:`derived_step`)."""
        return self.steps.eager_fn is wave_step

    @batch_edges.setter
    def batch_edges(self, on: bool) -> None:
        self.steps.eager_fn = wave_step if on else derived_step

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

    def _packed_node_weights(self) -> Tuple[Tensor, ...]:
        """Per node (H, K' * 2H): its K' candidate matrices side by side (one product per node); in
        the ``"node"`` layout the node's one (H, 2H) matrix."""
        if self.search_weights == "node":
            return tuple(self.node_weights)
        return tuple(w.permute(1, 0, 2).reshape(self.hidden_size, -1) for w in self.node_weights)

    def _chain(self, cell: str, device, as_tensors: bool):
        """A derived cell's matrices (N of (H, 2H)), input states and operation codes of its nodes."""
        choice = self.choices[cell]
        nodes = self.space.node_ids
        mats = tuple(self.op_weights[f"node{j}_{choice[j][1]}"] for j in nodes)
        inputs = tuple(choice[j][0] for j in nodes)
        codes = tuple(self.weighted_ops.index(choice[j][1]) for j in nodes)
        if not as_tensors:
            return mats, inputs, codes
        key = (cell, torch.device(device))
        if key not in self._chains:
            self._chains[key] = (
                torch.tensor(inputs, device=device),
                torch.tensor(codes, device=device),
            )
        return (mats,) + self._chains[key]

    def _run(
        self,
        xw: Tensor,
        h: Tensor,
        weights: Tuple[Tensor, ...],
        rest: tuple,
        product_rows: Sequence[int],
        batch_args: Sequence[Optional[Tensor]],
        steps: Optional[CompiledStep] = None,
    ) -> Tensor:
        """The time loop ``h_t = step(xw[t], h_{t-1}, W_0h, node matrices, *rest, probes)``; returns
        (T, B, H). ``weights`` = (W_0h, node matrices...), whose gradients are deferred to one
        product per matrix and sequence (:mod:`.deferred`); ``product_rows``: rows of each product
        (per domain for a stacked (D, H, 2H) matrix); ``steps``: the step (default :attr:`steps`)."""
        steps = steps or self.steps
        defer = None
        if DeferredWeightGrads.wanted(weights):
            shapes = [w.shape[:-2] + (rows, w.shape[-1]) for rows, w in zip(product_rows, weights)]
            defer = DeferredWeightGrads(weights, shapes)
            weights = defer.detached
        outputs: List[Tensor] = []
        with steps.sequence(self.training and torch.is_grad_enabled(), xw.device.type) as step:
            compiled = steps.active
            if compiled:
                # one graph for every step: the first state gets the others' layout (an expanded
                # initial state has stride 0, on which a graph specialises) and requires-grad pattern
                h = h.contiguous()
                if torch.is_grad_enabled() and not h.requires_grad:
                    h = h.detach().requires_grad_()
            for t, x_t in enumerate(xw.unbind(0)):  # unbind: one backward node, not one per step
                probes = defer.probes(t) if defer is not None else None
                if compiled and t == 0:  # a graph compiled now serves every batch size
                    mark_batch_dynamic(x_t, h, *batch_args, *(probes or ()))
                h, lefts = step(x_t, h, weights[0], weights[1:], *rest, probes)
                if defer is not None:
                    defer.record(t, lefts)
                outputs.append(h)
        return torch.stack(outputs, dim=0)

    # ------------------------------------------------------------------ sequences
    def forward(
        self,
        inputs: Tensor,
        h0: Optional[Tensor] = None,
        mixing_probs: Optional[Tensor] = None,
        cells: Optional[Sequence[str]] = None,
    ) -> Tensor:
        """Run the cell over ``inputs`` (T, B, input_size); returns all states (T, B, H).

        Search mode needs ``mixing_probs`` ((E, K) or (B, E, K)); derived mode needs
        ``cells``, the genotype cell name of every sample (length B).
        """
        steps, batch, _ = inputs.shape
        h = h0 if h0 is not None else inputs.new_zeros(batch, self.hidden_size)
        mask_x, mask_h = self._masks(batch, inputs.device, inputs.dtype)
        x = inputs if mask_x is None else inputs * mask_x
        # the input half of the first projection for every step at once
        xw = torch.matmul(x, self.w0[: self.input_size])  # (T, B, 2H)
        w0h = self.w0[self.input_size :]
        if self.is_search:
            if mixing_probs is None:
                raise ValueError("a search-mode cell needs mixing probabilities")
            # softmax(alpha) may be fp32 while the cell runs in fp16
            mix = mixing_probs[..., self.weighted_op_index].to(inputs.dtype)
            if (
                torch.is_grad_enabled()
                and not mix.requires_grad
                and self.steps.prepare(xw.device.type)
            ):
                # the weight step (alpha fixed) then has the alpha step's requires-grad pattern:
                # one compiled graph for both; the unused alpha gradient costs a few reductions
                mix = mix.detach().requires_grad_()
            rows = [batch] + [j * batch for j in range(1, self.space.num_nodes + 1)]
            if self.search_weights == "node":  # per-node factors, made once per sequence
                mix = node_mixing_weights(mix, self.space.num_nodes)
            return self._run(
                xw,
                h,
                (w0h,) + self._packed_node_weights(),
                (mix, mask_h, tuple(self.weighted_ops)),
                rows,
                (mask_h, *(m for m in mix if m.shape[1] > 1))
                if isinstance(mix, tuple)
                else (mask_h, mix if mix.dim() == 3 else None),
            )
        if cells is None or len(cells) != batch:
            raise ValueError("a derived-mode cell needs the cell name of every sample")
        unknown = sorted(set(cells) - set(self.choices))
        if unknown:
            raise KeyError(
                f"derived cell: unknown cell names {unknown}; the genotype has {sorted(self.choices)}"
            )
        ops = tuple(self.weighted_ops)
        unique = sorted(set(cells))
        if len(unique) > 1:  # several domains in one batch: all chains at once, grouped by domain
            return self._run_domains(xw, h, w0h, mask_h, cells, unique, ops)
        # a compiled step takes the chain as tensors
        as_tensors = self.steps.prepare(inputs.device.type)
        if not as_tensors and self.batch_edges:
            mats, waves = self._wave_chain(unique[0])
            rows = [batch] * (len(waves) + 1)
            return self._run(xw, h, (w0h,) + mats, (waves, mask_h, ops), rows, (mask_h,))
        mats, chain_in, codes = self._chain(unique[0], inputs.device, as_tensors)
        rows = [batch] * (self.space.num_nodes + 1)
        return self._run(xw, h, (w0h,) + mats, (chain_in, codes, mask_h, ops), rows, (mask_h,))

    def _wave_chain(self, cell: str):
        """A derived cell's chain in waves (:func:`chain_waves`) and each wave's matrix: its nodes'
        (H, 2H) matrices side by side when they read one state, else stacked (m, H, 2H)."""
        mats, inputs, codes = self._chain(cell, None, as_tensors=False)
        key = ("waves", cell)
        if key not in self._chains:
            self._chains[key] = chain_waves(inputs, codes)
        waves = self._chains[key]
        wave_mats = []
        for nodes, ins, _ in waves:
            ms = [mats[j - 1] for j in nodes]
            if len(ms) == 1:
                wave_mats.append(ms[0])
            else:
                wave_mats.append(torch.cat(ms, 1) if isinstance(ins, int) else torch.stack(ms))
        return tuple(wave_mats), waves

    def _domain_chains(self, unique: Tuple[str, ...], device):
        """The stacked chains of the domains ``unique``: per node (D, H, 2H) matrices, (N, D) input
        states, (N, D, 1, 1) operation codes and the Python summary :func:`domains_step` takes."""
        nodes = self.space.node_ids
        chains = [self._chain(c, device, as_tensors=False) for c in unique]
        mats = tuple(torch.stack([ch[0][n] for ch in chains]) for n in range(len(nodes)))
        key = (unique, torch.device(device))
        if key not in self._chains:
            inputs = [[ch[1][n] for ch in chains] for n in range(len(nodes))]
            codes = [[ch[2][n] for ch in chains] for n in range(len(nodes))]
            summary = tuple(
                (ins[0] if len(set(ins)) == 1 else None, tuple(sorted(set(cs))))
                for ins, cs in zip(inputs, codes)
            )
            self._chains[key] = (
                torch.tensor(inputs, device=device),
                torch.tensor(codes, device=device).view(len(nodes), len(unique), 1, 1),
                summary,
            )
        return (mats,) + self._chains[key]

    def _run_domains(self, xw, h, w0h, mask_h, cells, unique, ops) -> Tensor:
        """Samples of several domains: grouped by domain into D blocks of B' rows (B' the largest
        domain's count; a smaller domain's block is padded with copies of its first sample, whose
        outputs are dropped), run through :func:`domains_step`, put back in the batch's order."""
        batch = len(cells)
        members = [[b for b, c in enumerate(cells) if c == cell] for cell in unique]
        width = max(len(m) for m in members)
        gather, position = [], [0] * batch
        for d, m in enumerate(members):
            for k, b in enumerate(m):
                position[b] = d * width + k
            gather.extend(m + [m[0]] * (width - len(m)))
        gather_idx = torch.tensor(gather, device=xw.device)
        mask = mask_h.index_select(0, gather_idx) if mask_h is not None else None
        mats, inputs, codes, summary = self._domain_chains(tuple(unique), xw.device)
        out = self._run(
            xw.index_select(1, gather_idx),
            h.index_select(0, gather_idx),
            (w0h,) + mats,
            (inputs, codes, summary, mask, ops),
            [len(gather)] + [width] * len(mats),
            (mask,),
            self.domain_steps,
        )
        return out.index_select(1, torch.tensor(position, device=xw.device))

    # ------------------------------------------------------------------ sizes
    def op_param_count(self, edge: GenotypeEdge) -> int:
        """Parameters of one (node, operation) module."""
        return self.hidden_size * 2 * self.hidden_size

    def shared_param_count(self) -> int:
        return self.w0.numel()
