"""Closed-form checks of short-run Langevin (Eq. 3) and SIR against Gaussian targets."""
import pytest
import torch

from amdre.density import log_likelihood, posterior_log_prob
from amdre.langevin import langevin, lebm_to_eq3
from amdre.prior import EBMPrior
from amdre.samplers import aggregate_posterior, sample_posterior, sample_prior, sample_sir
from conftest import AffineGenerator, tilt


def moments(z):
    return z.mean(0), torch.cov(z.T)


def test_lebm_steps_are_eq3_steps():
    """LEBM's update z + (s^2/2) grad + s w, run with LEBM's s = 0.1, is Eq. 3 with ``lebm_to_eq3(0.1)``: the same
    chain, step for step, on the same noise."""
    a = torch.tensor([1.0, -0.5])
    z0, noise = torch.randn(6, 2), [torch.randn(6, 2) for _ in range(5)]
    z = z0
    for w in noise:
        z = z + 0.5 * 0.1 ** 2 * (a - z) + 0.1 * w                     # grad log N(a, I) = a - z
    draws = iter(noise)
    eq3 = langevin(lambda z: -0.5 * (z - a).pow(2).sum(1), z0, 5, lebm_to_eq3(0.1), randn=lambda t: next(draws))
    torch.testing.assert_close(eq3, z)


def test_posterior_of_linear_gaussian_model():
    torch.manual_seed(0)
    d, D, sigma = 2, 3, 0.5
    A, b = torch.tensor([[0.6, -0.3], [0.2, 0.5], [-0.4, 0.1]]), torch.tensor([0.1, -0.2, 0.3])
    x0 = torch.tensor([0.5, -0.4, 0.2])
    cov = torch.linalg.inv(torch.eye(d) + A.T @ A / sigma**2)      # (I + A^T A / sigma^2)^-1
    mean = cov @ A.T @ (x0 - b) / sigma**2
    g = AffineGenerator(A, b)
    x = x0.view(1, 1, 1, D).expand(4000, 1, 1, D)
    z = sample_posterior(g, EBMPrior(d), x, n_steps=700, step_size=0.01, sigma=sigma)
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
    z = sample_posterior(AffineGenerator(A, b), prior, x, z0=torch.zeros(4000, 2), n_steps=1200, step_size=0.02,
                         sigma=sigma)
    m, c = moments(z)
    assert torch.allclose(m, mean, atol=0.04) and torch.allclose(c, cov, atol=0.04, rtol=0.06), (m, c)
    # n_stages=0 ignores the tilt: the mean moves back toward the Gaussian-prior posterior.
    z0 = sample_posterior(AffineGenerator(A, b), prior, x, n_steps=1200, step_size=0.02, sigma=sigma, n_stages=0)
    assert torch.allclose(z0.mean(0), cov @ A.T @ x0 / sigma**2, atol=0.04)


def test_tilted_prior_langevin_and_sir():
    torch.manual_seed(2)
    a = torch.tensor([1.0, -0.5, 0.25])
    prior = EBMPrior(3)
    prior.add_stage(tilt(a))
    z = sample_prior(prior, torch.randn(4000, 3), n_steps=800, step_size=0.02)
    m, c = moments(z)
    assert torch.allclose(m, a, atol=0.05) and torch.allclose(c, torch.eye(3), atol=0.07), (m, c)
    zs = sample_sir(prior, 4000, 200_000, generator=torch.Generator().manual_seed(0))
    m, c = moments(zs)
    assert torch.allclose(m, a, atol=0.05) and torch.allclose(c, torch.eye(3), atol=0.07), (m, c)
    # no stages: the Gaussian prior; Langevin brings a shifted start back to N(0, I)
    zg = sample_prior(EBMPrior(3), torch.randn(4000, 3) + 2.0, n_steps=600, step_size=0.05)
    assert torch.allclose(zg.mean(0), torch.zeros(3), atol=0.06)


def test_no_parameter_gradients_and_trajectory():
    torch.manual_seed(3)
    prior = EBMPrior(4)
    prior.add_stage()
    prior.add_stage()
    g = AffineGenerator(torch.randn(5, 4), torch.randn(5))
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
    g, prior = AffineGenerator(torch.randn(5, 4), torch.randn(5)), EBMPrior(4)
    x = torch.randn(8, 1, 1, 5)
    with pytest.raises(ValueError, match="B = len"):
        sample_posterior(g, prior, x, z0=torch.randn(7, 4))
    with pytest.raises(ValueError, match="step_size"):
        sample_posterior(g, prior, x, step_size=0.0)
    with pytest.raises(ValueError, match="sigma"):
        sample_posterior(g, prior, x, sigma=-1.0)
    with pytest.raises(ValueError, match=r"n_stages must be an int in 0..0"):
        sample_prior(prior, torch.randn(3, 4), 2, 0.01, n_stages=1)
    with pytest.raises(ValueError, match="record_every"):
        sample_prior(prior, torch.randn(3, 4), 2, 0.01, record_every=0)
    with pytest.raises(ValueError, match=r"EBMPrior\(nz\) with no stages is N\(0, I\)"):
        sample_posterior(g, None, x)


def test_noise_source_and_log_densities():
    """``randn`` is the only noise: zero noise is gradient ascent (to the mode), and the densities add up."""
    a = torch.tensor([1.0, -0.5, 0.25])
    prior = EBMPrior(3)
    prior.add_stage(tilt(a))
    z = sample_prior(prior, torch.randn(5, 3), n_steps=500, step_size=0.05, randn=torch.zeros_like)
    assert torch.allclose(z, a.expand(5, 3), atol=1e-4)                # the mode of N(a, I)
    calls = []
    sample_prior(prior, torch.randn(5, 3), 7, 0.01, randn=lambda t: calls.append(t.shape) or torch.zeros_like(t))
    assert calls == [(5, 3)] * 7                                        # one draw per step, shaped like z
    g = AffineGenerator(torch.randn(4, 3), torch.randn(4))
    x, z = torch.randn(6, 1, 1, 4), torch.randn(6, 3)
    with torch.no_grad():
        rec = -(x - g(z)).pow(2).flatten(1).sum(1) / (2 * 0.3 ** 2)
    assert torch.allclose(log_likelihood(g, x, z, 0.3), rec)
    assert torch.allclose(posterior_log_prob(g, prior, x, z, 0.3), (a * z).sum(1) - 0.5 * z.pow(2).sum(1) + rec)
    assert torch.allclose(posterior_log_prob(g, prior, x, z, 0.3, n_stages=0), -0.5 * z.pow(2).sum(1) + rec)


def test_images_are_checked():
    g, prior = AffineGenerator(torch.randn(5, 4), torch.randn(5)), EBMPrior(4)
    with pytest.raises(ValueError, match=r"shape \[B, 1, 1, 5\].*got \(8, 1, 1, 6\)"):
        sample_posterior(g, prior, torch.randn(8, 1, 1, 6))
    with pytest.raises(ValueError, match=r"shape \[B, 1, 1, 5\]"):
        sample_posterior(g, prior, torch.randn(8, 5))
    x = torch.randn(8, 1, 1, 5)
    x[2, 0, 0, 1], x[5, 0, 0, 0] = float("nan"), float("inf")
    with pytest.raises(ValueError, match="NaN or inf in 2 of 8 images"):
        sample_posterior(g, prior, x)
    with pytest.raises(ValueError, match="NaN or inf in 2 of 8 images"):          # and the dataset-level loop
        aggregate_posterior(g, prior, x, batch_size=100)
