"""The paper's evaluations as plots (notebooks 06, 07): Table 2's AUPRC bars, the anomaly score's terms, the
test images ranked by score, and Table 3's stage ablation with its spread over training seeds."""
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .images import image_grid

OURS_SPREAD = "± std over posterior-Langevin seeds (one trained model)"
PAPER_SPREAD = "± std over the paper's last 10 trials"


def plot_auprc_table(ours: dict, chance: dict, paper: dict = None, ax=None, title: str = None,
                     ours_spread: str = OURS_SPREAD, paper_spread: str = PAPER_SPREAD):
    """Grouped bars of AUPRC per held-out class (Table 2 as a plot).

    ``ours`` maps a method name to {class: [AUPRC per repeat]}: a solid bar at the mean with a black, capped
    error bar of one std over the repeats (``ours_spread`` says what they are). ``chance`` maps each class to the
    chance AUPRC (a dashed black line per group). ``paper`` optionally maps a method to {class: (mean, std or
    None)}: hatched bars for the classes it covers, with a dotted, capped error bar (``paper_spread``), so the two
    kinds of ± are never confused. The legend sits below the axes, across the figure's width.
    """
    if not ours:
        raise ValueError("ours must hold at least one method")
    classes = list(chance)
    series = [(name, {c: (float(np.mean(v)), float(np.std(v))) for c, v in res.items()}, False)
              for name, res in ours.items()]
    series += [(f"paper: {name}", {c: (m, s or 0.0) for c, (m, s) in res.items()}, True)
               for name, res in (paper or {}).items()]
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.32 * len(series) * len(classes)), 4.6),
                             constrained_layout=True)
    width = 0.8 / len(series)
    x = np.arange(len(classes))
    n_ours = len(ours)
    for j, (name, res, hatched) in enumerate(series):
        pos = [x[i] - 0.4 + (j + 0.5) * width for i, c in enumerate(classes) if c in res]
        vals = [res[c] for c in classes if c in res]
        color = f"C{j}" if not hatched else f"C{j - n_ours + 5}"
        ax.bar(pos, [m for m, _ in vals], width, label=name, color=color, hatch="//" if hatched else None,
               alpha=0.5 if hatched else 0.95, edgecolor="k" if hatched else None, linewidth=0.4)
        err = [s for _, s in vals]
        if any(err):
            bars = ax.errorbar(pos, [m for m, _ in vals], yerr=err, fmt="none", ecolor="k",
                               elinewidth=2.0 if hatched else 1.2, capsize=4 if hatched else 2.5,
                               capthick=1.5 if hatched else 1.0)
            if hatched:
                bars[2][0].set_linestyle(":")
    for i, c in enumerate(classes):
        ax.hlines(chance[c], x[i] - 0.45, x[i] + 0.45, colors="k", linestyles="--", linewidth=1,
                  label="chance (anomaly fraction)" if i == 0 else None)
    ax.set_xticks(x, [str(c) for c in classes])
    ax.set_xlabel("held-out (anomalous) class")
    ax.set_ylabel("AUPRC (higher is better)")
    ax.set_ylim(0, 1)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="k", marker="_", markersize=6, linewidth=1.0))
    labels.append(f"ours: {ours_spread}")
    if paper:
        handles.append(Line2D([], [], color="k", linestyle=":", linewidth=2.0))
        labels.append(paper_spread)
    ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return ax.figure


