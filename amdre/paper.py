"""Paper-scale runs (Sec. 5.1, App. A): the parameters, the run folder, the epoch log and the evaluation.

One run = one folder (``out_dir``, e.g. ``runs/svhn/``) holding

* ``run.json``      the parameters that define the run (``PARAMS``, checked by ``check_params``);
* ``last.pt``, ``stage{k}.pt``   the Trainer's checkpoints (every epoch; at every stage's end);
* ``train.log``     one text line per epoch (losses, time, images/s), plus start / resume / stop lines;
* ``samples.png``, ``reconstructions.png``, ``curves.png``   grids of prior samples, test reconstructions
  (originals above, reconstructions below) and the training curves;
* ``metrics.json``  test reconstruction MSE and FID or FD-classifier, saying which and how each was computed.

Running the same parameters again continues the run from ``last.pt`` (at most the unfinished epoch is
lost); different parameters on a folder that holds a run are refused before anything is written
(``prepare_run``). The same pipeline runs from ``notebooks/05_paper_scale.ipynb`` (papermill) and from the
command line, ``python -m amdre --config configs/svhn.yaml`` (``amdre.__main__``).
"""
from __future__ import annotations

import datetime
import difflib
import math
from dataclasses import fields
from pathlib import Path

import torch

from . import data, distributed, metrics, paths, viz
from .accel import resolve_device
from .files import WriteError, read_checkpoint, read_json, read_yaml, write_json
from .langevin import sample_images
from .nets import GENERATORS, generator as make_generator, generator_key
from .params import STRING_HINT, type_name, type_ok
from .experiments import run_dir, shared_fd_classifier
from .train import RESUMABLE, Trainer, TrainConfig, config_diff, load_checkpoint

RUN_FILE, METRICS_FILE, LOG_FILE = "run.json", "metrics.json", "train.log"
MSE_SCALE = "mean over test images and pixels of (x - g(z))^2 on the [-1, 1] pixel scale (x 1/4 for [0, 1])"

