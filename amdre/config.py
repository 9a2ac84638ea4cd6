"""The one schema of a run's parameters: ``Config``, used by the Trainer, notebook 05's parameters cell, the presets
in ``configs/*.yaml`` and the command line (``python -m amdre --n-stages 4 ...``).

Each field says what it is for (``role``):

* ``run``: defines what is computed; a run folder continues only with the same values;
* ``length``: ``epochs``, which may grow when a run is continued;
* ``where``: where and how fast it runs (device, speed options, threads, progress bars, the data folder); the
  results do not change beyond float rounding, so a run may continue with other values;
* ``eval``: how a finished run is evaluated (test images, samples for FID, the test-time sampler).

The defaults are notebook 05's tiny CPU run (1,000 MNIST digits, under a minute of one core); the paper's values
are in the presets (``load_preset("svhn")``). ``Config(...)`` checks every field and names every bad one at once;
``from_dict`` (notebook 05, the command line) and the Trainer also refuse a stage schedule that could not build
every stage. The Trainer reads the ``run`` and ``length`` fields
(and ``device``, ``num_workers``, ``progress``); the run pipeline, ``amdre.pipeline``, reads the rest.
"""
from __future__ import annotations

import copy
import difflib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import data, params, paths
from .files import read_yaml
from .nets import GENERATORS, generator_key

ROLES = ("run", "length", "where", "eval")


def _f(default, types, role, meaning):
    return field(default=default, metadata={"types": types, "role": role, "meaning": meaning})


@dataclass
class Config:
    """Every parameter of a training run (see the module docstring); checked on creation."""
    # data
    dataset: str = _f("mnist5k", str, "run", "amdre.data name: svhn, cifar10, celeba, mnist, fashion-mnist, "
                                             "fashion12k, mnist5k or digits")
    data_root: str = _f("", str, "where", "folder holding the datasets ('' = the repo's data/)")
    image_size: int = _f(64, int, "run", "CelebA only: 64 (Table 5) or 128 (the celeba128 generator)")
    n_train: int | None = _f(1000, (int, None), "run", "the first n training images (None = all; CelebA: 40,000)")
    n_test: int = _f(500, int, "eval", "test images for the reconstruction MSE (the paper: 10,000)")
    # the model (App. A.2)
    generator: str = _f("", str, "run", "amdre.nets generator ('' = the dataset's Table 5 network)")
    nz: int = _f(16, int, "run", "latent dimension (the paper: 100; CIFAR-10: 128)")
    ngf: int = _f(8, int, "run", "generator width (the paper: 64)")
    # the schedule (App. A.3)
    epochs: int = _f(6, int, "length", "training epochs (App. A.3: 100; CIFAR-10: 200)")
    n_stages: int = _f(3, int, "run", "density-ratio stages m (App. A.3: 4)")
    stage_every: int = _f(2, int, "run", "a new stage every this many epochs (App. A.3: 25; CIFAR-10: 50)")
    batch_size: int = _f(100, int, "run", "global batch (App. A.3: 100)")
    adaptive: bool = _f(True, bool, "run", "False: the non-adaptive ablation of Sec. 5.5 (N(0, I) prior while "
                                           "training, then all stages fitted at once by TRE)")
    # posterior Langevin (Eq. 3) and the generator
    ld_steps: int = _f(20, int, "run", "posterior Langevin steps (App. A.3: 30; CIFAR-10: 40)")
    ld_step_size: float = _f(0.01, float, "run", "posterior Langevin s of Eq. 3 (= the paper's and LEBM's '0.1')")
    sigma: float = _f(0.3, float, "run", "std of p(x|z) (Sec. 2.1)")
    lr_g: float = _f(4e-3, float, "run", "generator Adam learning rate (App. A.3: 1e-4)")
    lr_ebm: float = _f(5e-4, float, "run", "ratio-net Adam learning rate (App. A.3: 5e-5)")
    betas: tuple = _f((0.5, 0.999), (tuple, list), "run", "Adam's betas for both optimisers (LEBM's (0.5, 0.999))")
    # the prior's samples for NCE
    prior_sampling: str = _f("langevin", str, "run", "NCE's prior samples: 'langevin' (short-run prior LD) or "
                                                      "'memory' (App. A.3's persistent bank)")
    prior_ld_steps: int = _f(60, int, "run", "short-run prior Langevin steps (prior_sampling 'langevin')")
    prior_ld_step_size: float = _f(0.16, float, "run", "prior Langevin s of Eq. 3 (= LEBM's 0.4)")
    tre_steps: int = _f(1500, int, "run", "non-adaptive only: TRE training steps")
    tre_lr: float = _f(1e-3, float, "run", "non-adaptive only: TRE learning rate")
    seed: int = _f(0, int, "run", "random seed")
    # evaluation
    fid_samples: int = _f(500, int, "eval", "generated images for FID or the FD-classifier (0 = skip; paper: 50,000)")
    sample_ld_steps: int = _f(100, int, "eval", "test-time prior Langevin steps (App. A.3: 100)")
    sample_ld_step_size: float = _f(0.1, float, "eval", "test-time prior Langevin s of Eq. 3 (the paper's 0.1)")
    # where it runs
    device: str = _f("cpu", str, "where", "'cpu', 'cuda' or 'cuda:N'")
    amp: bool = _f(False, bool, "run", "bf16 autocast of the generator (GPU speed; changes rounding, so run-defining)")
    compile: bool = _f(False, bool, "where", "torch.compile the posterior Langevin step (GPU: CUDA graphs)")
    channels_last: bool = _f(False, bool, "where", "NHWC generator weights (GPU speed)")
    num_workers: int = _f(0, int, "where", "DataLoader worker processes")
    threads: int = _f(1, int, "where", "CPU threads for torch (0 = torch's default); 1 is fastest for tiny runs")
    progress: bool = _f(True, bool, "where", "show progress bars")

    def __post_init__(self):
        problems, mistyped = _type_problems(self)
        if problems:                          # range checks too, with each mistyped value standing in as its default
            probe = copy.copy(self)
            for name in mistyped:
                setattr(probe, name, FIELDS[name].default)
            raise ConfigError(problems + _value_problems(probe))
        if problems := _value_problems(self):
            raise ConfigError(problems)

    def schedule(self) -> str:
        """'3 stages, a new one every 2 epochs, over 6 epochs' (for logs)."""
        return (f"{self.n_stages} stages, a new one every {self.stage_every} epochs, over {self.epochs} epochs"
                if self.adaptive else f"{self.epochs} epochs under N(0, I), then {self.n_stages} TRE stages")


