"""Toy densities with exact log-densities and samplers, for checking ratio estimators against the truth.

Every toy has ``log_prob(x)`` ([N, d] -> [N]) and ``sample(n, seed=0)`` ([n, d]).
Gaussians also have ``kl(other)``, the closed-form KL divergence.
"""
import math

import torch

LOG2PI = math.log(2 * math.pi)


class Gaussian:
    """N(mean, cov) in d dimensions; ``cov`` may be a full [d, d] matrix, a vector of variances or a scalar."""

    def __init__(self, mean, cov=1.0):
        self.mean = torch.as_tensor(mean, dtype=torch.float64).flatten()
        d = self.mean.numel()
        cov = torch.as_tensor(cov, dtype=torch.float64)
        if cov.ndim == 0:
            cov = cov * torch.eye(d, dtype=torch.float64)
        elif cov.ndim == 1:
            cov = torch.diag(cov)
        self.cov = cov
        self.dim = d
        self._chol = torch.linalg.cholesky(cov)

    def log_prob(self, x) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        diff = (x - self.mean).T
        sol = torch.linalg.solve_triangular(self._chol, diff, upper=False)
        logdet = 2 * torch.log(torch.diagonal(self._chol)).sum()
        return (-0.5 * (sol ** 2).sum(0) - 0.5 * logdet - 0.5 * self.dim * LOG2PI).float()

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        eps = torch.randn(n, self.dim, generator=g, dtype=torch.float64)
        return (self.mean + eps @ self._chol.T).float()

    def kl(self, other: "Gaussian") -> float:
        """KL(self || other) in nats, closed form."""
        d = self.dim
        inv = torch.cholesky_inverse(other._chol)
        diff = other.mean - self.mean
        logdet_self = 2 * torch.log(torch.diagonal(self._chol)).sum()
        logdet_other = 2 * torch.log(torch.diagonal(other._chol)).sum()
        return 0.5 * (torch.trace(inv @ self.cov) + diff @ inv @ diff - d + logdet_other - logdet_self).item()


def standard_normal(dim: int = 2) -> Gaussian:
    return Gaussian(torch.zeros(dim), 1.0)


def gaussian_pair(gap: float, dim: int = 2) -> tuple:
    """A pair (p, q) = (N(mu, s^2 I), N(0, I)) that drifts apart as ``gap`` grows.

    p's mean moves out along the diagonal to distance ``gap`` (|mu| = gap) and its std shrinks to
    s = 1/(1 + gap/2), so KL(p || q) = gap^2/2 + (d/2)(s^2 - 1 - log s^2): 0.76 nats at gap 1,
    14 at gap 5, 27 at gap 7, 43 at gap 9 in two dimensions.
    """
    mean = torch.full((dim,), gap / math.sqrt(dim))
    std = 1.0 / (1.0 + gap / 2)
    return Gaussian(mean, std ** 2), standard_normal(dim)


def pair_samples(p, q, n: int, seed: int, n_test: int = 5000) -> tuple:
    """Seed ``seed``'s ``n`` training samples of p and of q and ``n_test`` held-out samples of p: three independent
    draws (seeds 3 * seed, 3 * seed + 1, 3 * seed + 2), so that different seeds never share a sample."""
    return p.sample(n, 3 * seed), q.sample(n, 3 * seed + 1), p.sample(n_test, 3 * seed + 2)


def true_log_ratio(p, q, x) -> torch.Tensor:
    """log p(x) - log q(x) from the exact densities."""
    return p.log_prob(x) - q.log_prob(x)


def kl_estimate(log_ratio_fn, xp) -> float:
    """Monte-Carlo KL(p || q) = E_p[log p/q] using samples xp ~ p and any log-ratio function."""
    with torch.no_grad():
        return log_ratio_fn(xp).mean().item()