# The parameters of a paper-scale run: notebook 05's parameters cell, configs/*.yaml and the command line share
# these names. The defaults are the notebook's tiny real-data CPU run; the paper's values are in configs/*.yaml.
# name -> (type or tuple of types, default, meaning); None in the types means "may be None".
PARAMS = {
    "dataset": (str, "mnist5k", "amdre.data name: svhn, cifar10, celeba, mnist, fashion-mnist, mnist5k, digits"),
    "data_root": (str, "", "folder holding the datasets ('' = the repo's data/)"),
    "image_size": (int, 64, "CelebA only: 64 (Table 5 generator) or 128 (the celeba128 generator)"),
    "generator": (str, "", "amdre.nets generator ('' = the dataset's Table 5 network)"),
    "n_train": ((int, None), 1000, "first n training examples (None = all; CelebA: 40,000)"),
    "n_test": (int, 500, "test images for the reconstruction MSE (the paper: 10,000)"),
    "fid_samples": (int, 500, "generated images for FID, or FD-classifier without FID weights (0 = skip)"),
    "epochs": (int, 6, "training epochs (App. A.3: 100; CIFAR-10 200)"),
    "stages": (int, 3, "density-ratio stages m (App. A.3: 4)"),
    "stage_every": (int, 2, "a new stage every this many epochs (App. A.3: 25; CIFAR-10 50)"),
    "batch_size": (int, 100, "global batch size (App. A.3 / LEBM: 100)"),
    "nz": (int, 16, "latent dimension (100; CIFAR-10 128)"),
    "ngf": (int, 8, "generator width (64)"),
    "ld_steps": (int, 20, "posterior Langevin steps (30; CIFAR-10 40)"),
    "ld_step_size": (float, 0.01, "posterior Langevin step s of Eq. 3 (0.01 = LEBM's and the paper's 0.1)"),
    "sigma": (float, 0.3, "std of p(x|z)"),
    "lr_g": (float, 4e-3, "generator Adam learning rate (App. A.3: 1e-4; the tiny default run: 4e-3)"),
    "lr_ebm": (float, 5e-4, "ratio-net Adam learning rate (App. A.3: 5e-5; the tiny default run: 5e-4)"),
    "prior_sampling": (str, "langevin", "prior samples for NCE: 'langevin' (short-run prior LD) or 'memory' (the "
                                        "persistent bank of App. A.3)"),
    "prior_ld_steps": (int, 60, "prior Langevin steps when prior_sampling='langevin'"),
    "prior_ld_step_size": (float, 0.16, "prior Langevin step s of Eq. 3 (0.16 = LEBM's 0.4)"),
    "sample_ld_steps": (int, 100, "test-time prior Langevin steps for samples (App. A.3: 100)"),
    "sample_ld_step_size": (float, 0.1, "test-time prior Langevin step s of Eq. 3 (the paper's 0.1, read in Eq. 3)"),
    "device": (str, "cpu", "'cpu', 'cuda' or 'cuda:N'"),
    "amp": (bool, False, "bf16 autocast of the generator (GPU speed)"),
    "compile": (bool, False, "torch.compile the posterior Langevin step (GPU speed; slow to compile on CPU)"),
    "channels_last": (bool, False, "NHWC generator (GPU speed)"),
    "out_dir": (str, "", "run folder, relative to the repo root; '' = runs/05_paper_scale-<hash of the run's parameters>"),
    "resume": (bool, True, "continue the run in out_dir if there is one (False: out_dir must hold no run)"),
    "init_from": (str, "", "a checkpoint of another run to start this new run from (same networks and stage "
                           "schedule; new learning rates and step sizes allowed); '' = start from scratch"),
    "seed": (int, 0, "random seed"),
    "num_workers": (int, 0, "DataLoader worker processes"),
    "threads": (int, 1, "CPU threads for torch (0 = torch's default); on a shared 2-core machine 1 is ~10x faster "
                        "for the tiny run than 2"),
    "progress": (bool, True, "show progress bars"),
}
# Parameters that may change between invocations on one run folder: where it runs, how long, how it is evaluated.
RESUMABLE_PARAMS = RESUMABLE + ("threads", "out_dir", "data_root", "resume", "progress", "n_test", "fid_samples",
                                "sample_ld_steps", "sample_ld_step_size", "init_from")
# Table 5's generator of each dataset (CelebA: "celeba128" for image_size 128).
DATASET_GENERATORS = {"svhn": "svhn", "cifar10": "cifar10", "celeba": "celeba", "mnist": "mnist",
                      "fashion-mnist": "mnist", "mnist5k": "mnist", "digits": "digits"}
# TrainConfig fields with the same name and meaning here (``stages`` is TrainConfig's ``n_stages``).
_SAME = tuple(f.name for f in fields(TrainConfig) if f.name in PARAMS)


class RunConflict(ValueError):
    """The run folder holds a run of other parameters (or resume=False was asked on an existing run)."""


