"""Speed and scale, at the edge: bf16 autocast, torch.compile with CUDA graphs, channels-last, DDP.

As in nanoGPT, whose model knows nothing of them, the math modules (``langevin``, ``prior``, ``nce``, ...)
never see these options. The Trainer asks this module for three things and uses them as plain callables:

* ``train_generator(generator, cfg, device)``: the generator the losses run through (NHWC weights for
  ``channels_last``; forward under bf16 autocast for ``amp``; wrapped in DDP under torchrun);
* ``posterior_sampler(generator, prior, cfg)``: ``sampler(x, z0, n_stages, randn)`` -> z, the Eq. 3
  posterior chain of ``amdre.langevin.sample_posterior`` (eager), or one compiled graph per step
  (``compile``: CUDA-graph replays on a GPU);
* ``training_step(trainer)``: ``step(x, idx, k, i)`` -> (z, stats), the Trainer's own ``train_step`` for
  one process, or under torchrun the same step on this rank's rows of global batch i (``amdre.distributed``).

On a CPU every option is off by default, and the step is exactly ``Trainer.train_step``.
"""
import functools
import warnings

import torch
import torch.nn as nn

from . import distributed
from .langevin import check_images, posterior_log_prob, sample_posterior


NO_GPU = ("device={device!r} asks for a CUDA GPU, but torch sees none (torch.cuda.is_available() is False). "
          "Set device='cpu' (papermill: -p device cpu; CLI: --device cpu), or run on a machine with a GPU.")


def resolve_device(device: str) -> torch.device:
    """``torch.device(device)``, with a clear error when CUDA is asked for and absent.

    Under torchrun, a bare "cuda" becomes this process's GPU (``cuda:LOCAL_RANK``).
    """
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from err
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(NO_GPU.format(device=device))
        if d.index is None:
            d = torch.device("cuda", distributed.local_rank() if distributed.world()[1] > 1 else 0)
        if d.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif d.type != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}")
    return d


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


def ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel under torchrun (gradients summed by the weighted hook)."""
    if distributed.world()[1] == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    wrapped = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    wrapped.hook_state = {"weight": 1.0}
    wrapped.register_comm_hook(wrapped.hook_state, distributed.weighted_sum_hook)
    return wrapped


def train_generator(generator: nn.Module, cfg, device: torch.device) -> nn.Module:
    """The generator as the losses see it: channels-last weights, bf16 autocast, DDP (each only when asked)."""
    if cfg.channels_last:
        generator.to(memory_format=torch.channels_last)
    return ddp(Autocast(generator) if cfg.amp else generator, device)


def posterior_sampler(generator, prior, cfg):
    """``sampler(x, z0, n_stages, randn)``: cfg.ld_steps of Eq. 3 on p(z|x), eager or compiled."""
    g = Autocast(generator) if cfg.amp else generator
    if cfg.compile:
        return CompiledPosterior(g, prior, cfg.ld_steps, cfg.ld_step_size, cfg.sigma)
    return functools.partial(sample_posterior, g, prior, n_steps=cfg.ld_steps, step_size=cfg.ld_step_size,
                             sigma=cfg.sigma)


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


def training_step(trainer):
    """``step(x, idx, k, i)`` -> (z, stats) for batch i: ``trainer.train_step`` itself for one process; under
    torchrun, the same step on this rank's rows of global batch i (noise drawn for the whole batch, gradients
    and statistics weighted by the rank's share, the posterior samples of every rank gathered for the bank)."""
    rank, world = distributed.world()
    if world == 1:
        return lambda x, idx, k, i: trainer.train_step(x, idx, k)
    n_data, batch = len(trainer.data), trainer.cfg.batch_size

    def step(x, idx, k, i):
        n = min(batch, n_data - i * batch)                        # the global batch of step i
        lo, hi = distributed.shard(n, rank, world)
        weight = (hi - lo) / n
        for module in (trainer.g_train, trainer.r_train):
            if hasattr(module, "hook_state"):
                module.hook_state["weight"] = weight
        trainer.randn = distributed.shard_randn(lo, hi, n)
        try:
            z, stats = trainer.train_step(x, idx, k)
        finally:
            trainer.randn = torch.randn_like
        if trainer.bank is not None and trainer.writing_bank:   # every rank writes the rows of all ranks
            trainer.bank[distributed.gather_rows(idx, n)] = distributed.gather_rows(z, n)
        return z, distributed.all_sum_(stats * weight)

    return step