def plot_score_terms(reconstruction, prior, is_anomaly, title: str = None, bins: int = 40):
    """Histograms of the two terms of the anomaly score (``amdre.anomaly.anomaly_score_terms``), normal test
    images against anomalies: which term tells them apart. Returns the figure (two panels)."""
    y = np.asarray(is_anomaly, bool)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 2.9), constrained_layout=True)
    panels = (("reconstruction term  ‖x − g(z)‖² / 2σ²", reconstruction), ("prior term  −log p(z)", prior))
    for ax, (label, values) in zip(axes, panels):
        v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, float)
        edges = np.histogram_bin_edges(v, bins=bins)
        ax.hist(v[~y], edges, alpha=0.6, density=True, label=f"normal ({(~y).sum()})", color="C0")
        ax.hist(v[y], edges, alpha=0.6, density=True, label=f"held-out class ({y.sum()})", color="C3")
        ax.set_xlabel(f"{label}  (nats)")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def ranked_grid(images, flagged, nrow: int = 12, pad: int = 4, width: int = 2, color=(0.85, 0.1, 0.1)) -> np.ndarray:
    """An RGB grid of ``images`` [N, 1 or 3, H, W] in [-1, 1] (``image_grid`` with ``pad`` white pixels between
    images) in which every image with ``flagged[i]`` True gets a ``color`` frame ``width`` pixels wide (at most
    pad // 2, so that the frames of two neighbours never touch)."""
    x = torch.as_tensor(images).detach().float().cpu()
    flags = np.asarray(flagged, bool)
    if len(flags) != len(x):
        raise ValueError(f"flagged must have one entry per image ({len(x)}); got {len(flags)}")
    width = min(width, pad // 2)
    grid = image_grid(x, nrow, pad=pad)
    grid = np.repeat(grid[..., None], 3, axis=2) if grid.ndim == 2 else grid.copy()
    h, w = x.shape[2:]
    ncol = min(nrow, len(x))
    for i in np.flatnonzero(flags):
        r, c = divmod(int(i), ncol)
        top, left = pad + r * (h + pad), pad + c * (w + pad)            # the image's first pixel
        inside = grid[top:top + h, left:left + w].copy()
        grid[top - width:top + h + width, left - width:left + w + width] = color
        grid[top:top + h, left:left + w] = inside
    return grid


def show_ranked(images, is_anomaly, nrow: int = 12, ax=None, title: str = None, label: str = "true anomaly"):
    """Draw ``images`` as a grid (``ranked_grid``) with a red frame around each true anomaly; a legend says so."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 2))
    ax.imshow(ranked_grid(images, is_anomaly, nrow), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    n = int(np.asarray(is_anomaly, bool).sum())
    ax.legend(handles=[Patch(facecolor="none", edgecolor=(0.85, 0.1, 0.1), linewidth=2,
                             label=f"red frame: {label} ({n} of {len(is_anomaly)})")],
              loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=7, frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_ablation(stages, results: dict, paper: dict = None, ylabel: str = "FD-classifier", axes=None,
                  xlabel: str = "number of stages m", title: str = "ours", reference: dict = None,
                  spread: str = "training seeds"):
    """Table 3 as a plot: a score against the number of stages, one line per training method.

    ``results`` maps a method to {n_stages: [one value per seed]}: the mean as a line, each seed as a small dot,
    and an error bar of ± one std over the seeds (``spread`` names them; no bar for a single seed).
    ``reference`` optionally maps a label to [values per seed]: a horizontal line at their mean with a shaded
    ± std band. ``paper`` optionally maps the same methods to {n_stages: FID}: a right panel with the paper's
    Table 3. Each panel's x ticks are the stages it has data for.
    """
    n_panels = 2 if paper else 1
    if axes is None:
        _, axes = plt.subplots(1, n_panels, figsize=(4.8 * n_panels, 3.5), constrained_layout=True)
    axes = np.atleast_1d(axes)
    ax = axes[0]
    ours_ticks = set()
    n_seeds = 1
    for j, (name, res) in enumerate(results.items()):
        ks = [k for k in stages if k in res]
        ours_ticks.update(ks)
        vals = [np.asarray(res[k], float).ravel() for k in ks]
        n_seeds = max(n_seeds, max(len(v) for v in vals))
        means = [v.mean() for v in vals]
        shift = 0.06 * (j - (len(results) - 1) / 2)                   # keep overlapping bars apart
        ax.plot([k + shift for k in ks], means, "o-", color=f"C{j}", label=f"{name} (mean)", zorder=3)
        std = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in vals]
        if any(std):
            ax.vlines([k + shift for k in ks], np.subtract(means, std), np.add(means, std), color=f"C{j}",
                      linewidth=2.0, alpha=0.8)
        dots = [(k + shift, y) for k, v in zip(ks, vals) for y in v]
        if len(dots) > len(ks):
            ax.scatter(*zip(*dots), s=9, color=f"C{j}", alpha=0.45, zorder=2)
    for i, (label, values) in enumerate((reference or {}).items()):
        v = np.asarray(values, float).ravel()
        color = f"C{len(results) + i}"
        ax.axhline(v.mean(), ls=":", color=color, label=f"{label} (mean)")
        if len(v) > 1:
            ax.axhspan(v.mean() - v.std(ddof=1), v.mean() + v.std(ddof=1), color=color, alpha=0.12)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{ylabel} (lower is better)")
    ax.set_title(title, fontsize=10)
    ax.set_xticks(sorted(ours_ticks))
    handles, labels = ax.get_legend_handles_labels()
    if n_seeds > 1:
        handles.append(Line2D([], [], color="0.3", linewidth=2.0, marker=".", markersize=5, linestyle="-"))
        labels.append(f"bar: ± std over {n_seeds} {spread}; dots: each seed")
    ax.legend(handles, labels, fontsize=7)
    if paper:
        for j, (name, res) in enumerate(paper.items()):
            ks = sorted(res)
            axes[1].plot(ks, [res[k] for k in ks], "s--", color=f"C{j}", label=name)
        axes[1].set_xlabel("number of stages m")
        axes[1].set_ylabel("FID (lower is better)")
        axes[1].set_title("paper, Table 3 (CelebA, one run each)", fontsize=10)
        axes[1].set_xticks(sorted({k for r in paper.values() for k in r}))
        axes[1].legend(fontsize=7)
    return ax.figure


def plot_table3(results: dict, paper: dict = None, ylabel: str = "FD-classifier", title: str = "ours",
                reference: dict = None, spread: str = "training seeds"):
    """Table 3 as grouped bars: one group per number of stages m, one bar per method at the mean over seeds, with
    ± one std (ddof 1) and a dot per seed; every m is a separately trained model. ``results`` maps a method to
    {m: [value per seed]}; ``reference`` maps a label to [values] (a dotted line at their mean); ``paper`` maps the
    same methods to {m: FID}, drawn as bars in a right panel (only the m it reports)."""
    n_panels = 2 if paper else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels + 0.6, 4.3), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1.3, 1] if paper else [1]})
    axes = np.atleast_1d(axes)
    panels = [(axes[0], {name: {m: np.asarray(v, float).ravel() for m, v in res.items()}
                         for name, res in results.items()}, f"{ylabel} (lower is better)", title)]
    if paper:
        panels.append((axes[1], {name: {m: np.asarray([v], float) for m, v in res.items()}
                                 for name, res in paper.items()}, "FID (lower is better)",
                       "paper, Table 3 (CelebA, one run each)"))
    n_seeds = max(len(v) for res in panels[0][1].values() for v in res.values())
    for ax, series, label, panel_title in panels:
        ms = sorted({m for res in series.values() for m in res})
        width = 0.8 / len(series)
        for j, (name, res) in enumerate(series.items()):
            xs = [i - 0.4 + (j + 0.5) * width for i, m in enumerate(ms) if m in res]
            vals = [res[m] for m in ms if m in res]
            means = [v.mean() for v in vals]
            ax.bar(xs, means, width * 0.92, color=f"C{j}", alpha=0.85, label=name)
            stds = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in vals]
            if any(stds):
                ax.errorbar(xs, means, yerr=stds, fmt="none", ecolor="k", elinewidth=1.2, capsize=3)
                dots = [(x, y) for x, v in zip(xs, vals) for y in v]
                ax.scatter(*zip(*dots), s=10, color="k", alpha=0.6, zorder=3)
        ax.set_xticks(range(len(ms)), [f"m = {m}" for m in ms])
        ax.set_xlabel("number of stages (each a separately trained model)")
        ax.set_ylabel(label)
        ax.set_title(panel_title, fontsize=10)
    for i, (name, values) in enumerate((reference or {}).items()):
        axes[0].axhline(np.mean(values), ls=":", color=f"C{len(results) + i}", label=name)
    handles, labels = axes[0].get_legend_handles_labels()
    if n_seeds > 1:
        handles.append(Line2D([], [], color="k", marker="o", markersize=3, linewidth=1.2))
        labels.append(f"± std over {n_seeds} {spread}; dots: each seed")
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    return fig