def shown(path) -> str:
    """``path`` relative to the repo root when it lies inside it (for printing), else as it is."""
    try:
        return str(Path(path).resolve().relative_to(paths.root()))
    except ValueError:
        return str(path)


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def check_params(params: dict) -> dict:
    """Check the parameters of a paper-scale run and return them completed and normalised.

    ``params`` maps names of ``PARAMS`` to values (missing names take their defaults). Every problem is
    collected and raised at once as a ValueError that says what to change: unknown names, wrong types
    (papermill and YAML pass strings for values they cannot parse), values out of range (``TrainConfig``
    checks its own fields), an unknown dataset, a generator that does not fit the dataset, a CUDA device on a
    machine without a GPU. The result has ``generator`` filled in, ``dataset`` normalised, and ``out_dir`` /
    ``data_root`` / ``init_from`` as absolute paths (relative ones are relative to ``amdre.paths.root()``).
    """
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of parameter names to values; got {type(params).__name__}")
    errors = [_unknown(name) for name in params if name not in PARAMS]
    p = {name: params.get(name, default) for name, (_, default, _) in PARAMS.items()}
    mistyped = set()
    for name, (types, _, meaning) in PARAMS.items():
        if not type_ok(p[name], types):
            hint = STRING_HINT if isinstance(p[name], str) and types in (int, float, (int, None)) else ""
            errors.append(f"{name} must be {type_name(types)} ({meaning}); got {p[name]!r}{hint}")
            mistyped.add(name)
    # range checks on every well-typed value (a mistyped one, reported above, stands in as its default)
    p = {name: PARAMS[name][1] if name in mistyped else v for name, v in p.items()}
    for name in ("n_test", "fid_samples", "threads"):
        if p[name] < 0:
            errors.append(f"{name} must be >= 0; got {p[name]!r}")
    if p["n_train"] is not None and p["n_train"] < 1:
        errors.append(f"n_train must be a positive int or None (all); got {p['n_train']!r}")
    if p["sample_ld_steps"] < 1 or not (math.isfinite(p["sample_ld_step_size"]) and p["sample_ld_step_size"] > 0):
        errors.append(f"sample_ld_steps must be >= 1 and sample_ld_step_size > 0; got {p['sample_ld_steps']!r}, "
                      f"{p['sample_ld_step_size']!r}")
    if p["image_size"] not in (64, 128):
        errors.append(f"image_size must be 64 or 128 (CelebA); got {p['image_size']!r}")
    if not mistyped & {"dataset", "generator", "image_size"}:
        errors += _dataset_and_generator(p)
    try:
        resolve_device(p["device"])
    except ValueError as err:
        errors.append(str(err))
    try:
        config_from_params(p, checked=True)
    except ValueError as err:                                   # TrainConfig's own checks, every bad field
        errors += [line.strip()[2:].replace("n_stages must", "stages must") for line in str(err).splitlines()[1:]]
    if errors:
        raise ValueError("bad run parameters:\n  - " + "\n  - ".join(errors))
    if not p["out_dir"].strip():                                 # one folder per run-defining configuration
        p["out_dir"] = str(run_dir("05_paper_scale", {k: v for k, v in p.items() if k not in RESUMABLE_PARAMS}))
    for name in ("out_dir", "data_root", "init_from"):
        if p[name]:
            p[name] = str((paths.root() / p[name]).resolve())
    p["data_root"] = p["data_root"] or str(paths.data())
    return p


def _unknown(name) -> str:
    near = difflib.get_close_matches(str(name), PARAMS, n=1)
    return f"unknown parameter {name!r}{f' (did you mean {near[0]!r}?)' if near else ''}; known: {', '.join(PARAMS)}"


def _dataset_and_generator(p: dict) -> list:
    """Normalise ``dataset`` and fill in ``generator`` in place; the problems found, as messages."""
    try:
        p["dataset"] = data.canonical(p["dataset"])
    except ValueError as err:
        return [f"{err} (presets: configs/*.yaml, e.g. papermill -f configs/svhn.yaml)"]
    want = data.shape(p["dataset"], p["image_size"])
    if not p["generator"]:
        p["generator"] = "celeba128" if want == (3, 128, 128) else DATASET_GENERATORS[p["dataset"]]
        return []
    p["generator"] = generator_key(p["generator"])
    if p["generator"] not in GENERATORS:
        return [f"unknown generator {p['generator']!r}; valid names: {', '.join(GENERATORS)}"]
    made = make_generator(p["generator"], 1, 1).out_shape
    if made != want:
        return [f"generator {p['generator']!r} makes images of shape {made} but {p['dataset']} images are "
                f"{want}: leave generator='' to use the dataset's network"]
    return []


