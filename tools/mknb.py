"""Build a notebook from a light 'percent' script: cells start with '# %%' (code) or '# %% [markdown]'.

A code cell whose first line is '# parameters' gets the papermill tag. Used to write notebooks/*.ipynb
from tools/notebooks/*.py so that diffs stay readable; `make notebooks` rebuilds and executes them.
"""
import os
import sys

import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(src: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    chunks = src.split("# %%")
    for chunk in chunks[1:]:
        head, _, body = chunk.partition("\n")
        body = body.strip("\n")
        if head.strip().startswith("[markdown]"):
            text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            nb.cells.append(nbformat.v4.new_markdown_cell(text))
        else:
            cell = nbformat.v4.new_code_cell(body)
            if body.startswith("# parameters"):
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    return nb


def strip(path: str) -> None:
    """Drop volatile metadata (papermill timings, execution timestamps) from an executed notebook."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


if __name__ == "__main__":
    if sys.argv[1] == "--strip":
        for path in sys.argv[2:]:
            strip(path)
        sys.exit(0)
    for path in sys.argv[1:]:
        out = os.path.join(ROOT, "notebooks", os.path.basename(path).replace(".py", ".ipynb"))
        nbformat.write(build(open(path).read()), out)
        print("wrote", out)
