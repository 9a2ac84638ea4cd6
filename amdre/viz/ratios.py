"""2-D density ratios (notebooks 01, 02): true vs estimated log-ratios, KL sweeps, waymarks, TRE stages, loss curves."""
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import TwoSlopeNorm

CHANCE_NCE = 2 * np.log(2)          # Eq. 4's loss of a classifier that cannot tell p from q


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
