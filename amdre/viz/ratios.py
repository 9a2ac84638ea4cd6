"""2-D density ratios (notebooks 01, 02): true vs estimated log-ratios, KL sweeps, waymarks, TRE stages, loss curves."""
import matplotlib.pyplot as plt
import numpy as np
import torch

from ..grid import grid_points

CHANCE_NCE = 2 * np.log(2)          # Eq. 4's loss of a classifier that cannot tell p from q


def _square(ax, extent, ticks: bool = True):
    """The square [-extent, extent]^2 at equal aspect (no ticks unless ``ticks``)."""
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])


@torch.no_grad()
def _on_grid(fn, extent, n):
    pts, xx, yy = grid_points(extent, n)
    return fn(pts).reshape(n, n).numpy(), xx, yy


def _clip_limit(true_fn, samples, vlim):
    """The symmetric colour limit: ``vlim``, else the 99th percentile of |true log-ratio| on ``samples``."""
    if vlim is not None:
        return float(vlim)
    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    ref = torch.cat([true_fn(torch.as_tensor(s[:2000])).flatten() for s in samples]).numpy()
    return max(float(np.percentile(np.abs(ref), 99)), 1e-3)


def plot_log_ratio_heatmaps(true_fn, est_fn, xp=None, xq=None, extent=3.0, n=120, title="", axes=None, vlim=None):
    """True vs estimated log p(x)/q(x) on a grid, on one colour scale, with samples of p and q overlaid.

    ``est_fn`` is one log-ratio function or a dict {label: function}, one panel each. Colours are clipped to
    [-vlim, vlim] (default: the 99th percentile of |true log-ratio| on the samples of p, where KL(p || q) is
    measured; the colour bar's arrows mark the clipping), so the hundreds of nats that a far pair's log-ratio
    reaches on q's side do not wash out the rest.
    """
    ests = est_fn if isinstance(est_fn, dict) else {"estimated": est_fn}
    if axes is None:
        _, axes = plt.subplots(1, 1 + len(ests), figsize=(4.5 * (1 + len(ests)), 4), constrained_layout=True)
    axes = np.atleast_1d(axes)
    if len(axes) != 1 + len(ests):
        raise ValueError(f"need {1 + len(ests)} axes (truth + one per estimate); got {len(axes)}")
    lim = _clip_limit(true_fn, (xp,), vlim)
    fields = {"true": _on_grid(true_fn, extent, n)}
    fields.update({label: _on_grid(fn, extent, n) for label, fn in ests.items()})
    if lim is None:
        lim = max(float(np.percentile(np.abs(fields["true"][0]), 99)), 1e-3)
    for ax, (name, (z, xx, yy)) in zip(axes, fields.items()):
        im = ax.pcolormesh(xx, yy, np.clip(z, -lim, lim), cmap="RdBu_r", vmin=-lim, vmax=lim, shading="auto")
        for s, c, label in ((xp, "k", "samples of p"), (xq, "gold", "samples of q")):
            if s is not None:
                ax.scatter(s[:300, 0], s[:300, 1], s=2, c=c, alpha=0.5, label=label)
        ax.set_title(f"{name} log p/q {title}".strip())
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        _square(ax, extent)
    if xp is not None or xq is not None:
        axes[0].legend(loc="lower left", markerscale=4, fontsize=8)
    plt.colorbar(im, ax=axes, shrink=0.8, extend="both", label="log p(x)/q(x)  [nats]")
    return axes[0].figure


