"""What makes a fairseq model searchable: its architecture options, the genotype a derived model is
built from, and the search API the task and the criterion call (delegated to the pure-PyTorch network)."""

import json
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from fairseq.dataclass import FairseqDataclass

from ..search import (
    DomainArchitectures,
    MultiDomainGenotype,
    SearchSpace,
    genotype_from_dict,
    load_genotype,
)


@dataclass
class ArchitectureConfig(FairseqDataclass):
    """Options every searchable model has: search (no ``--genotype``) or derived (``--genotype``)."""

    genotype: Optional[str] = field(
        default=None,
        metadata={"help": "genotype.json of a search: build the derived concordant multimodel"},
    )
    shared_architecture: bool = field(
        default=False, metadata={"help": "one architecture for all domains (the union baseline)"}
    )
    alpha_init_scale: float = field(
        default=1e-3, metadata={"help": "std of the initial architecture parameters"}
    )
    genotype_data: Optional[str] = field(
        default=None,
        metadata={
            "help": "set automatically: the --genotype file's content, kept in the checkpoint so "
            "evaluation does not need the file"
        },
    )
    extension_data: Optional[str] = field(
        default=None,
        metadata={
            "help": "set automatically by the task's --extend-from: the old domains and the "
            "dictionary blocks the extensions appended (JSON), kept in the checkpoint so the "
            "extended model is rebuilt without the old checkpoint"
        },
    )


def genotype_for_model(
    cfg, domains: List[str], space: SearchSpace
) -> Optional[MultiDomainGenotype]:
    """The genotype of a derived model, or None for a search model.

    Read from ``cfg.genotype`` (a file) the first time, then kept in ``cfg.genotype_data``, which
    fairseq saves with the checkpoint, so evaluation does not need the file. The genotype must be
    for ``space`` and have one cell per domain (one cell named ``"+".join(domains)`` with
    ``cfg.shared_architecture``).
    """
    if not (cfg.genotype or cfg.genotype_data):
        return None
    if cfg.genotype_data:
        source = f"genotype stored in the checkpoint (from {cfg.genotype})"
        genotype = genotype_from_dict(json.loads(cfg.genotype_data), source=source)
    else:
        source = cfg.genotype
        genotype = load_genotype(cfg.genotype)
        cfg.genotype_data = json.dumps(genotype.to_dict())
    DomainArchitectures(domains, cfg.shared_architecture).check_genotype(genotype, space, source)
    return genotype


@dataclass(frozen=True)
class ModelExtension:
    """What an extended model is built with (``cfg.extension_data``): the domains it was extended
    from (their alpha rows frozen while searching) and the appended dictionary blocks, (entries,
    first domain) each."""

    old_domains: Tuple[str, ...] = ()
    appended_vocabulary: Tuple[Tuple[int, int], ...] = ()
    source: Optional[str] = None

    @classmethod
    def of(cls, cfg) -> "ModelExtension":
        data = getattr(cfg, "extension_data", None)
        if not data:
            return cls()
        raw = json.loads(data)
        return cls(
            tuple(raw["old_domains"]),
            tuple((int(n), int(d)) for n, d in raw["appended_vocabulary"]),
            raw.get("from"),
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "old_domains": list(self.old_domains),
                "appended_vocabulary": [list(b) for b in self.appended_vocabulary],
                "from": self.source,
            }
        )

    def network_options(self, cfg) -> dict:
        """The keyword arguments of the network for this extension."""
        search = not (cfg.genotype or cfg.genotype_data)
        return {
            "appended_vocabulary": self.appended_vocabulary,
            "frozen_architectures": len(self.old_domains) if search else 0,
        }


def unwrap_model(model):
    """The model inside fairseq's data-parallel wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


class SearchableModel:
    """Mixin for a fairseq model wrapping a searchable pure-PyTorch network.

    The model class defines two things: ``network``, the wrapped network (``DartsRNNLanguageModel``,
    ``DartsConvClassifier``), and ``domain_representation(net_output, sample)``, the hidden
    representation of each sample that the contrastive (triplet) term compares. The network has
    ``is_search``, ``space``, ``architecture_names`` and ``genotype_param_count``; the task and the
    criterion reach them through the fairseq model with the names below.
    """

    @property
    def is_search(self) -> bool:
        return self.network.is_search

    @property
    def search_space(self) -> SearchSpace:
        return self.network.space

    @property
    def architecture_names(self):
        return self.network.architecture_names

    def genotype_param_count(self, genotype, cells=None) -> int:
        return self.network.genotype_param_count(genotype, cells)

    def param_table(self):
        return self.network.param_table()
