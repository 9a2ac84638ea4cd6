"""Tests for the latent-EBM plotting helpers in amdre.viz (notebooks 03 and 04), with tiny fake models."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn as nn

from amdre import viz
from amdre.prior import EBMPrior


class FakeGenerator(nn.Module):
    """z [B, 2] -> 8x8 grey images in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 64)

    def forward(self, z):
        return torch.tanh(self.lin(z)).reshape(-1, 1, 8, 8)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def prior3():
    torch.manual_seed(0)
    prior = EBMPrior(2)
    for _ in range(3):
        prior.add_stage()
    return prior.requires_grad_(False)


def test_plot_stage_panels_every_stage(prior3):
    z_post = torch.randn(200, 2) * 0.5 + 1.0
    for k in range(prior3.n_stages):
        fig = viz.plot_stage(prior3, k, z_post, generator=FakeGenerator(), n=30, n_samples=9, n_proposals=500)
        axes = fig.axes
        assert len(axes) == 5
        titles = [ax.get_title() for ax in axes]
        assert f"$p_{{{k}}}$" in titles[0] and f"$q_{{{k}}}$" in titles[1]
        assert f"$r_{{{k}}}$" in titles[2] and f"$p_{{{k + 1}}}" in titles[3] and "decoded" in titles[4]
        assert len(axes[1].collections) >= 1 and len(axes[4].images) == 1
        plt.close(fig)


def test_plot_stage_without_generator_has_four_panels(prior3):
    fig = viz.plot_stage(prior3, 0, torch.randn(50, 2), n=20)
    assert len(fig.axes) == 4


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


def test_grid_log_density_matches_gaussian(prior3):
    z = torch.randn(100, 2)
    exact = -0.5 * z.pow(2).sum(1) - np.log(2 * np.pi)
    assert torch.allclose(viz.grid_log_density(prior3, z, 0, extent=6.0, n=241), exact, atol=1e-3)
    g = viz.stage_grid(prior3, 1, 4.0, 50)
    i, j = 10, 37
    zij = torch.tensor([[g["xx"][i, j], g["yy"][i, j]]], dtype=torch.float32)
    assert viz.grid_log_density(prior3, zij, 1, 4.0, 50).item() == pytest.approx(np.log(g["p_k"][i, j]), abs=1e-4)