FIELDS = {f.name: f for f in fields(Config)}
RUN = tuple(n for n, f in FIELDS.items() if f.metadata["role"] == "run")
RESUMABLE = tuple(n for n, f in FIELDS.items() if f.metadata["role"] != "run")


class ConfigError(ValueError):
    """Bad parameters; ``problems`` lists every one, each saying what to change."""

    def __init__(self, problems: list, title: str = "bad parameter"):
        self.problems = list(problems)
        super().__init__(f"{title}{'s' if len(problems) > 1 else ''}:\n  - " + "\n  - ".join(problems))


def _type_problems(cfg: Config) -> tuple:
    """(messages, names) of the fields whose value has the wrong type."""
    out, names = [], []
    for name, f in FIELDS.items():
        value, types = getattr(cfg, name), f.metadata["types"]
        if not params.type_ok(value, types):
            hint = params.STRING_HINT if isinstance(value, str) and types in (int, float, (int, None)) else ""
            out.append(f"{name} must be {params.type_name(types)} ({f.metadata['meaning']}); got {value!r}{hint}")
            names.append(name)
    return out, names


def _value_problems(cfg: Config) -> list:
    """Range and choice checks (the types are right); normalises dataset, generator and betas in place."""
    out = params.errors(
        params.ints(1, nz=cfg.nz, ngf=cfg.ngf, epochs=cfg.epochs, n_stages=cfg.n_stages, stage_every=cfg.stage_every,
                    batch_size=cfg.batch_size, ld_steps=cfg.ld_steps, prior_ld_steps=cfg.prior_ld_steps,
                    tre_steps=cfg.tre_steps, sample_ld_steps=cfg.sample_ld_steps, check=False),
        params.ints(0, seed=cfg.seed, num_workers=cfg.num_workers, n_test=cfg.n_test, fid_samples=cfg.fid_samples,
                    threads=cfg.threads, check=False),
        params.positive(ld_step_size=cfg.ld_step_size, sigma=cfg.sigma, lr_g=cfg.lr_g, lr_ebm=cfg.lr_ebm,
                        prior_ld_step_size=cfg.prior_ld_step_size, tre_lr=cfg.tre_lr,
                        sample_ld_step_size=cfg.sample_ld_step_size, check=False),
        params.one_of("prior_sampling", cfg.prior_sampling, ("memory", "langevin"), check=False),
        params.one_of("image_size", cfg.image_size, (64, 128), check=False),
    )
    if cfg.n_train is not None and cfg.n_train < 1:
        out.append(f"n_train must be a positive int or None (all); got {cfg.n_train!r}")
    if not (len(cfg.betas) == 2 and all(params.type_ok(b, float) and 0 <= b < 1 for b in cfg.betas)):
        out.append(f"betas must be two numbers in [0, 1) (Adam's); got {cfg.betas!r}")
    else:
        cfg.betas = tuple(float(b) for b in cfg.betas)
    if not (cfg.device in ("cpu", "cuda") or (cfg.device.startswith("cuda:") and cfg.device[5:].isdigit())):
        out.append(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {cfg.device!r}")
    try:
        cfg.dataset = data.canonical(cfg.dataset)
    except ValueError as err:
        out.append(f"{err} (presets: configs/*.yaml, e.g. papermill -f configs/svhn.yaml)")
    else:
        cfg.generator = generator_key(cfg.generator) if cfg.generator else data.generator_for(cfg.dataset,
                                                                                               cfg.image_size)
        out += params.one_of("generator", cfg.generator, GENERATORS, check=False)
    return out


def schedule_problem(cfg: Config) -> str:
    """'' when an adaptive run of ``cfg`` trains every one of its stages, else what to change (with values that
    would). Checked by ``from_dict`` and by the Trainer before anything is written, not by ``Config`` itself, so
    that the checkpoint of an old run with such a schedule can still be read and evaluated."""
    if not cfg.adaptive or cfg.epochs >= (cfg.n_stages - 1) * cfg.stage_every + 1:
        return ""
    need = (cfg.n_stages - 1) * cfg.stage_every + 1
    stages = (cfg.epochs - 1) // cfg.stage_every + 1
    every = (cfg.epochs - 1) // (cfg.n_stages - 1) if cfg.n_stages > 1 else cfg.stage_every
    fixes = [f"epochs >= {need}", f"n_stages <= {stages}"] + ([f"stage_every <= {every}"] if every >= 1 else [])
    return (f"n_stages={cfg.n_stages} with a new stage every stage_every={cfg.stage_every} epochs needs epochs >= "
            f"{need} (stage k starts at epoch k*stage_every + 1); with epochs={cfg.epochs} only {stages} stage(s) "
            f"would be trained. Set {' or '.join(fixes)}")


def unknown_names(values: dict, known) -> list:
    """A message for each name of ``values`` that is not in ``known``, with the nearest known name."""
    out = []
    for name in values:
        if name not in known:
            near = difflib.get_close_matches(str(name), list(known), n=1)
            out.append(f"unknown parameter {name!r}{f' (did you mean {near[0]!r}?)' if near else ''}; known: "
                       f"{', '.join(known)}")
    return out


def from_dict(values: dict) -> Config:
    """A Config from a dict of parameters (papermill, YAML, the command line): every unknown name and bad value is
    reported at once."""
    if not isinstance(values, dict):
        raise ValueError(f"parameters must be a dict of names to values; got {type(values).__name__}")
    problems, cfg = unknown_names(values, FIELDS), None
    try:
        cfg = Config(**{k: v for k, v in values.items() if k in FIELDS})
    except ConfigError as err:
        problems += err.problems
    if cfg is not None and schedule_problem(cfg):
        problems.append(schedule_problem(cfg))
    if problems:
        raise ConfigError(problems, "bad run parameter")
    return cfg


def from_saved(saved: dict, where) -> Config:
    """The Config a checkpoint or run.json recorded (``asdict`` of one); fields it lacks (older versions) take their
    defaults, fields this version does not know (a newer version) are refused with what to do."""
    newer = [k for k in saved if k not in FIELDS]
    if newer:
        raise ValueError(f"{where} was written by a newer version of amdre: it has the setting(s) "
                         f"{', '.join(map(repr, newer))}, which this version does not know. Update amdre (git pull, "
                         f"then make install) to continue or evaluate it. Nothing was changed.")
    return Config(**saved)


def diff(saved: dict, cfg: Config, names=RUN) -> list:
    """'name: saved -> now' for each field of ``names`` where a saved ``asdict(Config)`` differs from ``cfg``
    (fields missing from ``saved``, written before they existed, are not compared)."""
    def plain(v):
        return list(v) if isinstance(v, (tuple, list)) else v
    now = asdict(cfg)
    return [f"{n}: {saved[n]!r} -> {now[n]!r}" for n in names if n in saved and plain(saved[n]) != plain(now[n])]


def load_preset(preset) -> dict:
    """The parameters of a preset: a YAML file path, or a name of ``configs/<name>.yaml`` (svhn, cifar10,
    celeba, celeba_hq, ci). Clear errors for an unknown preset and for malformed YAML."""
    path = Path(preset)
    if not path.suffix:
        path = paths.configs() / f"{preset}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(q.stem for q in paths.configs().glob("*.yaml"))) or (
            f"none, there is no configs/ folder in {paths.root()}: run from the amdre checkout or give a YAML file")
        raise FileNotFoundError(f"no preset {str(preset)!r} ({path} does not exist); presets: {known}")
    values = read_yaml(path, "Each line must be 'name: value', as in configs/svhn.yaml.") or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold parameter names and values, 'name: value' lines as in configs/svhn.yaml")
    return values
