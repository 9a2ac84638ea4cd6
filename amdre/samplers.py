"""Samplers of the model (Sec. 3.3): Langevin dynamics (Eq. 3) on the prior and on the posterior, SIR, and the
dataset-level loops built on them.

* ``sample_prior``: short-run Langevin on p_phi(z) (Eq. 6; p_{phi_k} of Eq. 8 with ``n_stages=k``);
* ``sample_posterior``: short-run Langevin on p(z|x) (Sec. 3.3), the inference step of training and testing;
* ``sample_sir``: sampling-importance-resampling from p_phi with N(0, I) proposals (test time, Sec. 3.3);
* ``posterior_batches``: ``sample_posterior`` over a whole image set, batch by batch, seeded (the one loop
  that reconstruction, anomaly scores and aggregate-posterior samples use); ``aggregate_posterior`` collects
  its samples of q(z) = E_x p(z|x);
* ``sample_images``: images g(z) with z from the prior (test-time sampling, App. A.3).

``prior`` is always an ``amdre.prior.EBMPrior``; one with no stages is N(0, I).
"""
import contextlib

import torch

from .density import posterior_log_prob
from .langevin import langevin
from .torchutils import frozen, module_device, seeded


def _check_prior(prior) -> None:
    if not hasattr(prior, "log_prob") or not hasattr(prior, "nz"):
        raise ValueError(f"prior must be an amdre.prior.EBMPrior (EBMPrior(nz) with no stages is N(0, I)); "
                         f"got {type(prior).__name__}")


def sample_prior(prior, z0: torch.Tensor, n_steps: int, step_size: float, record_every: int = None,
                 n_stages: int = None, randn=torch.randn_like):
    """Short-run Langevin (Eq. 3) on p_phi(z) of Eq. 6 (or on p_{phi_k} of Eq. 8 with n_stages=k).

    ``z0`` [N, nz] is the start (noise-initialised short run when drawn from N(0, I), Sec. 2.1).
    """
    _check_prior(prior)
    if z0.ndim != 2:
        raise ValueError(f"z0 must have shape [N, nz]; got {tuple(z0.shape)}")
    return langevin(lambda z: prior.log_prob(z, n_stages), z0, n_steps, step_size, record_every, randn)


