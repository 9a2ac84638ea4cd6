"""Figure 1 of the paper, drawn by code: the adaptive multi-stage training of the latent prior (notebook 03)."""
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

POSTERIOR, PRIOR, RATIO = "#1f77b4", "#ff7f0e", "#2ca02c"      # the paper's blue and orange, and green for r_k


def _box(ax, x, y, text, color, w=1.5, h=0.55):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05", fc="white", ec=color, lw=2))
    ax.text(x, y, text, ha="center", va="center", fontsize=11)


def _arrow(ax, start, end, text="", color="k", ls="-", offset=(0.0, 0.12), fontsize=9):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="-|>", color=color, lw=1.6, ls=ls,
                                                           shrinkA=16, shrinkB=16))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text, ha="center",
                va="center", fontsize=fontsize, color=color)


def plot_figure1(n_stages: int = 3):
    """The training of Fig. 1 for stages 0..n_stages-1: in stage k, posterior samples of the data (short-run
    Langevin, Eq. 3) form the aggregate posterior q_k; NCE (Eq. 4) between q_k and samples of the current prior
    p_{phi_k} (short-run prior Langevin, or the persistent memory bank) fits r_k = q_k / p_{phi_k}; the next prior is
    p_{phi_{k+1}} = r_k p_{phi_k} (Eq. 8), and p_{phi_0} = N(0, I)."""
    if n_stages < 1:
        raise ValueError(f"n_stages must be >= 1; got {n_stages!r}")
    fig, ax = plt.subplots(figsize=(3.2 * n_stages + 1.6, 4.4))
    step = 3.2
    for k in range(n_stages):
        x = 1.0 + k * step
        _box(ax, x, 3.4, "data $x$", "gray", w=1.1)
        _box(ax, x, 2.2, f"$q_{{{k}}}(z)$", POSTERIOR)
        prior = "$p_{\\phi_0} = \\mathcal{N}(0, I)$" if k == 0 else f"$p_{{\\phi_{{{k}}}}}(z)$"
        _box(ax, x, 0.4, prior, PRIOR, w=2.0 if k == 0 else 1.5)
        _arrow(ax, (x, 3.4), (x, 2.2), f"posterior LD\nunder $p_{{\\phi_{{{k}}}}}$ (Eq. 3)", POSTERIOR, ls="--",
               offset=(-0.85, 0.0))
        ax.annotate("", xy=(x + 0.05, 2.2), xytext=(x + 0.05, 0.4),
                    arrowprops=dict(arrowstyle="<|-|>", color=RATIO, lw=1.6, shrinkA=14, shrinkB=14))
        ax.text(x + 0.2, 1.3, f"NCE (Eq. 4):\n$r_{{{k}}} = q_{{{k}}}\\,/\\,p_{{\\phi_{{{k}}}}}$", fontsize=9,
                color=RATIO, va="center")
        ax.text(x - 1.05, 0.95, "prior samples:\nprior LD or\nmemory bank", fontsize=7.5, color=PRIOR, ha="center")
        if k < n_stages - 1:
            _arrow(ax, (x + 0.4, 0.4), (x + step - 0.4, 0.4), f"$p_{{\\phi_{{{k + 1}}}}} = r_{{{k}}}\\,p_{{\\phi_{{{k}}}}}$"
                                                               " (Eq. 8)", RATIO, offset=(0.1, -0.32))
        ax.text(x, 4.05, f"stage {k}", ha="center", fontsize=11, weight="bold")
    ax.text(1.0 + (n_stages - 1) * step + 1.25, 0.4, "...", fontsize=16, va="center")
    ax.set_xlim(-0.6, 1.0 + (n_stages - 1) * step + 1.6)
    ax.set_ylim(-0.4, 4.4)
    ax.axis("off")
    ax.set_title("Adaptive multi-stage density ratio estimation (Fig. 1): each stage's prior is the last one times "
                 "its ratio", fontsize=11)
    return fig