def plot_log_ratio_slice(true_fn, estimates: dict, start, end, samples: dict = None, n=300, ax=None, ylim=None,
                         origin=None):
    """log p/q along the segment from ``start`` to ``end`` (2-vectors): the truth (dashed) and each estimate.

    The x axis is the signed distance along the line from ``origin`` (default ``start``). ``samples`` maps a label to
    samples [N, 2]; each is projected onto the line and its central 95 % is shaded, which shows where the estimates
    were trained and where they extrapolate.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.8), constrained_layout=True)
    a, b = torch.as_tensor(start, dtype=torch.float32), torch.as_tensor(end, dtype=torch.float32)
    length = torch.linalg.norm(b - a).item()
    if not length > 0:
        raise ValueError("start and end must differ")
    u = (b - a) / length
    t = torch.linspace(0.0, length, n)
    pts = a + t[:, None] * u
    shift = 0.0 if origin is None else ((torch.as_tensor(origin, dtype=torch.float32) - a) @ u).item()
    t = t - shift
    with torch.no_grad():
        ax.plot(t, true_fn(pts), "k--", lw=2, label="true log p/q")
        for label, fn in estimates.items():
            ax.plot(t, fn(pts), lw=1.8, label=label)
    for (label, s), c in zip((samples or {}).items(), ("0.3", "gold", "tab:green", "tab:purple")):
        proj = ((torch.as_tensor(s, dtype=torch.float32) - a) @ u).numpy() - shift
        lo, hi = np.percentile(proj, [2.5, 97.5])
        ax.axvspan(lo, hi, color=c, alpha=0.2, label=f"{label} (central 95 %)")
    ax.axhline(0.0, color="gray", lw=0.8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlim(t[0].item(), t[-1].item())
    ax.set_xlabel("distance along the line" if origin is None else "distance along the line from the origin")
    ax.set_ylabel("log p(x)/q(x)  [nats]")
    ax.legend(fontsize=8)
    return ax.figure


def plot_kl_sweep(gaps, true_kl, estimates: dict, ax=None, truth=None):
    """Estimated vs true KL(p||q) as the gap grows: each estimate as markers at the gaps where it was fitted (no line
    pretends to know the gaps in between); the truth as a dashed line, drawn densely from ``truth`` (a function of
    the gap, e.g. the closed form) when given, else through ``true_kl`` at the fitted gaps."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    if truth is not None:
        dense = np.linspace(min(gaps), max(gaps), 100)
        ax.plot(dense, [truth(g) for g in dense], "k--", lw=2, label="true KL (closed form)")
    else:
        ax.plot(gaps, true_kl, "k--", lw=2, label="true KL (closed form)")
    for marker, (label, kl) in zip("osD^v", estimates.items()):
        ax.plot(gaps, kl, marker, ms=8, ls="none", label=f"{label} (one fit per gap)")
    ax.set_xlabel("gap between p and q")
    ax.set_ylabel("KL(p || q)  [nats]")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=9)
    return ax.figure


def plot_waymarks(waymarks, extent=3.0, axes=None, max_points=400):
    """Scatter of each waymark's samples x_0 = x_p ... x_m = x_q, on shared, labelled axes."""
    m = len(waymarks)
    if axes is None:
        _, axes = plt.subplots(1, m, figsize=(2.3 * m + 0.4, 2.7), constrained_layout=True, sharey=True)
    colors = plt.cm.viridis(np.linspace(0, 1, m))
    for k, (ax, w) in enumerate(zip(np.atleast_1d(axes), waymarks)):
        ax.scatter(w[:max_points, 0], w[:max_points, 1], s=3, color=colors[k])
        _square(ax, extent)
        ax.set_title(f"$p_{{{k}}}$")
        ax.set_xlabel("$x_1$")
    np.atleast_1d(axes)[0].set_ylabel("$x_2$")
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
        _square(ax, extent)
    return axes[0].figure


def _window(points, margin=0.25):
    """(centre, half-width) of a square around ``points`` [N, 2] with a margin (a fraction of the width)."""
    lo, hi = points.min(0).values, points.max(0).values
    half = float((hi - lo).max()) / 2 * (1 + 2 * margin)
    return ((lo + hi) / 2).tolist(), max(half, 1e-3)


