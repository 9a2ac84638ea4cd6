"""Plotting helpers the notebooks call: the logic lives here (tested), the notebooks keep the prose."""
import os

import matplotlib.pyplot as plt
from matplotlib.colors import TwoSlopeNorm
import numpy as np
import torch

from . import paths


def savefig(fig, name: str, folder=None) -> str:
    """Write ``fig`` to figures/<name> (atomically: a half-written PNG never replaces a good one)."""
    folder = paths.FIGURES if folder is None else folder
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def grid_points(extent=3.0, n=120):
    """A square n x n grid over [-extent, extent]^2 as ([n*n, 2] tensor, xx, yy)."""
    t = torch.linspace(-extent, extent, n)
    xx, yy = torch.meshgrid(t, t, indexing="xy")
    return torch.stack([xx.flatten(), yy.flatten()], 1), xx.numpy(), yy.numpy()


@torch.no_grad()
def _on_grid(fn, extent, n):
    pts, xx, yy = grid_points(extent, n)
    return fn(pts).reshape(n, n).numpy(), xx, yy


def plot_log_ratio_heatmaps(true_fn, est_fn, xp=None, xq=None, extent=3.0, n=120, title="", axes=None):
    """True vs estimated log p(x)/q(x) on a grid, on one colour scale, with samples of p and q overlaid."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 4), constrained_layout=True)
    true, xx, yy = _on_grid(true_fn, extent, n)
    est, _, _ = _on_grid(est_fn, extent, n)
    ref = true if xp is None else torch.cat([true_fn(torch.as_tensor(s[:2000])) for s in (xp, xq) if s is not None]).numpy()
    lo, hi = np.percentile(ref, 1), np.percentile(ref, 99)  # the range where the samples live
    for ax, z, name in zip(axes, (true, est), ("true", "estimated")):
        im = ax.pcolormesh(xx, yy, np.clip(z, lo, hi), cmap="RdBu_r", norm=TwoSlopeNorm(0.0, min(lo, -1e-3), max(hi, 1e-3)),
                           shading="auto")
        for s, c in ((xp, "k"), (xq, "gold")):
            if s is not None:
                ax.scatter(s[:300, 0], s[:300, 1], s=2, c=c, alpha=0.5)
        ax.set_title(f"{name} log p/q {title}")
        ax.set_aspect("equal")
    plt.colorbar(im, ax=axes, shrink=0.8)
    return axes[0].figure


def plot_kl_sweep(gaps, true_kl, estimates: dict, ax=None):
    """Estimated vs true KL(p||q) as the gap grows; ``estimates`` maps a label to a list of KLs."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    ax.plot(gaps, true_kl, "k--", lw=2, label="true KL (closed form)")
    for label, kl in estimates.items():
        ax.plot(gaps, kl, "o-", label=label)
    ax.set_xlabel("gap between p and q")
    ax.set_ylabel("KL(p || q)  [nats]")
    ax.legend()
    return ax.figure


def plot_waymarks(waymarks, extent=3.0, axes=None, max_points=400):
    """Scatter of each waymark's samples x_0 = x_p ... x_m = x_q."""
    m = len(waymarks)
    if axes is None:
        _, axes = plt.subplots(1, m, figsize=(2.2 * m, 2.4), constrained_layout=True)
    colors = plt.cm.viridis(np.linspace(0, 1, m))
    for k, (ax, w) in enumerate(zip(np.atleast_1d(axes), waymarks)):
        ax.scatter(w[:max_points, 0], w[:max_points, 1], s=3, color=colors[k])
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"$p_{{{k}}}$")
    return np.atleast_1d(axes)[0].figure


