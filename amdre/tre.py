"""Telescoping density-ratio estimation (TRE, Sec. 3.1, Eq. 5) and the public ``fit_log_ratio``.

TRE bridges p = p_0 and q = p_m with waymark densities p_1 .. p_{m-1} and writes

    log p_0(x)/p_m(x) = sum_k log p_k(x)/p_{k+1}(x)              (Eq. 5)

learning one ratio per consecutive pair, each by NCE (Eq. 4), all trained jointly.
With m = 1 it is plain NCE.
"""
import math

import torch
import torch.nn as nn

from .nce import nce_accuracy, nce_loss
from .nets import RatioMLP, stacked_log_ratios
from .prior import EBMPrior
from .torchutils import seeded


def alpha_schedule(n_ratios: int, power: float = 1.0) -> torch.Tensor:
    """alpha_k = (k/m)^power for k = 0..m; alpha_0 = 0 gives p, alpha_m = 1 gives q."""
    return (torch.arange(n_ratios + 1, dtype=torch.float64) / n_ratios) ** power


def linear_waymarks(xp: torch.Tensor, xq: torch.Tensor, alphas: torch.Tensor) -> list:
    """Linear-combination waymarks x_k = sqrt(1 - alpha_k^2) x_p + alpha_k x_q (Rhodes et al. 2020).

    ``xp`` and ``xq`` are paired rows of the same shape; every waymark shares them, so the
    samples of one trajectory move smoothly from x_p (k = 0) to x_q (k = m).
    """
    out = []
    for a in alphas.tolist():
        if a == 0.0:
            out.append(xp)
        elif a == 1.0:
            out.append(xq)
        else:
            out.append(math.sqrt(1.0 - a * a) * xp + a * xq)
    return out


def dimwise_waymarks(xp: torch.Tensor, xq: torch.Tensor, n_ratios: int) -> list:
    """Dimension-wise mixing: waymark k takes its first round(k d / m) coordinates from x_q, the rest from x_p."""
    d = xp.shape[1]
    out = []
    for k in range(n_ratios + 1):
        j = round(k * d / n_ratios)
        out.append(torch.cat([xq[:, :j], xp[:, j:]], dim=1))
    return out


def make_waymarks(xp, xq, n_ratios: int, kind: str = "linear", power: float = 1.0) -> list:
    """The m + 1 waymark batches [x_0 = x_p, x_1, ..., x_m = x_q]."""
    if kind == "linear":
        return linear_waymarks(xp, xq, alpha_schedule(n_ratios, power))
    if kind == "dimwise":
        return dimwise_waymarks(xp, xq, n_ratios)
    raise ValueError(f"unknown waymark kind {kind!r}: use 'linear' or 'dimwise'")


class TelescopingRatio(nn.Module):
    """log p_0(x)/p_m(x) as the sum of m stage log-ratios (Eq. 5). ``forward(x)`` -> [N]."""

    def __init__(self, dim: int, n_ratios: int = 1, hidden: int = 200):
        super().__init__()
        self.ratios = nn.ModuleList(RatioMLP(dim, hidden) for _ in range(n_ratios))
        self.losses = [[] for _ in range(n_ratios)]      # per-ratio NCE loss, one entry per step
        self.accuracies = [[] for _ in range(n_ratios)]  # per-ratio classifier accuracy

    @property
    def n_ratios(self) -> int:
        return len(self.ratios)

    def stage_log_ratios(self, x: torch.Tensor) -> torch.Tensor:
        """[N, m]: column k is the estimate of log p_k(x)/p_{k+1}(x)."""
        return stacked_log_ratios(self.ratios, x).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage_log_ratios(x).sum(dim=1)


def tre_loss(model: TelescopingRatio, waymarks: list) -> tuple:
    """Eq. 4 for every stage k between waymarks k and k+1, all stages in one batched pass.

    Returns (sum of stage losses, [m] stage losses, [m] stage accuracies).
    """
    w = torch.stack(waymarks)                                  # [m+1, B, d]
    b = w.shape[1]
    out = stacked_log_ratios(model.ratios, torch.cat([w[:-1], w[1:]], dim=1))  # [m, 2B]
    lp, lq = out[:, :b], out[:, b:]
    losses = nce_loss(lp, lq)
    return losses.sum(), losses.detach(), nce_accuracy(lp, lq)