def config_from_params(params: dict, checked: bool = False) -> TrainConfig:
    """The TrainConfig of a run's parameters: ``stages`` -> ``n_stages``, the fields of the same name as they are."""
    p = params if checked else check_params(params)
    return TrainConfig(n_stages=p["stages"], **{k: p[k] for k in _SAME})


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


def param_diff(saved: dict, params: dict) -> list:
    """'name: saved -> now' for every run-defining parameter (not RESUMABLE_PARAMS) that differs."""
    return [f"{k}: {saved.get(k, PARAMS[k][1])!r} -> {v!r}" for k, v in params.items()
            if k not in RESUMABLE_PARAMS and saved.get(k, PARAMS[k][1]) != v]


def _conflict(out: Path, what: str) -> RunConflict:
    last = shown(out / "last.pt")
    return RunConflict(f"{out} already holds a run with other parameters ({what}). Nothing was changed there. "
                       f"Run with that folder's parameters to continue it (they are in {out / RUN_FILE}), "
                       f"or choose another out_dir, or delete {out} to start over. To continue its training with other "
                       f"learning rates or step sizes, start a new run from its checkpoint: another out_dir and "
                       f"init_from={last} (--out-dir <new folder> --init-from {last}).")


def prepare_run(params: dict) -> Path:
    """Check that ``out_dir`` is free for these parameters, then record them in ``run.json``.

    Refuses (RunConflict) when the folder holds a run (a checkpoint or metrics) whose run-defining
    parameters differ, when resume=False and the folder holds a run, and when fewer epochs are asked for than
    were trained. Only rank 0 writes. Returns the folder.
    """
    p = check_params(params)
    out = Path(p["out_dir"])
    ckpt, saved = out / "last.pt", read_json(out / RUN_FILE)
    has_run = ckpt.exists() or (out / METRICS_FILE).exists()
    if has_run and saved is not None:
        diff = param_diff(saved["params"], p)
        if diff:
            raise _conflict(out, "; ".join(diff))
    if ckpt.exists():
        state = read_checkpoint(ckpt)
        diff = config_diff(state["cfg"], config_from_params(p, checked=True))
        if diff and saved is None:
            raise _conflict(out, "TrainConfig differs in " + ", ".join(diff))
        if state["epoch"] > p["epochs"]:
            raise RunConflict(f"{out} has already trained {state['epoch']} epochs, more than epochs={p['epochs']}. "
                              f"Nothing was changed. Set epochs >= {state['epoch']} to continue it (or to evaluate "
                              f"it as it is), or choose another out_dir.")
    if p["init_from"] and not ckpt.exists():
        read_checkpoint(p["init_from"])                       # a missing or damaged file: say so before any write
    if has_run and not p["resume"]:
        raise RunConflict(f"{out} already holds a run and resume=False would start it over. Nothing was changed. "
                          f"Set resume=True to continue it, or choose another out_dir, or delete {out}.")
    if distributed.world()[0] == 0:
        record = {"params": p, "created": (saved or {}).get("created", _now()), "updated": _now()}
        write_json(record, out / RUN_FILE)
    return out


def load_data(params: dict):
    """(train, test) ImageData of a run: the first n_train training and n_test test examples (test None if 0)."""
    p = check_params(params)
    kw = {"image_size": p["image_size"]} if p["dataset"] == "celeba" else {}
    train = data.load(p["dataset"], p["data_root"], "train", n=p["n_train"], **kw)
    test = data.load(p["dataset"], p["data_root"], "test", n=p["n_test"], **kw) if p["n_test"] else None
    return train, test


