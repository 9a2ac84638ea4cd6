"""Where runs, figures and data go: resolved from where you work, never from where amdre is installed.

``root()`` is ``$AMDRE_ROOT`` if set, else the amdre checkout that holds the working directory (the
nearest folder upwards with a ``pyproject.toml`` naming the ``amdre`` project: nbval starts kernels in
``notebooks/``, papermill in the caller's folder, and both find the same checkout), else the working
directory itself. So a kernel that imports another checkout's amdre, or an installed copy, still writes
into the folder you are working in.

* ``runs()``: ``root()/runs``, training runs and caches;
* ``data()``: ``root()/data``, datasets in their standard layouts (``amdre.data``);
* ``figures()``: ``$AMDRE_FIGURES`` if set, else ``runs()/figures``. The README's ``figures/`` folder is
  written only by ``make notebooks``, which runs every notebook at its defaults into a staging folder and
  copies the figures of the notebooks whose claims passed; any other run keeps its figures to itself.
"""
import os
from pathlib import Path


def _is_checkout(folder: Path) -> bool:
    project = folder / "pyproject.toml"
    try:
        return project.is_file() and 'name = "amdre"' in project.read_text()
    except OSError:
        return False


def root() -> Path:
    """The folder that runs/, data/ and figures/ hang from (see the module docstring)."""
    if os.environ.get("AMDRE_ROOT"):
        return Path(os.environ["AMDRE_ROOT"]).resolve()
    cwd = Path.cwd().resolve()
    return next((d for d in (cwd, *cwd.parents) if _is_checkout(d)), cwd)


def runs() -> Path:
    return root() / "runs"


def data() -> Path:
    return root() / "data"


def figures() -> Path:
    return Path(os.environ["AMDRE_FIGURES"]).resolve() if os.environ.get("AMDRE_FIGURES") else runs() / "figures"


def configs() -> Path:
    """The presets folder: ``root()/configs``, else the one beside this package's source (an editable checkout)."""
    here = root() / "configs"
    return here if here.is_dir() else Path(__file__).resolve().parents[1] / "configs"
