"""The package's shape: import-linter's layer contracts hold, every module stays readable in one sitting, and the
command line answers --help."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 400


def test_import_contracts_hold():
    """``lint-imports`` (the contracts in pyproject.toml: the layers of amdre, the math modules' few imports)."""
    pytest.importorskip("importlinter")
    proc = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()", "--no-cache"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 broken" in proc.stdout and "KEPT" in proc.stdout


def test_no_module_is_over_400_lines():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in (REPO / "amdre").rglob("*.py")}
    assert len(sizes) > 10 and "amdre/viz/__init__.py" in sizes
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}


def test_command_line_help():
    proc = subprocess.run([sys.executable, "-m", "amdre", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m amdre")
    for option in ("--config", "--no-eval", "--epochs", "--init-from", "--device", "--out-dir"):
        assert option in proc.stdout, option


def test_paths_follow_the_working_folder(tmp_path, monkeypatch):
    """root() is $AMDRE_ROOT, else the amdre checkout holding the working folder, else the working folder."""
    from amdre import paths
    monkeypatch.delenv("AMDRE_ROOT", raising=False)
    monkeypatch.delenv("AMDRE_FIGURES", raising=False)
    monkeypatch.chdir(REPO / "notebooks")                       # where nbval starts kernels
    assert paths.root() == REPO.resolve() and paths.runs() == REPO.resolve() / "runs"
    assert paths.data() == REPO.resolve() / "data" and paths.figures() == REPO.resolve() / "runs" / "figures"
    assert paths.configs() == REPO.resolve() / "configs"
    monkeypatch.chdir(tmp_path)                                  # outside any checkout: the working folder
    assert paths.root() == tmp_path.resolve() and paths.runs() == tmp_path.resolve() / "runs"
    assert (paths.configs() / "svhn.yaml").is_file()            # the presets beside the package's source
    monkeypatch.setenv("AMDRE_ROOT", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("AMDRE_FIGURES", str(tmp_path / "figs"))
    assert paths.root() == (tmp_path / "elsewhere").resolve() and paths.figures() == (tmp_path / "figs").resolve()
    assert paths.data() == (tmp_path / "elsewhere").resolve() / "data"


@pytest.mark.parametrize("nb", sorted((REPO / "notebooks").glob("0*.ipynb")), ids=lambda p: p.stem)
def test_committed_notebooks_are_executed_paired_and_free_of_volatile_metadata(nb):
    import jupytext
    import nbformat

    book = nbformat.read(nb, as_version=4)
    assert set(book.metadata) <= {"kernelspec", "language_info"}, f"{nb.name}: notebook metadata {set(book.metadata)}"
    for i, cell in enumerate(book.cells):
        assert not {"papermill", "execution"} & set(cell.metadata), f"{nb.name} cell {i}: run timings in its metadata"
        assert cell.metadata.get("tags", None) != [], f"{nb.name} cell {i}: an empty tags list"
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), f"{nb.name}: not executed (make notebooks)"
    paired = jupytext.read(nb.with_suffix(".py"))                      # the py:percent source says the same cells
    assert [c.source for c in paired.cells] == [c.source for c in book.cells], f"{nb.name}: run jupytext --sync"
