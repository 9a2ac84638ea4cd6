"""Adaptive multi-stage density-ratio training of a generator with a latent EBM prior (Sec. 3.3, Fig. 1).

Epoch e trains stage k = min(e // E, m - 1) (E = ``stage_every``, m = ``n_stages``). Per batch x,
``Trainer.train_step``:

1. posterior z ~ p(z|x) by short-run Langevin (Eq. 3) under the current prior p_{phi_k}
   (the k stages before this one, Eq. 8; p_{phi_0} = N(0, I));
2. generator loss -log p_theta(x|z) = ||x - g(z)||^2 / (2 sigma^2), summed over pixels and averaged over
   the batch (Eq. 2), and its gradient (Adam, lr_g);
3. samples of p_{phi_k}: N(0, I) in stage 0; later the memory bank or short-run prior Langevin;
4. NCE loss (Eq. 4) of r_k, posterior samples on the numerator side and prior samples on the
   denominator side, so r_k ~ q_k / p_{phi_k} (Adam, lr_ebm, a fresh optimiser per stage).

The memory bank (``prior_sampling="memory"``, the persistent chain of Sec. 3.3) holds one latent per
training example. In the last epoch of every stage each batch's posterior samples overwrite their rows
*after* the old rows were read, so during stage k the bank holds samples of q_{k-1} ~ p_{phi_k}: an
approximation that holds if r_{k-1} is accurate. ``"langevin"`` runs short-run prior Langevin on
p_{phi_k} from noise instead. ``adaptive=False`` is the Sec. 5.5 ablation: the Gaussian prior for all
epochs, then all m stages fitted at once by TRE (Eq. 5) between the aggregate posterior and N(0, I)
(``tre_prior``).

Checkpoints (``last.pt`` every epoch, ``stage{k}.pt`` at the end of each stage) hold everything needed to
continue bit-for-bit: a resumed CPU run equals an uninterrupted one. Speed options (amp, compile,
channels_last) and torchrun's data parallelism are applied by ``amdre.accel``; this module never branches on them.
"""
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import accel, distributed, params
from .files import atomic_save, checkpoints, ensure_dir, read_checkpoint, rng_state, seed_all, set_rng_state
from .langevin import log_likelihood, posterior_bank, sample_prior
from .nce import nce_accuracy, nce_loss
from .nets import GENERATORS, generator as make_generator, generator_key
from .prior import EBMPrior
from .tre import tre_prior

# Fields that do not change what is computed (beyond float rounding): a run may resume with other values.
WHERE_IT_RUNS = ("device", "num_workers", "compile", "channels_last")
RESUMABLE = ("epochs",) + WHERE_IT_RUNS
# Fields a run started from another run's checkpoint (``init_from``) must share with it: the networks and schedule.
ARCHITECTURE = ("generator", "nz", "ngf", "n_stages", "stage_every", "adaptive", "prior_sampling")
STATS = ("gen_loss", "z_norm2", "nce_loss", "nce_acc")             # what train_step returns, in this order


