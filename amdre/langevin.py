"""Short-run Langevin dynamics, Eq. 3, on any unnormalised log-density.

    z_{t+1} = z_t + (s/2) grad_z log p(z_t) + sqrt(s) w_t,      w_t ~ N(0, I)         (Eq. 3)

Step-size convention. Every ``step_size`` in amdre is the ``s`` of Eq. 3 (drift s/2, noise sqrt(s)).
LEBM's code (Pang et al. 2020) writes the same update with drift s^2/2 and noise s, so its step
``s_lebm`` equals ``s = s_lebm**2`` here: ``lebm_to_eq3(0.1) == 0.01``.

``langevin`` takes ``randn``, the source of its Gaussian noise (``randn(z)`` returns a tensor of z's shape):
``torch.randn_like`` by default; a trainer passes its own generator's noise. The targets of the method, the
prior and the posterior, are in ``amdre.density``; the samplers that run this loop on them in ``amdre.samplers``.
"""
import math

import torch


def lebm_to_eq3(s: float) -> float:
    """LEBM's Langevin step (drift s^2/2, noise s) -> the Eq. 3 step (drift s/2, noise sqrt(s)): s^2."""
    return s * s


def check_steps(n_steps, step_size, record_every=None) -> None:
    """Clear errors for a chain that cannot run: n_steps an int >= 0, step_size a finite s > 0."""
    if isinstance(n_steps, bool) or not (isinstance(n_steps, int) and n_steps >= 0):
        raise ValueError(f"n_steps must be an int >= 0; got {n_steps!r}")
    if isinstance(step_size, bool) or not (isinstance(step_size, (int, float)) and math.isfinite(step_size)
                                           and step_size > 0):
        raise ValueError(f"step_size must be a finite number > 0 (the s of Eq. 3); got {step_size!r}")
    if record_every is not None and not (isinstance(record_every, int) and record_every > 0):
        raise ValueError(f"record_every must be a positive int or None; got {record_every!r}")


def langevin(log_p, z0: torch.Tensor, n_steps: int, step_size: float, record_every: int = None,
             randn=torch.randn_like):
    """Run Eq. 3 on the unnormalised log-density ``log_p`` ([N, d] -> [N]) from ``z0``.

    Returns the final z (detached), or ``(z, trajectory)`` when ``record_every`` is given, where the
    trajectory lists z_0, z_t, z_2t, ... (n_steps // record_every + 1 detached tensors).
    """
    check_steps(n_steps, step_size, record_every)
    z = z0.detach()
    trajectory = [z]
    for t in range(1, n_steps + 1):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            grad, = torch.autograd.grad(log_p(z).sum(), z)
        with torch.no_grad():
            z = z + 0.5 * step_size * grad + math.sqrt(step_size) * randn(z)
        if record_every and t % record_every == 0:
            trajectory.append(z)
    return (z, trajectory) if record_every else z
