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

Speed (the training hot path: n_steps + 1 generator passes per batch). The default is the plain eager
loop, which is also the fastest choice on a CPU. On a GPU, ``amp=True`` runs the generator under bf16
autocast (the error term, the drift, the noise and z stay float32), and ``CompiledPosterior`` turns one
whole step (forward, gradient in z, update) into one ``torch.compile`` graph, replayed as a CUDA graph.
``rows=(lo, hi, n)`` makes a chain shard follow exactly the chains of rows lo:hi of a batch of n: the
noise is drawn for all n rows and rows lo:hi are used, so every rank of a distributed run draws the
same random numbers as one process holding the whole batch (``amdre.distributed``).
"""
import contextlib
import math
import warnings

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


def _rows(rows, n_chains: int):
    """(lo, hi, n) of a chain shard (None: all n_chains rows), checked against the shard's size."""
    if rows is None:
        return 0, n_chains, n_chains
    lo, hi, n = rows
    if not (all(isinstance(v, int) for v in rows) and 0 <= lo <= hi <= n and hi - lo == n_chains):
        raise ValueError(f"rows must be (lo, hi, n) with 0 <= lo <= hi <= n and hi - lo = {n_chains} chains; "
                         f"got {rows!r}")
    return lo, hi, n


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when enabled, else a no-op context (the exact float32 path)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def _check(n_steps, step_size, record_every):
    if not (isinstance(n_steps, int) and n_steps >= 0):
        raise ValueError(f"n_steps must be an int >= 0; got {n_steps!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0 (the s of Eq. 3); got {step_size!r}")
    if record_every is not None and not (isinstance(record_every, int) and record_every > 0):
        raise ValueError(f"record_every must be a positive int or None; got {record_every!r}")


def langevin(log_p, z0: torch.Tensor, n_steps: int, step_size: float, record_every: int = None, rows=None):
    """Run Eq. 3 on the unnormalised log-density ``log_p`` ([N, d] -> [N]) from ``z0``.

    Returns the final z (detached), or ``(z, trajectory)`` when ``record_every`` is given, where the
    trajectory lists z_0, z_t, z_2t, ... (n_steps // record_every + 1 detached copies).
    The loop has no host synchronisation; z and the noise buffer are updated in place.
    ``rows=(lo, hi, n)``: z0 holds rows lo:hi of n chains; noise is drawn for n rows, rows lo:hi used.
    """
    _check(n_steps, step_size, record_every)
    lo, hi, n = _rows(rows, z0.shape[0])
    z = z0.detach().clone().requires_grad_(True)
    noise = torch.empty_like(z) if rows is None else z.new_empty(n, z.shape[1])
    eps = noise[lo:hi]                                            # a view: refreshed by noise.normal_()
    drift, scale = 0.5 * step_size, math.sqrt(step_size)
    traj = [z.detach().clone()] if record_every else None
    for t in range(1, n_steps + 1):
        grad, = torch.autograd.grad(log_p(z).sum(), z)
        with torch.no_grad():
            noise.normal_()
            z.add_(grad, alpha=drift).add_(eps, alpha=scale)
        if record_every and t % record_every == 0:
            traj.append(z.detach().clone())
    z = z.detach()
    return (z, traj) if record_every else z


def sample_prior(prior, z0: torch.Tensor, n_steps: int, step_size: float, record_every: int = None,
                 n_stages: int = None, rows=None):
    """Short-run Langevin (Eq. 3) on p_phi(z) of Eq. 6 (or on p_{phi_k} of Eq. 8 with n_stages=k).

    ``z0`` [N, nz] is the start (noise-initialised short run when drawn from N(0, I), Sec. 2.1).
    ``rows``: see ``langevin``.
    """
    if z0.ndim != 2:
        raise ValueError(f"z0 must have shape [N, nz]; got {tuple(z0.shape)}")
    return langevin(lambda z: prior_log_prob(prior, z, n_stages), z0, n_steps, step_size, record_every, rows)


def posterior_log_prob(generator, prior, x: torch.Tensor, z: torch.Tensor, sigma: float, n_stages: int = None,
                       amp: bool = False) -> torch.Tensor:
    """log p(z|x) up to a constant, [B]: log p(z) - ||x - g(z)||^2 / (2 sigma^2); g under bf16 autocast if amp."""
    with autocast(x.device, amp):
        xhat = generator(z)
    err = (x - xhat.float()).pow(2).flatten(1).sum(1)             # .float() is a no-op without amp
    return prior_log_prob(prior, z, n_stages) - (0.5 / (sigma * sigma)) * err


def _posterior_start(generator, prior, x, z0, rows):
    if z0 is None:
        nz = prior.nz if prior is not None else getattr(generator, "nz", None)
        if nz is None:
            raise ValueError("give z0, or a prior / generator with an .nz attribute to draw z0 from N(0, I)")
        lo, hi, n = _rows(rows, x.shape[0])
        z0 = torch.randn(n, nz, device=x.device)[lo:hi]
    if z0.ndim != 2 or z0.shape[0] != x.shape[0]:
        raise ValueError(f"z0 must have shape [B, nz] with B = len(x) = {x.shape[0]}; got {tuple(z0.shape)}")
    return z0


