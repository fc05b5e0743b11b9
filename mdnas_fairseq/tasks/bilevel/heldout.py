"""Batches of the held-out split that the alpha step uses (``--heldout-subset``, e.g. ``heldout.en``).

One fairseq epoch iterator per domain, sharded over the data-parallel workers. An exhausted
iterator starts its next epoch (reshuffled). Creating an iterator draws a seed from torch's
global RNG; that RNG (which fairseq reseeds every update, for dropout) is kept untouched, so a
resumed run, which creates its iterators at other times, draws the same dropout masks.
"""

from typing import Dict

import torch

from ...data import MultiDomainDataset
from . import distributed


class HeldoutBatches:
    """``next(domain)``: the next batch of that domain's held-out split on this worker."""

    def __init__(self, host):
        self.host = host  # the task: datasets, get_batch_iterator, cfg, domain_names
        self.iterators: Dict[int, object] = {}
        self.current: Dict[int, object] = {}
        self.saved: Dict[int, dict] = {}  # iterator states read from a checkpoint, used on creation

    def dataset(self) -> MultiDomainDataset:
        name = self.host.cfg.heldout_subset
        if name not in self.host.datasets:
            self.host.load_dataset(name)
        return self.host.datasets[name]

    def _iterator(self, domain: int):
        if domain not in self.iterators:
            ds = self.dataset()
            single = ds.subset_of_domain(domain)
            cfg = self.host.cfg
            it = self.host.get_batch_iterator(
                dataset=single,
                max_tokens=cfg.max_tokens,
                max_sentences=cfg.batch_size,
                seed=cfg.seed + 1 + domain,
                num_shards=distributed.world_size(),
                shard_id=distributed.rank(),
                disable_iterator_cache=True,
            )
            saved = self.saved.pop(domain, None)
            if saved is not None:
                it.load_state_dict(saved)
            self.iterators[domain] = it
        return self.iterators[domain]

    def next(self, domain: int):
        with torch.random.fork_rng(devices=[]):
            it = self._iterator(domain)
            for _ in range(2):
                current = self.current.get(domain)
                if current is None or not current.has_next():
                    current = it.next_epoch_itr(shuffle=True)
                    self.current[domain] = current
                while current.has_next():
                    batch = next(current)
                    if batch:  # fairseq pads the shards of data-parallel workers with empty batches
                        return batch
            name = self.host.domain_names[domain]
            raise ValueError(
                f"domain {name!r}: subset {self.host.cfg.heldout_subset}.{name} gives worker "
                f"{distributed.rank()} no batch (too few sentences for {distributed.world_size()} workers)"
            )

    def state_dict(self) -> Dict[int, dict]:
        return {int(d): it.state_dict() for d, it in self.iterators.items()}

    def load_state_dict(self, state: Dict[int, dict]) -> None:
        self.saved = {int(d): s for d, s in (state or {}).items()}
