"""amdre.grid: exact 2-D densities on a grid against closed forms."""
import math

import numpy as np
import pytest
import torch

from amdre import toys
from amdre.grid import Grid, grid_log_density, grid_tv, kl
from amdre.prior import EBMPrior
from conftest import AffineGenerator


def test_kl_of_gaussians_on_the_grid_is_the_closed_form():
    grid = Grid(extent=9.0, n=300)
    p, q = toys.gaussian_pair(5.0)                                   # 14 nats apart
    assert kl(grid.log_pmf(p.log_prob), grid.log_pmf(q.log_prob)) == pytest.approx(p.kl(q), rel=2e-3)
    assert kl(grid.log_pmf(q.log_prob), grid.log_pmf(q.log_prob)) == 0.0


def test_samples_follow_the_grid_density():
    grid = Grid(extent=6.0, n=150)
    p = toys.Gaussian([1.0, -2.0], [[1.0, 0.5], [0.5, 0.8]])
    z = grid.sample(grid.log_pmf(p.log_prob), 40000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), p.mean.float(), atol=0.02)
    assert torch.allclose(torch.cov(z.T), p.cov.float(), atol=0.03)


def test_aggregate_posterior_of_a_linear_gaussian_model():
    """g(z) = A z + b, prior N(0, I): one image's posterior is N(C A^T (x - b) / s^2, C), C = (I + A^T A / s^2)^-1;
    the aggregate posterior of data drawn from the model is the prior itself."""
    grid, sigma = Grid(extent=5.0, n=160), 0.5
    A, b = torch.tensor([[0.8, -0.3], [0.2, 0.6], [-0.5, 0.4]]), torch.tensor([0.1, 0.0, -0.2])
    g = AffineGenerator(A, b)
    x = torch.tensor([0.7, -0.4, 0.3]).view(1, 1, 1, 3)
    one = grid.aggregate_posterior(g, x, sigma)
    cov = torch.linalg.inv(torch.eye(2) + A.T @ A / sigma ** 2)
    mean = cov @ A.T @ (x.flatten() - b) / sigma ** 2
    p = one.double().exp()
    grid_mean = (p[:, None] * grid.points).sum(0)
    grid_cov = (p[:, None, None] * torch.einsum("ni,nj->nij", grid.points - grid_mean, grid.points - grid_mean)).sum(0)
    assert torch.allclose(grid_mean.float(), mean, atol=2e-3) and torch.allclose(grid_cov.float(), cov, atol=2e-3)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3000, 2, generator=gen)
    data = (z @ A.T + b + sigma * torch.randn(3000, 3, generator=gen)).view(-1, 1, 1, 3)
    gauss = grid.log_pmf(lambda z: -0.5 * z.pow(2).sum(1))
    assert kl(grid.aggregate_posterior(g, data, sigma), gauss) < 0.01
    assert kl(grid.aggregate_posterior(g, data + 2.0, sigma), gauss) > 1.0    # data off the model: q moves away


def test_bad_grid():
    with pytest.raises(ValueError, match="extent must be > 0"):
        Grid(extent=0.0)
    assert math.isclose(Grid(extent=2.0, n=4).h, 1.0)


def test_grid_log_density_matches_gaussian(prior3):
    z = torch.randn(100, 2)
    exact = -0.5 * z.pow(2).sum(1) - np.log(2 * np.pi)
    assert torch.allclose(grid_log_density(prior3, z, 0, extent=6.0, n=241), exact, atol=1e-3)


def test_grid_tv_exact_samples_near_floor_and_shifted_far(prior3):
    torch.manual_seed(0)
    exact = torch.randn(4000, 2)                         # p_0 = N(0, I): exact samples
    tv, floor = grid_tv(prior3, exact, 0, extent=4.0, bins=12)
    assert 0 < floor < 0.1 and tv < 2 * floor
    tv_far, _ = grid_tv(prior3, exact + 3.0, 0, extent=4.0, bins=12)
    assert tv_far > 0.8                                  # mostly outside p_0's mass (and partly outside the square)
    outside, _ = grid_tv(prior3, torch.full((10, 2), 9.0), 0)
    assert outside == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        grid_tv(prior3, torch.randn(10, 3), 0)
    with pytest.raises(ValueError, match="2-D latent"):
        grid_tv(EBMPrior(3), torch.randn(10, 3), 0)
