"""Short-run Langevin dynamics (Eq. 3) for the prior p_phi(z) and the posterior p_theta(z|x).

    z_{t+1} = z_t + (s/2) grad_z log p(z_t) + sqrt(s) w_t,      w_t ~ N(0, I)         (Eq. 3)

Step-size convention. Every ``step_size`` in amdre is the ``s`` of Eq. 3 (drift s/2, noise sqrt(s)).
LEBM's code (Pang et al. 2020) writes the same update with drift s^2/2 and noise s, so its step
``s_lebm`` equals ``s = s_lebm**2`` here: ``lebm_to_eq3(0.1) == 0.01``.

The posterior target (Sec. 2.1, 3.3), with p_theta(x|z) = N(g_theta(z), sigma^2 I):

    log p(z|x) = log p_phi(z) + log p_theta(x|z) + const,
    log p_theta(x|z) = -||x - g_theta(z)||^2 / (2 sigma^2) + const        (``log_likelihood``)

``prior=None`` means the base prior N(0, I). Gradients are taken with torch.autograd.grad with
respect to z only, so the generator and prior parameters never receive a ``.grad``.

Every sampler takes ``randn``, the source of its Gaussian noise (``randn(z)`` returns a tensor of
z's shape): ``torch.randn_like`` by default. Speed and distributed training change it from the edge
(``amdre.accel``); the loop itself is the plain Eq. 3 of any textbook.
"""
import contextlib
import math

import torch
import torch.nn as nn


def lebm_to_eq3(s: float) -> float:
    """LEBM's Langevin step (drift s^2/2, noise s) -> the Eq. 3 step (drift s/2, noise sqrt(s)): s^2."""
    return s * s


# ------------------------------------------------------------------------------------------ the densities
def prior_log_prob(prior, z: torch.Tensor, n_stages: int = None) -> torch.Tensor:
    """log p(z) up to a constant, [N]: ``prior.log_prob(z, n_stages)`` (Eq. 6/8), or -||z||^2/2 for prior None."""
    if prior is None:
        if n_stages not in (None, 0):
            raise ValueError(f"prior=None is the Gaussian N(0, I) with no stages; got n_stages={n_stages!r}")
        return -0.5 * z.pow(2).sum(1)
    return prior.log_prob(z, n_stages)


def log_likelihood(generator, x: torch.Tensor, z: torch.Tensor, sigma: float) -> torch.Tensor:
    """log p_theta(x|z) up to a constant, [B]: -||x - g(z)||^2 / (2 sigma^2), summed over pixels (Sec. 2.1).

    The one place the reconstruction term is written: the posterior sampler, the generator's loss
    (Eq. 2) and the anomaly score (Sec. 5.2) all call it.
    """
    err = (x - generator(z).float()).pow(2).flatten(1).sum(1)       # .float(): a no-op unless g runs in bf16
    return -err / (2.0 * sigma * sigma)


def posterior_log_prob(generator, prior, x: torch.Tensor, z: torch.Tensor, sigma: float,
                       n_stages: int = None) -> torch.Tensor:
    """log p(z|x) up to a constant, [B]: log p_phi(z) + log p_theta(x|z)."""
    return prior_log_prob(prior, z, n_stages) + log_likelihood(generator, x, z, sigma)


# ------------------------------------------------------------------------------------------ Eq. 3
def _check(n_steps, step_size, record_every):
    if isinstance(n_steps, bool) or not (isinstance(n_steps, int) and n_steps >= 0):
        raise ValueError(f"n_steps must be an int >= 0; got {n_steps!r}")
    if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a finite number > 0 (the s of Eq. 3); got {step_size!r}")
    if record_every is not None and not (isinstance(record_every, int) and record_every > 0):
        raise ValueError(f"record_every must be a positive int or None; got {record_every!r}")


def langevin(log_p, z0: torch.Tensor, n_steps: int, step_size: float, record_every: int = None,
             randn=torch.randn_like):
    """Run Eq. 3 on the unnormalised log-density ``log_p`` ([N, d] -> [N]) from ``z0``.

    Returns the final z (detached), or ``(z, trajectory)`` when ``record_every`` is given, where the
    trajectory lists z_0, z_t, z_2t, ... (n_steps // record_every + 1 detached tensors).
    """
    _check(n_steps, step_size, record_every)
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


def sample_prior(prior, z0: torch.Tensor, n_steps: int, step_size: float, record_every: int = None,
                 n_stages: int = None, randn=torch.randn_like):
    """Short-run Langevin (Eq. 3) on p_phi(z) of Eq. 6 (or on p_{phi_k} of Eq. 8 with n_stages=k).

    ``z0`` [N, nz] is the start (noise-initialised short run when drawn from N(0, I), Sec. 2.1).
    """
    if z0.ndim != 2:
        raise ValueError(f"z0 must have shape [N, nz]; got {tuple(z0.shape)}")
    return langevin(lambda z: prior_log_prob(prior, z, n_stages), z0, n_steps, step_size, record_every, randn)


def _latent_size(generator, prior) -> int:
    nz = prior.nz if prior is not None else getattr(generator, "nz", None)
    if nz is None:
        raise ValueError("give z0, or a prior / generator with an .nz attribute to draw z0 from N(0, I)")
    return nz