def check_images(generator, x: torch.Tensor) -> None:
    """Clear errors for images a generator cannot explain: not a float tensor, the wrong shape, NaN/inf pixels."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch tensor of images [B, C, H, W] in [-1, 1]; got {type(x).__name__} "
                         f"(torch.as_tensor(x, dtype=torch.float32) converts a numpy array)")
    want = getattr(generator, "out_shape", None)
    if x.ndim != 4 or (want is not None and tuple(x.shape[1:]) != tuple(want)):
        expected = f"[B, {', '.join(map(str, want))}]" if want is not None else "[B, C, H, W]"
        raise ValueError(f"x must be images of shape {expected} (the generator's output shape); got {tuple(x.shape)}")
    dtype = next((p.dtype for p in generator.parameters() if p.is_floating_point()), torch.float32) \
        if isinstance(generator, torch.nn.Module) else torch.float32
    if x.dtype != dtype:
        hint = (" (uint8 pixels: x.float() / 127.5 - 1 maps 0..255 to [-1, 1])" if x.dtype == torch.uint8 else
                f" (x.to({dtype}) converts it)")
        raise ValueError(f"x must hold {str(dtype).replace('torch.', '')} pixels in [-1, 1], the generator's "
                         f"dtype; got {x.dtype}{hint}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
        raise ValueError(f"x holds NaN or inf in {bad} of {len(x)} images: fix or drop them first")


def sample_posterior(generator, prior, x: torch.Tensor, z0: torch.Tensor = None, n_steps: int = 30,
                     step_size: float = 0.01, sigma: float = 0.3, record_every: int = None,
                     n_stages: int = None, randn=torch.randn_like):
    """Short-run Langevin (Eq. 3) on log p(z|x) = log p_phi(z) + log p_theta(x|z) (Sec. 3.3).

    ``x`` [B, C, H, W] float32 images; ``z0`` [B, nz] warm start, or None to start from N(0, I) noise.
    ``step_size`` is Eq. 3's s (default 0.01 = LEBM's 0.1). ``n_stages=k`` samples under p_{phi_k} (Eq. 8).
    """
    _check_prior(prior)
    if isinstance(sigma, bool) or not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma (the std of p(x|z), Sec. 2.1) must be > 0; got {sigma!r}")
    check_images(generator, x)
    if z0 is None:
        z0 = randn(x.new_empty(len(x), prior.nz))
    if z0.ndim != 2 or z0.shape[0] != x.shape[0]:
        raise ValueError(f"z0 must have shape [B, nz] with B = len(x) = {x.shape[0]}; got {tuple(z0.shape)}")
    return langevin(lambda z: posterior_log_prob(generator, prior, x, z, sigma, n_stages), z0, n_steps,
                    step_size, record_every, randn)


@torch.no_grad()
def sample_sir(prior, n: int, n_proposals: int, generator: torch.Generator = None, n_stages: int = None,
               chunk: int = 65536) -> torch.Tensor:
    """n draws of p_phi by sampling-importance-resampling (Sec. 3.3, test-time sampling).

    Proposals z_j ~ N(0, I) (= p_0) get self-normalised weights w_j ∝ prod_k r_k(z_j) = p_phi/p_0;
    the n outputs are a multinomial draw (with replacement) from the proposals by those weights.
    ``generator`` (a torch.Generator on the prior's device) makes the draw reproducible.
    """
    _check_prior(prior)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (n, n_proposals)):
        raise ValueError(f"n and n_proposals must be positive ints; got {n!r}, {n_proposals!r}")
    where = prior.where
    z = torch.randn(n_proposals, prior.nz, generator=generator, device=where.device, dtype=where.dtype)
    log_w = torch.cat([prior.stage_log_ratios(c, n_stages).sum(0) for c in z.split(chunk)])
    idx = torch.multinomial(torch.softmax(log_w, 0), n, replacement=True, generator=generator)
    return z[idx]


def _images(images) -> torch.Tensor:
    images = getattr(images, "images", images)              # an amdre.data.ImageData, or a tensor
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty [N, C, H, W] tensor or an amdre.data.ImageData; got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    return images


def posterior_batches(generator, prior, images, n_steps: int = 30, step_size: float = 0.01, sigma: float = 0.3,
                      batch_size: int = 500, seed: int = None, fn=None, n_stages: int = None) -> list:
    """``fn(x, z)`` for each batch x of ``images`` (in order), z ~ p(z|x) by Eq. 3 from N(0, I) noise; a list.

    ``fn`` defaults to returning z and runs under ``torch.no_grad()``. Parameters are frozen for the call and,
    when ``seed`` is given, the noise is seeded (the caller's random state is restored afterwards).
    """
    images = _images(images)
    if isinstance(batch_size, bool) or not (isinstance(batch_size, int) and batch_size > 0):
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    device = module_device(generator, prior)
    fn = fn or (lambda x, z: z)
    out = []
    with frozen(generator, prior), (seeded(seed, device) if seed is not None else contextlib.nullcontext()):
        for x in images.split(batch_size):
            x = x.to(device)
            z = sample_posterior(generator, prior, x, n_steps=n_steps, step_size=step_size, sigma=sigma,
                                 n_stages=n_stages)
            with torch.no_grad():
                out.append(fn(x, z))
    return out


def aggregate_posterior(generator, prior, images, n_steps: int = 30, step_size: float = 0.01, sigma: float = 0.3,
                        batch_size: int = 500, seed: int = None, n_stages: int = None) -> torch.Tensor:
    """Samples [N, nz] of the aggregate posterior q(z) = E_x p(z|x), one per image (rows in order):
    ``posterior_batches``' z, concatenated."""
    return torch.cat(posterior_batches(generator, prior, images, n_steps, step_size, sigma, batch_size, seed,
                                       n_stages=n_stages))


def sample_images(generator, prior, n: int, n_steps: int = 100, step_size: float = 0.1, seed: int = 0,
                  batch_size: int = 500, n_stages: int = None) -> torch.Tensor:
    """n images g(z) (CPU) with z from the prior: test-time sampling (Sec. 3.3, App. A.3).

    z ~ N(0, I) for a prior with no stages (or ``n_stages=0``), else short-run prior Langevin (Eq. 3,
    ``n_steps`` of step ``step_size``) started at N(0, I). ``n_stages=k`` uses the first k stages, p_{phi_k} of
    Eq. 8. Seeded (the caller's random state is restored); no gradient reaches the model's parameters.
    """
    _check_prior(prior)
    if isinstance(n, bool) or not (isinstance(n, int) and n > 0):
        raise ValueError(f"n must be a positive int; got {n!r}")
    stages = prior.n_stages if n_stages is None else n_stages
    if isinstance(stages, bool) or not isinstance(stages, int) or not 0 <= stages <= prior.n_stages:
        raise ValueError(f"n_stages must be an int in 0..{prior.n_stages} (the prior's stages); got {n_stages!r}")
    device = module_device(generator, prior)
    out = []
    with frozen(generator, prior), seeded(seed, device):
        for i in range(0, n, batch_size):
            z = torch.randn(min(batch_size, n - i), prior.nz, device=device)
            if stages > 0 and n_steps > 0:
                z = sample_prior(prior, z, n_steps, step_size, n_stages=stages)
            with torch.no_grad():
                out.append(generator(z).float().cpu())
    return torch.cat(out)
