"""Which architecture each domain uses: the one place that maps domains to alpha rows and genotype
cells, and checks a genotype against a model.

Every domain has its own architecture (one alpha row, one genotype cell, named after the domain),
or, with ``shared``, all domains use ONE architecture named ``"+".join(domains)`` (the baseline of
a single model on the union of the domains).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor

from .alpha import ArchitectureParameters
from .genotype import GenotypeError, MultiDomainGenotype, check_compatible
from .space import SearchSpace


class DomainArchitectures:
    """The architectures of a model's domains (see the module docstring)."""

    def __init__(self, domains: Sequence[str], shared: bool = False):
        if not domains:
            raise ValueError("need at least one domain")
        self.domains: List[str] = list(domains)
        self.shared = bool(shared)
        self.names: List[str] = ["+".join(self.domains)] if self.shared else list(self.domains)
        self.rows: List[int] = (
            [0] * len(self.domains) if self.shared else list(range(len(self.domains)))
        )

    def row(self, domain: int) -> int:
        """The architecture (alpha row, genotype cell index) of a domain index."""
        if not 0 <= domain < len(self.domains):
            raise IndexError(f"domain index {domain} out of range for domains {self.domains}")
        return self.rows[domain]

    def rows_of(self, domain: Tensor) -> Tensor:
        """Architecture rows of a tensor of domain indices (reads the indices on the host to check them)."""
        if int(domain.min()) < 0 or int(domain.max()) >= len(self.domains):
            raise IndexError(f"domain index out of range for domains {self.domains}")
        return torch.as_tensor(self.rows, device=domain.device)[domain]

    def check_genotype(
        self, genotype: MultiDomainGenotype, space: SearchSpace, source: str = "genotype"
    ) -> None:
        """A genotype fits the model when it has one cell per architecture, in order, over ``space``."""
        check_compatible(genotype, source, space=space)
        if list(genotype.domains) != self.names:
            raise GenotypeError(
                f"{source}: genotype is for {genotype.num_domains} domain(s) {list(genotype.domains)}, "
                f"this run needs {len(self.names)}: {self.names}"
                + (" (--shared-architecture)" if self.shared else "")
            )

    def alpha(
        self,
        space: SearchSpace,
        genotype: Optional[MultiDomainGenotype] = None,
        init_scale: float = 1e-3,
        frozen: int = 0,
    ) -> Optional[ArchitectureParameters]:
        """New alpha, one row per architecture, for a search model (``genotype`` None); None for a
        derived model, after checking its genotype. ``frozen``: the first rows are never trained
        (the old domains of an extension)."""
        if genotype is not None:
            self.check_genotype(genotype, space)
            return None
        allowed = space.allowed_mask() if space.allowed_ops is not None else None
        return ArchitectureParameters(
            len(self.names), space.num_edges, space.num_ops, init_scale, allowed, frozen
        )
