"""The latent EBM during training (notebooks 03, 04, 05): stage losses (Fig. 4), the 2-D stage explorer, training curves."""
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from .images import show_images
from .ratios import grid_points, plot_losses


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
    with torch.no_grad():   # colour range: where the posterior samples are (far corners saturate)
        lim = max(float(prior.stages[k](z).abs().quantile(0.99)), 1e-3)
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


@torch.no_grad()
def grid_log_density(prior, z, n_stages: int, extent: float = 3.0, n: int = 200) -> torch.Tensor:
    """log p_j(z) [N] of a 2-D EBMPrior with j = ``n_stages``, normalised over the n x n plotting grid on
    [-extent, extent]^2 (the normaliser is a Riemann sum there, as ``stage_grid``'s densities are), so that
    densities of different stages can be compared on the samples z [N, 2]."""
    if getattr(prior, "nz", None) != 2:
        raise ValueError(f"grid_log_density needs a 2-D latent (prior.nz == 2); got nz={getattr(prior, 'nz', None)!r}")
    pts, _, _ = grid_points(extent, n)
    log_z = torch.logsumexp(prior.log_prob(pts, n_stages=n_stages), 0) + 2 * np.log(2 * extent / (n - 1))
    return prior.log_prob(torch.as_tensor(z).float(), n_stages=n_stages) - log_z


# --------------------------------------------------------------------------- evaluation (notebooks 06, 07, 08)


def plot_curves(history: dict, ax=None):
    """Per-epoch means of a run's training MSE and of each stage's NCE loss (``Trainer.history``), side by side."""
    epochs = sorted(set(history["epoch"]))

    def per_epoch(key):
        return [np.mean([v for e2, v in zip(history["epoch"], history[key]) if e2 == e]) for e in epochs]

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    axes[0].plot([e + 1 for e in epochs], per_epoch("mse"), marker="o")
    axes[0].set(xlabel="epoch", ylabel="training MSE per pixel ([-1, 1])", yscale="log",
                title="reconstruction error during training")
    stages = [history["stage"][history["epoch"].index(e)] for e in epochs]
    nce = per_epoch("nce_loss")
    for k in sorted(set(s for s in stages if s is not None)):
        axes[1].plot([e + 1 for e, s in zip(epochs, stages) if s == k], [v for v, s in zip(nce, stages) if s == k],
                     marker="o", label=f"stage {k}")
    axes[1].axhline(2 * math.log(2), color="gray", ls=":", lw=1, label="chance (2 log 2)")
    axes[1].set(xlabel="epoch", ylabel="NCE loss (Eq. 4)", title="each stage's ratio estimation")
    axes[1].legend(fontsize=8)
    return fig
