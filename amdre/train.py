"""Adaptive multi-stage density-ratio training of a generator with a latent EBM prior (Sec. 3.3, Fig. 1).

Epoch e trains stage k = min(e // E, m - 1) (E = ``stage_every``, m = ``n_stages``). Per batch x:

1. posterior z ~ p(z|x) by short-run Langevin (Eq. 3) under the current prior p_{phi_k}
   (the k stages before this one, Eq. 8; p_{phi_0} = N(0, I));
2. generator step (Adam, lr_g) on -log p_theta(x|z) = ||x - g(z)||^2 / (2 sigma^2), summed over pixels and
   averaged over the batch (Eq. 2; LEBM's loss is the same up to the constant 1/(2 sigma^2), which Adam
   cancels apart from its epsilon);
3. NCE step (Eq. 4, Adam lr_ebm, a fresh optimiser per stage) of r_k with the posterior samples as the
   numerator side and prior samples as the denominator side, so r_k ~ q_k / p_{phi_k}.

Prior samples: ``"memory"`` (the persistent chain of Sec. 3.3) keeps one [N_data, nz] bank indexed by
example; stage 0 uses fresh N(0, I) draws, and in the last epoch of every stage each batch's posterior
samples overwrite its rows *after* the old rows were read, so during stage k the bank holds samples of
q_{k-1} ~ p_{phi_k}. ``"langevin"`` runs short-run prior Langevin on p_{phi_k} from noise instead.
``adaptive=False`` is the Sec. 5.5 ablation: Gaussian prior for all epochs, then all m stages fitted at
once by TRE (Eq. 5) between the aggregate posterior (p_0) and N(0, I) (p_m); TRE's ratio k estimates
p_k / p_{k+1}, so the ratios sum to log q / N(0, I), which is exactly the prior's sum of log r_k.

Checkpoints (``last.pt`` every epoch, ``stage{k}.pt`` at the end of each stage) hold everything needed
to continue bit-for-bit: a resumed CPU run equals an uninterrupted one. All Langevin step sizes use
Eq. 3's convention (see ``amdre.langevin``).
"""
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .langevin import sample_posterior, sample_prior
from .nce import nce_accuracy, nce_loss
from .nets import GENERATORS, generator as make_generator
from .prior import EBMPrior
from .tre import fit_log_ratio

# fields that may differ when resuming: they do not change the computation (on one device)
RESUMABLE_CHANGES = ("epochs", "device", "num_workers")


@dataclass
class TrainConfig:
    generator: str = "mnist"           # a name of amdre.nets.generator
    nz: int = 100
    ngf: int = 64
    epochs: int = 100
    n_stages: int = 4                  # m (App. A.3)
    stage_every: int = 25              # E: a new stage every E epochs (App. A.3)
    batch_size: int = 100
    ld_steps: int = 30                 # posterior Langevin steps (App. A.3: 30 SVHN/CelebA, 40 CIFAR-10)
    ld_step_size: float = 0.01         # Eq. 3's s (= LEBM's 0.1)
    sigma: float = 0.3                 # std of p(x|z) (Sec. 2.1)
    lr_g: float = 1e-4
    lr_ebm: float = 5e-5
    betas: tuple = (0.5, 0.999)
    prior_sampling: str = "memory"     # "memory" (persistent bank) or "langevin" (short-run prior LD)
    prior_ld_steps: int = 60
    prior_ld_step_size: float = 0.16   # Eq. 3's s (= LEBM's 0.4)
    adaptive: bool = True              # False: the non-adaptive TRE ablation (Sec. 5.5)
    tre_steps: int = 1500              # non-adaptive only: fit_log_ratio steps and learning rate
    tre_lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if str(self.generator).lower().replace("-", "") not in GENERATORS:
            raise ValueError(f"unknown generator {self.generator!r}; valid names: {', '.join(GENERATORS)}")
        if self.prior_sampling not in ("memory", "langevin"):
            raise ValueError(f"prior_sampling must be 'memory' or 'langevin'; got {self.prior_sampling!r}")
        for f in ("nz", "ngf", "epochs", "n_stages", "stage_every", "batch_size", "prior_ld_steps", "tre_steps"):
            if not (isinstance(getattr(self, f), int) and getattr(self, f) > 0):
                raise ValueError(f"{f} must be a positive int; got {getattr(self, f)!r}")
        for f in ("ld_step_size", "sigma", "lr_g", "lr_ebm", "prior_ld_step_size", "tre_lr"):
            if not getattr(self, f) > 0:
                raise ValueError(f"{f} must be > 0; got {getattr(self, f)!r}")
        if not (isinstance(self.ld_steps, int) and self.ld_steps >= 0):
            raise ValueError(f"ld_steps must be an int >= 0; got {self.ld_steps!r}")