def plot_tre_stages(model, waymarks, n=80, max_points=300):
    """Every stage of a TRE model in one figure: top row the samples of waymarks k and k+1, bottom row the learned
    log r_k = log p_k/p_{k+1}. Each column is zoomed to where its two waymarks lie, and each colour scale spans the
    values on their samples (the classifier's own inputs), so every stage is readable on its own scale."""
    m = model.n_ratios
    fig, axes = plt.subplots(2, m, figsize=(2.9 * m + 0.6, 6.0), constrained_layout=True, squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 1, m + 1))
    for k in range(m):
        top, bottom = axes[0, k], axes[1, k]
        both = torch.cat([waymarks[k][:max_points], waymarks[k + 1][:max_points]])
        (cx, cy), half = _window(both)
        for j in (k + 1, k):                         # the earlier (sharper) waymark on top
            top.scatter(waymarks[j][:max_points, 0], waymarks[j][:max_points, 1], s=2, color=colors[j], alpha=0.6,
                        label=f"$p_{{{j}}}$")
        handles, labels = top.get_legend_handles_labels()
        top.legend(handles[::-1], labels[::-1], loc="lower left", markerscale=4, fontsize=8)
        top.set_title(f"stage {k}: $p_{{{k}}}$ vs $p_{{{k + 1}}}$", fontsize=10)
        t = torch.linspace(-half, half, n)
        xx, yy = torch.meshgrid(t + cx, t + cy, indexing="xy")
        with torch.no_grad():
            z = model.ratios[k](torch.stack([xx.flatten(), yy.flatten()], 1)).reshape(n, n).numpy()
            lim = max(float(model.ratios[k](both).abs().quantile(0.99)), 1e-3)
        im = bottom.pcolormesh(xx.numpy(), yy.numpy(), np.clip(z, -lim, lim), cmap="RdBu_r", vmin=-lim, vmax=lim,
                               shading="auto")
        bottom.set_title(f"learned log $r_{{{k}}}$", fontsize=10)
        fig.colorbar(im, ax=bottom, orientation="horizontal", shrink=0.9, extend="both", label="nats")
        for ax in (top, bottom):
            ax.set_xlim(cx - half, cx + half)
            ax.set_ylim(cy - half, cy + half)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
            ax.set_xlabel("$x_1$", fontsize=8)
        top.set_ylabel("$x_2$", fontsize=8)
        bottom.set_ylabel("$x_2$", fontsize=8)
    return fig


def plot_losses(losses, ax=None, smooth=50, labels=None, xlabel="training step", chance=False):
    """Per-ratio (or per-stage) training-loss curves, smoothed by a running mean.

    ``chance=True`` draws Eq. 4's loss of a classifier that cannot tell p from q, 2 log 2 (``CHANCE_NCE``).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    for k, curve in enumerate(losses):
        c = np.asarray(curve, dtype=float)
        if len(c) == 0:
            continue
        w = max(1, min(smooth, len(c) // 5))
        c = np.convolve(c, np.ones(w) / w, mode="valid")
        ax.plot(c, label=labels[k] if labels else f"ratio {k}")
    if chance:
        ax.axhline(CHANCE_NCE, color="gray", ls=":", lw=1.5, label="chance: 2 log 2")
        ax.set_ylim(bottom=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("NCE loss (Eq. 4)")
    ax.legend(fontsize=8)
    return ax.figure


# --------------------------------------------------------------------------- latent EBM (notebooks 03, 04)


def figure_slider(draw, options, value=0, description="", dpi=80):
    """A slider that redraws a figure in JupyterLab: ``draw(k)`` returns the figure for option k (an index into
    ``options``, whose str() labels the slider), shown as a PNG in an ``ipywidgets.Image``.

    No ``Output`` widget and no ``clear_output``: a headless run (papermill, nbval) only records the widgets' state,
    which avoids the rare hang of nbclient with output-capturing widgets. The static figure belongs in a plain cell.
    """
    import io

    import ipywidgets as widgets

    def png(k):
        fig = draw(k)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()

    options = list(options)
    if not options or not 0 <= value < len(options):
        raise ValueError(f"value must index the {len(options)} options; got {value!r}")
    image = widgets.Image(value=png(value), format="png")
    slider = widgets.SelectionSlider(options=[(str(o), k) for k, o in enumerate(options)], value=value,
                                     description=description)
    slider.observe(lambda change: setattr(image, "value", png(change["new"])), names="value")
    return widgets.VBox([slider, image])
