"""Tests for amdre.data: tiny fixtures in each on-disk layout, no downloads."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from amdre import data
from amdre.data import ImageData, load


def check_images(ds, n, shape):
    assert isinstance(ds, ImageData)
    assert len(ds) == n and ds.images.shape == (n, *shape) and ds.shape == shape
    assert ds.images.dtype == torch.float32
    assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
    if ds.labels is not None:
        assert ds.labels.dtype == torch.int64 and ds.labels.shape == (n,)


# ------------------------------------------------------------------ fixtures
def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_mnist_raw(folder, n_train=6, n_test=4):
    """torchvision layout: train files uncompressed, test files gzipped (both are accepted)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix, n, suffix in (("train", n_train, ""), ("t10k", n_test, ".gz")):
        images = rng.integers(0, 256, (n, 28, 28))
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10)


def make_svhn(folder, split, n=5):
    from scipy.io import savemat
    folder.mkdir(parents=True, exist_ok=True)
    x = np.zeros((32, 32, 3, n), np.uint8)
    x[0, 1, 2, 0] = 255  # image 0: row 0, column 1, blue channel
    y = np.array([[10], [1], [2], [3], [9]][:n], np.uint8)
    savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})


def make_cifar(root, per_batch=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        pixels = np.zeros((per_batch, 3072), np.uint8)
        pixels[0, 1024 + 32 * 2 + 5] = 255  # image 0: green channel, row 2, column 5
        batch = {"data": pixels, "labels": [(i + j) % 10 for j in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(k) for k in range(10)]}))


