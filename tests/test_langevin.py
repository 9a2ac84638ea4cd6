"""Closed-form checks of short-run Langevin (Eq. 3) and SIR against Gaussian targets."""
import pytest
import torch
import torch.nn as nn

from amdre.langevin import lebm_to_eq3, sample_posterior, sample_prior
from amdre.prior import EBMPrior


class Linear(nn.Module):
    """g(z) = A z + b, images of shape [B, 1, 1, D]."""

    def __init__(self, A, b):
        super().__init__()
        self.A, self.b, self.nz = nn.Parameter(A.clone()), nn.Parameter(b.clone()), A.shape[1]

    def forward(self, z):
        return (z @ self.A.T + self.b).view(len(z), 1, 1, -1)


def tilt(a):
    """A stage with log r(z) = a^T z, so that p(z) ∝ exp(a^T z) N(0, I) = N(a, I)."""
    lin = nn.Linear(len(a), 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(a[None])
    return nn.Sequential(lin, nn.Flatten(0))


def moments(z):
    return z.mean(0), torch.cov(z.T)


def test_lebm_to_eq3():
    assert lebm_to_eq3(0.1) == pytest.approx(0.01) and lebm_to_eq3(0.4) == pytest.approx(0.16)


def test_posterior_of_linear_gaussian_model():
    torch.manual_seed(0)
    d, D, sigma = 2, 3, 0.5
    A, b = torch.tensor([[0.6, -0.3], [0.2, 0.5], [-0.4, 0.1]]), torch.tensor([0.1, -0.2, 0.3])
    x0 = torch.tensor([0.5, -0.4, 0.2])
    cov = torch.linalg.inv(torch.eye(d) + A.T @ A / sigma**2)      # (I + A^T A / sigma^2)^-1
    mean = cov @ A.T @ (x0 - b) / sigma**2
    g = Linear(A, b)
    x = x0.view(1, 1, 1, D).expand(4000, 1, 1, D)
    z = sample_posterior(g, None, x, n_steps=700, step_size=0.01, sigma=sigma)
    m, c = moments(z)
    # Eq. 3's stationary covariance is 1/(lambda (1 - s lambda/4)): < 1% off for s = 0.01, lambda <= 3.
    assert torch.allclose(m, mean, atol=0.03), (m, mean)
    assert torch.allclose(c, cov, atol=0.03, rtol=0.06), (c, cov)
    assert g.A.grad is None and g.b.grad is None


def test_posterior_warm_start_and_prior_stages():
    """An EBMPrior with a tilt stage enters the posterior: p(z|x) ∝ N(z; a, I) N(x; A z + b, sigma^2)."""
    torch.manual_seed(1)
    a, A, b, sigma = torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.2]]), torch.zeros(1), 1.0
    prior = EBMPrior(2)
    prior.add_stage(tilt(a))
    x0 = torch.tensor([0.3])
    prec = torch.eye(2) + A.T @ A / sigma**2
    cov = torch.linalg.inv(prec)
    mean = cov @ (a + A.T @ x0 / sigma**2)
    x = x0.view(1, 1, 1, 1).expand(4000, 1, 1, 1)
    z = sample_posterior(Linear(A, b), prior, x, z0=torch.zeros(4000, 2), n_steps=1200, step_size=0.02, sigma=sigma)
    m, c = moments(z)
    assert torch.allclose(m, mean, atol=0.04) and torch.allclose(c, cov, atol=0.04, rtol=0.06), (m, c)
    # n_stages=0 ignores the tilt: the mean moves back toward the Gaussian-prior posterior.
    z0 = sample_posterior(Linear(A, b), prior, x, n_steps=1200, step_size=0.02, sigma=sigma, n_stages=0)
    assert torch.allclose(z0.mean(0), cov @ A.T @ x0 / sigma**2, atol=0.04)


def test_tilted_prior_langevin_and_sir():
    torch.manual_seed(2)
    a = torch.tensor([1.0, -0.5, 0.25])
    prior = EBMPrior(3)
    prior.add_stage(tilt(a))
    z = sample_prior(prior, torch.randn(4000, 3), n_steps=800, step_size=0.02)
    m, c = moments(z)
    assert torch.allclose(m, a, atol=0.05) and torch.allclose(c, torch.eye(3), atol=0.07), (m, c)
    zs = prior.sample_sir(4000, 200_000, generator=torch.Generator().manual_seed(0))
    m, c = moments(zs)
    assert torch.allclose(m, a, atol=0.05) and torch.allclose(c, torch.eye(3), atol=0.07), (m, c)
    # Gaussian prior (None): Langevin keeps N(0, I)
    zg = sample_prior(None, torch.randn(4000, 3) + 2.0, n_steps=600, step_size=0.05)
    assert torch.allclose(zg.mean(0), torch.zeros(3), atol=0.06)


def test_no_parameter_gradients_and_trajectory():
    torch.manual_seed(3)
    prior = EBMPrior(4)
    prior.add_stage()
    prior.add_stage()
    g = Linear(torch.randn(5, 4), torch.randn(5))
    x = torch.randn(8, 1, 1, 5)
    z, traj = sample_posterior(g, prior, x, n_steps=10, record_every=3)
    assert z.shape == (8, 4) and not z.requires_grad
    assert len(traj) == 10 // 3 + 1 and all(t.shape == (8, 4) for t in traj)
    assert not torch.equal(traj[0], traj[-1])
    z2, traj2 = sample_prior(prior, torch.randn(8, 4), 6, 0.01, record_every=2)
    assert len(traj2) == 4 and torch.equal(traj2[-1], z2)
    for p in list(prior.parameters()) + list(g.parameters()):
        assert p.grad is None
    assert torch.equal(sample_prior(prior, z2, 0, 0.01), z2)


def test_bad_input():
    g = Linear(torch.randn(5, 4), torch.randn(5))
    x = torch.randn(8, 1, 1, 5)
    with pytest.raises(ValueError, match="B = len"):
        sample_posterior(g, None, x, z0=torch.randn(7, 4))
    with pytest.raises(ValueError, match="step_size"):
        sample_posterior(g, None, x, step_size=0.0)
    with pytest.raises(ValueError, match="sigma"):
        sample_posterior(g, None, x, sigma=-1.0)
    with pytest.raises(ValueError, match="n_stages"):
        sample_prior(None, torch.randn(3, 4), 2, 0.01, n_stages=1)
    with pytest.raises(ValueError, match="record_every"):
        sample_prior(None, torch.randn(3, 4), 2, 0.01, record_every=0)