def _as_samples(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape [N, d] (one sample per row); got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: give at least one sample")
    if not torch.isfinite(x).all():
        n_bad = (~torch.isfinite(x)).any(dim=1).sum().item()
        raise ValueError(f"{name} holds NaN or inf in {n_bad} of {x.shape[0]} rows: drop or fix them first")
    return x


def fit_log_ratio(xp, xq, method: str = "nce", n_ratios: int = 1, steps: int = 1500, batch_size: int = 256,
                  lr: float = 1e-3, seed: int = 0, *, waymarks: str = "linear", power: float = 1.0,
                  hidden: int = 200, progress=None) -> TelescopingRatio:
    """Estimate log p(x)/q(x) from samples ``xp`` ~ p and ``xq`` ~ q, both [N, d].

    ``method="nce"`` trains one ratio by Eq. 4; ``method="tre"`` trains ``n_ratios`` ratios between
    waymarks jointly (Eq. 5). Returns a module mapping [N, d] -> [N] log-ratio (the telescoped sum),
    with ``.losses[k]`` and ``.accuracies[k]`` the per-step training curves of ratio k.
    Each step draws a fresh minibatch from each sample set (with replacement) and fresh waymarks.
    ``progress`` wraps the loop over steps, e.g. ``progress=tqdm.auto.tqdm`` for a progress bar.
    """
    if method not in ("nce", "tre"):
        raise ValueError(f"unknown method {method!r}: use 'nce' (one ratio, Eq. 4) or 'tre' (telescoping, Eq. 5)")
    xp, xq = _as_samples(xp, "xp"), _as_samples(xq, "xq")
    if xp.shape[1] != xq.shape[1]:
        raise ValueError(f"xp and xq must have the same dimension; got d={xp.shape[1]} and d={xq.shape[1]}")
    if not isinstance(n_ratios, int) or n_ratios < 1:
        raise ValueError(f"n_ratios must be a positive int; got {n_ratios!r}")
    if method == "nce" and n_ratios != 1:
        raise ValueError(f"method='nce' fits one ratio; got n_ratios={n_ratios}. Use method='tre' for several")
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"steps, batch_size and lr must be positive; got {steps}, {batch_size}, {lr}")

    gen = torch.Generator().manual_seed(seed)                   # the minibatches; the caller's RNG is left alone
    with seeded(seed):
        model = TelescopingRatio(xp.shape[1], n_ratios, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in (progress or iter)(range(steps)):
        bp = xp[torch.randint(len(xp), (batch_size,), generator=gen)]
        bq = xq[torch.randint(len(xq), (batch_size,), generator=gen)]
        loss, per_stage, accs = tre_loss(model, make_waymarks(bp, bq, n_ratios, waymarks, power))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, (l, a) in enumerate(zip(per_stage.tolist(), accs.tolist())):
            model.losses[k].append(l)
            model.accuracies[k].append(a)
    return model.eval()


def tre_prior(z_posterior: torch.Tensor, n_stages: int, steps: int = 1500, lr: float = 1e-3, seed: int = 0,
              progress=None) -> EBMPrior:
    """The non-adaptive prior of Sec. 5.5 from aggregate-posterior samples ``z_posterior`` [N, nz]: TRE (Eq. 5)
    with ``n_stages`` ratios between them (p_0) and N(0, I) (p_m). TRE's ratio k estimates p_k / p_{k+1}, so
    the sum of the log-ratios estimates log q / N(0, I): exactly the prior's sum of log r_k (Eq. 6).

    Returned frozen, with ``.history`` holding the TRE losses and accuracies per ratio. A non-adaptive run
    trains its generator under N(0, I) whatever m is, so one generator (and one ``aggregate_posterior`` sample of it)
    serves every m of an ablation: only this fit depends on m.
    """
    z = torch.as_tensor(z_posterior).detach().float().cpu()
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"z_posterior must be samples [N, nz] with N >= 2; got shape {tuple(z.shape)}")
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
    tre = fit_log_ratio(z, noise, method="tre", n_ratios=n_stages, steps=steps, lr=lr, seed=seed, progress=progress)
    prior = EBMPrior(z.shape[1])
    for ratio in tre.ratios:
        prior.add_stage(ratio)
    prior.requires_grad_(False)
    prior.history = {"tre_loss": tre.losses, "tre_acc": tre.accuracies}
    return prior.eval()
