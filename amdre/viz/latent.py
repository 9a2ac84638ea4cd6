"""The latent EBM during training (notebooks 03-05): stage losses (Fig. 4), the 2-D stage explorer, training curves.

Every 2-D panel is drawn in the latent coordinates (z_1, z_2); densities are normalised over the plotted square
(a Riemann sum on the grid), so densities of different stages share one colour scale.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..grid import grid_points
from ..samplers import sample_sir
from .images import image_grid, show_images
from .ratios import CHANCE_NCE, plot_losses


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
        ax.axhline(CHANCE_NCE, color="gray", ls=":", lw=1)
        ax.text(0, CHANCE_NCE, " chance: 2 log 2", va="bottom", color="gray", fontsize=8)
        ax.set_title("each stage's NCE loss (Fig. 4)")
    else:
        ax.set_ylabel(key)
    return fig


def epoch_means(history: dict, key: str) -> tuple:
    """(epochs counted from 1, per-epoch means of ``key``, the stage of each epoch) of a ``Trainer.history``."""
    if key not in history or "epoch" not in history:
        raise ValueError(f"history must hold 'epoch' and {key!r} (a Trainer.history); has {sorted(history)}")
    rows = {}
    for i, e in enumerate(history["epoch"]):                      # one pass: paper-scale histories are long
        rows.setdefault(e, []).append(i)
    epochs = sorted(rows)
    means = [float(np.mean([history[key][i] for i in rows[e]])) for e in epochs]
    stages = [history["stage"][rows[e][0]] if "stage" in history else None for e in epochs]
    return [e + 1 for e in epochs], means, stages


def plot_stage_epochs(history: dict, key: str = "nce_loss", ax=None, reference: float = None,
                      reference_label: str = None, ylabel: str = None, title: str = None):
    """Per-epoch means of a history entry against the epoch, one colour per stage (stage k: its epochs).

    ``reference`` draws a horizontal line (e.g. chance for the NCE loss, or E||z||^2 = nz under N(0, I)).
    """
    epochs, means, stages = epoch_means(history, key)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4), constrained_layout=True)
    for k in sorted({s for s in stages if s is not None}):
        ax.plot([e for e, s in zip(epochs, stages) if s == k], [v for v, s in zip(means, stages) if s == k],
                marker="o", ms=3, label=f"stage {k}")
    if all(s is None for s in stages):
        ax.plot(epochs, means, marker="o", ms=3)
    if reference is not None:
        ax.axhline(reference, color="gray", ls=":", lw=1.5, label=reference_label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel or key)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax.figure


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


def _readable(x: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Images smaller than ``size`` pixels upscaled smoothly (bicubic) to about ``size``, so that 8x8 digits read as
    digits rather than blocks when tiled; larger images unchanged."""
    x = x.detach().float().cpu()
    factor = size // max(x.shape[-2:])
    if factor < 2:
        return x
    return torch.nn.functional.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False).clamp(-1, 1)


def _latent_axes(ax, extent: float) -> None:
    ticks = np.linspace(-extent, extent, 5)                  # fixed ticks: five labels per axis, cheap to lay out
    ax.set(xlim=(-extent, extent), ylim=(-extent, extent), aspect="equal", xticks=ticks, yticks=ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks], fontsize=8)
    ax.set_yticklabels([f"{t:g}" for t in ticks], fontsize=8)
    ax.set_xlabel("$z_1$", labelpad=1)
    ax.set_ylabel("$z_2$", labelpad=0)


def _colorbar(fig, im, ax, label: str, **kw):
    bar = fig.colorbar(im, ax=ax, shrink=0.85, **kw)
    bar.locator = plt.MaxNLocator(4)
    bar.update_ticks()
    bar.ax.tick_params(labelsize=8)
    bar.set_label(label, fontsize=9)
    return bar


