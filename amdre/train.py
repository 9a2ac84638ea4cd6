"""Adaptive multi-stage density-ratio training of a generator with a latent EBM prior (Sec. 3.3, Fig. 1).

Epoch e trains stage k = min(e // E, m - 1) (E = ``stage_every``, m = ``n_stages``); each stage starts with a new
ratio net r_k (Table 4) and a fresh Adam for it. ``Trainer.train_step`` is one batch x of Fig. 1, whole:

1. posterior z ~ p(z|x) by short-run Langevin (Eq. 3) under the current prior p_{phi_k}
   (the k stages before this one, Eq. 8; p_{phi_0} = N(0, I));
2. generator loss -log p_theta(x|z) = ||x - g(z)||^2 / (2 sigma^2), summed over pixels and averaged over
   the batch (the gradient of Eq. 2);
3. samples of p_{phi_k}: N(0, I) in stage 0; later the memory bank or short-run prior Langevin;
4. NCE loss (Eq. 4) of r_k, posterior samples on the numerator side and prior samples on the
   denominator side, so r_k ~ q_k / p_{phi_k};
5. one look at the statistics (stop on a non-finite value, before any weight changes), then one Adam step of
   the generator (lr_g) and one of r_k (lr_ebm), both with LEBM's betas (0.5, 0.999).

The memory bank (``prior_sampling="memory"``, the persistent chain of Sec. 3.3) holds one latent per
training example. In the last epoch of every stage each batch's posterior samples overwrite their rows
*after* the old rows were read, so during stage k the bank holds samples of q_{k-1} ~ p_{phi_k}: an
approximation that holds if r_{k-1} is accurate. ``"langevin"`` runs short-run prior Langevin on
p_{phi_k} from noise instead. ``adaptive=False`` is the Sec. 5.5 ablation: the Gaussian prior for all
epochs, then all m stages fitted at once by TRE (Eq. 5) between the aggregate posterior and N(0, I).

Every random number of a run comes from the Trainer's own generators (``rng``: noise and new stages' weights;
``loader_gen``: the batch order), never from torch's global state, and checkpoints (``last.pt`` every epoch,
``stage{k}.pt`` at the end of each stage, ``amdre.checkpoint``) hold them: a resumed CPU run equals an
uninterrupted one bit for bit.

This module knows nothing of speed or scale. The step runs through plain callables, ``g`` (the generator the
losses run through) and ``posterior`` (the posterior sampler), which the run pipeline may replace with bf16 or
compiled versions (``amdre.accel``), as nanoGPT's train.py wraps its model; ``amdre.distributed`` subclasses the
Trainer for torchrun, overriding the four small methods marked "data parallel".
"""
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import checkpoint
from .config import FIELDS, schedule_problem
from .density import log_likelihood
from .files import ensure_dir
from .nce import nce_accuracy, nce_loss
from .nets import generator as make_generator
from .prior import EBMPrior
from .samplers import aggregate_posterior, sample_posterior, sample_prior
from .torchutils import device as resolve_device, seeded
from .tre import tre_prior

STATS = ("gen_loss", "z_norm2", "nce_loss", "nce_acc")