def plot_tre_stage(model, waymarks, k, extent=3.0, n=100, axes=None):
    """Stage k of a TRE model: samples of waymarks k and k+1, and the learned log p_k/p_{k+1}."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(8, 3.6), constrained_layout=True)
    z, xx, yy = _on_grid(lambda x: model.ratios[k](x), extent, n)
    lim = np.percentile(np.abs(z), 99)
    axes[0].scatter(waymarks[k][:500, 0], waymarks[k][:500, 1], s=3, label=f"$p_{{{k}}}$")
    axes[0].scatter(waymarks[k + 1][:500, 0], waymarks[k + 1][:500, 1], s=3, label=f"$p_{{{k + 1}}}$")
    axes[0].legend(loc="upper left", markerscale=3)
    axes[0].set_title(f"stage {k}: the two waymarks it separates")
    im = axes[1].pcolormesh(xx, yy, z, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="auto")
    axes[1].set_title(f"learned log $r_{{{k}}}$ = log $p_{{{k}}}/p_{{{k + 1}}}$")
    plt.colorbar(im, ax=axes[1])
    for ax in axes:
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
    return axes[0].figure


def plot_losses(losses, ax=None, smooth=50, labels=None, xlabel="training step"):
    """Per-ratio (or per-stage) training-loss curves, smoothed by a running mean."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    for k, curve in enumerate(losses):
        c = np.asarray(curve, dtype=float)
        if len(c) == 0:
            continue
        w = max(1, min(smooth, len(c) // 5))
        c = np.convolve(c, np.ones(w) / w, mode="valid")
        ax.plot(c, label=labels[k] if labels else f"ratio {k}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("NCE loss (Eq. 4)")
    ax.legend()
    return ax.figure


# --------------------------------------------------------------------------- latent EBM (notebooks 03, 04)
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


def stage_curves(history: dict, key: str = "nce_loss") -> list:
    """Per-stage lists of a per-batch trainer history entry (``amdre.train.Trainer.history``): [curve_0, ...]."""
    if key not in history or "stage" not in history:
        raise ValueError(f"history must hold 'stage' and {key!r} (a Trainer.history); has {sorted(history)}")
    stages, values = history["stage"], history[key]
    if not stages or stages[0] is None:
        raise ValueError("history has no adaptive stages (empty, or a non-adaptive run)")
    m = max(s for s in stages if s is not None) + 1
    return [[v for s, v in zip(stages, values) if s == k] for k in range(m)]


def plot_stage_losses(history: dict, key: str = "nce_loss", smooth: int = 20, ax=None):
    """Fig. 4: each stage's NCE loss (Eq. 4) against the training step *within* that stage, overlaid."""
    curves = stage_curves(history, key)
    fig = plot_losses(curves, ax=ax, smooth=smooth, labels=[f"stage {k}" for k in range(len(curves))],
                      xlabel="training step within the stage")
    ax = fig.axes[0] if ax is None else ax
    if key == "nce_loss":
        ax.axhline(2 * np.log(2), color="gray", ls=":", lw=1)
        ax.text(0, 2 * np.log(2), " chance: 2 log 2", va="bottom", color="gray", fontsize=8)
    else:
        ax.set_ylabel(key)
    return fig


@torch.no_grad()
def stage_grid(prior, k: int, extent: float = 3.0, n: int = 100) -> dict:
    """Stage k of a 2-D EBMPrior on an n x n grid over [-extent, extent]^2.

    Returns numpy arrays ``p_k`` and ``p_next`` (the densities of p_k = prod_{i<k} r_i N(0, I) and of
    p_{k+1} = r_k p_k, each normalised to sum to 1 over the grid cells' area), ``log_r`` (log r_k) and the
    grid ``xx``, ``yy``.
    """
    nz = getattr(prior, "nz", None)
    if nz != 2:
        raise ValueError(f"stage plots need a 2-D latent (prior.nz == 2); got nz={nz!r}")
    m = prior.n_stages
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < m:
        raise ValueError(f"k must be a stage index in 0..{m - 1} (the prior has {m} stages); got {k!r}")
    k = int(k)
    pts, xx, yy = grid_points(extent, n)
    cell = (2 * extent / (n - 1)) ** 2
    out = {"xx": xx, "yy": yy}
    for name, j in (("p_k", k), ("p_next", k + 1)):
        lp = prior.log_prob(pts, n_stages=j)
        out[name] = torch.softmax(lp, 0).div(cell).reshape(n, n).numpy()
    out["log_r"] = prior.stages[k](pts).reshape(n, n).numpy()
    return out


def plot_stage(prior, k: int, z_post, generator=None, extent: float = 3.0, n: int = 100, n_samples: int = 36,
               n_proposals: int = 20000, seed: int = 0, axes=None):
    """One stage k of adaptive multi-stage NCE in a 2-D latent space, side by side (Sec. 3.3, Fig. 1).

    Panels: the prior p_k (density on the grid), the aggregated posterior q_k (``z_post`` [N, 2], posterior
    samples of the data under p_k, over p_k's contours), the learned log r_k ~ log q_k / p_k, the new prior
    p_{k+1} = r_k p_k with q_k's samples over it, and, when ``generator`` is given, images decoded from
    ``n_samples`` SIR draws of p_{k+1} (seeded). ``prior`` is an EBMPrior with nz = 2 and at least k + 1
    stages. Returns the figure; raises ValueError for a k outside 0..prior.n_stages - 1.
    """
    g = stage_grid(prior, k, extent, n)
    z = torch.as_tensor(z_post).detach().float().cpu()
    if z.ndim != 2 or z.shape[1] != 2 or len(z) == 0:
        raise ValueError(f"z_post must be posterior samples of shape [N, 2]; got {tuple(z.shape)}")
    n_panels = 5 if generator is not None else 4
    if axes is None:
        _, axes = plt.subplots(1, n_panels, figsize=(3.1 * n_panels, 3.2), constrained_layout=True)
    axes = np.atleast_1d(axes)
    if len(axes) != n_panels:
        raise ValueError(f"plot_stage draws {n_panels} panels; got {len(axes)} axes")
    xx, yy = g["xx"], g["yy"]
    pts = z[:1500].numpy()
    axes[0].pcolormesh(xx, yy, g["p_k"], cmap="Blues", shading="auto")
    axes[0].set_title(f"prior $p_{{{k}}}$" + (" = N(0, I)" if k == 0 else ""))
    axes[1].contour(xx, yy, g["p_k"], levels=5, colors="C0", linewidths=0.8)
    axes[1].scatter(pts[:, 0], pts[:, 1], s=2, c="C1", alpha=0.5)
    axes[1].set_title(f"posterior samples: $q_{{{k}}}$")
    lim = max(float(np.percentile(np.abs(g["log_r"]), 99)), 1e-3)
    axes[2].pcolormesh(xx, yy, g["log_r"], cmap="RdBu_r", vmin=-lim, vmax=lim, shading="auto")
    axes[2].set_title(f"log $r_{{{k}}}$ ≈ log $q_{{{k}}}/p_{{{k}}}$")
    axes[3].pcolormesh(xx, yy, g["p_next"], cmap="Blues", shading="auto")
    axes[3].scatter(pts[:300, 0], pts[:300, 1], s=2, c="C1", alpha=0.5)
    axes[3].set_title(f"new prior $p_{{{k + 1}}} = r_{{{k}}}\\,p_{{{k}}}$")
    for ax in axes[:4]:
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if generator is not None:
        device = next(iter(prior.parameters()), torch.empty(0)).device
        zs = prior.sample_sir(n_samples, n_proposals, n_stages=k + 1,
                              generator=torch.Generator(device=device).manual_seed(seed))
        with torch.no_grad():
            x = generator(zs.to(next(iter(generator.parameters()), zs).device)).cpu()
        show_images(x, nrow=int(np.ceil(np.sqrt(n_samples))), ax=axes[4], title=f"decoded samples of $p_{{{k + 1}}}$")
    return axes[0].figure
