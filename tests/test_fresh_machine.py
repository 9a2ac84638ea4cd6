"""A fresh machine has Python, pip and make: the notebooks' default data must load with nothing else.

The system dataset folder (Debian's /usr/share/datasets) is hidden through ``$AMDRE_SYSTEM_DATASETS`` and the
data folder is an empty one (``$AMDRE_ROOT``), so only what the repository commits and pip installs is left.
Also: ``n`` and ``root`` of ``amdre.data.load`` (never silently ignored), the ``python -m amdre.data`` command,
and the quiet kernels of ``make demo``.
"""
import gzip
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amdre import data

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"fashion12k": (10_000, 2_000), "mnist5k": (4_000, 1_000), "digits": (1_437, 360)}  # (train, test)


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """No system dataset folder and an empty data/ folder: what a fresh clone on macOS or Windows has."""
    (tmp_path / "system").mkdir()
    (tmp_path / "work" / "data").mkdir(parents=True)
    monkeypatch.setenv(data.SYSTEM_ENV, str(tmp_path / "system"))
    monkeypatch.setenv("AMDRE_ROOT", str(tmp_path / "work"))
    return tmp_path


def write_mnist_like(folder, n_train, n_test=2, gz=".gz"):
    """IDX files as torchvision and Debian store them; pixel [0, 0] of image 0 holds n_train (to tell copies apart)."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[0, 0, 0] = n_train
        for kind, array in (("images-idx3", images), ("labels-idx1", np.arange(n) % 10)):
            payload = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            payload += array.astype(np.uint8).tobytes()
            path = folder / f"{prefix}-{kind}-ubyte{gz}"
            path.write_bytes(gzip.compress(payload) if gz else payload)


def notebook_defaults():
    """(notebook, dataset name) for every dataset a notebook loads at its defaults: its `dataset`-like parameters and
    every literal ``data.load("name", ...)`` in its code. Read from the .ipynb files, which make demo and nbval run."""
    found = []
    for path in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                found += [(path.stem, v) for v in re.findall(r'^\w*dataset\w*\s*=\s*"([^"]+)"', source, re.M)]
            code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
            found += [(path.stem, v) for v in re.findall(r'data\.load\(\s*"([^"]+)"', code)]
    return sorted(set(found))


# ----------------------------------------------------------------------------- the notebooks' default data
@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_default_datasets_load_with_only_the_repository_and_pip(fresh, name):
    n_train, n_test = OFFLINE[name]
    train, test = data.load(name), data.load(name, split="test")
    assert (len(train), len(test)) == (n_train, n_test)
    assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    assert str(fresh) not in train.source, "nothing may come from the (empty) data or system folders"
    assert name in data.available_offline()


def test_fashion12k_is_the_start_of_fashion_mnist():
    """data/fashion12k/ holds Fashion-MNIST's first 10,000 training and 2,000 test images (checked where Debian's
    full copy is installed)."""
    full = Path(data.SYSTEM_DEFAULT) / "fashion-mnist"
    if not (full / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"no full Fashion-MNIST in {full} to compare with")
    for split, n in (("train", 10_000), ("test", 2_000)):
        small, big = data.load("fashion12k", split=split), data.load("fashion-mnist", full.parent, split=split, n=n)
        assert (small.images == big.images).all() and (small.labels == big.labels).all()


def test_every_notebook_default_dataset_is_offline(fresh):
    defaults = notebook_defaults()
    assert defaults, "no dataset parameters found in notebooks/*.ipynb"
    online = [f"{nb}: {name!r}" for nb, name in defaults if data.canonical(name) not in OFFLINE]
    assert not online, ("these notebook defaults need a download or Debian's package; use fashion12k, mnist5k or "
                        f"digits: {', '.join(online)}")
    for _, name in defaults:
        assert len(data.load(name, n=5)) == 5


def test_full_fashion_mnist_missing_says_how_to_get_it(fresh):
    with pytest.raises(FileNotFoundError) as err:
        data.load("fashion-mnist")
    message = str(err.value)
    assert "Looked in:" in message and str(fresh / "work" / "data" / "FashionMNIST" / "raw") in message
    for hint in ("python -m amdre.data fetch fashion-mnist", "download=True", "dataset-fashion-mnist", "fashion12k"):
        assert hint in message
    assert "/usr/share/datasets" not in message


# ---------------------------------------------------------------------------- n and root, never silently
@pytest.mark.parametrize("n", [-1, 0, -1436, 2.5, True, "10"])
def test_n_below_one_or_not_an_int_is_refused(n):
    with pytest.raises(ValueError, match=r"n must be a positive number of examples, or None for all"):
        data.load("digits", n=n)


@pytest.mark.parametrize("name, n, expected", [("digits", 1, 1), ("digits", None, 1437), ("digits", 10**6, 1437),
                                               ("mnist5k", np.int64(7), 7), ("fashion12k", 3, 3)])
def test_n_keeps_the_first_n(name, n, expected):
    assert len(data.load(name, n=n)) == expected


# where the files are -> (root given?, the folder the images must come from, or None: FileNotFoundError)
ROOT_CASES = {
    "torchvision layout under root, system copy too": (("root/FashionMNIST/raw", "system/fashion-mnist"),
                                                       True, "root/FashionMNIST/raw"),
    "Debian layout under root": (("root/fashion-mnist",), True, "root/fashion-mnist"),
    "root lacks it, system has it": (("system/fashion-mnist",), True, None),
    "default: data/ before the system folder": (("work/data/FashionMNIST/raw", "system/fashion-mnist"),
                                                False, "work/data/FashionMNIST/raw"),
    "default: the system folder": (("system/fashion-mnist",), False, "system/fashion-mnist"),
}


@pytest.mark.parametrize("case", ROOT_CASES)
def test_root_is_honoured_for_fashion_mnist(fresh, case):
    present, given, expected = ROOT_CASES[case]
    for i, folder in enumerate(present):
        write_mnist_like(fresh / folder, n_train=3 + i, gz="" if i else ".gz")
    root = fresh / "root" if given else None
    if expected is None:
        with pytest.raises(FileNotFoundError) as err:
            data.load("fashion-mnist", root)
        looked, hint = str(err.value).split("\n(There is a copy in ")
        assert str(fresh / "root") in looked and str(fresh / "system") not in looked
        assert hint == f"{fresh / 'system' / 'fashion-mnist'}: leave root unset to use it.)"
        return
    ds = data.load("fashion-mnist", root)
    assert ds.source == str(fresh / expected)
    assert len(ds) == 3 + present.index(expected)


@pytest.mark.parametrize("name", ["digits", "mnist5k", "fashion12k"])
def test_root_without_the_dataset_is_named_not_ignored(fresh, name):
    """digits and mnist5k come with pip packages, fashion12k with the repository: another root says so."""
    ds = data.load(name)
    assert ds.source and ds.source in repr(ds)
    with pytest.warns(UserWarning, match=rf"{name} was read from .*, not from root="):
        assert data.load(name, fresh / "elsewhere").source == ds.source


def test_fashion12k_under_root_is_used(fresh):
    write_mnist_like(fresh / "mine" / "fashion12k", n_train=4)
    ds = data.load("fashion12k", fresh / "mine")
    assert len(ds) == 4 and ds.source == str(fresh / "mine" / "fashion12k")


def test_empty_variable_means_no_system_folder(monkeypatch):
    monkeypatch.setenv(data.SYSTEM_ENV, "")
    assert data.system_datasets() is None and all("/usr/share" not in str(c) for c in data.candidates("fashion-mnist"))
    monkeypatch.delenv(data.SYSTEM_ENV)
    assert data.system_datasets() == Path("/usr/share/datasets")


# ----------------------------------------------------------------------------------- python -m amdre.data
def test_listing_says_what_is_present_and_where_it_is_looked_for(fresh, capsys):
    assert data.main([]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()[0] in data.NAMES}
    assert set(rows) == set(data.NAMES)
    assert all("present" in rows[k] for k in OFFLINE) and "missing" in rows["fashion-mnist"]
    assert str(fresh / "work" / "data" / "FashionMNIST" / "raw") in rows["fashion-mnist"]
    assert "python -m amdre.data fetch svhn" in out and data.CELEBA_URL in out


def test_fetch_goes_through_torchvision_into_data(fresh, monkeypatch, capsys):
    torchvision = pytest.importorskip("torchvision")
    calls = []

    def fake(root, train, download):
        calls.append((Path(root), train, download))
        write_mnist_like(Path(root) / "FashionMNIST" / "raw", n_train=6)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake)
    assert data.main(["fetch", "fashion-mnist"]) == 0
    target = fresh / "work" / "data"
    assert calls == [(target, True, True), (target, False, True)]
    assert str(target / "FashionMNIST" / "raw") in capsys.readouterr().out
    assert len(data.load("fashion-mnist")) == 6


@pytest.mark.parametrize("args, expected", [(["fetch", "celeba"], data.CELEBA_URL), (["fetch", "digits"], "scikit-learn"),
                                            (["fetch", "imagenet"], "unknown dataset"), (["bogus"], "usage")])
def test_fetch_refusals_say_why(args, expected, capsys):
    assert data.main(args) == 2
    assert expected in capsys.readouterr().err


def test_module_runs_as_a_command(fresh):
    """``python -m amdre.data`` in a fresh interpreter: no import cycle, no runpy warning, every dataset listed."""
    env = {**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"}
    run = subprocess.run([sys.executable, "-m", "amdre.data"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert not run.stderr and all(name in run.stdout for name in data.NAMES)
    assert f"then {fresh / 'system'}" in run.stdout


# ------------------------------------------------------------------------------------------ quietness
def test_kernels_started_by_make_are_quiet(tmp_path):
    """A kernel started with the repo's .ipython/ (the Makefile's IPYTHONDIR) keeps ipykernel's notices about its
    local TCP transport out of `make demo`'s output."""
    jupyter_client = pytest.importorskip("jupyter_client")
    log = tmp_path / "kernel.log"
    km = jupyter_client.KernelManager(kernel_name="python3")
    with open(log, "w") as stderr:
        km.start_kernel(stderr=stderr, env={**os.environ, "IPYTHONDIR": str(ROOT / ".ipython")})
        try:
            kc = km.client()
            kc.start_channels()
            kc.wait_for_ready(timeout=120)
            kc.execute_interactive("print(1)", timeout=60)
            kc.stop_channels()
        finally:
            km.shutdown_kernel()
    assert "without encryption" not in log.read_text(), log.read_text()
