"""Exact 2-D densities on a grid: where a latent space has two dimensions, every density can be normalised, sampled
and compared exactly (notebook 04's one-ratio-against-several experiment).

A ``Grid`` is an n x n lattice of cell centres over [-extent, extent]^2. A density on it is a log-pmf [n*n] (its
cells' probabilities, summing to 1): ``log_pmf(log_density)`` normalises any unnormalised log-density evaluated at
the centres; ``kl`` compares two; ``sample`` draws from one (uniform within the cell); ``aggregate_posterior`` is
q(z) = (1/N) sum_i p(z | x_i) of a generator with a 2-D latent, each posterior normalised on the grid.
"""
import math

import torch


class Grid:
    """Cell centres ``points`` [n*n, 2] of an n x n lattice over [-extent, extent]^2, cell width ``h``."""

    def __init__(self, extent: float = 5.0, n: int = 200):
        if not (extent > 0 and isinstance(n, int) and n >= 2):
            raise ValueError(f"extent must be > 0 and n an int >= 2; got {extent!r}, {n!r}")
        self.extent, self.n, self.h = float(extent), n, 2 * extent / n
        t = -extent + (torch.arange(n) + 0.5) * self.h
        zz1, zz2 = torch.meshgrid(t, t, indexing="xy")
        self.points = torch.stack([zz1.flatten(), zz2.flatten()], 1)

    def log_pmf(self, log_density) -> torch.Tensor:
        """The log-probabilities of the cells of an unnormalised log-density (a function of [N, 2], or its values)."""
        values = log_density(self.points) if callable(log_density) else torch.as_tensor(log_density)
        values = values.detach().double()
        return (values - torch.logsumexp(values, 0)).float()

    def sample(self, log_pmf: torch.Tensor, n: int, generator: torch.Generator = None) -> torch.Tensor:
        """n samples [n, 2] of a grid density: a cell by its probability, then a uniform point in it."""
        cells = torch.multinomial(log_pmf.double().exp(), n, replacement=True, generator=generator)
        return self.points[cells] + (torch.rand(n, 2, generator=generator) - 0.5) * self.h

    @torch.no_grad()
    def aggregate_posterior(self, generator, images: torch.Tensor, sigma: float, chunk: int = 4096) -> torch.Tensor:
        """log-pmf of q(z) = mean_i p(z | x_i) for a generator g: R^2 -> images, with p(z | x) proportional to
        N(z; 0, I) N(x; g(z), sigma^2 I) normalised over the grid, for every image x_i of ``images`` [N, ...]."""
        x = images.flatten(1)
        parts = [(-0.5 * z.pow(2).sum(1)[:, None] - torch.cdist(generator(z).flatten(1), x).pow(2)
                  / (2 * sigma ** 2)) for z in self.points.split(chunk)]    # [cells, N] log p(x_i, z), chunk by chunk
        log_norm = torch.logsumexp(torch.stack([torch.logsumexp(p, 0) for p in parts]), 0)   # [N]: each posterior
        log_q = torch.cat([torch.logsumexp(p - log_norm, 1) for p in parts]) - math.log(len(x))
        return self.log_pmf(log_q)


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    """KL(p || q) in nats between two grid densities (log-pmfs on the same grid)."""
    p = log_p.double().exp()
    return float((p * (log_p.double() - log_q.double())).sum())
