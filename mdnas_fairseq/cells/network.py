"""What every searchable network shares: its domains' architectures, alpha (search) or a genotype
(derived multimodel), and the routing of a batch to its architecture."""

from __future__ import annotations

import abc
from typing import Dict, Optional, Sequence

import torch.nn as nn
from torch import Tensor

from ..search import DomainArchitectures, MultiDomainGenotype, ParamTable, SearchSpace


class MultiDomainNetwork(nn.Module, metaclass=abc.ABCMeta):
    """Base of the searchable networks (recurrent LM, conv classifier, ...).

    Args:
        domains: the data domains, in the order of the domain indices fed to ``forward``.
        space: the search space of the network's cell(s).
        genotype: None to search (alpha, one row per architecture); a genotype to build the derived
            concordant multimodel (no alpha).
        shared_architecture: one architecture for all domains (the union baseline).
        alpha_init_scale: std of the initial alpha.
        frozen_architectures: search only: the first architectures' alpha rows are never trained
            (the old domains of an extension, :mod:`.extension`).

    A subclass builds its modules and defines :meth:`param_table`; its ``forward`` gets the cell's
    routing keyword from :meth:`route`.
    """

    def __init__(
        self,
        domains: Sequence[str],
        space: SearchSpace,
        genotype: Optional[MultiDomainGenotype] = None,
        shared_architecture: bool = False,
        alpha_init_scale: float = 1e-3,
        frozen_architectures: int = 0,
    ):
        super().__init__()
        self.architectures = DomainArchitectures(domains, shared_architecture)
        self.space = space
        self.alphas = self.architectures.alpha(
            space, genotype, alpha_init_scale, frozen_architectures
        )
        self.temperature, self.gumbel = 1.0, False

    @property
    def domains(self):
        return self.architectures.domains

    @property
    def architecture_names(self):
        return self.architectures.names

    @property
    def is_search(self) -> bool:
        return self.alphas is not None

    def route(
        self, domain: Tensor, batch_domain: Optional[int], batch_size: int, dtype
    ) -> Dict[str, object]:
        """The cell's routing keyword for a batch: ``mixing_probs`` (search: softmax(alpha) of each
        sample's architecture, in the activations' ``dtype``) or ``cells`` (derived: the genotype cell
        name of each sample).

        ``batch_domain``: the batch's single domain, known on the host (every batch the tasks make
        holds one domain), so nothing is read back from the device; otherwise ``domain`` (B,) gives
        each sample's domain and is read on the host.
        """
        if batch_domain is not None:
            row = self.architectures.row(batch_domain)
            if self.is_search:
                probs = self.alphas.mixing_probs(
                    row, temperature=self.temperature, gumbel=self.gumbel
                )
                return {"mixing_probs": probs.to(dtype)}
            return {"cells": [self.architecture_names[row]] * batch_size}
        if domain.dim() == 0:
            domain = domain.expand(batch_size)
        rows = self.architectures.rows_of(domain)
        if self.is_search:
            return {
                "mixing_probs": self.alphas.mixing_probs(
                    rows, temperature=self.temperature, gumbel=self.gumbel
                ).to(dtype)
            }
        return {"cells": [self.architecture_names[r] for r in rows.tolist()]}

    @abc.abstractmethod
    def param_table(self) -> ParamTable:
        """Parameters of every (edge, operation) module and of what all domains share."""

    def genotype_param_count(
        self, genotype: MultiDomainGenotype, cells: Optional[Sequence[str]] = None
    ) -> int:
        """Parameters of the multimodel built from ``genotype`` (or of the model of some ``cells``)."""
        return self.param_table().multimodel_count(genotype, cells)
