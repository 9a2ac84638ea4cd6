"""Where things live: resolved from the repo root (or $AMDRE_ROOT), never from the caller's folder.

nbval starts kernels in ``notebooks/``, papermill in the caller's folder; both write to the same place.
"""
import os
from pathlib import Path

ROOT = Path(os.environ.get("AMDRE_ROOT", Path(__file__).resolve().parents[1]))
FIGURES = ROOT / "figures"
DATA = ROOT / "data"
RUNS = ROOT / "runs"
