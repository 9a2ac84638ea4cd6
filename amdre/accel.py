"""Speed at the edge: bf16 autocast and a posterior sampler compiled by torch.compile (CUDA graphs on a GPU).

As in nanoGPT, whose model knows nothing of them, the math modules and the Trainer never see these options:
the run pipeline (``amdre.pipeline.speed_up``) wraps them around the Trainer's plain callables, as nanoGPT's
train.py wraps its model:

* ``Autocast(generator)``: the generator under bf16 autocast, returning float32 (``amp``);
* ``CompiledPosterior(generator, prior, ...)``: ``sampler(x, z0, n_stages, randn)`` -> z, the Eq. 3 posterior
  chain of ``amdre.samplers.sample_posterior`` with each step compiled into one graph (``compile``).

Channels-last weights (``channels_last``) are one call, ``generator.to(memory_format=torch.channels_last)``.
On a CPU every option is off by default.
"""
import warnings

import torch
import torch.nn as nn

from .density import posterior_log_prob
from .samplers import check_images, sample_posterior


class Autocast(nn.Module):
    """Runs ``module`` under bf16 autocast and returns float32: its matmuls and convolutions in bf16, while
    everything downstream (the error term, the drift, the noise, z) stays float32."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.nz, self.out_shape = getattr(module, "nz", None), getattr(module, "out_shape", None)

    def forward(self, z):
        with torch.autocast(z.device.type, dtype=torch.bfloat16):
            return self.module(z).float()


class CompiledPosterior:
    """``sample_posterior`` with each Langevin step compiled into one graph by ``torch.compile``.

    One step (generator forward, gradient of log p(z|x) in z by ``torch.func.grad``, the Eq. 3 update)
    is one graph; on CUDA it is compiled with ``mode="reduce-overhead"``, so each step is one CUDA-graph
    replay instead of ~50 kernel launches. The noise is drawn eagerly by ``randn``, exactly as the eager
    loop draws it, so compiled and eager chains differ by float rounding only (tested on CPU). Batches of
    another shape than the first (an epoch's last, smaller batch) and a failed compilation (reported once
    as a warning) run the eager loop. On a CPU the compile takes tens of seconds: the default is eager.
    """

    def __init__(self, generator, prior, n_steps: int, step_size: float, sigma: float, mode: str = None):
        self.generator, self.prior, self.n_steps, self.step_size, self.sigma = generator, prior, n_steps, step_size, sigma
        self.mode, self._compiled, self._shape, self.failed = mode, None, None, None

    def _eager(self, x, z0, n_stages, randn):
        return sample_posterior(self.generator, self.prior, x, z0, self.n_steps, self.step_size, self.sigma,
                                n_stages=n_stages, randn=randn)

    def _step(self, z, x, eps, n_stages: int):
        def total(z):
            return posterior_log_prob(self.generator, self.prior, x, z, self.sigma, n_stages).sum()

        return z + 0.5 * self.step_size * torch.func.grad(total)(z) + self.step_size ** 0.5 * eps

    def __call__(self, x: torch.Tensor, z0: torch.Tensor = None, n_stages: int = None, randn=torch.randn_like):
        """Posterior samples [B, nz], as ``sample_posterior(generator, prior, x, z0, ..., n_stages, randn=randn)``."""
        if z0 is None or self.failed is not None or self.n_steps == 0 or self._shape not in (None, tuple(x.shape)):
            return self._eager(x, z0, n_stages, randn)
        check_images(self.generator, x)
        if self._compiled is None:
            mode = self.mode or ("reduce-overhead" if x.device.type == "cuda" else None)
            self._compiled, self._shape = torch.compile(self._step, mode=mode, dynamic=False), tuple(x.shape)
        cudagraphs = x.device.type == "cuda" and (self.mode or "reduce-overhead") == "reduce-overhead"
        z = z0.detach()
        with torch.no_grad():
            for t in range(self.n_steps):
                eps = randn(z)
                if cudagraphs:
                    torch.compiler.cudagraph_mark_step_begin()
                try:
                    # A CUDA graph writes every replay's output into the same memory: copy z out before the
                    # next replay overwrites it (it is that replay's input, and the caller keeps the last one).
                    z = self._compiled(z, x, eps, n_stages).clone()
                except Exception as err:                          # noqa: BLE001 - reported, then eager
                    if t > 0:
                        raise
                    self.failed = f"{type(err).__name__}: {err}"
                    warnings.warn(f"torch.compile of the posterior Langevin step failed ({self.failed}); "
                                  f"using the eager loop", RuntimeWarning, stacklevel=2)
                    return self._eager(x, z0, n_stages, randn)
        return z