def plot_stages(priors, posteriors, extent: float = 3.0, n: int = 80):
    """Every stage of a run in a 2-D latent space, one row each, three large panels (the static figure; the slider
    view ``plot_stage`` adds the decoded samples): the prior p_k under the posterior samples of q_k, the learned
    log r_k, and the new prior p_{k+1} = r_k p_k under the same samples. ``priors[k]`` is the EBMPrior saved at the end
    of stage k (k + 1 stages), ``posteriors[k]`` its samples of q_k [N, 2]."""
    m = len(priors)
    fig, axes = plt.subplots(m, 3, figsize=(13, 3.9 * m), constrained_layout=True, squeeze=False)
    for k, (prior, z) in enumerate(zip(priors, posteriors)):
        g, pts = stage_grid(prior, k, extent, n), torch.as_tensor(z)[:600].numpy()
        vmax = float(max(g["p_k"].max(), g["p_next"].max()))
        for j, (key, title) in enumerate((("p_k", f"prior $p_{{{k}}}$" + (" = N(0, I)" if k == 0 else "")),
                                          ("p_next", f"new prior $p_{{{k + 1}}} = r_{{{k}}}\\,p_{{{k}}}$"))):
            ax = axes[k, 2 * j]
            im = ax.pcolormesh(g["xx"], g["yy"], g[key], cmap="Blues", vmin=0, vmax=vmax, shading="auto")
            ax.scatter(pts[:, 0], pts[:, 1], s=3, c="C1", alpha=0.5, label=f"samples of $q_{{{k}}}$")
            _colorbar(fig, im, ax, "density")
            ax.set_title(title, fontsize=13)
        with torch.no_grad():
            lim = max(float(prior.stages[k](torch.as_tensor(z)).abs().quantile(0.99)), 1e-3)
        im = axes[k, 1].pcolormesh(g["xx"], g["yy"], np.clip(g["log_r"], -lim, lim), cmap="RdBu_r", vmin=-lim,
                                   vmax=lim, shading="auto")
        _colorbar(fig, im, axes[k, 1], "nats", extend="both")
        axes[k, 1].set_title(f"stage {k}: log $r_{{{k}}}$ ≈ log $q_{{{k}}}/p_{{{k}}}$", fontsize=13)
        for ax in axes[k]:
            _latent_axes(ax, extent)
            ax.tick_params(labelsize=10)
        axes[k, 0].legend(loc="lower left", fontsize=10, markerscale=4)
    return fig


def plot_stage(prior, k: int, z_post, generator=None, extent: float = 3.0, n: int = 100, n_samples: int = 16,
               n_proposals: int = 20000, seed: int = 0, axes=None):
    """One stage k of adaptive multi-stage NCE in a 2-D latent space, side by side (Sec. 3.3, Fig. 1).

    Panels, in the latent coordinates (z_1, z_2): the prior p_k (density on the grid), the aggregated
    posterior q_k (``z_post`` [N, 2], posterior samples of the data under p_k, over p_k's contours), the
    learned log r_k ~ log q_k / p_k (nats; blue where the prior has too much mass, red too little), the new
    prior p_{k+1} = r_k p_k with q_k's samples over it, and, when ``generator`` is given, images decoded from
    ``n_samples`` SIR draws of p_{k+1} (seeded), as a square grid, small images upscaled smoothly to be read.
    p_k and p_{k+1} share one colour scale. ``prior`` is an EBMPrior with nz = 2 and at least k + 1 stages.
    Returns the figure; raises ValueError for a k outside 0..prior.n_stages - 1.
    """
    g = stage_grid(prior, k, extent, n)
    z = torch.as_tensor(z_post).detach().float().cpu()
    if z.ndim != 2 or z.shape[1] != 2 or len(z) == 0:
        raise ValueError(f"z_post must be posterior samples of shape [N, 2]; got {tuple(z.shape)}")
    n_panels = 5 if generator is not None else 4
    if axes is None:
        _, axes = plt.subplots(1, n_panels, figsize=(3.6 * n_panels, 3.3), constrained_layout=True)
    axes = np.atleast_1d(axes)
    if len(axes) != n_panels:
        raise ValueError(f"plot_stage draws {n_panels} panels; got {len(axes)} axes")
    fig = axes[0].figure
    xx, yy = g["xx"], g["yy"]
    pts = z[:1500].numpy()
    vmax = float(max(g["p_k"].max(), g["p_next"].max()))
    im = axes[0].pcolormesh(xx, yy, g["p_k"], cmap="Blues", vmin=0, vmax=vmax, shading="auto")
    _colorbar(fig, im, axes[0], "density")
    axes[0].set_title(f"prior $p_{{{k}}}$" + (" = N(0, I)" if k == 0 else ""))
    axes[1].contour(xx, yy, g["p_k"], levels=5, colors="C0", linewidths=0.8)
    axes[1].scatter(pts[:, 0], pts[:, 1], s=2, c="C1", alpha=0.5)
    axes[1].set_title(f"posterior samples: $q_{{{k}}}$ (contours: $p_{{{k}}}$)", fontsize=10)
    with torch.no_grad():   # colour range: where the posterior samples are (far corners saturate)
        lim = max(float(prior.stages[k](z).abs().quantile(0.99)), 1e-3)
    im = axes[2].pcolormesh(xx, yy, np.clip(g["log_r"], -lim, lim), cmap="RdBu_r", vmin=-lim, vmax=lim,
                            shading="auto")
    _colorbar(fig, im, axes[2], "log $r_k$  [nats]", extend="both")
    axes[2].set_title(f"log $r_{{{k}}}$ ≈ log $q_{{{k}}}/p_{{{k}}}$")
    im = axes[3].pcolormesh(xx, yy, g["p_next"], cmap="Blues", vmin=0, vmax=vmax, shading="auto")
    _colorbar(fig, im, axes[3], "density")
    axes[3].scatter(pts[:300, 0], pts[:300, 1], s=2, c="C1", alpha=0.5)
    axes[3].set_title(f"new prior $p_{{{k + 1}}} = r_{{{k}}}\\,p_{{{k}}}$")
    for ax in axes[:4]:
        _latent_axes(ax, extent)
    if generator is not None:
        zs = sample_sir(prior, n_samples, n_proposals, n_stages=k + 1,
                        generator=torch.Generator(device=prior.where.device).manual_seed(seed))
        with torch.no_grad():
            x = generator(zs.to(next(iter(generator.parameters()), zs).device)).cpu()
        show_images(_readable(x), nrow=int(np.ceil(np.sqrt(n_samples))), ax=axes[4],
                    title=f"decoded samples of $p_{{{k + 1}}}$")
    return fig


