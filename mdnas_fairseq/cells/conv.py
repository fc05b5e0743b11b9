"""The DARTS convolutional cell and a small image classifier built on it (pure PyTorch).

Cell (DARTS, Liu et al. 2019): two input states ``s_0, s_1`` and ``N`` intermediate nodes;
node ``j`` sums operations applied to every earlier state, the cell output is the channel
concatenation of the intermediate nodes. Candidate operations on C channels (stride 1):

* ``none`` (zero), ``skip_connect`` (identity), ``max_pool_3x3``, ``avg_pool_3x3``: no weights;
* ``sep_conv_kxk``: (ReLU, depthwise kxk, pointwise 1x1, BN) twice: ``2 (C k^2 + C^2)`` weights;
* ``dil_conv_kxk``: ReLU, depthwise kxk with dilation 2, pointwise 1x1, BN: ``C k^2 + C^2``.

Batch norms inside the cell have no affine weights (as in DARTS' search), so the parameter count
of an operation is exactly its convolution weights.

* Search mode: every edge holds all K candidates; the K candidate outputs of an edge are stacked
  and mixed with softmax(alpha_d) weights (one weight matrix for a domain-homogeneous batch, or
  one per sample when a batch mixes domains).
* Derived mode: a :class:`MultiDomainGenotype` fixes for every domain two (input, operation)
  edges per node. The model holds the concordant union: one module per distinct
  (input, node, operation), shared by the domains that chose it; a domain's forward pass only
  runs its own modules.

The classifier (:class:`DartsConvClassifier`): stem conv 3x3 (stride ``stem_stride``) + BN
(affine) [+ max pool ``stem_pool``] -> one cell (``s_0 = s_1 =`` the stem output) -> global average pooling -> linear.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..search import (
    CNN_OPERATIONS,
    GenotypeEdge,
    MultiDomainGenotype,
    ParamTable,
    SearchSpace,
    darts_cnn_space,
    mix,
)
from .network import MultiDomainNetwork


class Zero(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mul(0.0)


class Identity(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class SepConv(nn.Module):
    def __init__(self, channels: int, kernel: int):
        super().__init__()
        pad = kernel // 2
        c = channels
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, kernel, padding=pad, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=False),
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, kernel, padding=pad, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int = 2):
        super().__init__()
        c = channels
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                c,
                c,
                kernel,
                padding=dilation * (kernel // 2),
                dilation=dilation,
                groups=c,
                bias=False,
            ),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


def make_op(name: str, channels: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return Identity()
    if name == "sep_conv_3x3":
        return SepConv(channels, 3)
    if name == "sep_conv_5x5":
        return SepConv(channels, 5)
    if name == "dil_conv_3x3":
        return DilConv(channels, 3)
    if name == "dil_conv_5x5":
        return DilConv(channels, 5)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=1, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"conv cell: unknown operation {name!r}; known: {list(CNN_OPERATIONS)}")


def op_param_count(name: str, channels: int) -> int:
    """Weights of one operation module on ``channels`` channels (closed form, see module docstring)."""
    c = channels
    if name in ("sep_conv_3x3", "sep_conv_5x5"):
        k = 3 if name.endswith("3x3") else 5
        return 2 * (c * k * k + c * c)
    if name in ("dil_conv_3x3", "dil_conv_5x5"):
        k = 3 if name.endswith("3x3") else 5
        return c * k * k + c * c
    if name in CNN_OPERATIONS:
        return 0
    raise ValueError(f"conv cell: unknown operation {name!r}")


def _module_name(edge: GenotypeEdge) -> str:
    return f"e{edge.input}_{edge.node}_{edge.op}"


class DartsConvCell(nn.Module):
    """One DARTS conv cell (stride 1) in search or derived mode, see the module docstring.

    Args:
        channels: C, the channels of every state.
        space: a conv search space with two inputs (``darts_cnn_space(num_nodes)``).
        genotype: None for search mode; otherwise the derived multimodel's genotype.
    """

    def __init__(
        self,
        channels: int,
        space: Optional[SearchSpace] = None,
        genotype: Optional[MultiDomainGenotype] = None,
    ):
        super().__init__()
        self.space = space or (genotype.space if genotype is not None else darts_cnn_space())
        if self.space.num_input_nodes != 2:
            raise ValueError(
                f"the conv cell needs a search space with two input states, got {self.space}"
            )
        unknown = [op for op in self.space.operations if op not in CNN_OPERATIONS]
        if unknown:
            raise ValueError(
                f"conv cell: unknown operations {unknown}; known: {list(CNN_OPERATIONS)}"
            )
        self.channels = channels
        self.genotype = genotype
        # candidates that compute something (``none`` adds zero and is skipped)
        self.weighted_ops = [op for op in self.space.operations if op != self.space.none_op]
        self.weighted_op_index = [self.space.op_index(op) for op in self.weighted_ops]
        if genotype is None:
            self.edge_ops = nn.ModuleList(
                nn.ModuleList(make_op(op, channels) for op in self.weighted_ops)
                for _ in self.space.edges
            )
        else:
            if genotype.space != self.space:
                raise ValueError("genotype search space differs from the cell's search space")
            self.ops = nn.ModuleDict(
                {_module_name(e): make_op(e.op, channels) for e in genotype.union_edges()}
            )
            # cell name -> node -> [(input, module name)]
            self.choices: Dict[str, Dict[int, List[Tuple[int, str]]]] = {}
            for d in genotype.domains:
                per_node: Dict[int, List[Tuple[int, str]]] = {}
                for e in genotype.cells[d]:
                    per_node.setdefault(e.node, []).append((e.input, _module_name(e)))
                self.choices[d] = per_node

    @property
    def is_search(self) -> bool:
        return self.genotype is None

    @property
    def out_channels(self) -> int:
        return self.channels * self.space.num_nodes

    def _search_forward(self, s0: Tensor, s1: Tensor, probs: Tensor) -> Tensor:
        """``probs``: (E, K) for the whole batch or (B, E, K) one per sample."""
        states = [s0, s1]
        w_all = probs[..., self.weighted_op_index]  # (E, K') or (B, E, K')
        for j in self.space.node_ids:
            total = 0
            for i in range(j):
                e = self.space.edge_index(i, j)
                candidates = torch.stack(
                    [op(states[i]) for op in self.edge_ops[e]], dim=0
                )  # (K', B, C, H, W)
                total = total + mix(candidates, w_all[..., e, :])
            states.append(total)
        return torch.cat(states[2:], dim=1)

    def _derived_forward(self, s0: Tensor, s1: Tensor, cell: str) -> Tensor:
        states = [s0, s1]
        for j in self.space.node_ids:
            total = 0
            for i, name in self.choices[cell][j]:
                total = total + self.ops[name](states[i])
            states.append(total)
        return torch.cat(states[2:], dim=1)

    def forward(
        self,
        s0: Tensor,
        s1: Tensor,
        mixing_probs: Optional[Tensor] = None,
        cells: Optional[Sequence[str]] = None,
    ) -> Tensor:
        """Search mode needs ``mixing_probs``; derived mode ``cells``, the cell name of every sample."""
        if self.is_search:
            if mixing_probs is None:
                raise ValueError("a search-mode cell needs mixing probabilities")
            return self._search_forward(s0, s1, mixing_probs)
        batch = s0.shape[0]
        if cells is None or len(cells) != batch:
            raise ValueError("a derived-mode cell needs the cell name of every sample")
        unique = sorted(set(cells))
        for c in unique:
            if c not in self.choices:
                raise KeyError(f"this multimodel has no cell {c!r} (it has {sorted(self.choices)})")
        if len(unique) == 1:
            return self._derived_forward(s0, s1, unique[0])
        out = s0.new_zeros(batch, self.out_channels, *s0.shape[2:])
        for c in unique:
            idx = torch.tensor([b for b, name in enumerate(cells) if name == c], device=s0.device)
            out[idx] = self._derived_forward(s0[idx], s1[idx], c)
        return out

    def op_param_count(self, edge: GenotypeEdge) -> int:
        return op_param_count(edge.op, self.channels)


class DartsConvClassifier(MultiDomainNetwork):
    """Stem -> one DARTS conv cell -> global average pooling -> linear, one architecture per domain.

    Args:
        domains: the data domains, in the order of the domain indices fed to :meth:`forward`.
        channels: C of the cell (seed: 16); num_nodes: intermediate nodes (seed: 4).
        num_classes, in_channels: the task's labels and image channels.
        stem_stride: stride of the 3x3 stem convolution (2 halves the resolution the cell runs at).
        stem_pool: max-pooling factor after the stem (no weights; 2 halves the resolution again).
        genotype, shared_architecture, alpha_init_scale: see :class:`MultiDomainNetwork`.
        dropout: dropout on the pooled features before the classifier.
    """

    def __init__(
        self,
        domains: Sequence[str],
        channels: int = 16,
        num_nodes: int = 4,
        num_classes: int = 10,
        in_channels: int = 1,
        stem_stride: int = 1,
        stem_pool: int = 1,
        genotype: Optional[MultiDomainGenotype] = None,
        shared_architecture: bool = False,
        dropout: float = 0.0,
        alpha_init_scale: float = 1e-3,
    ):
        super().__init__(
            domains, darts_cnn_space(num_nodes), genotype, shared_architecture, alpha_init_scale
        )
        self.channels = channels
        self.dropout = dropout
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        if stem_pool > 1:
            self.stem.add_module("pool", nn.MaxPool2d(stem_pool))
        self.cell = DartsConvCell(channels, self.space, genotype)
        self.classifier = nn.Linear(self.cell.out_channels, num_classes)

    def forward(
        self, images: Tensor, domain: Tensor, batch_domain: Optional[int] = None
    ) -> Tuple[Tensor, Tensor]:
        """``images`` (B, C_in, H, W), ``domain`` (B,) -> (logits (B, classes), features (B, num_nodes*C)).

        ``batch_domain``: the single domain of the whole batch, known on the host (see :meth:`route`).
        """
        s = self.stem(images)
        out = self.cell(s, s, **self.route(domain, batch_domain, images.shape[0], s.dtype))
        features = out.mean(dim=(2, 3))
        logits = self.classifier(F.dropout(features, self.dropout, self.training))
        return logits, features

    # ------------------------------------------------------------------ sizes
    def shared_param_count(self) -> int:
        """Parameters every domain uses: stem and classifier."""
        return sum(p.numel() for p in self.stem.parameters()) + sum(
            p.numel() for p in self.classifier.parameters()
        )

    def param_table(self) -> ParamTable:
        """Parameter counts of this network's modules: one per (input, node, operation), plus stem and head."""
        row = [op_param_count(op, self.channels) for op in self.space.operations]
        return ParamTable(
            self.space, [row] * self.space.num_edges, "edge", self.shared_param_count()
        )