class EpochLog:
    """Appends time-stamped lines to a run's ``train.log``; ``log(trainer)`` writes the epoch just finished."""

    def __init__(self, path):
        self.path = Path(path)

    def write(self, text: str) -> None:
        if distributed.world()[0] == 0:
            try:
                with open(self.path, "a") as f:
                    f.write(f"{_now()} {text}\n")
            except OSError as err:
                raise WriteError(f"could not append to {self.path}: {err.strerror or err} (disk full, or the folder "
                                 f"read-only?). The checkpoints in {self.path.parent} are intact: free some space "
                                 f"and run the same command again.") from err

    def __call__(self, trainer: Trainer) -> None:
        h, e = trainer.history, trainer.epoch - 1
        rows = [i for i, ep in enumerate(h["epoch"]) if ep == e]

        def mean(key):
            vals = [h[key][i] for i in rows]
            return sum(vals) / len(vals) if vals else math.nan

        t = h["epoch_time"][-1]
        stage = h["stage"][rows[-1]] if rows else None
        self.write(f"epoch {e + 1}/{trainer.cfg.epochs} stage {stage} gen_loss {mean('gen_loss'):.5g} "
                   f"mse {mean('mse'):.5f} z_norm2 {mean('z_norm2'):.4g} nce_loss {mean('nce_loss'):.4f} "
                   f"nce_acc {mean('nce_acc'):.3f} time {t:.1f}s {len(trainer.data) / t:.0f} img/s")


def train_run(params: dict, train_data) -> Trainer:
    """Train (or continue) the run of ``params`` in its out_dir, logging every epoch to ``train.log``.

    Call ``prepare_run`` first. A non-finite loss stops the run with a FloatingPointError that names the
    epoch, batch, stage and last good checkpoint (the broken state is never saved); a file that cannot be
    written (disk full, read-only folder) stops it with a WriteError. Both go to the log as a STOPPED line.
    """
    p = check_params(params)
    out, cfg = Path(p["out_dir"]), config_from_params(p, checked=True)
    log = EpochLog(out / LOG_FILE)
    trainer = Trainer(cfg, train_data, out, resume=p["resume"], progress=p["progress"],
                      init_from=None if (out / "last.pt").exists() else (p["init_from"] or None))
    world = distributed.world()[1]
    where = (f"resuming after epoch {trainer.epoch}" if trainer.last_checkpoint else
             f"starting from {p['init_from']}, after epoch {trainer.epoch}" if trainer.init_from else "starting")
    log.write(f"{where} of {cfg.epochs}: {p['dataset']} ({len(train_data)} images), generator {cfg.generator}, "
              f"{cfg.n_stages} stages every {cfg.stage_every} epochs, batch {cfg.batch_size} over {world} "
              f"process(es), device {trainer.device}, amp {cfg.amp}, compile {cfg.compile}")
    try:
        trainer.fit(callback=log)
    except (FloatingPointError, WriteError) as err:
        try:
            log.write(f"STOPPED: {err}")
        except WriteError:
            pass                                              # the disk is full: the error itself says so
        raise
    log.write(f"done: {trainer.epoch} epochs, {trainer.prior.n_stages} stages")
    return trainer


