"""The toy densities are proper densities, and the Gaussian KL is right."""
import pytest
import torch

from amdre import toys
from amdre.viz import grid_points

TOYS = {
    "gaussian": toys.Gaussian([0.5, -0.3], [[1.0, 0.3], [0.3, 0.5]]),
    "eight_gaussians": toys.eight_gaussians(),
    "rings": toys.rings(),
    "checkerboard": toys.Checkerboard(),
    "pair_p": toys.gaussian_pair(3.0)[0],
}


@pytest.mark.parametrize("name", TOYS)
def test_density_integrates_to_one(name):
    toy = TOYS[name]
    extent, n = 6.0, 600
    pts, _, _ = grid_points(extent, n)
    cell = (2 * extent / (n - 1)) ** 2
    mass = toy.log_prob(pts).double().exp().sum().item() * cell
    assert mass == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("name", TOYS)
def test_samples_land_where_the_density_is(name):
    toy = TOYS[name]
    x = toy.sample(2000, seed=3)
    assert x.shape == (2000, 2)
    assert torch.isfinite(toy.log_prob(x)).all()
    assert torch.equal(x, toy.sample(2000, seed=3))


def test_gaussian_kl_closed_form_matches_monte_carlo():
    p = toys.Gaussian([1.0, 2.0, 0.0], [0.5, 2.0, 1.5])
    q = toys.Gaussian([0.0, 0.0, 1.0], [[1.0, 0.2, 0.0], [0.2, 1.0, 0.0], [0.0, 0.0, 2.0]])
    x = p.sample(400_000, 0)
    mc = (p.log_prob(x) - q.log_prob(x)).double().mean().item()
    assert p.kl(q) == pytest.approx(mc, rel=0.01)
    assert p.kl(p) == pytest.approx(0.0, abs=1e-9)


def test_gaussian_pair_kl_grows_to_tens_of_nats():
    kls = [toys.gaussian_pair(g)[0].kl(toys.gaussian_pair(g)[1]) for g in (1.0, 5.0, 9.0)]
    assert kls[0] < 1 < 10 < kls[1] < kls[2] and kls[2] > 40
