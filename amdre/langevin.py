"""Short-run Langevin dynamics (Eq. 3) for the prior p_phi(z) and the posterior p_theta(z|x).

    z_{t+1} = z_t + (s/2) grad_z log p(z_t) + sqrt(s) w_t,      w_t ~ N(0, I)         (Eq. 3)

Step-size convention. Every ``step_size`` in amdre is the ``s`` of Eq. 3 (drift s/2, noise sqrt(s)).
LEBM's code (Pang et al. 2020) writes the same update with drift s^2/2 and noise s, so its step
``s_lebm`` equals ``s = s_lebm**2`` here: ``lebm_to_eq3(0.1) == 0.01`` (its posterior step) and
``lebm_to_eq3(0.4) == 0.16`` (its prior step). Our defaults (0.01 posterior) follow LEBM's numbers.

The posterior target (Sec. 2.1, 3.3), with p_theta(x|z) = N(g_theta(z), sigma^2 I):

    log p(z|x) = log p_phi(z) - ||x - g_theta(z)||^2 / (2 sigma^2) + const.

``prior=None`` means the base prior N(0, I). Gradients are taken with torch.autograd.grad with
respect to z only, so the generator and prior parameters never receive a ``.grad``.
"""
import math

import torch


def lebm_to_eq3(s: float) -> float:
    """LEBM's Langevin step (drift s^2/2, noise s) -> the Eq. 3 step (drift s/2, noise sqrt(s)): s^2."""
    return s * s


def prior_log_prob(prior, z: torch.Tensor, n_stages: int = None) -> torch.Tensor:
    """log p(z) up to a constant, [N]: ``prior.log_prob(z, n_stages)``, or -||z||^2/2 when prior is None."""
    if prior is None:
        if n_stages not in (None, 0):
            raise ValueError(f"prior=None is the Gaussian N(0, I) with no stages; got n_stages={n_stages!r}")
        return -0.5 * z.pow(2).sum(1)
    return prior.log_prob(z, n_stages)


def _check(n_steps, step_size, record_every):
    if not (isinstance(n_steps, int) and n_steps >= 0):
        raise ValueError(f"n_steps must be an int >= 0; got {n_steps!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0 (the s of Eq. 3); got {step_size!r}")
    if record_every is not None and not (isinstance(record_every, int) and record_every > 0):
        raise ValueError(f"record_every must be a positive int or None; got {record_every!r}")


def langevin(log_p, z0: torch.Tensor, n_steps: int, step_size: float, record_every: int = None):
    """Run Eq. 3 on the unnormalised log-density ``log_p`` ([N, d] -> [N]) from ``z0``.

    Returns the final z (detached), or ``(z, trajectory)`` when ``record_every`` is given, where the
    trajectory lists z_0, z_t, z_2t, ... (n_steps // record_every + 1 detached copies).
    The loop has no host synchronisation; z and the noise buffer are updated in place.
    """
    _check(n_steps, step_size, record_every)
    z = z0.detach().clone().requires_grad_(True)
    noise = torch.empty_like(z)
    drift, scale = 0.5 * step_size, math.sqrt(step_size)
    traj = [z.detach().clone()] if record_every else None
    for t in range(1, n_steps + 1):
        grad, = torch.autograd.grad(log_p(z).sum(), z)
        with torch.no_grad():
            z.add_(grad, alpha=drift).add_(noise.normal_(), alpha=scale)
        if record_every and t % record_every == 0:
            traj.append(z.detach().clone())
    z = z.detach()
    return (z, traj) if record_every else z


def sample_prior(prior, z0: torch.Tensor, n_steps: int, step_size: float, record_every: int = None,
                 n_stages: int = None):
    """Short-run Langevin (Eq. 3) on p_phi(z) of Eq. 6 (or on p_{phi_k} of Eq. 8 with n_stages=k).

    ``z0`` [N, nz] is the start (noise-initialised short run when drawn from N(0, I), Sec. 2.1).
    """
    if z0.ndim != 2:
        raise ValueError(f"z0 must have shape [N, nz]; got {tuple(z0.shape)}")
    return langevin(lambda z: prior_log_prob(prior, z, n_stages), z0, n_steps, step_size, record_every)


def sample_posterior(generator, prior, x: torch.Tensor, z0: torch.Tensor = None, n_steps: int = 30,
                     step_size: float = 0.01, sigma: float = 0.3, record_every: int = None,
                     n_stages: int = None):
    """Short-run Langevin (Eq. 3) on log p(z|x) = log p(z) - ||x - g(z)||^2/(2 sigma^2) (Sec. 3.3).

    ``x`` [B, C, H, W]; ``z0`` [B, nz] warm start, or None to start from N(0, I) noise
    (nz is ``prior.nz``, or ``generator.nz`` when prior is None). ``step_size`` is Eq. 3's s
    (default 0.01 = LEBM's 0.1). ``n_stages=k`` samples under p_{phi_k} (Eq. 8).
    """
    if not sigma > 0:
        raise ValueError(f"sigma (the std of p(x|z), Sec. 2.1) must be > 0; got {sigma!r}")
    if z0 is None:
        nz = prior.nz if prior is not None else getattr(generator, "nz", None)
        if nz is None:
            raise ValueError("give z0, or a prior / generator with an .nz attribute to draw z0 from N(0, I)")
        z0 = torch.randn(x.shape[0], nz, device=x.device)
    if z0.ndim != 2 or z0.shape[0] != x.shape[0]:
        raise ValueError(f"z0 must have shape [B, nz] with B = len(x) = {x.shape[0]}; got {tuple(z0.shape)}")
    inv_two_var = 0.5 / (sigma * sigma)

    def log_p(z):
        err = (x - generator(z)).pow(2).flatten(1).sum(1)
        return prior_log_prob(prior, z, n_stages) - inv_two_var * err

    return langevin(log_p, z0, n_steps, step_size, record_every)
