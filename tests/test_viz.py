"""Tests for the latent-EBM plotting helpers in amdre.viz (notebooks 03 and 04), with tiny fake models."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from amdre import viz
from amdre.grid import grid_log_density
from amdre.prior import EBMPrior
from conftest import TanhGenerator


def FakeGenerator():
    """z [B, 2] -> 8x8 grey images in [-1, 1]."""
    return TanhGenerator(nz=2, shape=(1, 8, 8))




def test_plot_stage_panels_every_stage(prior3):
    z_post = torch.randn(200, 2) * 0.5 + 1.0
    for k in range(prior3.n_stages):
        fig = viz.plot_stage(prior3, k, z_post, generator=FakeGenerator(), n=30, n_samples=9, n_proposals=500)
        axes = fig.axes[:5]                              # the panels; then one colour bar each for p_k, log r_k, p_k+1
        assert len(fig.axes) == 5 + 3
        assert [ax.get_label() for ax in fig.axes[5:]] == ["<colorbar>"] * 3
        titles = [ax.get_title() for ax in axes]
        assert f"$p_{{{k}}}$" in titles[0] and f"$q_{{{k}}}$" in titles[1]
        assert f"$r_{{{k}}}$" in titles[2] and f"$p_{{{k + 1}}}" in titles[3] and "decoded" in titles[4]
        assert all(ax.get_xlabel() == "$z_1$" and ax.get_ylabel() == "$z_2$" for ax in axes[:4])
        assert len(axes[1].collections) >= 1 and len(axes[4].images) == 1
        plt.close(fig)


def test_plot_stage_without_generator_has_four_panels(prior3):
    fig = viz.plot_stage(prior3, 0, torch.randn(50, 2), n=20)
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"]) == 4


def test_plot_stage_into_given_axes(prior3):
    fig, axes = plt.subplots(2, 5)
    for k in range(2):
        assert viz.plot_stage(prior3, k, torch.randn(50, 2), FakeGenerator(), n=20, n_samples=4,
                              n_proposals=100, axes=axes[k]) is fig
    with pytest.raises(ValueError, match="panels"):
        viz.plot_stage(prior3, 0, torch.randn(50, 2), None, n=20, axes=axes[0])


@pytest.mark.parametrize("k", [-1, 3, 10, 1.0, "0", True])
def test_plot_stage_bad_k(prior3, k):
    with pytest.raises(ValueError, match="stage index"):
        viz.plot_stage(prior3, k, torch.randn(50, 2))


def test_plot_stage_needs_2d_latent_and_samples(prior3):
    p = EBMPrior(3)
    p.add_stage()
    with pytest.raises(ValueError, match="2-D latent"):
        viz.plot_stage(p, 0, torch.randn(10, 3))
    with pytest.raises(ValueError, match="z_post"):
        viz.plot_stage(prior3, 0, torch.randn(10, 3))


def test_stage_grid_densities_normalised(prior3):
    extent, n = 4.0, 80
    g = viz.stage_grid(prior3, 1, extent, n)
    cell = (2 * extent / (n - 1)) ** 2
    for key in ("p_k", "p_next"):
        assert g[key].shape == (n, n)
        assert g[key].sum() * cell == pytest.approx(1.0, rel=1e-4)
    assert g["log_r"].shape == (n, n)
    # p_{k+1} = r_k p_k: the log-densities differ by log r_k up to the normalising constant
    diff = np.log(g["p_next"]) - np.log(g["p_k"]) - g["log_r"]
    assert np.ptp(diff) < 1e-3


def test_stage_0_prior_is_standard_normal(prior3):
    g = viz.stage_grid(prior3, 0, 3.0, 61)
    assert g["p_k"][30, 30] == pytest.approx(1 / (2 * np.pi), rel=0.02)


def test_image_grid_shapes_and_range():
    x = torch.linspace(-1, 1, 5 * 64).reshape(5, 1, 8, 8)
    grid = viz.image_grid(x, nrow=3, pad=1)
    assert grid.shape == (2 * 9 + 1, 3 * 9 + 1)
    assert grid.min() >= 0 and grid.max() <= 1
    rgb = viz.image_grid(torch.zeros(4, 3, 4, 4), nrow=2)
    assert rgb.shape == (11, 11, 3)
    with pytest.raises(ValueError):
        viz.image_grid(torch.zeros(4, 2, 4, 4))
    with pytest.raises(ValueError):
        viz.image_grid(torch.zeros(0, 1, 4, 4))


def test_stage_curves_and_plot():
    history = {"stage": [0] * 30 + [1] * 30 + [2] * 30, "nce_loss": list(np.r_[np.full(30, 0.3), np.full(60, 1.3)])}
    curves = viz.stage_curves(history)
    assert [len(c) for c in curves] == [30, 30, 30]
    assert curves[0][0] == pytest.approx(0.3) and curves[2][-1] == pytest.approx(1.3)
    fig = viz.plot_stage_losses(history, smooth=5)
    assert len(fig.axes[0].get_lines()) == 3 + 1   # three stages and the chance line
    with pytest.raises(ValueError):
        viz.stage_curves({"stage": [None, None], "nce_loss": [1.0, 2.0]})
    with pytest.raises(ValueError):
        viz.stage_curves({"nce_loss": [1.0]})


def test_grid_log_density_matches_stage_grid(prior3):
    g = viz.stage_grid(prior3, 1, 4.0, 50)
    i, j = 10, 37
    zij = torch.tensor([[g["xx"][i, j], g["yy"][i, j]]], dtype=torch.float32)
    assert grid_log_density(prior3, zij, 1, 4.0, 50).item() == pytest.approx(np.log(g["p_k"][i, j]), abs=1e-4)


# --------------------------------------------------------------------------- 2-D density ratios (notebooks 01, 02)
def _gauss_log_ratio(x):
    """log N(x; (1, 1), I) - log N(x; 0, I)."""
    return x.sum(1) - 1.0


def test_plot_log_ratio_heatmaps_clips_to_vlim_and_takes_several_estimates():
    xp, xq = torch.randn(100, 2) + 1, torch.randn(100, 2)
    fig = viz.plot_log_ratio_heatmaps(_gauss_log_ratio, {"A": _gauss_log_ratio, "B": lambda x: 0 * x[:, 0]},
                                      xp, xq, n=20, vlim=2.0)
    meshes = [ax.collections[0] for ax in fig.axes[:3]]
    assert len(fig.axes) == 4                                   # truth, A, B and the colour bar
    for mesh in meshes:
        assert mesh.get_clim() == (-2.0, 2.0)
        assert np.abs(mesh.get_array()).max() <= 2.0
    assert fig.axes[3].get_ylabel().startswith("log p(x)/q(x)")


def test_plot_log_ratio_heatmaps_default_limit_from_samples():
    xp = torch.randn(100, 2) + 1
    fig = viz.plot_log_ratio_heatmaps(_gauss_log_ratio, _gauss_log_ratio, xp, extent=10, n=20)
    lim = fig.axes[0].collections[0].get_clim()[1]
    assert lim == pytest.approx(np.percentile(np.abs(_gauss_log_ratio(xp).numpy()), 99))
    with pytest.raises(ValueError, match="axes"):
        viz.plot_log_ratio_heatmaps(_gauss_log_ratio, {"A": _gauss_log_ratio}, axes=plt.subplots(1, 3)[1])


def test_plot_log_ratio_slice_draws_truth_estimates_and_sample_bands():
    xp, xq = torch.randn(200, 2) + 3, torch.randn(200, 2)
    fig = viz.plot_log_ratio_slice(_gauss_log_ratio, {"est": lambda x: 0.5 * _gauss_log_ratio(x)}, (0, 0), (3, 3),
                                   samples={"p": xp, "q": xq}, n=50)
    ax = fig.axes[0]
    t, y = ax.lines[0].get_data()
    assert len(t) == 50 and t[-1] == pytest.approx(np.sqrt(18))
    assert y[-1] == pytest.approx(5.0, abs=1e-5)                # log-ratio at (3, 3)
    assert len(ax.patches) == 2                                  # one shaded band per sample set
    with pytest.raises(ValueError, match="differ"):
        viz.plot_log_ratio_slice(_gauss_log_ratio, {}, (1, 1), (1, 1))


def test_plot_losses_chance_line():
    fig = viz.plot_losses([[1.0, 0.5, 0.2] * 20], chance=True)
    ax = fig.axes[0]
    assert any(np.allclose(line.get_ydata(), viz.CHANCE_NCE) for line in ax.lines)
    assert ax.get_ylim()[0] == 0
    fig = viz.plot_losses([[1.0, 0.5, 0.2] * 20])
    assert len(fig.axes[0].lines) == 1


def test_plot_tre_stages_zooms_each_stage_to_its_waymarks_and_scales_it_on_their_samples():
    from amdre.tre import TelescopingRatio, make_waymarks
    torch.manual_seed(0)
    model = TelescopingRatio(2, 3, hidden=8)
    xp = 0.1 * torch.randn(50, 2) + 6                               # a sharp p far from q = N(0, I)
    waymarks = make_waymarks(xp, torch.randn(50, 2), 3)
    fig = viz.plot_tre_stages(model, waymarks, n=10)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 6 and len(fig.axes) == 9               # 2 x 3 panels and 3 colour bars
    first, last = panels[0], panels[2]
    assert first.get_xlim()[1] - first.get_xlim()[0] < 0.5 * (last.get_xlim()[1] - last.get_xlim()[0])
    assert first.get_xlim()[0] > 3                                  # stage 0 is drawn where p_0 and p_1 are
    with torch.no_grad():
        on_samples = model.ratios[0](torch.cat([waymarks[0], waymarks[1]])).abs().quantile(0.99).item()
    mesh = panels[3].collections[0]
    assert mesh.get_clim() == pytest.approx((-on_samples, on_samples), rel=1e-5)


def test_kl_sweep_draws_estimates_only_where_they_were_fitted():
    fig = viz.plot_kl_sweep([1.0, 7.0], [0.5, 27.0], {"NCE": [0.5, 11.0]}, truth=lambda g: g * g / 2)
    truth, nce = fig.axes[0].lines
    assert len(truth.get_xdata()) == 100 and nce.get_linestyle() == "None" and list(nce.get_xdata()) == [1.0, 7.0]


def test_plot_log_ratio_slice_measures_from_origin():
    fig = viz.plot_log_ratio_slice(_gauss_log_ratio, {}, (-1, -1), (3, 3), n=20, origin=(0, 0))
    t, y = fig.axes[0].lines[0].get_data()
    assert t[0] == pytest.approx(-np.sqrt(2), abs=1e-5) and t[-1] == pytest.approx(np.sqrt(18), abs=1e-5)
    assert y[0] == pytest.approx(-3.0, abs=1e-5)


def test_epoch_means_and_stage_epochs_plot():
    history = {"epoch": [0, 0, 1, 1, 2, 2], "stage": [0, 0, 0, 0, 1, 1], "z_norm2": [1.0, 3.0, 2.0, 2.0, 5.0, 7.0]}
    epochs, means, stages = viz.latent.epoch_means(history, "z_norm2")
    assert epochs == [1, 2, 3] and means == [2.0, 2.0, 6.0] and stages == [0, 0, 1]
    fig = viz.latent.plot_stage_epochs(history, "z_norm2", reference=2.0, reference_label="N(0, I)")
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2 + 1 and ax.get_xlabel() == "epoch"
    with pytest.raises(ValueError, match="history"):
        viz.latent.epoch_means({"epoch": [0]}, "z_norm2")


def test_plot_latent_map_lattice_and_labels():
    fig = viz.latent.plot_latent_map(FakeGenerator(), torch.randn(60, 2), labels=np.arange(60) % 10, extent=2.0, n=5)
    left, right = fig.axes[0], fig.axes[1]
    assert left.get_xlabel() == "$z_1$" and right.get_ylabel() == "$z_2$"
    assert len(right.images) == 1 and right.images[0].get_array().shape == (5 * 33 + 1, 5 * 33 + 1)   # 8x8 -> 32x32
    assert [t.get_text() for t in right.get_yticklabels()][0] == "2"   # z_2 grows upwards
    with pytest.raises(ValueError, match="n must"):
        viz.latent.plot_latent_map(FakeGenerator(), torch.randn(5, 2), n=1)


def test_plot_curves_adaptive_and_non_adaptive():
    adaptive = {"epoch": [0, 0, 1, 1], "stage": [0, 0, 1, 1], "mse": [0.5, 0.4, 0.3, 0.2],
                "nce_loss": [0.9, 0.8, 1.3, 1.35]}
    fig = viz.plot_curves(adaptive)
    assert len(fig.axes[1].get_lines()) == 2 + 1           # two stages and chance
    fig = viz.plot_curves(adaptive, mse_reference=0.27)
    assert len(fig.axes[0].get_lines()) == 1 + 1           # the curve and the mean image's MSE
    flat = {"epoch": [0, 1], "stage": [None, None], "mse": [0.5, 0.4], "nce_loss": [float("nan")] * 2}
    fig = viz.plot_curves(flat)
    assert not fig.axes[1].axison


def test_figure_slider_redraws_into_an_image_and_closes_figures():
    drawn = []

    def draw(k):
        drawn.append(k)
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, k])
        return fig

    box = viz.figure_slider(draw, [0.5, 1.0, 2.0], value=1, description="gap")
    slider, image = box.children
    first = image.value
    assert first[:4] == b"\x89PNG" and drawn == [1] and slider.label == "1.0"
    slider.value = 2
    assert drawn == [1, 2] and image.value != first
    assert plt.get_fignums() == []
    with pytest.raises(ValueError, match="index"):
        viz.figure_slider(draw, [0.5], value=3)


# --------------------------------------------------------------------------- Langevin trajectories (notebooks 03, 08)
def test_trajectory_strip_labels_every_column_and_chain():
    frames = torch.rand(11, 5, 1, 8, 8) * 2 - 1          # 11 recorded steps (0, 2, ..., 20) of 5 chains
    steps = list(range(0, 21, 2))
    fig = viz.plot_trajectory_strip(frames, steps, n_chains=3, show_steps=[0, 4, 20])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "4", "20"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "2", "3"]
    assert ax.get_xlabel() == "Langevin step" and ax.get_ylabel() == "chain"
    assert ax.images[0].get_array().shape == (3 * 9 + 1, 3 * 9 + 1)      # 3 chains x 3 steps of 8x8, 1 px padding
    plt.close(fig)
    _, axes = plt.subplots(2, 1)
    fig = viz.plot_trajectory_strip(frames, steps, ax=axes[1], n_cols=4, title="given axes")
    assert fig is axes[1].figure and axes[1].get_title() == "given axes" and not axes[0].images
    plt.close(fig)
    with pytest.raises(ValueError, match="recorded steps"):
        viz.plot_trajectory_strip(frames, steps, show_steps=[0, 3])
    with pytest.raises(ValueError, match="recorded steps"):
        viz.plot_trajectory_strip(frames, steps, show_steps=[])


def test_trajectory_animation_is_readable_at_the_readme_width(tmp_path):
    from PIL import Image
    frames = torch.rand(4, 8, 1, 28, 28) * 2 - 1         # one row of 8 chains, as notebook 08 animates them
    anim = viz.trajectory_animation(frames, [0, 2, 4, 6], nrow=8)
    anim.save(tmp_path / "a.gif", writer="pillow")
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 4 and im.width >= 600
    plt.close(anim._fig)
    with pytest.raises(ValueError, match="inches_per_image"):
        viz.trajectory_animation(frames, [0, 2, 4, 6], inches_per_image=0)


def test_show_saved_writes_the_png_it_shows(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    from IPython import display as ipd
    shown = []
    monkeypatch.setenv("AMDRE_FIGURES", str(tmp_path))
    monkeypatch.setattr(ipd, "display", lambda obj: shown.append(obj))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = viz.show_saved(fig, "line.png")
    assert path == tmp_path / "line.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(shown) == 1 and shown[0].data == path.read_bytes()     # the displayed image is the file's bytes
    assert not plt.fignum_exists(fig.number)                           # closed: no second rendering inline