def check_images(generator, x: torch.Tensor) -> None:
    """Clear errors for images a generator cannot explain: the wrong shape, or NaN/inf pixels."""
    want = getattr(generator, "out_shape", None)
    if x.ndim != 4 or (want is not None and tuple(x.shape[1:]) != tuple(want)):
        expected = f"[B, {', '.join(map(str, want))}]" if want is not None else "[B, C, H, W]"
        raise ValueError(f"x must be images of shape {expected} (the generator's output shape); got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
        raise ValueError(f"x holds NaN or inf in {bad} of {len(x)} images: fix or drop them first")


def sample_posterior(generator, prior, x: torch.Tensor, z0: torch.Tensor = None, n_steps: int = 30,
                     step_size: float = 0.01, sigma: float = 0.3, record_every: int = None,
                     n_stages: int = None, randn=torch.randn_like):
    """Short-run Langevin (Eq. 3) on log p(z|x) = log p_phi(z) + log p_theta(x|z) (Sec. 3.3).

    ``x`` [B, C, H, W]; ``z0`` [B, nz] warm start, or None to start from N(0, I) noise
    (nz is ``prior.nz``, or ``generator.nz`` when prior is None). ``step_size`` is Eq. 3's s
    (default 0.01 = LEBM's 0.1). ``n_stages=k`` samples under p_{phi_k} (Eq. 8).
    """
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma (the std of p(x|z), Sec. 2.1) must be > 0; got {sigma!r}")
    check_images(generator, x)
    if z0 is None:
        z0 = randn(x.new_empty(len(x), _latent_size(generator, prior)))
    if z0.ndim != 2 or z0.shape[0] != x.shape[0]:
        raise ValueError(f"z0 must have shape [B, nz] with B = len(x) = {x.shape[0]}; got {tuple(z0.shape)}")
    return langevin(lambda z: posterior_log_prob(generator, prior, x, z, sigma, n_stages), z0, n_steps,
                    step_size, record_every, randn)


# ------------------------------------------------------------------------------------------ whole datasets
@contextlib.contextmanager
def frozen(*modules):
    """Eval mode and requires_grad=False on every parameter inside the block, restored afterwards.

    Langevin then differentiates with respect to z only: no gradient ever reaches the parameters.
    """
    modules = [m for m in modules if isinstance(m, nn.Module)]
    params = [p for m in modules for p in m.parameters()]
    flags, modes = [p.requires_grad for p in params], [m.training for m in modules]
    try:
        for p in params:
            p.requires_grad_(False)
        for m in modules:
            m.eval()
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
        for m, t in zip(modules, modes):
            m.train(t)


@contextlib.contextmanager
def seeded(seed: int, device):
    """Seed torch's RNG (CPU, and the CUDA device used) inside the block; the global state is restored."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def module_device(*modules) -> torch.device:
    """Device of the first parameter found among ``modules`` (CPU if none has parameters)."""
    for m in modules:
        for p in (m.parameters() if m is not None else ()):
            return p.device
    return torch.device("cpu")


def posterior_bank(generator, prior, images, n_steps: int = 30, step_size: float = 0.01, sigma: float = 0.3,
                   batch_size: int = 500, n_stages: int = None, seed: int = None) -> torch.Tensor:
    """Posterior samples [N, nz] of a whole image set (rows in order): Eq. 3 from noise, batch by batch.

    Samples of the aggregated posterior q(z) = E_x p(z|x). ``images`` is a tensor [N, C, H, W] or a
    dataset with an ``.images`` tensor (``amdre.data.ImageData``). ``seed`` seeds the noise (global RNG
    restored); None draws from the global RNG.
    """
    images = getattr(images, "images", images)
    device = module_device(generator, prior)
    with frozen(generator, prior), (seeded(seed, device) if seed is not None else contextlib.nullcontext()):
        return torch.cat([sample_posterior(generator, prior, x.to(device), n_steps=n_steps, step_size=step_size,
                                           sigma=sigma, n_stages=n_stages) for x in images.split(batch_size)])


def sample_images(generator, prior, n: int, n_steps: int = 100, step_size: float = 0.1, seed: int = 0,
                  batch_size: int = 500, n_stages: int = None) -> torch.Tensor:
    """n images g(z) (CPU) with z from the prior: test-time sampling (Sec. 3.3, App. A.3).

    z ~ N(0, I) for ``prior`` None or 0 stages, else short-run prior Langevin (Eq. 3, ``n_steps`` of step
    ``step_size``) started at N(0, I). ``n_stages=k`` uses the first k stages only, p_{phi_k} of Eq. 8.
    Seeded; the global RNG state is restored; no gradient reaches the model's parameters.
    """
    if isinstance(n, bool) or not (isinstance(n, int) and n > 0):
        raise ValueError(f"n must be a positive int; got {n!r}")
    available = 0 if prior is None else prior.n_stages
    stages = available if n_stages is None else n_stages
    if isinstance(stages, bool) or not isinstance(stages, int) or not 0 <= stages <= available:
        raise ValueError(f"n_stages must be an int in 0..{available} (the prior's stages); got {n_stages!r}")
    device = module_device(generator, prior)
    out = []
    with frozen(generator, prior), seeded(seed, device):
        for i in range(0, n, batch_size):
            z = torch.randn(min(batch_size, n - i), _latent_size(generator, prior), device=device)
            if stages > 0 and n_steps > 0:
                z = sample_prior(prior, z, n_steps, step_size, n_stages=stages)
            with torch.no_grad():
                out.append(generator(z).float().cpu())
    return torch.cat(out)
