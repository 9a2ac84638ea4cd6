"""Noise-contrastive density-ratio estimation (Sec. 2.2, Eq. 4).

A ratio model is written on the log scale, ``log_r = f_phi(x)``, so that
r = exp(f) >= 0. Eq. 4 then becomes two softplus terms, which never overflow:

    L(phi) = -E_p log(r / (1 + r)) - E_q log(1 / (1 + r))
           =  E_p softplus(-log r)  + E_q softplus(log r).

Its minimiser is log r*(x) = log p(x) - log q(x).
"""
import torch
import torch.nn.functional as F


def nce_loss(log_r_p: torch.Tensor, log_r_q: torch.Tensor) -> torch.Tensor:
    """Eq. 4 on log-ratios: ``log_r_p`` evaluated on samples of p, ``log_r_q`` on samples of q.

    Averages over the last dimension, so [m, B] inputs give the m stage losses at once.
    """
    return F.softplus(-log_r_p).mean(-1) + F.softplus(log_r_q).mean(-1)


@torch.no_grad()
def nce_accuracy(log_r_p: torch.Tensor, log_r_q: torch.Tensor) -> torch.Tensor:
    """Balanced accuracy of the classifier D(x) = sigmoid(log r(x)) that says "from p" when log r > 0."""
    return 0.5 * ((log_r_p > 0).float().mean(-1) + (log_r_q < 0).float().mean(-1))
