"""Exact 2-D densities on a grid: where a latent space has two dimensions, every density can be normalised, sampled
and compared exactly (notebook 04's one-ratio-against-several experiment).

A ``Grid`` is an n x n lattice of cell centres over [-extent, extent]^2. A density on it is a log-pmf [n*n] (its
cells' probabilities, summing to 1): ``log_pmf(log_density)`` normalises any unnormalised log-density evaluated at
the centres; ``kl`` compares two; ``sample`` draws from one (uniform within the cell); ``aggregate_posterior`` is
q(z) = (1/N) sum_i p(z | x_i) of a generator with a 2-D latent, each posterior normalised on the grid.

For a 2-D prior (an ``EBMPrior`` with nz = 2): ``grid_log_density`` normalises log p_j at given samples, and
``grid_tv`` measures how well samples follow p_j (total variation against its exact bin masses, with the floor that
exact samples get). ``grid_points`` is the plotting lattice (endpoints included) that ``amdre.viz`` draws on.
"""
import math

import numpy as np
import torch


def grid_points(extent=3.0, n=120):
    """A square n x n grid over [-extent, extent]^2 as ([n*n, 2] tensor, xx, yy)."""
    t = torch.linspace(-extent, extent, n)
    xx, yy = torch.meshgrid(t, t, indexing="xy")
    return torch.stack([xx.flatten(), yy.flatten()], 1), xx.numpy(), yy.numpy()


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


@torch.no_grad()
def grid_log_density(prior, z, n_stages: int, extent: float = 3.0, n: int = 200) -> torch.Tensor:
    """log p_j(z) [N] of a 2-D EBMPrior with j = ``n_stages``, normalised over the n x n plotting grid on
    [-extent, extent]^2 (the normaliser is a Riemann sum there, as ``stage_grid``'s densities are), so that
    densities of different stages can be compared on the samples z [N, 2]."""
    if getattr(prior, "nz", None) != 2:
        raise ValueError(f"grid_log_density needs a 2-D latent (prior.nz == 2); got nz={getattr(prior, 'nz', None)!r}")
    pts, _, _ = grid_points(extent, n)
    log_z = torch.logsumexp(prior.log_prob(pts, n_stages=n_stages), 0) + 2 * np.log(2 * extent / (n - 1))
    return prior.log_prob(torch.as_tensor(z).float(), n_stages=n_stages) - log_z


@torch.no_grad()
def grid_tv(prior, z, n_stages: int = None, extent: float = 4.0, bins: int = 16, sub: int = 8, repeats: int = 20,
            seed: int = 0) -> tuple:
    """How well samples ``z`` [N, 2] follow p_j (j = ``n_stages``) of a 2-D EBMPrior: (tv, floor).

    ``tv`` is the total-variation distance between the histogram of z on a bins x bins partition of
    [-extent, extent]^2 (samples outside the square count as mass in the wrong place) and p_j's exact mass
    in each bin (p_j normalised over the square, by midpoint sums on ``sub`` x ``sub`` cells per bin).
    ``floor`` is the mean tv of ``repeats`` sets of N exact draws from those bin masses (seeded): the value
    a perfect sampler gets with this many samples. 0 is identical, 1 disjoint.
    """
    if getattr(prior, "nz", None) != 2:
        raise ValueError(f"grid_tv needs a 2-D latent (prior.nz == 2); got nz={getattr(prior, 'nz', None)!r}")
    z = torch.as_tensor(z).detach().float().cpu()
    if z.ndim != 2 or z.shape[1] != 2 or len(z) == 0:
        raise ValueError(f"z must be samples of shape [N, 2]; got {tuple(z.shape)}")
    m = bins * sub
    h = 2 * extent / m
    t = -extent + (torch.arange(m) + 0.5) * h
    z1, z2 = torch.meshgrid(t, t, indexing="ij")                       # [i, j] = (z_1 bin, z_2 bin)
    device = next(iter(prior.parameters()), torch.empty(0)).device
    lp = prior.log_prob(torch.stack([z1.flatten(), z2.flatten()], 1).to(device), n_stages=n_stages).cpu()
    mass = torch.softmax(lp.double(), 0).reshape(bins, sub, bins, sub).sum((1, 3)).numpy()
    edges = np.linspace(-extent, extent, bins + 1)
    zn = z.double().numpy()
    counts, _, _ = np.histogram2d(zn[:, 0], zn[:, 1], bins=[edges, edges])
    inside = counts.sum()
    tv = 0.5 * (np.abs(counts / len(zn) - mass).sum() + (len(zn) - inside) / len(zn))
    rng = np.random.default_rng(seed)
    p = mass.flatten() / mass.sum()
    floor = float(np.mean([0.5 * np.abs(rng.multinomial(len(zn), p) / len(zn) - p).sum() for _ in range(repeats)]))
    return float(tv), floor
