"""The model's log-densities (Sec. 2.1, Eq. 1, 7, 8), the targets that Langevin dynamics (Eq. 3) samples.

    p(x, z) = p_phi(z) p_theta(x|z)                                              (Eq. 1, 7)
    log p_theta(x|z) = -||x - g_theta(z)||^2 / (2 sigma^2) + const              (``log_likelihood``)
    log p(z|x) = log p_{phi_k}(z) + log p_theta(x|z) + const                     (``posterior_log_prob``, Eq. 8)

``prior`` is an ``amdre.prior.EBMPrior``; one with no stages is the base prior N(0, I). ``n_stages=k`` uses its
first k stages, the prior p_{phi_k} of stage k (Eq. 8).
"""
import torch


def log_likelihood(generator, x: torch.Tensor, z: torch.Tensor, sigma: float) -> torch.Tensor:
    """log p_theta(x|z) up to a constant, [B]: -||x - g(z)||^2 / (2 sigma^2), summed over pixels (Sec. 2.1).

    The one place the reconstruction term is written: the posterior sampler, the generator's loss
    (Eq. 2) and the anomaly score (Sec. 5.2) all call it.
    """
    err = (x - generator(z).float()).pow(2).flatten(1).sum(1)       # .float(): a no-op unless g runs in bf16
    return -err / (2.0 * sigma * sigma)


def posterior_log_prob(generator, prior, x: torch.Tensor, z: torch.Tensor, sigma: float,
                       n_stages: int = None) -> torch.Tensor:
    """log p(z|x) up to a constant, [B]: log p_{phi_k}(z) + log p_theta(x|z) (Eq. 8 with k = ``n_stages``)."""
    return prior.log_prob(z, n_stages) + log_likelihood(generator, x, z, sigma)
