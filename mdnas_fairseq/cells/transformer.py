"""A searchable decoder-only Transformer language model, one architecture per domain (pure PyTorch).

Network (pre-LayerNorm, as fairseq's ``transformer_lm``): ``s_0 = dropout(sqrt(C) E[tokens] +
P[positions])``, then a chain of 2L slots, two per layer: node ``j = 2l + 1`` mixes tokens,
node ``j = 2l + 2`` mixes channels, and every slot is a residual block

    s_j = s_{j-1} + dropout(op_j(LayerNorm_j(s_{j-1})))

followed by a final LayerNorm and the output projection tied to the embedding ``E``. The
search space is :func:`~mdnas_fairseq.search.transformer_lm_space`: one edge ``(j - 1, j)`` per
slot, K candidates shared by all slots, each slot allowing only its kind's candidates:

* token mixing: ``attention`` (causal multi-head self-attention), ``lightconv_k`` (GLU
  projection, causal lightweight convolution of width k, projection), ``dwconv_k`` (causal
  depthwise convolution), ``identity``, ``none``;
* channel mixing: ``ffn_relu``, ``ffn_gelu``, ``ffn_sqrelu`` (feed-forward blocks),
  ``identity``, ``none``.

``none`` contributes 0 (the slot is the residual alone); as in DARTS it is never derived.

Padding: every candidate is causal, so the pads after a sentence (right padding, fairseq's
``language_modeling``) never reach its real positions. Pads before it (left padding) would: the
network therefore first rotates each sentence so that its leading pads move to the end (a gather
on the device, no host read; the identity for right-padded batches), runs on that, and rotates the
states back. The outputs at the real positions of a padded sentence, left- or right-padded, are
thus exactly those of the sentence alone, whatever the position embeddings (tested in search and
derived mode), and no candidate needs a padding mask (attention keeps its plain causal mask and
fused kernels; the convolutions' left zero-padding is the sentence's start). The candidates also
accept a ``padding_mask`` themselves (:mod:`.transformer_ops`), for use outside this network.

* Search mode: a slot sums its allowed candidates weighted by softmax(alpha_d) (one weight
  matrix for a domain-homogeneous batch, one per sample otherwise), cast to the activations'
  dtype (alpha stays fp32 under mixed precision). Every candidate's activations are kept for the
  backward pass: memory grows with the candidates of a slot times the layers.
* Derived mode: a :class:`MultiDomainGenotype` gives every domain one op per slot; the network
  holds one module per (slot, op) that some domain chose, shared by the domains that chose it,
  and a domain runs only its own modules.

Candidate modules come from a factory (op name -> module, see :mod:`.transformer_ops`): the
fairseq model passes one building fairseq's ``MultiheadAttention`` and ``LightweightConv``.

Incremental decoding (fairseq's generation), as the translation decoder's
(:mod:`.transformer_mt`): ``forward(..., incremental_state=dict)`` takes the last token only and
passes the dict to the positions and to every slot's module, which keep their own state in it
(attention keys and values, convolution input buffers) and provide
``reorder_incremental_state`` for beam search. The candidate factory decides how: the fairseq
model's candidates decode incrementally (those of :func:`~.transformer_ops.torch_candidates` do
not). The tokens then have no leading pads (fairseq's ``SequenceGenerator`` starts every row
with <eos>), and a derived model's batch holds one domain.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..search import GenotypeEdge, MultiDomainGenotype, ParamTable, transformer_lm_space
from .network import MultiDomainNetwork
from .transformer_ops import CandidateFactory
from .vocabulary import TiedVocabulary, VocabularyBlocks

IncrementalState = Dict[str, Dict[str, Optional[Tensor]]]  # fairseq's incremental state


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class SearchableTransformerLM(TiedVocabulary, MultiDomainNetwork):
    """Decoder-only causal Transformer LM whose every slot is searched per domain.

    Args:
        vocab_size, padding_idx: the (shared) dictionary.
        embed_dim: C, the model width (embeddings are tied to the output projection).
        num_layers: L; the network has 2L slots.
        domains: the data domains, in the order of the domain indices fed to :meth:`forward`.
        candidates: op name -> a new candidate module (T, B, C) -> (T, B, C), causal.
        kernel_sizes: widths of the convolution candidates (part of the search space).
        positions: module mapping tokens (B, T) to position embeddings (B, T, C), or None.
        genotype, shared_architecture, alpha_init_scale: see :class:`MultiDomainNetwork`.
        dropout: on the embeddings and on every slot's output (fairseq's ``--dropout``).
        scale_embedding: multiply the embeddings by sqrt(C) (fairseq's default).
        appended_vocabulary: (entries, first domain) of the dictionary blocks extensions appended
            (:mod:`.vocabulary`); ``vocab_size`` counts them.
        frozen_architectures: see :class:`MultiDomainNetwork`.
    """

    def __init__(
        self,
        vocab_size: int,
        padding_idx: int,
        embed_dim: int,
        num_layers: int,
        domains: Sequence[str],
        candidates: CandidateFactory,
        kernel_sizes: Sequence[int] = (3, 7),
        positions: Optional[nn.Module] = None,
        genotype: Optional[MultiDomainGenotype] = None,
        shared_architecture: bool = False,
        dropout: float = 0.0,
        scale_embedding: bool = True,
        alpha_init_scale: float = 1e-3,
        appended_vocabulary: VocabularyBlocks = (),
        frozen_architectures: int = 0,
    ):
        super().__init__(
            domains,
            transformer_lm_space(num_layers, kernel_sizes),
            genotype,
            shared_architecture,
            alpha_init_scale,
            frozen_architectures,
        )
        self.embed_dim, self.dropout = embed_dim, dropout
        self.embed_scale = math.sqrt(embed_dim) if scale_embedding else 1.0
        base = self.base_vocabulary_size(vocab_size, appended_vocabulary)
        self.embedding = nn.Embedding(base, embed_dim, padding_idx=padding_idx)
        nn.init.normal_(
            self.embedding.weight, mean=0.0, std=embed_dim**-0.5
        )  # as fairseq's Embedding
        with torch.no_grad():
            self.embedding.weight[padding_idx].zero_()
        self.init_appended_vocabulary(
            embed_dim,
            appended_vocabulary,
            False,
            lambda w: nn.init.normal_(w, mean=0.0, std=embed_dim**-0.5),
        )
        self.positions = positions
        self.slot_norms = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in self.space.node_ids)
        self.final_norm = nn.LayerNorm(embed_dim)
        self.genotype = genotype
        if genotype is None:
            # edge e -> its allowed candidates that compute something (`none` adds 0 and is skipped)
            self.slot_ops = nn.ModuleList(
                nn.ModuleDict({op: candidates(op) for op in self._weighted(e)})
                for e in range(self.space.num_edges)
            )
            self.slot_op_index = [
                [self.space.op_index(op) for op in self._weighted(e)]
                for e in range(self.space.num_edges)
            ]
        else:
            self.ops = nn.ModuleDict(
                {self._module_name(e): candidates(e.op) for e in genotype.union_edges()}
            )
            # cell name -> node -> module name
            self.choices: Dict[str, Dict[int, str]] = {
                d: {e.node: self._module_name(e) for e in genotype.cells[d]}
                for d in genotype.domains
            }
        self._op_sizes = self._candidate_sizes(candidates)

    def _weighted(self, edge: int):
        return [op for op in self.space.allowed(edge) if op != self.space.none_op]

    @staticmethod
    def _module_name(edge: GenotypeEdge) -> str:
        return f"node{edge.node}_{edge.op}"

    def _candidate_sizes(self, candidates: CandidateFactory) -> Dict[str, int]:
        """Parameters of one module of every candidate (read from this network's modules, built once if absent)."""
        sizes: Dict[str, int] = {}
        if self.is_search:
            for ops in self.slot_ops:
                sizes.update({op: _numel(m) for op, m in ops.items()})
        else:
            sizes.update({name.split("_", 1)[1]: _numel(m) for name, m in self.ops.items()})
        for op in self.space.operations:
            if op != self.space.none_op and op not in sizes:
                sizes[op] = _numel(candidates(op))
        return sizes

    # ------------------------------------------------------------------ forward
    def _residual(self, x: Tensor, out: Tensor) -> Tensor:
        return x + F.dropout(out, self.dropout, self.training)

    def _search_layers(self, x: Tensor, probs: Tensor, **step) -> Tensor:
        """``probs``: mixing probabilities, (E, K) for the whole batch or (B, E, K) one per sample;
        ``step``: ``incremental_state``, passed to every module (module docstring)."""
        for e in range(self.space.num_edges):
            h = self.slot_norms[e](x)
            mixed = 0
            for module, k in zip(self.slot_ops[e].values(), self.slot_op_index[e]):
                w = probs[e, k] if probs.dim() == 2 else probs[:, e, k].view(1, -1, 1)
                mixed = mixed + w * module(h, **step)
            x = self._residual(x, mixed)
        return x

    def _derived_layers(self, x: Tensor, cell: str, **step) -> Tensor:
        choice = self.choices[cell]
        for e, (_, j) in enumerate(self.space.edges):
            x = self._residual(x, self.ops[choice[j]](self.slot_norms[e](x), **step))
        return x

    def embed(self, tokens: Tensor, incremental_state: Optional[IncrementalState] = None) -> Tensor:
        """Token (+ position) embeddings, (T, B, C); with an ``incremental_state``, of the last
        position only (T = 1)."""
        positions = None
        if self.positions is not None:
            step = {} if incremental_state is None else {"incremental_state": incremental_state}
            positions = self.positions(tokens, **step)
        if incremental_state is not None:
            tokens = tokens[:, -1:]
            positions = positions[:, -1:] if positions is not None else None
        if self.appended_vocabulary is None:
            x = self.embed_scale * self.embedding(tokens)
        else:
            weight = self.vocabulary_weight()
            x = self.embed_scale * F.embedding(tokens, weight, self.embedding.padding_idx)
        if positions is not None:
            x = x + positions
        return F.dropout(x, self.dropout, self.training).transpose(0, 1)

    def leading_pads_to_the_end(self, tokens: Tensor) -> Tuple[Tensor, Tensor]:
        """``(tokens rotated, back)``: each sentence (row of ``tokens`` (B, T)) rotated left by its
        number of leading pads, and the (B, T) index that rotates a (B, T, ...) result back."""
        steps = tokens.shape[1]
        leading = (tokens.ne(self.embedding.padding_idx).cumsum(1) == 0).sum(1, keepdim=True)
        t = torch.arange(steps, device=tokens.device)
        rotated = tokens.gather(1, (t + leading) % steps)
        return rotated, (t - leading) % steps

    def forward(
        self,
        tokens: Tensor,
        domain: Tensor,
        batch_domain: Optional[int] = None,
        incremental_state: Optional[IncrementalState] = None,
    ) -> Tuple[Tensor, Tensor]:
        """``tokens`` (B, T), ``domain`` (B,) domain indices -> (logits (B, T, V), features (B, T, C)).

        ``batch_domain``: the single domain of the whole batch, known on the host (see :meth:`route`).
        Left padding is moved to the end for the layers and the states moved back (module docstring).
        ``incremental_state``: decode the last position only (T = 1; module docstring).
        """
        if incremental_state is not None:
            return self._decode_step(tokens, domain, batch_domain, incremental_state)
        tokens, back = self.leading_pads_to_the_end(tokens)
        x = self.embed(tokens)
        routing = self.route(domain, batch_domain, tokens.shape[0], x.dtype)
        if self.is_search:
            x = self._search_layers(x, routing["mixing_probs"])
        else:
            names = routing["cells"]
            unique = sorted(set(names))
            if len(unique) == 1:
                x = self._derived_layers(x, unique[0])
            else:  # several domains in one batch: each runs its own modules on its samples
                out = torch.empty_like(x)
                for cell in unique:
                    idx = torch.tensor(
                        [b for b, n in enumerate(names) if n == cell], device=x.device
                    )
                    out[:, idx] = self._derived_layers(x[:, idx], cell)
                x = out
        x = x.transpose(0, 1)  # (B, T, C), each sentence back in its own positions
        x = x[torch.arange(x.shape[0], device=x.device)[:, None], back]
        features = self.final_norm(x)
        return self.output_logits(features, domain, batch_domain), features

    def _decode_step(
        self,
        tokens: Tensor,
        domain: Tensor,
        batch_domain: Optional[int],
        incremental_state: IncrementalState,
    ) -> Tuple[Tensor, Tensor]:
        """:meth:`forward` of the last position, the earlier ones kept in ``incremental_state``."""
        x = self.embed(tokens, incremental_state)
        routing = self.route(domain, batch_domain, tokens.shape[0], x.dtype)
        if self.is_search:
            x = self._search_layers(x, routing["mixing_probs"], incremental_state=incremental_state)
        else:
            cells = sorted(set(routing["cells"]))
            if len(cells) != 1:
                raise ValueError(
                    f"incremental decoding runs one domain per batch, got the cells {cells}"
                )
            x = self._derived_layers(x, cells[0], incremental_state=incremental_state)
        features = self.final_norm(x.transpose(0, 1))
        return self.output_logits(features, domain, batch_domain), features

    # ------------------------------------------------------------------ sizes
    def op_param_count(self, edge: GenotypeEdge) -> int:
        """Parameters of the module of one (slot, op): the same for every slot of a kind."""
        return self._op_sizes[edge.op]

    def shared_param_count(self) -> int:
        """Parameters every domain uses: embeddings, positions, the slots' and the final LayerNorms."""
        shared = [self.slot_norms, self.final_norm]
        if self.positions is not None:
            shared.append(self.positions)
        return self.vocabulary_param_count() + sum(_numel(m) for m in shared)

    def param_table(self) -> ParamTable:
        """Parameter counts of this network's modules: one per (slot, operation) (share rule "edge";
        an operation a slot does not allow counts 0), plus what every domain uses."""
        rows = [
            [
                self._op_sizes[op]
                if op in self.space.allowed(e) and op != self.space.none_op
                else 0
                for op in self.space.operations
            ]
            for e in range(self.space.num_edges)
        ]
        return ParamTable(self.space, rows, "edge", self.shared_param_count())
