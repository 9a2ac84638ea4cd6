"""The paper's evaluations as plots (notebooks 06, 07): Table 2's AUPRC bars, Table 3's stage ablation."""
import matplotlib.pyplot as plt
import numpy as np


def plot_auprc_table(ours: dict, chance: dict, paper: dict = None, ax=None, title: str = None):
    """Grouped bars of AUPRC per held-out class (Table 2 as a plot).

    ``ours`` maps a method name to {class: [AUPRC per repeat]} (drawn as mean with a std error bar),
    ``chance`` maps each class to the chance AUPRC (a black tick per group), ``paper`` optionally maps a
    method to {class: (mean, std or None)} (drawn hatched, behind ours, for the classes it covers).
    """
    if not ours:
        raise ValueError("ours must hold at least one method")
    classes = list(chance)
    series = [(name, {c: (float(np.mean(v)), float(np.std(v))) for c, v in res.items()}, False)
              for name, res in ours.items()]
    series += [(f"paper: {name}", {c: (m, s or 0.0) for c, (m, s) in res.items()}, True)
               for name, res in (paper or {}).items()]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.35 * len(series) * len(classes), 3.6), constrained_layout=True)
    width = 0.8 / len(series)
    x = np.arange(len(classes))
    for j, (name, res, hatched) in enumerate(series):
        pos = [x[i] - 0.4 + (j + 0.5) * width for i, c in enumerate(classes) if c in res]
        vals = [res[c] for c in classes if c in res]
        ax.bar(pos, [m for m, _ in vals], width, yerr=[s for _, s in vals], capsize=2, label=name,
               hatch="//" if hatched else None, alpha=0.55 if hatched else 0.95,
               edgecolor="k" if hatched else None, linewidth=0.4)
    for i, c in enumerate(classes):
        ax.hlines(chance[c], x[i] - 0.45, x[i] + 0.45, colors="k", linestyles="--", linewidth=1,
                  label="chance (anomaly fraction)" if i == 0 else None)
    ax.set_xticks(x, [str(c) for c in classes])
    ax.set_xlabel("held-out (anomalous) class")
    ax.set_ylabel("AUPRC")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    if title:
        ax.set_title(title)
    return ax.figure


def plot_ablation(stages, results: dict, paper: dict = None, ylabel: str = "FD-classifier", axes=None,
                  xlabel: str = "number of stages m", title: str = "ours"):
    """Table 3 as a plot: a score against the number of stages, one line per training method.

    ``results`` maps a method ("adaptive", "non-adaptive") to {n_stages: [values per seed]} (mean line,
    min-max band); ``paper`` optionally maps the same methods to {n_stages: FID} (right panel).
    """
    n_panels = 2 if paper else 1
    if axes is None:
        _, axes = plt.subplots(1, n_panels, figsize=(4.6 * n_panels, 3.4), constrained_layout=True)
    axes = np.atleast_1d(axes)
    for j, (name, res) in enumerate(results.items()):
        ks = [k for k in stages if k in res]
        vals = [np.asarray(res[k], float) for k in ks]
        axes[0].plot(ks, [v.mean() for v in vals], "o-", color=f"C{j}", label=name)
        axes[0].fill_between(ks, [v.min() for v in vals], [v.max() for v in vals], color=f"C{j}", alpha=0.2)
    axes[0].set_xlabel(xlabel)
    axes[0].set_ylabel(f"{ylabel} (lower is better)")
    axes[0].set_title(title)
    if paper:
        for j, (name, res) in enumerate(paper.items()):
            ks = sorted(res)
            axes[1].plot(ks, [res[k] for k in ks], "s--", color=f"C{j}", label=name)
        axes[1].set_xlabel("number of stages m")
        axes[1].set_ylabel("FID (lower is better)")
        axes[1].set_title("paper, Table 3 (CelebA)")
    for ax in axes:
        ax.set_xticks(sorted({k for r in [*results.values(), *(paper or {}).values()] for k in r}))
        ax.legend()
    return axes[0].figure