def make_celeba(base, sizes=((178, 218),) * 12, partition=(0,) * 8 + (1,) * 2 + (2,) * 2):
    """JPEGs with a white centred 140x140 square (the crop) on black, plus the partition file."""
    from PIL import Image
    (base / "img_align_celeba").mkdir(parents=True)
    lines = []
    for i, ((w, h), part) in enumerate(zip(sizes, partition), start=1):
        img = np.zeros((h, w, 3), np.uint8)
        c = min(140, w, h)
        top, left = (h - c) // 2, (w - c) // 2
        img[top:top + c, left:left + c] = 255
        Image.fromarray(img).save(base / "img_align_celeba" / f"{i:06d}.jpg", quality=95)
        lines.append(f"{i:06d}.jpg {part}")
    (base / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------- on-disk layouts
def test_mnist_raw_idx(tmp_path):
    make_mnist_raw(tmp_path / "MNIST" / "raw")
    train, test = load("mnist", tmp_path), load("mnist", tmp_path, split="test")
    check_images(train, 6, (1, 28, 28))
    check_images(test, 4, (1, 28, 28))
    assert train.images[0, 0, 0, 0] == -1.0 and train.images[0, 0, 0, 1] == 1.0
    assert train.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert len(load("mnist", tmp_path, n=3)) == 3


def test_fashion_mnist_torchvision_layout_preferred(tmp_path):
    make_mnist_raw(tmp_path / "FashionMNIST" / "raw")
    check_images(load("fashion-mnist", tmp_path, split="test"), 4, (1, 28, 28))


@pytest.mark.parametrize("sub", ["svhn", ""])
def test_svhn_mat(tmp_path, sub):
    make_svhn(tmp_path / sub if sub else tmp_path, "train")
    ds = load("svhn", tmp_path)
    check_images(ds, 5, (3, 32, 32))
    assert ds.labels.tolist() == [0, 1, 2, 3, 9]  # 10 -> 0
    assert ds.images[0, 2, 0, 1] == 1.0 and ds.images[0].sum() == -3 * 32 * 32 + 2
    with pytest.raises(FileNotFoundError, match="test_32x32.mat"):
        load("svhn", tmp_path, split="test")


def test_cifar10_batches(tmp_path):
    make_cifar(tmp_path)
    train, test = load("cifar10", tmp_path), load("cifar10", tmp_path, split="test")
    check_images(train, 15, (3, 32, 32))
    check_images(test, 3, (3, 32, 32))
    assert train.images[0, 1, 2, 5] == 1.0 and train.images[0].sum() == -3 * 32 * 32 + 2
    assert train.labels[:6].tolist() == [0, 1, 2, 1, 2, 3]


def test_celeba_crop_resize_and_cache(tmp_path):
    base = tmp_path / "celeba"
    make_celeba(base)
    ds = load("celeba", tmp_path)  # default n=40000 keeps all 8 training images
    check_images(ds, 8, (3, 64, 64))
    assert ds.labels is None and ds[3][1:] == (-1, 3)
    assert ds.images.mean() > 0.95  # the crop is exactly the white square
    assert (base / "cache_train_40000_64.pt").exists()
    small = load("celeba", tmp_path, split="valid", n=1, image_size=32)
    check_images(small, 1, (3, 32, 32))
    assert len(load("celeba", tmp_path, split="test")) == 2
    assert len(load("celeba", tmp_path, split="all")) == 12
    for jpg in (base / "img_align_celeba").glob("*.jpg"):  # cache is reused: images no longer needed
        jpg.unlink()
    assert torch.equal(load("celeba", tmp_path).images, ds.images)
    assert not list(base.glob("*.tmp*"))


def test_celeba_small_images_and_flat_layout(tmp_path):
    make_celeba(tmp_path, sizes=[(40, 50), (30, 30)], partition=(0, 0))  # no celeba/ subfolder
    ds = load("celeba", tmp_path, image_size=16)
    check_images(ds, 2, (3, 16, 16))
    assert ds.images.mean() > 0.95  # crop = min(140, w, h)


# ------------------------------------------------------- offline datasets
def test_mnist5k_splits():
    train, test, everything = (load("mnist5k", split=s) for s in ("train", "test", "all"))
    check_images(train, 4000, (1, 28, 28))
    check_images(test, 1000, (1, 28, 28))
    check_images(everything, 5000, (1, 28, 28))
    assert set(train.labels.tolist()) == set(test.labels.tolist()) == set(range(10))
    assert torch.equal(torch.cat([train.images, test.images]), everything.images)
    assert torch.equal(load("mnist5k").images, train.images)  # deterministic
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    assert torch.equal(load("mnist5k", n=10).labels, train.labels[:10])


def test_digits_splits():
    train, test = load("digits"), load("digits", split="test")
    check_images(train, 1437, (1, 8, 8))
    check_images(test, 360, (1, 8, 8))
    assert len(load("digits", split="all")) == 1797
    assert set(train.labels.tolist()) == set(range(10))
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    assert torch.equal(load("digits").images, train.images)


def test_fashion_mnist_debian():
    system = data.system_datasets()
    if system is None or not (system / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Debian package dataset-fashion-mnist not installed (or ${data.SYSTEM_ENV} hides it)")
    assert "fashion-mnist" in data.available_offline()
    test = load("fashion-mnist", split="test")
    assert test.source == str(data.locate("fashion-mnist", split="test"))  # data/ first, then the system folder
    check_images(test, 10000, (1, 28, 28))
    assert test.labels.bincount().tolist() == [1000] * 10
    assert test.images.min() == -1.0 and test.images.max() == 1.0
    check_images(load("fashion-mnist", system, n=100), 100, (1, 28, 28))


def test_available_offline_and_dataset_protocol():
    assert {"mnist5k", "digits"} <= set(data.available_offline())
    ds = load("digits", n=10)
    image, label, index = ds[4]
    assert image.shape == (1, 8, 8) and label == int(ds.labels[4]) and index == 4
    images, labels, indices = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 1, 8, 8) and indices.tolist() == [0, 1, 2, 3]
    assert "digits" in repr(ds)


# ------------------------------------------------------------ errors
@pytest.mark.parametrize("name, expected", [
    ("mnist", "MNIST/raw/"), ("svhn", "svhn/train_32x32.mat"),
    ("cifar10", "cifar-10-batches-py/"), ("celeba", "celeba/img_align_celeba"),
])
def test_missing_files_name_expected_path(tmp_path, name, expected):
    with pytest.raises(FileNotFoundError) as err:
        load(name, tmp_path)
    assert str(tmp_path / expected) in str(err.value)


def test_missing_messages_give_alternatives(tmp_path):
    with pytest.raises(FileNotFoundError, match="mnist5k"):
        load("mnist", tmp_path)
    with pytest.raises(FileNotFoundError, match="download=True"):
        load("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match="mmlab.ie.cuhk.edu.hk"):
        load("celeba", tmp_path)
    (tmp_path / "celeba" / "img_align_celeba").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt"):
        load("celeba", tmp_path)


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="svhn"):
        load("imagenet")
    with pytest.raises(ValueError, match="train"):
        load("digits", split="validation")


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    """download=True asks torchvision (faked here: no network) and then reads the files."""
    torchvision = pytest.importorskip("torchvision")
    calls = []

    def fake_svhn(root, split, download):
        calls.append((root, split, download))
        make_svhn(root, split)

    monkeypatch.setattr(torchvision.datasets, "SVHN", fake_svhn)
    check_images(load("svhn", tmp_path, download=True), 5, (3, 32, 32))
    assert calls == [(tmp_path / "svhn", "train", True)]
    load("svhn", tmp_path, download=True)  # files present: no second download
    assert len(calls) == 1