def evaluate_run(params: dict, train_data, test_data, device: str = None) -> dict:
    """Grids and ``metrics.json`` of the run's last checkpoint (rank 0's job).

    * MSE (Table 1): ``amdre.metrics.reconstruction_mse`` on the n_test test images, z from posterior
      Langevin from noise under the learned prior (ld_steps, ld_step_size, sigma of the run);
    * FID (Table 1) with pytorch-fid's Inception when its weights are on disk, else the FD-classifier (a
      labelled dataset's own small CNN: not comparable with FID), between ``fid_samples`` prior samples and
      as many training images. ``metrics.json`` names which one under "sample_score" (never under "fid").
    Refuses to overwrite a metrics.json written for other run parameters.
    """
    p = check_params(params)
    out = Path(p["out_dir"])
    old = read_json(out / METRICS_FILE)
    if old is not None and param_diff(old.get("params", {}), p):
        raise _conflict(out, "metrics.json: " + "; ".join(param_diff(old["params"], p)))
    dev = device or p["device"]
    g, prior, cfg, history = load_checkpoint(out, device=dev)
    post = dict(n_steps=cfg.ld_steps, step_size=cfg.ld_step_size, sigma=cfg.sigma, batch_size=cfg.batch_size,
                seed=p["seed"])
    files = {"samples": "samples.png", "reconstructions": "reconstructions.png", "curves": "curves.png"}
    result = {"params": p, "epochs_trained": len(history["epoch_time"]), "n_stages": prior.n_stages,
              "train_images": len(train_data), "device": str(dev), "torch": torch.__version__, "date": _now(),
              "train_time_s": round(sum(history["epoch_time"]), 1), "files": files}
    sampler = f"prior Langevin from N(0, I): {p['sample_ld_steps']} steps of Eq. 3 with s={p['sample_ld_step_size']}"
    grid = sample_images(g, prior, 64, p["sample_ld_steps"], p["sample_ld_step_size"], seed=p["seed"])
    viz.save_grid(grid, out / files["samples"], nrow=8, title=f"{p['dataset']}: samples, {sampler}")
    viz.savefig(viz.plot_curves(history), files["curves"], folder=out, close=True)
    if test_data is not None:
        x = test_data.images[:p["n_test"]]
        xr = metrics.reconstruct(g, prior, x[:32], **post)
        viz.save_grid(torch.cat([x[:32], xr]), out / files["reconstructions"], nrow=16,
                      title=f"{p['dataset']}: test images (top two rows) and their reconstructions (bottom two)")
        result["mse"] = {"value": metrics.reconstruction_mse(g, prior, x, **post), "n_images": len(x),
                         "split": "test", "scale": MSE_SCALE,
                         "posterior": f"{cfg.ld_steps} steps of Eq. 3 with s={cfg.ld_step_size}, sigma={cfg.sigma}, "
                                      f"from N(0, I), under the learned prior ({prior.n_stages} stages)"}
    else:
        files.pop("reconstructions")
        result["mse"] = None
    result["sample_score"] = _sample_score(p, g, prior, train_data, out, dev, sampler) if p["fid_samples"] else None
    write_json(result, out / METRICS_FILE)
    return result


def _sample_score(p, g, prior, train_data, out, device, sampler) -> dict:
    n = min(p["fid_samples"], len(train_data))
    fake = sample_images(g, prior, p["fid_samples"], p["sample_ld_steps"], p["sample_ld_step_size"], seed=p["seed"] + 1)
    real = train_data.images[:n]
    common = {"n_generated": len(fake), "n_real": n, "reference": f"training split, first {n} images",
              "sampler": sampler}
    if metrics.fid_weights_available():
        from importlib.metadata import version
        return {"kind": "fid", "value": metrics.fid(real, fake, device=str(device)), **common,
                "library": f"pytorch-fid {version('pytorch-fid')} InceptionV3 (2048-d pool features, weights "
                           f"{metrics.FID_WEIGHTS_NAME}); comparable only with FIDs computed the same way"}
    if train_data.labels is None:
        return {"kind": None, "value": None, **common,
                "reason": "no FID weights on disk and no labels to train the FD-classifier; put "
                          f"{metrics.FID_WEIGHTS_NAME} where amdre.metrics.find_fid_weights looks "
                          f"(or set ${metrics.FID_WEIGHTS_ENV}) and re-run: the run resumes and only evaluates"}
    model = shared_fd_classifier(train_data, epochs=5, device=str(device))       # one per training set
    return {"kind": "fd_classifier", "value": metrics.fd_classifier_score(model, real, fake), **common,
            "library": "amdre.metrics FeatureClassifier (small CNN trained 5 epochs on this run's training set, "
                       "128-d features): NOT FID, comparable only between runs scored with the same classifier",
            "why": "pytorch-fid's Inception weights are not on disk (amdre never downloads them)"}