class Trainer:
    """Holds the models, optimisers, memory bank and history of one run; ``fit()`` trains to ``cfg.epochs``.

    ``cfg`` is an ``amdre.config.Config``; ``data`` a dataset of (image, label, index) items, such as
    ``amdre.data.load(...)``. ``resume=True`` continues the run in ``out_dir`` (its ``last.pt``); ``resume=False``
    refuses a folder that already holds a run, so two runs never mix. ``init_from`` (a checkpoint of another run
    with the same networks and schedule) starts a new run in an empty ``out_dir`` from that state, with this
    config's learning rates and step sizes (how a diverged run continues more carefully).
    """
    writes_files = True                                          # one process writes; under torchrun rank 0 only

    def __init__(self, cfg, data, out_dir, resume: bool = True, init_from=None):
        if problem := schedule_problem(cfg):
            raise ValueError(f"{problem}. Nothing was written.")
        self.cfg, self.data, self.out_dir = cfg, data, Path(out_dir)
        self.device = resolve_device(cfg.device)
        self.rng = torch.Generator(self.device).manual_seed(cfg.seed)   # every noise draw, new stages' weights
        self.loader_gen = torch.Generator().manual_seed(cfg.seed)       # the order of the batches
        with seeded(cfg.seed):                                           # the caller's random state is left alone
            self.generator = make_generator(cfg.generator, cfg.nz, cfg.ngf).to(self.device)
        self._check_data(data)
        if self.writes_files:
            ensure_dir(self.out_dir)
        self.prior = EBMPrior(cfg.nz).to(self.device)                    # p_{phi_0} = N(0, I): no stage yet
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        self.ratio = self.opt_ebm = None                                 # r_k and its Adam, made by new_stage
        self.bank = (torch.randn(len(data), cfg.nz, generator=self.rng, device=self.device)
                     if cfg.adaptive and cfg.prior_sampling == "memory" else None)
        self.writing_bank = False
        # What the step runs through; the run pipeline may swap in faster versions (amdre.accel).
        self.g = self.generator
        self.posterior = self.sample_posterior
        self.prior_sampler = self.read_bank if self.bank is not None else self.sample_prior
        self.epoch, self.last_checkpoint, self.saved_epoch, self.init_from = 0, None, 0, None
        self.history = {k: [] for k in ("epoch", "stage", *STATS, "mse", "epoch_time", "tre_loss", "tre_acc")}
        start, new_run = checkpoint.start_from(self.out_dir, resume, init_from)
        if start is not None:
            self.load_state_dict(checkpoint.read_checkpoint(start, self.device), start, new_run)

    def _check_data(self, data) -> None:
        try:
            x, _, _ = data[0]
        except (TypeError, ValueError, IndexError) as err:
            raise ValueError("data must be a non-empty dataset of (image, label, index) items, "
                             "like amdre.data.load(...)") from err
        if tuple(x.shape) != self.generator.out_shape:
            raise ValueError(f"generator {self.cfg.generator!r} makes images of shape {self.generator.out_shape} "
                             f"but the data has {tuple(x.shape)}: pick the generator matching the dataset")

    def stage_of(self, epoch: int) -> int:
        """k = min(epoch // E, m - 1): the stage trained during ``epoch`` (counted from 0)."""
        return min(epoch // self.cfg.stage_every, self.cfg.n_stages - 1)

    def is_last_epoch_of_stage(self, epoch: int) -> bool:
        k = self.stage_of(epoch)
        end = self.cfg.epochs if k == self.cfg.n_stages - 1 else (k + 1) * self.cfg.stage_every
        return epoch == end - 1

    # ------------------------------------------------------------------ the samplers the step uses
    def noise(self, t: torch.Tensor) -> torch.Tensor:
        """N(0, I) noise of t's shape from the run's own generator (data parallel: this process's rows)."""
        return torch.randn(t.shape, generator=self.rng, device=t.device, dtype=t.dtype)

    def sample_posterior(self, x, z0, n_stages, randn):
        """Eq. 3 on p(z|x) under p_{phi_k}: ``ld_steps`` steps of s = ``ld_step_size`` from ``z0``."""
        cfg = self.cfg
        return sample_posterior(self.g, self.prior, x, z0, cfg.ld_steps, cfg.ld_step_size, cfg.sigma,
                                n_stages=n_stages, randn=randn)

    def sample_prior(self, idx, k):
        """Samples of p_{phi_k} by short-run prior Langevin from N(0, I) noise (``prior_sampling="langevin"``)."""
        z0 = self.noise(torch.empty(len(idx), self.cfg.nz, device=self.device))
        return sample_prior(self.prior, z0, self.cfg.prior_ld_steps, self.cfg.prior_ld_step_size, n_stages=k,
                            randn=self.noise)

    def read_bank(self, idx, k):
        """The memory bank's rows ``idx`` (a copy): samples of q_{k-1}, standing in for p_{phi_k} (Sec. 3.3)."""
        return self.bank[idx]

    # ------------------------------------------------------------------ training
    def fit(self, until: int = None, callback=None) -> "Trainer":
        """Train epochs self.epoch .. until-1 (default: to cfg.epochs), saving after each epoch.

        ``callback(trainer)`` runs after each epoch's checkpoint is written (e.g. a log line), where files are
        written (one process; rank 0 under torchrun).
        """
        cfg = self.cfg
        until = cfg.epochs if until is None else min(until, cfg.epochs)
        with tqdm(total=max(0, until - self.epoch) * len(self.batches()), desc="train",
                  disable=not (cfg.progress and self.writes_files)) as bar:
            while self.epoch < until:
                self.train_epoch(bar)
                self.epoch += 1
                boundary = cfg.adaptive and self.is_last_epoch_of_stage(self.epoch - 1)
                self.save(self.stage_of(self.epoch - 1) if boundary else None)
                if callback is not None and self.writes_files:
                    callback(self)
        if not cfg.adaptive and self.epoch >= cfg.epochs and self.prior.n_stages == 0:
            self.fit_tre()
            self.save(cfg.n_stages - 1)
        return self

    def new_stage(self) -> None:
        """Stage k begins: a new ratio net r_k (Table 4, Xavier-initialised from the run's generator) and a fresh
        Adam for it; the earlier stages are frozen (Sec. 3.3). A fresh optimiser, because Adam's moments of
        r_{k-1} mean nothing for r_k; betas (0.5, 0.999) as LEBM's, whose prior this method replaces."""
        with seeded(int(torch.randint(2**62, (1,), generator=self.rng, device=self.device))):
            self.ratio = self.prior.add_stage()
        self.opt_ebm = torch.optim.Adam(self.ratio.parameters(), lr=self.cfg.lr_ebm, betas=self.cfg.betas)

    def train_epoch(self, bar=None) -> None:
        cfg, e = self.cfg, self.epoch
        k = self.stage_of(e) if cfg.adaptive else 0
        if cfg.adaptive and self.prior.n_stages <= k:
            self.new_stage()
        self.writing_bank = self.bank is not None and self.is_last_epoch_of_stage(e)
        t0 = time.perf_counter()
        for i, (x, _, idx) in enumerate(self.batches()):
            try:
                stats = self.train_step(x.to(self.device), idx.to(self.device), k)
            except FloatingPointError as err:
                raise self._diverged(e, k, i, err) from None
            self._record(e, k, stats, x[0].numel())
            if bar is not None:
                bar.update()
                bar.set_postfix(epoch=e + 1, stage=k, mse=f"{self.history['mse'][-1]:.4f}",
                                nce=f"{stats['nce_loss']:.3f}" if cfg.adaptive else "-", refresh=False)
        self.writing_bank = False
        self.history["epoch_time"].append(time.perf_counter() - t0)

    def train_step(self, x: torch.Tensor, idx: torch.Tensor, k: int) -> dict:
        """One batch of Fig. 1 in stage k, from the posterior samples to both optimiser steps (module docstring).

        Returns the batch's statistics by name: gen_loss, z_norm2 (mean ||z||^2), and in adaptive runs nce_loss and
        nce_acc. Raises FloatingPointError, before any weight changes, when one of them is not finite.
        """
        cfg, n = self.cfg, len(x)
        # 1. posterior samples z ~ p(z|x) under the current prior p_{phi_k}: short-run Langevin from noise (Eq. 3)
        z = self.posterior(x, self.noise(x.new_empty(n, cfg.nz)), n_stages=k, randn=self.noise)
        # 2. generator: minimise -log p_theta(x|z) = ||x - g(z)||^2 / (2 sigma^2), the gradient of Eq. 2
        gen_loss = -log_likelihood(self.g, x, z, cfg.sigma).mean()
        self.opt_g.zero_grad(set_to_none=True)
        gen_loss.backward()
        stats = {"gen_loss": gen_loss.detach(), "z_norm2": z.pow(2).sum(1).mean()}
        if cfg.adaptive:
            # 3. samples of the current prior p_{phi_k}: N(0, I) in stage 0, then the bank or prior Langevin
            z_prior = self.noise(torch.empty_like(z)) if k == 0 else self.prior_sampler(idx, k)
            if self.writing_bank:
                self.write_bank(idx, z)                         # read above first: q_k stands in for p_{k+1}
            # 4. NCE (Eq. 4): posterior samples against prior samples, so that r_k ~ q_k / p_{phi_k}
            log_r = self.ratio(torch.cat([z, z_prior]))
            nce = nce_loss(log_r[:n], log_r[n:])
            self.opt_ebm.zero_grad(set_to_none=True)
            nce.backward()
            stats.update(nce_loss=nce.detach(), nce_acc=nce_accuracy(log_r[:n], log_r[n:]))
        # 5. the statistics reach the host once per batch; a non-finite one stops the run before any weight changes
        stats = self.sum_over_processes(stats)
        values = dict(zip(stats, torch.stack(list(stats.values())).tolist()))
        if bad := [f"{name}={v}" for name, v in values.items() if not math.isfinite(v)]:
            raise FloatingPointError(f"non-finite training values ({', '.join(bad)})")
        self.opt_g.step()
        if cfg.adaptive:
            self.opt_ebm.step()
        return values

    # ------------------------------------------------------------------ data parallel (amdre.distributed overrides)
    def batches(self):
        """The shuffled batches of an epoch, drawn with ``loader_gen`` (data parallel: this process's rows)."""
        return torch.utils.data.DataLoader(self.data, batch_size=self.cfg.batch_size, shuffle=True,
                                           generator=self.loader_gen, num_workers=self.cfg.num_workers)

    def sum_over_processes(self, stats: dict) -> dict:
        """Data parallel: the gradients and statistics of every process, summed by their share of the batch.
        One process holds them all already."""
        return stats

    def write_bank(self, idx, z) -> None:
        """The memory bank's rows ``idx`` <- posterior samples z (data parallel: the rows of every process)."""
        self.bank[idx] = z

    # ------------------------------------------------------------------ the non-adaptive ablation
    def fit_tre(self) -> None:
        """Non-adaptive ablation (Sec. 5.5): ``tre_prior`` on the aggregate posterior of the trained generator."""
        cfg = self.cfg
        with seeded(cfg.seed, self.device):
            z = aggregate_posterior(self.generator, self.prior, self.data, cfg.ld_steps, cfg.ld_step_size, cfg.sigma,
                                    batch_size=max(cfg.batch_size, 256))
        tre = tre_prior(z, cfg.n_stages, cfg.tre_steps, cfg.tre_lr, cfg.seed,
                        tqdm if cfg.progress and self.writes_files else None)
        for ratio in tre.stages:
            self.prior.add_stage(ratio)
        self.history.update(tre.history)

    def _record(self, e: int, k: int, stats: dict, pixels: int) -> None:
        h = self.history
        h["epoch"].append(e)
        h["stage"].append(k if self.cfg.adaptive else None)
        for key in STATS:
            h[key].append(stats.get(key, math.nan))
        h["mse"].append(stats["gen_loss"] * 2 * self.cfg.sigma ** 2 / pixels)    # per pixel, [-1, 1] scale

    def _diverged(self, e, k, i=None, err=None) -> FloatingPointError:
        """The error of a non-finite loss (batch i) or state (i None) in epoch e (from 0), with what to do next."""
        good, why_not = checkpoint.newest_healthy(self.out_dir) if self.last_checkpoint else (None, "")
        if good:
            todo = (f"Last good checkpoint: {good[0]} (after epoch {good[1]}). Continue from it with a smaller "
                    f"ld_step_size or learning rates in a new out_dir: Trainer(cfg, data, new_dir, "
                    f"init_from={str(good[0])!r}), on the command line --out-dir <new folder> --init-from {good[0]}.")
        elif why_not:
            todo = (f"No checkpoint of this run is healthy ({why_not}): start over in a new out_dir with a smaller "
                    f"ld_step_size or learning rates.")
        else:
            todo = ("No checkpoint was written yet: run again with a smaller ld_step_size or learning rates (the same "
                    "out_dir is fine).")
        what = (f"refusing to checkpoint non-finite model weights after epoch {e + 1} of {self.cfg.epochs}"
                if i is None else f"{err} in epoch {e + 1} of {self.cfg.epochs}, batch {i + 1}")
        return FloatingPointError(f"{what}, stage {k}; the broken state was not saved. {todo}{self._far_above()}")

    def _far_above(self) -> str:
        """' Far above amdre's defaults: lr_ebm=1e+06 (default 0.0005).' for the step sizes of this run that are
        10 times their ``Config`` default or more (the usual cause of a divergence), else ''."""
        names = ("lr_g", "lr_ebm", "ld_step_size", "prior_ld_step_size")
        far = [f"{n}={getattr(self.cfg, n):g} (default {FIELDS[n].default:g})" for n in names
               if getattr(self.cfg, n) >= 10 * FIELDS[n].default]
        return f" Far above amdre's defaults: {', '.join(far)}." if far else ""

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything a run continues from: weights, optimisers, bank, history, random state, config, data."""
        return {"cfg": asdict(self.cfg), "epoch": self.epoch, "generator": self.generator.state_dict(),
                "prior": self.prior.state_dict(), "n_stages": self.prior.n_stages,
                "opt_g": self.opt_g.state_dict(),
                "opt_ebm": self.opt_ebm.state_dict() if self.opt_ebm is not None else None,
                "bank": self.bank, "history": self.history, "rng": checkpoint.rng_state(self.rng, self.loader_gen),
                "init_from": self.init_from, "data": checkpoint.fingerprint(self.data)}

    def save(self, stage: int = None) -> Path:
        """Write ``last.pt`` (and ``stage{k}.pt`` at a stage boundary) atomically; refuse non-finite weights."""
        tensors = [*self.generator.parameters(), *self.prior.parameters(), *([] if self.bank is None else [self.bank])]
        if not all(bool(torch.isfinite(t).all()) for t in tensors):
            raise self._diverged(self.epoch - 1, self.stage_of(self.epoch - 1))
        if self.writes_files:
            checkpoint.save(self.state_dict(), self.out_dir, stage, last_good=self.last_checkpoint)
        self.last_checkpoint, self.saved_epoch = str(self.out_dir / "last.pt"), self.epoch
        return self.out_dir / "last.pt"

    def load_state_dict(self, state: dict, path, new_run: bool = False) -> None:
        """Continue from a checkpoint of this configuration (``amdre.checkpoint.check`` says what may differ).

        ``new_run``: start a new run from it (``init_from``): only the networks must agree, and the optimisers
        take this config's learning rates.
        """
        checkpoint.check(state, self.cfg, self.data, path, new_run)
        for _ in range(state["n_stages"]):
            self.prior.add_stage()
        self.prior.load_state_dict(state["prior"])
        self.generator.load_state_dict(state["generator"])
        self.opt_g.load_state_dict(state["opt_g"])
        if state["opt_ebm"] is not None:
            self.ratio = self.prior.stages[-1]
            self.opt_ebm = torch.optim.Adam(self.ratio.parameters(), lr=self.cfg.lr_ebm, betas=self.cfg.betas)
            self.opt_ebm.load_state_dict(state["opt_ebm"])
        elif state["n_stages"]:
            self.prior.requires_grad_(False)                      # non-adaptive: TRE stages, all frozen
        self.history, self.epoch = state["history"], state["epoch"]
        if self.bank is not None:
            self.bank.copy_(state["bank"])
        checkpoint.set_rng_state(state["rng"], self.rng, self.loader_gen)
        if new_run:
            for opt, lr in ((self.opt_g, self.cfg.lr_g), (self.opt_ebm, self.cfg.lr_ebm)):
                for group in (opt.param_groups if opt is not None else ()):
                    group["lr"] = lr
            self.init_from = str(path)
        else:
            self.last_checkpoint, self.init_from, self.saved_epoch = str(path), state.get("init_from"), state["epoch"]


def train(cfg, data, out_dir, resume: bool = True) -> Trainer:
    """Train (or continue, when ``out_dir/last.pt`` exists and resume=True) to ``cfg.epochs``; returns the Trainer."""
    return Trainer(cfg, data, out_dir, resume=resume).fit()