def sample_posterior(generator, prior, x: torch.Tensor, z0: torch.Tensor = None, n_steps: int = 30,
                     step_size: float = 0.01, sigma: float = 0.3, record_every: int = None,
                     n_stages: int = None, rows=None, amp: bool = False):
    """Short-run Langevin (Eq. 3) on log p(z|x) = log p(z) - ||x - g(z)||^2/(2 sigma^2) (Sec. 3.3).

    ``x`` [B, C, H, W]; ``z0`` [B, nz] warm start, or None to start from N(0, I) noise
    (nz is ``prior.nz``, or ``generator.nz`` when prior is None). ``step_size`` is Eq. 3's s
    (default 0.01 = LEBM's 0.1). ``n_stages=k`` samples under p_{phi_k} (Eq. 8).
    ``rows``: see ``langevin``; ``amp``: the generator under bf16 autocast (for GPUs).
    """
    if not sigma > 0:
        raise ValueError(f"sigma (the std of p(x|z), Sec. 2.1) must be > 0; got {sigma!r}")
    z0 = _posterior_start(generator, prior, x, z0, rows)
    if amp:
        def log_p(z):
            return posterior_log_prob(generator, prior, x, z, sigma, n_stages, amp=True)
    else:                                                         # the plain float32 loop, op for op
        inv_two_var = 0.5 / (sigma * sigma)

        def log_p(z):
            err = (x - generator(z)).pow(2).flatten(1).sum(1)
            return prior_log_prob(prior, z, n_stages) - inv_two_var * err

    return langevin(log_p, z0, n_steps, step_size, record_every, rows)


class CompiledPosterior:
    """``sample_posterior`` with each Langevin step compiled into one graph by ``torch.compile``.

    One step (generator forward, gradient of log p(z|x) in z by ``torch.func.grad``, the Eq. 3 update)
    is one graph; on CUDA it is compiled with ``mode="reduce-overhead"``, so each step is one CUDA-graph
    replay instead of ~50 kernel launches. The noise is drawn eagerly, exactly as the eager loop draws it,
    so compiled and eager chains differ by float rounding only (tested on CPU). The compiled path serves
    batches of the first shape it sees (and one graph per ``n_stages``); other shapes (an epoch's last,
    smaller batch) and a compilation failure (reported once as a warning) fall back to the eager loop.
    On a CPU the compile takes tens of seconds and is worth it only for long runs: the default is eager.
    """

    def __init__(self, generator, prior, step_size: float = 0.01, sigma: float = 0.3, amp: bool = False,
                 mode: str = None):
        if not (step_size > 0 and sigma > 0):
            raise ValueError(f"step_size and sigma must be > 0; got {step_size!r}, {sigma!r}")
        self.generator, self.prior, self.step_size, self.sigma, self.amp = generator, prior, step_size, sigma, amp
        self.drift, self.scale = 0.5 * step_size, math.sqrt(step_size)
        self.mode, self._compiled, self._shape, self.failed = mode, None, None, None

    def _step(self, z, x, eps, n_stages: int):
        def total(z):
            return posterior_log_prob(self.generator, self.prior, x, z, self.sigma, n_stages, self.amp).sum()

        return z + self.drift * torch.func.grad(total)(z) + self.scale * eps

    def __call__(self, x: torch.Tensor, z0: torch.Tensor = None, n_steps: int = 30, n_stages: int = None,
                 rows=None) -> torch.Tensor:
        """Posterior samples [B, nz] (detached), as ``sample_posterior(..., n_steps, n_stages, rows, amp)``."""
        _check(n_steps, self.step_size, None)
        z0 = _posterior_start(self.generator, self.prior, x, z0, rows)
        if self.failed is not None or n_steps == 0 or self._shape not in (None, tuple(x.shape)):
            return sample_posterior(self.generator, self.prior, x, z0, n_steps, self.step_size, self.sigma,
                                    n_stages=n_stages, rows=rows, amp=self.amp)
        if self._compiled is None:
            mode = self.mode or ("reduce-overhead" if x.device.type == "cuda" else None)
            self._compiled, self._shape = torch.compile(self._step, mode=mode, dynamic=False), tuple(x.shape)
        cudagraphs = x.device.type == "cuda" and (self.mode or "reduce-overhead") == "reduce-overhead"
        lo, hi, n = _rows(rows, x.shape[0])
        noise = z0.new_empty(n, z0.shape[1])
        eps = noise[lo:hi]
        z = z0.detach()
        with torch.no_grad():
            for t in range(n_steps):
                noise.normal_()
                if cudagraphs:
                    torch.compiler.cudagraph_mark_step_begin()
                try:
                    z = self._compiled(z, x, eps, n_stages)
                except Exception as err:                          # noqa: BLE001 - reported, then eager
                    if t > 0 or self.failed is not None:
                        raise
                    self.failed = f"{type(err).__name__}: {err}"
                    warnings.warn(f"torch.compile of the posterior Langevin step failed ({self.failed}); "
                                  f"using the eager loop", RuntimeWarning, stacklevel=2)
                    return sample_posterior(self.generator, self.prior, x, z0, n_steps, self.step_size,
                                            self.sigma, n_stages=n_stages, rows=rows, amp=self.amp)
        return z.clone()
