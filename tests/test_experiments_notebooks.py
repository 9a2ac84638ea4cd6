"""The plots and tables of notebooks 06 and 07 (amdre.viz.evaluation, amdre.experiments.ablation_table)."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.collections import LineCollection

from amdre import experiments, viz


def test_auprc_table_tells_the_two_spreads_apart_and_keeps_its_legend_below():
    ours = {"multi-stage": {1: [0.40, 0.42, 0.41], 4: [0.60, 0.63, 0.62]}, "gaussian": {1: [0.3, 0.31], 4: [0.5, 0.52]}}
    paper = {"LEBM": {1: (0.336, 0.01), 4: (0.63, 0.02)}}
    fig = viz.plot_auprc_table(ours, {1: 0.36, 4: 0.36}, paper=paper, ours_spread="± over 3 sampler seeds")
    ax = fig.axes[0]
    assert len(ax.patches) == 6                                           # 3 series x 2 classes
    bars = [c for c in ax.collections if isinstance(c, LineCollection) and len(c.get_segments()) == 2]
    dashes = [c.get_linestyle()[0][1] for c in bars]
    assert {d is None for d in dashes} == {False, True}                    # ours solid, the paper's dotted
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "ours: ± over 3 sampler seeds" in texts and any("paper's last 10 trials" in t for t in texts)
    fig.canvas.draw()
    legend_box, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend_box.y1 <= axes_box.y0 and legend_box.width > 0.6 * axes_box.width   # below, across the width
    assert fig.bbox.y0 - 1 <= legend_box.y0                                # inside the figure, not clipped


def test_ranked_grid_frames_only_the_flagged_images():
    images = torch.zeros(4, 1, 6, 6)                                       # mid-grey images
    grid = viz.ranked_grid(images, [True, False, False, True], nrow=2, pad=4, width=2)
    assert grid.shape == (2 * 10 + 4, 2 * 10 + 4, 3)                      # 6x6 images, 4 white pixels between
    red = (0.85, 0.1, 0.1)
    assert np.allclose(grid[2, 2:12], red) and np.allclose(grid[21, 12:22], red)   # frames of images 0 and 3
    assert np.allclose(grid[0:2], 1.0) and np.allclose(grid[12:14, 0:12], 1.0)       # white between the frames
    assert np.allclose(grid[4:10, 14:20], 1.0 * 0.5) and np.allclose(grid[3, 14:20], 1.0)   # image 1: no frame
    assert np.allclose(grid[4:10, 4:10], 0.5) and np.allclose(grid[14:20, 14:20], 0.5)     # the images themselves
    with pytest.raises(ValueError, match="one entry per image"):
        viz.ranked_grid(images, [True])
    ax = viz.show_ranked(images, [True, False, False, True], nrow=2)
    assert "2 of 4" in ax.get_legend().get_texts()[0].get_text()


def test_plot_ablation_ticks_error_bars_and_reference():
    res = {"adaptive": {0: [50.0, 52.0, 51.0], 4: [30.0, 31.0, 35.0]},
           "non-adaptive": {0: [50.0, 52.0, 51.0], 4: [33.0, 35.0, 34.0]}}
    fig = viz.plot_ablation([0, 4], res, paper=experiments.PAPER_TABLE3_FID, reference={"TRE": [33.0, 35.0]})
    left, right = fig.axes
    assert list(left.get_xticks()) == [0, 4]                              # no empty ticks up to 8 on our panel
    assert list(right.get_xticks()) == [0, 1, 2, 4, 8]
    bars = [c for c in left.collections if isinstance(c, LineCollection)]
    assert len(bars) == 2 and all(len(c.get_segments()) == 2 for c in bars)
    low, high = bars[0].get_segments()[1][:, 1]
    assert (low, high) == pytest.approx((32.0 - np.std([30, 31, 35], ddof=1), 32.0 + np.std([30, 31, 35], ddof=1)))
    texts = [t.get_text() for t in left.get_legend().get_texts()]
    assert "TRE (mean)" in texts and any("± std over 3 training seeds" in t for t in texts)
    one_seed = viz.plot_ablation([0, 4], {k: {m: v[:1] for m, v in r.items()} for k, r in res.items()})
    assert not [c for c in one_seed.axes[0].collections if isinstance(c, LineCollection)]   # no bar for one seed


def test_plot_score_terms():
    rec, pri = torch.linspace(0, 1, 10), torch.linspace(1, 0, 10)
    fig = viz.plot_score_terms(rec, pri, np.arange(10) >= 7, title="t")
    assert len(fig.axes) == 2
    assert "held-out class (3)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_ablation_table_mean_and_std():
    def res(a, n):
        return {"adaptive": {0: {"FD": 50.0}, 4: {"FD": a}}, "non-adaptive": {0: {"FD": 50.0}, 4: {"FD": n}}}
    table = experiments.ablation_table({0: res(30.0, 33.0), 1: res(32.0, 35.0), 2: res(34.0, 31.0)}, "FD",
                                       paper=experiments.PAPER_TABLE3_FID)
    assert list(table.columns) == ["FD (seed 0)", "FD (seed 1)", "FD (seed 2)", "FD (mean)", "FD (std)",
                                   "paper FID (CelebA)"]
    assert table.loc[("adaptive", 4), "FD (mean)"] == 32.0 and table.loc[("adaptive", 4), "FD (std)"] == 2.0
    assert table.loc[("non-adaptive", 4), "paper FID (CelebA)"] == 42.48
    single = experiments.ablation_table({0: res(30.0, 33.0)}, "FD")
    assert list(single.columns) == ["FD (seed 0)"]
