"""Images (notebooks 03, 05, 08): grids, saved grids, and Langevin trajectories as strips and animations (Fig. 5)."""
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..files import atomic_write


def image_grid(images, nrow: int = 8, pad: int = 1) -> np.ndarray:
    """Tile images [N, C, H, W] in [-1, 1] into one [rows*(H+pad)+pad, nrow*(W+pad)+pad(, 3)] array in [0, 1]."""
    x = torch.as_tensor(images).detach().float().cpu()
    if x.ndim != 4 or x.shape[0] == 0 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be a non-empty [N, C, H, W] tensor with C = 1 or 3; got {tuple(x.shape)}")
    if not (isinstance(nrow, int) and nrow > 0):
        raise ValueError(f"nrow must be a positive int; got {nrow!r}")
    n, c, h, w = x.shape
    ncol, nrows = min(nrow, n), -(-n // min(nrow, n))
    grid = torch.ones(c, nrows * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, ncol)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = x[i]
    grid = ((grid + 1) / 2).clamp(0, 1).numpy()
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def show_images(images, nrow: int = 8, ax=None, title: str = None):
    """Draw images [N, C, H, W] in [-1, 1] as one grid (``image_grid``) on ``ax``; returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    grid = image_grid(images, nrow)
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def _frames_array(frames) -> torch.Tensor:
    x = torch.as_tensor(np.asarray([np.asarray(f) for f in frames]) if not torch.is_tensor(frames) else frames)
    if x.ndim != 5 or x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] not in (1, 3):
        raise ValueError(f"frames must be [T, N, C, H, W] (T recorded steps of N chains, C = 1 or 3); "
                         f"got {tuple(x.shape)}")
    return x.float()


def plot_trajectory_strip(frames, steps, n_chains: int = 8, n_cols: int = 9, title: str = None, show_steps=None,
                          ax=None):
    """Fig. 5 as a static strip: rows are chains, columns are Langevin steps, each column labelled with its step.

    ``frames`` [T, N, C, H, W] holds the decoded images of N chains at the T recorded ``steps``. The columns are
    ``show_steps`` (steps among ``steps``) when given, else ``n_cols`` evenly picked from ``steps``. Draws on
    ``ax`` when given; returns the figure.
    """
    x = _frames_array(frames)
    steps = list(steps)
    if len(steps) != x.shape[0]:
        raise ValueError(f"steps must have one entry per frame ({x.shape[0]}); got {len(steps)}")
    if show_steps is not None:
        missing = [t for t in show_steps if t not in steps]
        if missing or not len(show_steps):
            raise ValueError(f"show_steps must be a non-empty list of recorded steps; {missing} are not among "
                             f"the {len(steps)} recorded ({steps[0]}..{steps[-1]})")
        cols = np.array([steps.index(t) for t in show_steps])
    else:
        cols = np.unique(np.linspace(0, len(steps) - 1, min(n_cols, len(steps))).round().astype(int))
    rows = min(n_chains, x.shape[1])
    sel = x[cols][:, :rows].transpose(0, 1).reshape(-1, *x.shape[2:])          # row-major: chain, then step
    if ax is None:
        _, ax = plt.subplots(figsize=(0.8 * len(cols) + 0.6, 0.8 * rows + 0.7), constrained_layout=True)
    show_images(sel, nrow=len(cols), ax=ax)
    h, w, pad = x.shape[3], x.shape[4], 1
    ax.set_xticks([pad + i * (w + pad) + w / 2 for i in range(len(cols))], [str(steps[c]) for c in cols])
    ax.set_yticks([pad + i * (h + pad) + h / 2 for i in range(rows)], [str(i + 1) for i in range(rows)])
    ax.tick_params(length=0)
    ax.set_xlabel("Langevin step")
    ax.set_ylabel("chain")
    ax.set_title(title or "prior Langevin from $p_0 = N(0, I)$ towards $p_\\phi$")
    return ax.figure


def trajectory_animation(frames, steps, nrow: int = 8, interval: int = 120, title: str = "step {step}",
                         dpi: int = 100, inches_per_image: float = 1.0):
    """A matplotlib FuncAnimation of decoded Langevin chains: frame t shows all N chains at ``steps[t]``.

    Save with ``anim.save(path, writer="pillow")`` (no ffmpeg needed); show inline with
    ``IPython.display.HTML(anim.to_jshtml())``; close the figure afterwards (``plt.close(anim._fig)``).
    Each image takes ``inches_per_image`` at ``dpi``: the defaults make a row of 8 chains 840 px wide, readable
    at the README's width. ``dpi`` also sets the size of the GIF and of the embedded frames.
    """
    from matplotlib import animation

    x = _frames_array(frames)
    steps = list(steps)
    if len(steps) != x.shape[0]:
        raise ValueError(f"steps must have one entry per frame ({x.shape[0]}); got {len(steps)}")
    if not (isinstance(inches_per_image, (int, float)) and inches_per_image > 0):
        raise ValueError(f"inches_per_image must be a number > 0; got {inches_per_image!r}")
    grids = [image_grid(f, nrow) for f in x]
    cols, rows = min(nrow, x.shape[1]), -(-x.shape[1] // nrow)
    fig, ax = plt.subplots(figsize=(inches_per_image * cols + 0.4, inches_per_image * rows + 0.6), dpi=dpi)
    im = ax.imshow(grids[0], cmap="gray" if grids[0].ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    label = ax.set_title(title.format(step=steps[0]))
    fig.tight_layout()

    def update(t):
        im.set_data(grids[t])
        label.set_text(title.format(step=steps[t]))
        return im, label

    return animation.FuncAnimation(fig, update, frames=len(grids), interval=interval, blit=False)


def save_grid(images, path, nrow: int = 8, title: str = None):
    """Save images [N, C, H, W] in [-1, 1] as one titled grid PNG at ``path`` (atomically, see ``savefig``)."""
    grid = image_grid(images, nrow)
    h, w = grid.shape[:2]
    fig, ax = plt.subplots(figsize=(max(4.0, w / 40), h / 40 + (0.5 if title else 0.1)), dpi=100)
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight"))
    plt.close(fig)
    return Path(path)
