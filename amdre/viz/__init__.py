"""All plotting: the logic lives here (tested), the notebooks keep the prose.

``ratios`` draws 2-D density ratios (notebooks 01, 02), ``latent`` the latent EBM during training (03-05),
``images`` image grids and Langevin trajectories (03, 05, 08), ``evaluation`` Tables 2 and 3 (06, 07), ``diagram``
the paper's Figure 1 (03). ``savefig`` writes a figure atomically into
``amdre.paths.figures()``: the README's ``figures/`` only under ``make notebooks``, else the run's own folder.
"""
from pathlib import Path

import matplotlib.pyplot as plt

from ..files import atomic_write
from .. import paths
from .diagram import plot_figure1
from .evaluation import (plot_ablation, plot_auprc_table, plot_score_terms, plot_table3, ranked_grid,
                         show_ranked)
from .images import image_grid, plot_trajectory_strip, save_grid, show_images, trajectory_animation
from .latent import (epoch_means, plot_curves, plot_latent_map, plot_stage, plot_stages, plot_stage_epochs,
                     plot_stage_losses, stage_curves, stage_grid)
from .ratios import (CHANCE_NCE, figure_slider, plot_kl_sweep, plot_log_ratio_heatmaps,
                     plot_log_ratio_slice, plot_losses, plot_tre_stage, plot_tre_stages, plot_waymarks)


def savefig(fig, name: str, folder=None, close: bool = False) -> Path:
    """Write ``fig`` to ``folder/name`` (default folder: ``amdre.paths.figures()``) through a temporary file, so a
    half-written PNG never replaces a good one; returns the path. ``close`` closes the figure afterwards."""
    path = Path(paths.figures() if folder is None else folder) / name
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"))
    if close:
        plt.close(fig)
    return path


def show_saved(fig, name: str) -> Path:
    """``savefig(fig, name, close=True)``, then display that PNG in the notebook: one rendering, the same pixels as
    the file. Returns the path."""
    from IPython.display import Image, display

    path = savefig(fig, name, close=True)
    display(Image(filename=str(path)))
    return path