@dataclass
class TrainConfig:
    """Every setting of a training run; ``__post_init__`` checks them all and names every bad one at once."""
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
    amp: bool = False                  # bf16 autocast of the generator (GPU speed; float32 z, error, updates)
    compile: bool = False              # torch.compile each posterior Langevin step (CUDA graphs on GPUs)
    channels_last: bool = False        # NHWC memory format for the generator (GPU speed)

    def __post_init__(self):
        self.betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else self.betas
        errors = params.errors(
            params.ints(1, nz=self.nz, ngf=self.ngf, epochs=self.epochs, n_stages=self.n_stages,
                        stage_every=self.stage_every, batch_size=self.batch_size,
                        prior_ld_steps=self.prior_ld_steps, tre_steps=self.tre_steps, check=False),
            params.ints(0, ld_steps=self.ld_steps, seed=self.seed, num_workers=self.num_workers, check=False),
            params.positive(ld_step_size=self.ld_step_size, sigma=self.sigma, lr_g=self.lr_g, lr_ebm=self.lr_ebm,
                            prior_ld_step_size=self.prior_ld_step_size, tre_lr=self.tre_lr, check=False),
            params.bools(adaptive=self.adaptive, amp=self.amp, compile=self.compile,
                         channels_last=self.channels_last, check=False),
            params.one_of("prior_sampling", self.prior_sampling, ("memory", "langevin"), check=False),
            params.one_of("generator", generator_key(self.generator), GENERATORS, check=False, shown=self.generator),
        )
        if not (isinstance(self.betas, tuple) and len(self.betas) == 2
                and all(params.type_ok(b, float) and 0 <= b < 1 for b in self.betas)):
            errors.append(f"betas must be two numbers in [0, 1) (Adam's); got {self.betas!r}")
        if not isinstance(self.device, str):
            errors.append(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {self.device!r}")
        params.raise_errors(errors, "bad TrainConfig field")


def config_diff(saved: dict, cfg: TrainConfig) -> list:
    """Fields (other than RESUMABLE) where a saved ``asdict(TrainConfig)`` differs from ``cfg``.

    Fields missing from ``saved`` (checkpoints written before the field existed) count as their defaults.
    """
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    now = asdict(cfg)
    return [f for f in now if f not in RESUMABLE and _plain(saved.get(f, defaults[f])) != _plain(now[f])]


def _plain(v):
    return list(v) if isinstance(v, (tuple, list)) else v


class Trainer:
    """Holds the models, optimisers, memory bank and history; ``fit()`` trains to ``cfg.epochs``.

    ``resume=True`` continues the run in ``out_dir`` (its ``last.pt``); ``resume=False`` refuses a folder that
    already holds a run, so two runs never mix. ``init_from`` (a checkpoint of another run with the same
    ``ARCHITECTURE``) starts a new run in an empty ``out_dir`` from that state, with this config's learning
    rates and step sizes (how a diverged run continues more carefully). Under torchrun each rank trains on its
    rows of every global batch and rank 0 writes the files (``amdre.distributed``).
    """

    def __init__(self, cfg: TrainConfig, data, out_dir, resume: bool = True, progress: bool = True,
                 init_from=None):
        self.cfg, self.data, self.out_dir = cfg, data, Path(out_dir)
        self.rank = distributed.world()[0]
        self.progress = progress and self.rank == 0
        if self.rank == 0:
            ensure_dir(self.out_dir)
        self.device = accel.resolve_device(cfg.device)
        seed_all(cfg.seed)
        self.generator = make_generator(cfg.generator, cfg.nz, cfg.ngf).to(self.device)
        self._check_data(data)
        self.prior = EBMPrior(cfg.nz).to(self.device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr_g, betas=cfg.betas)
        self.opt_ebm, self.r_train = None, None
        self.bank = (torch.randn(len(data), cfg.nz, device=self.device)
                     if cfg.adaptive and cfg.prior_sampling == "memory" else None)
        self.writing_bank = False
        self.randn = torch.randn_like                              # the samplers' noise source
        self.loader_gen = torch.Generator().manual_seed(cfg.seed)
        self.loader = distributed.loader(data, cfg.batch_size, self.loader_gen, cfg.num_workers)
        self.epoch, self.last_checkpoint, self.saved_epoch = 0, None, 0
        self.history = {k: [] for k in ("epoch", "stage", "gen_loss", "mse", "z_norm2", "nce_loss", "nce_acc",
                                        "epoch_time", "tre_loss", "tre_acc")}
        self.init_from = None if init_from is None else str(init_from)
        if "last.pt" in (held := [p.name for p in checkpoints(self.out_dir)]) and resume:
            self.load_state(self.out_dir / "last.pt")
        elif held:
            start = f"train into another out_dir (init_from={self.out_dir / held[0]} starts there from its state)"
            why = ("no last.pt to resume from. Nothing was changed. Continue it from its newest stage: cp "
                   f"{self.out_dir / held[0]} {self.out_dir / 'last.pt'}; or {start}" if resume else
                   f"{'init_from' if init_from else 'resume=False'} would start a new run in it. Nothing was "
                   f"changed. Continue it with resume=True, {start}")
            raise FileExistsError(f"{self.out_dir} already holds a run ({', '.join(held)}) and {why}, or delete "
                                  f"{self.out_dir} to start over.")
        elif init_from is not None:
            self.load_state(init_from, new_run=True)
        # the edge (amdre.accel): what the losses run through, the posterior sampler, and the step
        self.g_train = accel.train_generator(self.generator, cfg, self.device)
        self.posterior = accel.posterior_sampler(self.generator, self.prior, cfg)
        self.step = accel.training_step(self)

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

    # ------------------------------------------------------------------ training
    def fit(self, until: int = None, callback=None) -> "Trainer":
        """Train epochs self.epoch .. until-1 (default: to cfg.epochs), saving after each epoch.

        ``callback(trainer)`` runs on rank 0 after each epoch's checkpoint is written (e.g. a log line).
        """
        cfg = self.cfg
        until = cfg.epochs if until is None else min(until, cfg.epochs)
        with tqdm(total=max(0, until - self.epoch) * len(self.loader), disable=not self.progress,
                  desc="train") as bar:
            while self.epoch < until:
                self.train_epoch(bar)
                self.epoch += 1
                boundary = cfg.adaptive and self.is_last_epoch_of_stage(self.epoch - 1)
                self.save(self.stage_of(self.epoch - 1) if boundary else None)
                if callback is not None and self.rank == 0:
                    callback(self)
        if not cfg.adaptive and self.epoch >= cfg.epochs and self.prior.n_stages == 0:
            self.fit_tre()
            self.save(cfg.n_stages - 1)
        return self

    def new_stage(self) -> None:
        """Add stage r_k (Table 4 net) and a fresh Adam for it; earlier stages are frozen by add_stage."""
        stage = self.prior.add_stage().to(self.device)
        self.opt_ebm = torch.optim.Adam(stage.parameters(), lr=self.cfg.lr_ebm, betas=self.cfg.betas)
        self.r_train = accel.ddp(stage, self.device)

    def train_epoch(self, bar=None) -> None:
        cfg, e = self.cfg, self.epoch
        k = self.stage_of(e) if cfg.adaptive else 0
        if cfg.adaptive and self.prior.n_stages <= k:
            self.new_stage()
        self.writing_bank = self.bank is not None and self.is_last_epoch_of_stage(e)
        t0 = time.perf_counter()
        for i, (x, _, idx) in enumerate(self.loader):
            z, stats = self.step(x.to(self.device), idx.to(self.device), k, i)
            values = stats.tolist()                               # the statistics reach the host once per batch
            if not all(math.isfinite(v) for v in values):
                raise self._diverged(e, k, i, values)
            self.opt_g.step()
            if cfg.adaptive:
                self.opt_ebm.step()
            self._record(e, k, values, x[0].numel())
            if bar is not None:
                bar.update()
                bar.set_postfix(epoch=e + 1, stage=k, mse=f"{self.history['mse'][-1]:.4f}",
                                nce=f"{values[2]:.3f}" if cfg.adaptive else "-", refresh=False)
        self.writing_bank = False
        self.history["epoch_time"].append(time.perf_counter() - t0)

    def train_step(self, x: torch.Tensor, idx: torch.Tensor, k: int):
        """One batch of Fig. 1 in stage k: losses and their gradients (``fit`` then steps the two optimisers).

        Returns the posterior samples z and the statistics [gen_loss, mean ||z||^2, nce_loss, nce_acc].
        """
        cfg, n = self.cfg, len(x)
        # 1. posterior samples z ~ p(z|x) under the current prior p_{phi_k}: short-run Langevin from noise (Eq. 3)
        z = self.posterior(x, self.randn(x.new_empty(n, cfg.nz)), n_stages=k, randn=self.randn)
        # 2. generator: minimise -log p_theta(x|z) = ||x - g(z)||^2 / (2 sigma^2), the gradient of Eq. 2
        gen_loss = -log_likelihood(self.g_train, x, z, cfg.sigma).mean()
        self.opt_g.zero_grad(set_to_none=True)
        gen_loss.backward()
        stats = [gen_loss.detach(), z.pow(2).sum(1).mean()]
        if cfg.adaptive:
            # 3. samples of the current prior p_{phi_k} (read before this batch's posterior samples are written)
            z_prior = self.prior_samples(idx, k, n)
            if self.writing_bank:
                self.bank[idx] = z                                # the persistent chain: q_k stands in for p_{k+1}
            # 4. NCE (Eq. 4): posterior samples against prior samples, so that r_k ~ q_k / p_{phi_k}
            log_r = self.r_train(torch.cat([z, z_prior]))
            nce = nce_loss(log_r[:n], log_r[n:])
            self.opt_ebm.zero_grad(set_to_none=True)
            nce.backward()
            stats += [nce.detach(), nce_accuracy(log_r[:n], log_r[n:])]
        return z, torch.stack(stats)

    def prior_samples(self, idx: torch.Tensor, k: int, n: int) -> torch.Tensor:
        """n samples of p_{phi_k}: N(0, I) for k = 0, else the memory bank's rows ``idx`` or short-run prior LD."""
        z0 = self.randn(torch.empty(n, self.cfg.nz, device=self.device))
        if k == 0:
            return z0
        if self.bank is not None:
            return self.bank[idx]                                 # advanced indexing copies the rows
        return sample_prior(self.prior, z0, self.cfg.prior_ld_steps, self.cfg.prior_ld_step_size, n_stages=k,
                            randn=self.randn)

    def fit_tre(self) -> None:
        """Non-adaptive ablation (Sec. 5.5): ``tre_prior`` on the aggregate posterior of the trained generator."""
        cfg = self.cfg
        bank = posterior_bank(self.generator, None, _images(self.data), cfg.ld_steps, cfg.ld_step_size, cfg.sigma,
                              batch_size=max(cfg.batch_size, 256), seed=cfg.seed)
        tre = tre_prior(bank, cfg.n_stages, cfg.tre_steps, cfg.tre_lr, cfg.seed, tqdm if self.progress else None)
        for ratio in tre.stages:
            self.prior.add_stage(ratio.to(self.device))
        self.history.update(tre.history)

    def _record(self, e: int, k: int, values: list, pixels: int) -> None:
        h = self.history
        h["epoch"].append(e)
        h["stage"].append(k if self.cfg.adaptive else None)
        values = dict(zip(STATS, values + [math.nan] * (len(STATS) - len(values))))
        values["mse"] = values["gen_loss"] * 2 * self.cfg.sigma ** 2 / pixels    # per pixel, [-1, 1] scale
        for key, v in values.items():
            h[key].append(v)

    def _diverged(self, e, k, i=None, values=()) -> FloatingPointError:
        """The error of a non-finite loss (batch i) or state (i None) in epoch e (from 0), with what to do."""
        bad, ckpt, of = ", ".join(f"{n}={v}" for n, v in zip(STATS, values) if not math.isfinite(v)), \
            self.last_checkpoint, f"epoch {e + 1} of {self.cfg.epochs}"
        todo = (f"Last good checkpoint: {ckpt} (after epoch {self.saved_epoch}). Continue from it with a smaller "
                f"ld_step_size or learning rates in a new out_dir: Trainer(cfg, data, new_dir, init_from={ckpt!r}), "
                f"on the command line --out-dir <new folder> --init-from {ckpt}." if ckpt else
                "No checkpoint was written yet: run again with a smaller ld_step_size or learning rates (the same "
                "out_dir is fine).")
        what = (f"refusing to checkpoint non-finite model weights after {of}" if i is None else
                f"non-finite training values ({bad}) in {of}, batch {i + 1}")
        return FloatingPointError(f"{what}, stage {k}; the broken state was not saved. {todo}")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"cfg": asdict(self.cfg), "epoch": self.epoch, "generator": self.generator.state_dict(),
                "prior": self.prior.state_dict(), "n_stages": self.prior.n_stages,
                "opt_g": self.opt_g.state_dict(),
                "opt_ebm": self.opt_ebm.state_dict() if self.opt_ebm is not None else None,
                "bank": self.bank, "history": self.history, "rng": rng_state(self.loader_gen),
                "init_from": self.init_from}

    def save(self, stage: int = None) -> Path:
        """Write ``last.pt`` (and ``stage{k}.pt`` at a stage boundary) atomically; refuse non-finite states.

        Every rank checks the state (it is the same on all); rank 0 writes.
        """
        tensors = [*self.generator.parameters(), *self.prior.parameters(), *([] if self.bank is None else [self.bank])]
        if not all(bool(torch.isfinite(t).all()) for t in tensors):
            raise self._diverged(self.epoch - 1, self.stage_of(self.epoch - 1))
        if self.rank == 0:
            state = self.state_dict()
            if stage is not None:
                atomic_save(state, self.out_dir / f"stage{stage}.pt", last_good=self.last_checkpoint)
            atomic_save(state, self.out_dir / "last.pt", last_good=self.last_checkpoint)
        self.last_checkpoint, self.saved_epoch = str(self.out_dir / "last.pt"), self.epoch
        return self.out_dir / "last.pt"

    def load_state(self, path, new_run: bool = False) -> None:
        """Continue from a checkpoint written by ``save`` with the same config (``RESUMABLE`` fields may differ).

        ``new_run``: start a new run from it (``init_from``): only the ``ARCHITECTURE`` fields must agree, and
        the optimisers take this config's learning rates.
        """
        ckpt = read_checkpoint(path, self.device)
        diff = config_diff(ckpt["cfg"], self.cfg)
        if diff := [f for f in diff if f in ARCHITECTURE or not new_run]:
            how = ("init_from needs the same networks and stage schedule" if new_run else "use the run's own config "
                   f"to continue it, or train into another out_dir (to continue its training there with other learning "
                   f"rates or step sizes: init_from={str(path)!r})")
            raise ValueError(f"cannot {'start from' if new_run else 'resume from'} {path}: the config differs in "
                             + ", ".join(f"{f} ({ckpt['cfg'].get(f)!r} -> {getattr(self.cfg, f)!r})" for f in diff)
                             + f". Nothing was changed: {how}.")
        if new_run and ckpt["bank"] is not None and len(ckpt["bank"]) != len(self.data):
            raise ValueError(f"cannot start from {path}: its memory bank holds one latent for each of its "
                             f"{len(ckpt['bank'])} training images, this run has {len(self.data)}: use the same data.")
        if ckpt["epoch"] > self.cfg.epochs:
            raise ValueError(f"{path} has trained {ckpt['epoch']} epochs, more than epochs={self.cfg.epochs}. Nothing "
                             f"was changed: set epochs >= {ckpt['epoch']} to continue it (or to evaluate it as it is).")
        for _ in range(ckpt["n_stages"]):
            self.prior.add_stage().to(self.device)
        self.prior.load_state_dict(ckpt["prior"])
        self.generator.load_state_dict(ckpt["generator"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        if ckpt["opt_ebm"] is not None:
            stage = self.prior.stages[-1]
            self.opt_ebm = torch.optim.Adam(stage.parameters(), lr=self.cfg.lr_ebm, betas=self.cfg.betas)
            self.opt_ebm.load_state_dict(ckpt["opt_ebm"])
            self.r_train = accel.ddp(stage, self.device)
        elif ckpt["n_stages"]:
            self.prior.requires_grad_(False)                      # non-adaptive: TRE stages, all frozen
        self.bank, self.history, self.epoch = ckpt["bank"], ckpt["history"], ckpt["epoch"]
        set_rng_state(ckpt["rng"], self.loader_gen)
        if new_run:
            for opt, lr in ((self.opt_g, self.cfg.lr_g), (self.opt_ebm, self.cfg.lr_ebm)):
                for group in (opt.param_groups if opt is not None else ()):
                    group["lr"] = lr
        else:
            self.last_checkpoint, self.init_from, self.saved_epoch = str(path), ckpt.get("init_from"), ckpt["epoch"]


def _images(data) -> torch.Tensor:
    images = getattr(data, "images", None)
    return images if images is not None else torch.stack([data[i][0] for i in range(len(data))])


def train(cfg: TrainConfig, data, out_dir, resume: bool = True, progress: bool = True) -> Trainer:
    """Train (or continue, when ``out_dir/last.pt`` exists and resume=True) to ``cfg.epochs``; returns the Trainer."""
    return Trainer(cfg, data, out_dir, resume=resume, progress=progress).fit()


def load_checkpoint(path, device: str = "cpu"):
    """(generator, prior, cfg, history) from a checkpoint file or run folder (``last.pt``), frozen, in eval mode."""
    path = Path(path)
    ckpt = read_checkpoint(path / "last.pt" if path.is_dir() else path, device)
    cfg = TrainConfig(**ckpt["cfg"])
    g = make_generator(cfg.generator, cfg.nz, cfg.ngf).to(device)
    g.load_state_dict(ckpt["generator"])
    prior = EBMPrior.with_stages(cfg.nz, ckpt["n_stages"], ckpt["prior"]).to(device)
    return g.eval().requires_grad_(False), prior.eval().requires_grad_(False), cfg, ckpt["history"]