def _atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file, then os.replace: a crash never leaves a half-written checkpoint."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _rng_state(loader_gen: torch.Generator) -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": (kind, keys.tolist(), pos, has_gauss, cached),
             "python": random.getstate(), "loader": loader_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, loader_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    loader_gen.set_state(state["loader"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class Trainer:
    """Holds the models, optimisers, memory bank and history; ``fit()`` trains to ``cfg.epochs``."""

    def __init__(self, cfg: TrainConfig, data, out_dir, resume: bool = True, progress: bool = True):
        self.cfg, self.data, self.progress = cfg, data, progress
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.generator = make_generator(cfg.generator, cfg.nz, cfg.ngf).to(self.device)
        self._check_data(data)
        self.prior = EBMPrior(cfg.nz).to(self.device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_ebm = None
        self.bank = (torch.randn(len(data), cfg.nz, device=self.device)
                     if cfg.adaptive and cfg.prior_sampling == "memory" else None)
        self.loader_gen = torch.Generator().manual_seed(cfg.seed)
        self.loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, generator=self.loader_gen,
                                 num_workers=cfg.num_workers)
        self.epoch, self.last_checkpoint = 0, None
        self.history = {k: [] for k in ("epoch", "stage", "gen_loss", "mse", "z_norm2", "nce_loss", "nce_acc",
                                        "epoch_time", "tre_loss", "tre_acc")}
        if resume and (self.out_dir / "last.pt").exists():
            self.load_state(self.out_dir / "last.pt")

    def _check_data(self, data) -> None:
        try:
            x, _, idx = data[0]
        except (TypeError, ValueError, IndexError) as err:
            raise ValueError("data must be a non-empty dataset of (image, label, index) items, "
                             "like amdre.data.load(...)") from err
        if tuple(x.shape) != self.generator.out_shape:
            raise ValueError(f"generator {self.cfg.generator!r} makes images of shape {self.generator.out_shape} "
                             f"but the data has {tuple(x.shape)}: pick the generator matching the dataset")

    def stage_of(self, epoch: int) -> int:
        """k = min(epoch // E, m - 1): the stage trained during ``epoch``."""
        return min(epoch // self.cfg.stage_every, self.cfg.n_stages - 1)

    def is_last_epoch_of_stage(self, epoch: int) -> bool:
        k = self.stage_of(epoch)
        end = self.cfg.epochs if k == self.cfg.n_stages - 1 else (k + 1) * self.cfg.stage_every
        return epoch == end - 1

    # ------------------------------------------------------------------ training
    def fit(self, until: int = None) -> "Trainer":
        """Train epochs self.epoch .. until-1 (default: to cfg.epochs), saving after each epoch."""
        cfg = self.cfg
        until = cfg.epochs if until is None else min(until, cfg.epochs)
        if self.epoch < until:
            from tqdm.auto import tqdm
            with tqdm(total=(until - self.epoch) * len(self.loader), disable=not self.progress, desc="train") as bar:
                while self.epoch < until:
                    self.train_epoch(bar)
                    self.epoch += 1
                    boundary = cfg.adaptive and self.is_last_epoch_of_stage(self.epoch - 1)
                    self.save(self.stage_of(self.epoch - 1) if boundary else None)
        if not cfg.adaptive and self.epoch >= cfg.epochs and self.prior.n_stages == 0:
            self.fit_tre()
            self.save(cfg.n_stages - 1)
        return self

    def new_stage(self) -> None:
        """Add stage r_k (Table 4 net) and a fresh Adam for it; earlier stages are frozen by add_stage."""
        stage = self.prior.add_stage().to(self.device)
        self.opt_ebm = torch.optim.Adam(stage.parameters(), lr=self.cfg.lr_ebm, betas=self.cfg.betas)

    def train_epoch(self, bar=None) -> None:
        cfg, e = self.cfg, self.epoch
        k = self.stage_of(e) if cfg.adaptive else 0
        if cfg.adaptive and self.prior.n_stages <= k:
            self.new_stage()
        write_bank = self.bank is not None and self.is_last_epoch_of_stage(e)
        t0 = time.perf_counter()
        for step, (x, _, idx) in enumerate(self.loader):
            x, idx = x.to(self.device, non_blocking=True), idx.to(self.device)
            z, stats = self.train_step(x, idx, k)
            values = stats.tolist()                               # the one host sync per batch
            if not all(math.isfinite(v) for v in values):
                raise self._diverged(e, step, k, values)
            self.opt_g.step()
            if cfg.adaptive:
                self.opt_ebm.step()
            if write_bank:
                self.bank[idx] = z
            self._record(e, k, values)
            if bar is not None:
                bar.update()
                bar.set_postfix(epoch=e, stage=k, mse=f"{values[1]:.4f}",
                                nce=f"{values[3]:.3f}" if cfg.adaptive else "-", refresh=False)
        self.history["epoch_time"].append(time.perf_counter() - t0)

    def train_step(self, x: torch.Tensor, idx: torch.Tensor, k: int):
        """Posterior LD, generator loss and stage-k NCE loss with gradients; the caller steps the optimisers.

        Returns (z, stats) with stats = [gen_loss, mse per pixel, mean ||z||^2, nce_loss, nce_acc].
        """
        cfg = self.cfg
        z = sample_posterior(self.generator, self.prior, x, n_steps=cfg.ld_steps, step_size=cfg.ld_step_size,
                             sigma=cfg.sigma, n_stages=k)
        sq = (x - self.generator(z)).pow(2).flatten(1).sum(1)
        gen_loss = sq.mean() / (2 * cfg.sigma ** 2)
        self.opt_g.zero_grad(set_to_none=True)
        gen_loss.backward()
        stats = [gen_loss.detach(), sq.detach().mean() / x[0].numel(), z.pow(2).sum(1).mean()]
        if cfg.adaptive:
            zq = self.prior_samples(idx, k, len(x))
            log_r = self.prior.stages[k](torch.cat([z, zq]))      # log r_k: posterior rows, then prior rows
            lp, lq = log_r[:len(x)], log_r[len(x):]
            loss = nce_loss(lp, lq)                               # Eq. 4, r_k ~ q_k / p_{phi_k}
            self.opt_ebm.zero_grad(set_to_none=True)
            loss.backward()
            stats += [loss.detach(), nce_accuracy(lp, lq)]
        return z, torch.stack(stats)

    def prior_samples(self, idx: torch.Tensor, k: int, n: int) -> torch.Tensor:
        """Samples of p_{phi_k}: N(0, I) for k = 0, else the memory bank rows or short-run prior LD."""
        z0 = torch.randn(n, self.cfg.nz, device=self.device)
        if k == 0:
            return z0
        if self.bank is not None:
            return self.bank[idx]                                 # advanced indexing copies the rows
        return sample_prior(self.prior, z0, self.cfg.prior_ld_steps, self.cfg.prior_ld_step_size, n_stages=k)

    def fit_tre(self) -> None:
        """Non-adaptive ablation (Sec. 5.5): TRE between aggregate posterior (p_0) and N(0, I) (p_m)."""
        cfg = self.cfg
        zp = posterior_bank(self.generator, None, self.data, cfg.ld_steps, cfg.ld_step_size, cfg.sigma,
                            batch_size=max(cfg.batch_size, 256), progress=self.progress).cpu()
        tre = fit_log_ratio(zp, torch.randn_like(zp), method="tre", n_ratios=cfg.n_stages, steps=cfg.tre_steps,
                            lr=cfg.tre_lr, seed=cfg.seed, progress=self.progress)
        for ratio in tre.ratios:
            self.prior.add_stage(ratio.to(self.device))
        self.prior.requires_grad_(False)
        self.history["tre_loss"], self.history["tre_acc"] = tre.losses, tre.accuracies

    def _record(self, e: int, k: int, values: list) -> None:
        h = self.history
        h["epoch"].append(e)
        h["stage"].append(k if self.cfg.adaptive else None)
        for key, v in zip(("gen_loss", "mse", "z_norm2", "nce_loss", "nce_acc"), values + [math.nan] * 2):
            h[key].append(v)

    def _diverged(self, e, step, k, values) -> FloatingPointError:
        names = ("gen_loss", "mse", "z_norm2", "nce_loss", "nce_acc")
        bad = ", ".join(f"{n}={v}" for n, v in zip(names, values) if not math.isfinite(v))
        where = self.last_checkpoint or "none yet (no epoch finished)"
        return FloatingPointError(f"non-finite training values ({bad}) at epoch {e}, step {step}, stage {k}; "
                                  f"last good checkpoint: {where}. Lower ld_step_size or the learning rates "
                                  f"and resume from it.")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"cfg": asdict(self.cfg), "epoch": self.epoch, "generator": self.generator.state_dict(),
                "prior": self.prior.state_dict(), "n_stages": self.prior.n_stages,
                "opt_g": self.opt_g.state_dict(),
                "opt_ebm": self.opt_ebm.state_dict() if self.opt_ebm is not None else None,
                "bank": self.bank, "history": self.history, "rng": _rng_state(self.loader_gen)}

    def save(self, stage: int = None) -> Path:
        """Write ``last.pt`` (and ``stage{k}.pt`` at a stage boundary) atomically; refuse non-finite states."""
        tensors = [*self.generator.parameters(), *self.prior.parameters(), *([] if self.bank is None else [self.bank])]
        if not all(bool(torch.isfinite(t).all()) for t in tensors):
            raise FloatingPointError(f"refusing to checkpoint a non-finite state at epoch {self.epoch}; "
                                     f"last good checkpoint: {self.last_checkpoint}")
        state = self.state_dict()
        if stage is not None:
            _atomic_save(state, self.out_dir / f"stage{stage}.pt")
        _atomic_save(state, self.out_dir / "last.pt")
        self.last_checkpoint = str(self.out_dir / "last.pt")
        return self.out_dir / "last.pt"

    def load_state(self, path) -> None:
        """Continue from a checkpoint written by ``save`` with the same config (epochs may grow)."""
        ckpt = torch.load(path, map_location=self.device, weights_only=True)
        diff = [f for f, v in asdict(self.cfg).items() if f not in RESUMABLE_CHANGES and ckpt["cfg"].get(f) != v]
        if diff:
            raise ValueError(f"cannot resume from {path}: config differs in {', '.join(diff)} "
                             f"(use another out_dir or resume=False)")
        for _ in range(ckpt["n_stages"]):
            self.prior.add_stage().to(self.device)
        self.prior.load_state_dict(ckpt["prior"])
        self.generator.load_state_dict(ckpt["generator"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        if ckpt["opt_ebm"] is not None:
            stage = self.prior.stages[-1]
            self.opt_ebm = torch.optim.Adam(stage.parameters(), lr=self.cfg.lr_ebm, betas=self.cfg.betas)
            self.opt_ebm.load_state_dict(ckpt["opt_ebm"])
        elif ckpt["n_stages"]:
            self.prior.requires_grad_(False)                      # non-adaptive: TRE stages, all frozen
        self.bank, self.history, self.epoch = ckpt["bank"], ckpt["history"], ckpt["epoch"]
        _set_rng_state(ckpt["rng"], self.loader_gen)
        self.last_checkpoint = str(path)


def train(cfg: TrainConfig, data, out_dir, resume: bool = True, progress: bool = True) -> Trainer:
    """Train (or continue, when ``out_dir/last.pt`` exists and resume=True) to ``cfg.epochs``; returns the Trainer."""
    return Trainer(cfg, data, out_dir, resume=resume, progress=progress).fit()


def load_checkpoint(path, device: str = "cpu"):
    """(generator, prior, cfg, history) from a checkpoint file or run folder (``last.pt``), in eval mode."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    cfg = TrainConfig(**ckpt["cfg"])
    g = make_generator(cfg.generator, cfg.nz, cfg.ngf).to(device)
    g.load_state_dict(ckpt["generator"])
    prior = EBMPrior(cfg.nz).to(device)
    for _ in range(ckpt["n_stages"]):
        prior.add_stage().to(device)
    prior.load_state_dict(ckpt["prior"])
    prior.requires_grad_(False)
    return g.eval().requires_grad_(False), prior.eval(), cfg, ckpt["history"]


def posterior_bank(generator, prior, data, n_steps: int = 30, step_size: float = 0.01, sigma: float = 0.3,
                   batch_size: int = 500, n_stages: int = None, progress: bool = False) -> torch.Tensor:
    """Posterior latents [N, nz] of a whole dataset (rows in dataset order), by Eq. 3 from noise in batches.

    ``data`` is a dataset of (image, label, index) items or an image tensor [N, C, H, W].
    """
    device = next(generator.parameters()).device
    batches = (data.split(batch_size) if torch.is_tensor(data)
               else (b[0] for b in DataLoader(data, batch_size=batch_size, shuffle=False)))
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, total=math.ceil(len(data) / batch_size), desc="posterior")
    return torch.cat([sample_posterior(generator, prior, x.to(device), n_steps=n_steps, step_size=step_size,
                                       sigma=sigma, n_stages=n_stages) for x in batches])
