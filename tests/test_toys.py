"""The toy densities are proper densities, and the Gaussian KL is right."""
import math

import pytest
import torch

from amdre import toys
from amdre.toys import LOG2PI
from amdre.grid import grid_points

TOYS = {
    "gaussian": toys.Gaussian([0.5, -0.3], [[1.0, 0.3], [0.3, 0.5]]),
    "standard_normal": toys.standard_normal(2),
    "pair_p": toys.gaussian_pair(3.0)[0],
    "pair_q": toys.gaussian_pair(3.0)[1],
    "diagonal": toys.Gaussian([-1.0, 2.0], [0.3, 2.0]),
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
    """sample() and log_prob() describe the same distribution: the samples' moments are the density's, their
    mean log-density is minus its entropy, and each highest-density region holds its exact share of them.

    In 2-D, {x : log p(x) > log p(mean) - c} is the Mahalanobis ellipse of radius^2 2c, of mass 1 - exp(-c).
    Uniform points on the same box land there far less often.
    """
    toy = TOYS[name]
    n = 20_000
    x = toy.sample(n, seed=3)
    assert x.shape == (n, 2) and torch.equal(x, toy.sample(n, seed=3)) and not torch.equal(x, toy.sample(n, seed=4))
    std = toy.cov.diagonal().sqrt().float()
    assert torch.allclose(x.mean(0), toy.mean.float(), atol=0.03 * std.max().item())      # ~4 standard errors
    assert torch.allclose(torch.cov(x.T.double()), toy.cov, rtol=0.05, atol=0.03 * toy.cov.diagonal().max().item())
    log_p = toy.log_prob(x).double()
    entropy = 1 + LOG2PI + 0.5 * torch.logdet(toy.cov).item()                        # d/2 (1 + log 2 pi) + ...
    assert log_p.mean().item() == pytest.approx(-entropy, abs=0.03)
    peak = toy.log_prob(toy.mean[None]).double().item()
    uniform = (torch.rand(n, 2, generator=torch.Generator().manual_seed(0)) * 12 - 6)
    log_u = toy.log_prob(uniform).double()
    for c in (0.5, 1.0, 2.0, 3.0):
        inside = (log_p > peak - c).double().mean().item()
        assert inside == pytest.approx(1 - math.exp(-c), abs=0.015), c
        assert (log_u > peak - c).double().mean().item() < inside / 3


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


def test_pair_samples_are_independent_across_seeds_and_roles():
    p, q = toys.gaussian_pair(3.0)
    xp, xq, x_test = toys.pair_samples(p, q, 500, seed=1, n_test=200)
    assert torch.equal(xp, p.sample(500, 3)) and torch.equal(xq, q.sample(500, 4)) and torch.equal(x_test, p.sample(200, 5))
    xp2, _, _ = toys.pair_samples(p, q, 500, seed=2, n_test=200)
    assert not torch.isin(xp2[:, 0], torch.cat([xp[:, 0], x_test[:, 0]])).any()   # seed 2 shares no draw with seed 1
    assert abs(xp.mean(0) - p.mean).max() < 0.1 and abs(xq.mean(0)).max() < 0.15     # each from its own density