@torch.no_grad()
def plot_latent_map(generator, z, labels=None, extent: float = 3.0, n: int = 7, title: str = None):
    """What a generator with a 2-D latent does with its plane, in two panels.

    Left: latent samples ``z`` [N, 2] (e.g. the aggregated posterior), coloured by ``labels`` (class of
    each sample's image) when given. Right: the images g(z) decoded on an n x n lattice over
    [-extent, extent]^2, laid out as the plane (z_2 grows upwards), with the lattice's coordinates on the axes.
    """
    z = torch.as_tensor(z).detach().float().cpu()
    if z.ndim != 2 or z.shape[1] != 2 or len(z) == 0:
        raise ValueError(f"z must be latent samples of shape [N, 2]; got {tuple(z.shape)}")
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"n must be an int >= 2 (lattice points per axis); got {n!r}")
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 5.0), constrained_layout=True)
    if labels is not None:
        c = np.asarray(labels)
        sc = axes[0].scatter(z[:, 0], z[:, 1], c=c, cmap="tab10", vmin=-0.5, vmax=9.5, s=4, alpha=0.8)
        fig.colorbar(sc, ax=axes[0], ticks=range(10), shrink=0.85, label="class of the image")
    else:
        axes[0].scatter(z[:, 0], z[:, 1], s=3, alpha=0.5)
    _latent_axes(axes[0], extent)
    axes[0].set_title(title or "latent samples")
    t = torch.linspace(-extent, extent, n)
    lattice = torch.stack([t.repeat(n), t.flip(0).repeat_interleave(n)], 1)     # rows: z_2 from top to bottom
    device = next(iter(generator.parameters()), torch.empty(0)).device
    x = _readable(generator(lattice.to(device)))
    grid = image_grid(x, nrow=n)
    axes[1].imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    h, w, pad = x.shape[2], x.shape[3], 1
    centres_x = [pad + i * (w + pad) + w / 2 for i in range(n)]
    centres_y = [pad + i * (h + pad) + h / 2 for i in range(n)]
    axes[1].set_xticks(centres_x, [f"{v:.3g}" for v in t.tolist()], fontsize=8)
    axes[1].set_yticks(centres_y, [f"{v:.3g}" for v in t.flip(0).tolist()], fontsize=8)
    axes[1].set_xlabel("$z_1$")
    axes[1].set_ylabel("$z_2$")
    axes[1].set_title("the generator's images $g(z)$ on a lattice of the plane")
    return fig


# --------------------------------------------------------------------------- training curves (notebooks 05, 06, 07, 08)


def plot_curves(history: dict, mse_reference: float = None, mse_reference_label: str = "the mean image"):
    """Per-epoch means of a run's training MSE and of each stage's NCE loss (``Trainer.history``), side by side.

    ``mse_reference`` draws a reference line on the MSE panel, e.g. the MSE of the mean training image (the best
    constant guess: the per-pixel variance of the data).
    """
    from matplotlib.ticker import FormatStrFormatter

    epochs, mse, _ = epoch_means(history, "mse")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    axes[0].plot(epochs, mse, marker="o", ms=4, label="training batches")
    if mse_reference is not None:
        axes[0].axhline(mse_reference, color="gray", ls=":", lw=1.5, label=mse_reference_label)
        axes[0].legend(fontsize=8)
    axes[0].set(xlabel="epoch", ylabel="training MSE per pixel ([-1, 1])", yscale="log",
                title="reconstruction error during training")
    for axis in (axes[0].yaxis.set_major_formatter, axes[0].yaxis.set_minor_formatter):
        axis(FormatStrFormatter("%.2g"))
    if any(s is not None for s in history.get("stage", [])):
        plot_stage_epochs(history, "nce_loss", ax=axes[1], reference=CHANCE_NCE, reference_label="chance (2 log 2)",
                          ylabel="NCE loss (Eq. 4)", title="each stage's ratio estimation")
    else:
        axes[1].text(0.5, 0.5, "non-adaptive run: no NCE stages during training", ha="center", va="center",
                     transform=axes[1].transAxes)
        axes[1].set_axis_off()
    return fig
