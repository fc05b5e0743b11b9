"""The contract between :class:`~.mixin.BilevelSearchMixin` and the fairseq task it is mixed into."""

from typing import Any, Dict, List, Protocol

import torch

from ...data import MultiDomainDataset


class SearchHost(Protocol):
    """What a task provides to the search mixin (the mixin sets ``domain_names`` and ``search``
    itself, in ``init_search_state``, which the task's ``__init__`` calls)."""

    cfg: Any  # a dataclass with the fields of BilevelSearchConfig plus ``seed`` and ``batch_size``
    datasets: Dict[str, MultiDomainDataset]  # fairseq's loaded splits, one MultiDomainDataset each
    dataset_to_epoch_iter: Dict[Any, Any]  # fairseq's cache of epoch iterators
    domain_names: List[str]

    def train_subset_name(self) -> str:
        """The split the weight step trains on (``train``)."""

    def load_dataset(
        self, split: str, epoch: int = 1, combine: bool = False, **kwargs
    ) -> MultiDomainDataset:
        """Load ``split`` (``train``, the held-out ``--heldout-subset``, ``valid``, ``test``, ``test.<domain>``)."""

    def triplet_labels(self, sample: dict) -> torch.Tensor:
        """Labels for the triplet loss: equal labels across two domains' batches are positives."""

    def get_batch_iterator(self, dataset, **kwargs):
        """fairseq's FairseqTask.get_batch_iterator."""

    def filter_indices_by_size(
        self, indices, dataset, max_positions=None, ignore_invalid_inputs=False
    ):
        """fairseq's FairseqTask.filter_indices_by_size."""
