"""Paper-scale runs (Sec. 5.1, App. A): run folders, the epoch log, evaluation and the command line.

One run = one folder (``out_dir``, e.g. ``runs/svhn/``) holding

* ``run.json``      the parameters that define the run (``amdre.train.PARAMS``, checked by ``check_params``);
* ``last.pt``, ``stage{k}.pt``   the Trainer's checkpoints (every epoch; at every stage's end);
* ``train.log``     one text line per epoch (losses, time, images/s), plus start / resume / stop lines;
* ``samples.png``, ``reconstructions.png``, ``curves.png``   grids of prior samples, test reconstructions
  (originals above, reconstructions below) and the training curves;
* ``metrics.json``  test reconstruction MSE and FID (or FD-classifier), saying how each was computed.

Running the same parameters again continues the run from ``last.pt`` (at most the unfinished epoch is
lost); different parameters on a folder that holds a run are refused before anything is written
(``prepare_run``), so neither checkpoints nor ``metrics.json`` of another configuration are overwritten.
The same pipeline runs from ``notebooks/05_paper_scale.ipynb`` (papermill) and from the command line:

    python -m amdre.train --config configs/svhn.yaml [--out-dir runs/svhn] [--epochs 100] [--device cuda] ...
    torchrun --standalone --nproc_per_node=8 -m amdre.train --config configs/svhn.yaml     # data-parallel
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import sys
import types
from dataclasses import asdict
from pathlib import Path

import torch

from . import distributed
from .train import (PARAMS, RESUMABLE_PARAMS, Trainer, check_params, config_diff, config_from_params,
                    load_checkpoint, load_preset)

RUN_FILE, METRICS_FILE, LOG_FILE = "run.json", "metrics.json", "train.log"
MSE_SCALE = "mean over test images and pixels of (x - g(z))^2 on the [-1, 1] pixel scale (x 1/4 for [0, 1])"
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


class RunConflict(ValueError):
    """The run folder holds a run of other parameters (or resume=False was asked on an existing run)."""


def notebook_params(namespace: dict) -> dict:
    """The run parameters in a notebook's globals: every public non-module, non-callable name.

    In notebook 05 only the parameters cell (and papermill's injected cell) run before this, so any
    other name found is a misspelt or unknown parameter, which ``check_params`` then reports.
    """
    return {k: v for k, v in namespace.items() if not k.startswith("_") and k not in _IPYTHON_NAMES
            and not isinstance(v, types.ModuleType) and not callable(v)}


def shown(path) -> str:
    """``path`` relative to the repo root when it lies inside it (for printing), else as it is."""
    from .paths import ROOT
    try:
        return str(Path(path).resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return str(path)


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _write_json(obj, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def param_diff(saved: dict, params: dict) -> list:
    """'name: saved -> now' for every run-defining parameter (not RESUMABLE_PARAMS) that differs."""
    return [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in params.items()
            if k not in RESUMABLE_PARAMS and saved.get(k, PARAMS[k][1]) != v]


def _conflict(out: Path, what: str) -> RunConflict:
    return RunConflict(f"{out} already holds a run with other parameters ({what}). Nothing was changed there. "
                       f"Run with that folder's parameters to continue it (they are in {out / RUN_FILE}), "
                       f"or choose another out_dir, or delete {out} to start over.")


def prepare_run(params: dict) -> Path:
    """Check that ``out_dir`` is free for these parameters, then record them in ``run.json``.

    Refuses (RunConflict) when the folder holds a run (a checkpoint or metrics) whose run-defining
    parameters differ, or when resume=False and the folder holds a run. Only rank 0 writes.
    Returns the folder.
    """
    p = check_params(params)
    out = Path(p["out_dir"])
    ckpt, saved = out / "last.pt", _read_json(out / RUN_FILE)
    has_run = ckpt.exists() or (out / METRICS_FILE).exists()
    if has_run and saved is not None:
        diff = param_diff(saved["params"], p)
        if diff:
            raise _conflict(out, "; ".join(diff))
    elif ckpt.exists():                                     # a Trainer's folder without run.json
        diff = config_diff(torch.load(ckpt, map_location="cpu", weights_only=True)["cfg"], config_from_params(p))
        if diff:
            raise _conflict(out, "TrainConfig differs in " + ", ".join(diff))
    if has_run and not p["resume"]:
        raise RunConflict(f"{out} already holds a run and resume=False would start it over. Nothing was changed. "
                          f"Set resume=True to continue it, or choose another out_dir, or delete {out}.")
    if distributed.world()[0] == 0:
        out.mkdir(parents=True, exist_ok=True)
        record = {"params": p, "created": (saved or {}).get("created", _now()), "updated": _now()}
        _write_json(record, out / RUN_FILE)
    return out


def load_data(params: dict):
    """(train, test) ImageData of a run: the first n_train training and n_test test examples (test None if 0)."""
    from .data import load

    p = check_params(params)
    kw = {"image_size": p["image_size"]} if p["dataset"] == "celeba" else {}
    train = load(p["dataset"], p["data_root"], "train", n=p["n_train"], **kw)
    test = load(p["dataset"], p["data_root"], "test", n=p["n_test"], **kw) if p["n_test"] else None
    return train, test


class EpochLog:
    """Appends time-stamped lines to a run's ``train.log``; ``log(trainer)`` writes the epoch just finished."""

    def __init__(self, path):
        self.path = Path(path)

    def write(self, text: str) -> None:
        if distributed.world()[0] == 0:
            with open(self.path, "a") as f:
                f.write(f"{_now()} {text}\n")

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

    Call ``prepare_run`` first. A non-finite loss or latent stops the run with a FloatingPointError that
    names the epoch, step, stage and last good checkpoint (the broken state is never saved); the same
    message goes to the log.
    """
    p = check_params(params)
    out, cfg = Path(p["out_dir"]), config_from_params(p)
    log = EpochLog(out / LOG_FILE)
    trainer = Trainer(cfg, train_data, out, resume=p["resume"], progress=p["progress"])
    rank, world = distributed.world()
    where = f"resuming at epoch {trainer.epoch}" if trainer.epoch else "starting"
    log.write(f"{where} of {cfg.epochs}: {p['dataset']} ({len(train_data)} images), generator {cfg.generator}, "
              f"{cfg.n_stages} stages every {cfg.stage_every} epochs, batch {cfg.batch_size} over {world} "
              f"process(es), device {trainer.device}, amp {cfg.amp}, compile {cfg.compile}")
    try:
        trainer.fit(callback=log)
    except FloatingPointError as err:
        log.write(f"STOPPED: {err}")
        raise
    log.write(f"done: {trainer.epoch} epochs, {trainer.prior.n_stages} stages")
    return trainer


def _grid(images: torch.Tensor, path: Path, nrow: int) -> Path:
    from torchvision.utils import save_image

    save_image(images.float().cpu(), path, nrow=nrow, normalize=True, value_range=(-1, 1), padding=1)
    return path


def plot_curves(history: dict, path=None):
    """Per-epoch means of the reconstruction error and of each stage's NCE loss; saved to ``path`` if given."""
    import matplotlib.pyplot as plt

    epochs = sorted(set(history["epoch"]))

    def per_epoch(key):
        return [sum(v for e2, v in zip(history["epoch"], history[key]) if e2 == e)
                / max(1, history["epoch"].count(e)) for e in epochs]

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    axes[0].plot([e + 1 for e in epochs], per_epoch("mse"), marker="o")
    axes[0].set(xlabel="epoch", ylabel="training MSE per pixel ([-1, 1])", yscale="log")
    stages = [history["stage"][history["epoch"].index(e)] for e in epochs]
    nce = per_epoch("nce_loss")
    for k in sorted(set(s for s in stages if s is not None)):
        axes[1].plot([e + 1 for e, s in zip(epochs, stages) if s == k], [v for v, s in zip(nce, stages) if s == k],
                     marker="o", label=f"stage {k}")
    axes[1].axhline(2 * math.log(2), color="gray", ls=":", lw=1)
    axes[1].set(xlabel="epoch", ylabel="NCE loss (Eq. 4)")
    if any(s is not None for s in stages):
        axes[1].legend(fontsize=8)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def evaluate_run(params: dict, train_data, test_data, device: str = None) -> dict:
    """Grids and ``metrics.json`` of the run's last checkpoint (rank 0's job).

    * MSE (Table 1): ``amdre.metrics.reconstruction_mse`` on the n_test test images, z from posterior
      Langevin from noise under the learned prior (ld_steps, ld_step_size, sigma of the run);
    * FID (Table 1) with pytorch-fid's Inception when its weights are on disk (``metrics.fid_weights_available``),
      else the FD-classifier (a labelled dataset's own small CNN: not comparable with FID), between
      ``fid_samples`` prior samples and as many training images; the json says which, and the counts.
    Refuses to overwrite a metrics.json written for other run parameters.
    """
    from . import metrics

    p = check_params(params)
    out = Path(p["out_dir"])
    old = _read_json(out / METRICS_FILE)
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
    grid = metrics.sample_images(g, prior, 64, p["sample_ld_steps"], p["sample_ld_step_size"], seed=p["seed"])
    _grid(grid, out / files["samples"], nrow=8)
    plot_curves(history, out / files["curves"])
    import matplotlib.pyplot as plt
    plt.close("all")
    if test_data is not None:
        x = test_data.images[:p["n_test"]]
        xr = metrics.reconstruct(g, prior, x[:32], **post)
        _grid(torch.cat([x[:32], xr]), out / files["reconstructions"], nrow=16)
        result["mse"] = {"value": metrics.reconstruction_mse(g, prior, x, **post), "n_images": len(x),
                         "split": "test", "scale": MSE_SCALE,
                         "posterior": f"{cfg.ld_steps} steps of Eq. 3 with s={cfg.ld_step_size}, sigma={cfg.sigma}, "
                                      f"from N(0, I), under the learned prior ({prior.n_stages} stages)"}
    else:
        files.pop("reconstructions")
        result["mse"] = None
    result["fid"] = _fid(p, g, prior, train_data, out, dev, metrics) if p["fid_samples"] else None
    _write_json(result, out / METRICS_FILE)
    return result


def _fid(p, g, prior, train_data, out, device, metrics) -> dict:
    n = min(p["fid_samples"], len(train_data))
    sampler = (f"prior Langevin from N(0, I): {p['sample_ld_steps']} steps of Eq. 3 with "
               f"s={p['sample_ld_step_size']}")
    fake = metrics.sample_images(g, prior, p["fid_samples"], p["sample_ld_steps"], p["sample_ld_step_size"],
                                 seed=p["seed"] + 1)
    real = train_data.images[:n]
    common = {"n_generated": len(fake), "n_real": n, "reference": f"training split, first {n} images",
              "sampler": sampler}
    if metrics.fid_weights_available():
        from importlib.metadata import version
        value = metrics.fid(real, fake, device=str(device))
        return {"kind": "fid", "value": value, **common,
                "library": f"pytorch-fid {version('pytorch-fid')} InceptionV3 (2048-d pool features, weights "
                           f"{metrics.FID_WEIGHTS_NAME}); comparable only with FIDs computed the same way"}
    if train_data.labels is None:
        return {"kind": None, "value": None, **common,
                "reason": "no FID weights on disk and no labels to train the FD-classifier; put "
                          f"{metrics.FID_WEIGHTS_NAME} where amdre.metrics.find_fid_weights looks "
                          f"(or set ${metrics.FID_WEIGHTS_ENV}) and re-run: the run resumes and only evaluates"}
    model = metrics.fd_classifier(train_data.images, train_data.labels, cache_path=out / "fd_classifier.pt",
                                  seed=p["seed"], device=str(device))
    value = metrics.fd_classifier_score(model, real, fake)
    return {"kind": "fd_classifier", "value": value, **common,
            "library": "amdre.metrics FeatureClassifier (small CNN trained 5 epochs on this run's training set, "
                       "128-d features): NOT FID, comparable only between runs scored with the same classifier",
            "why": "pytorch-fid's Inception weights are not on disk (amdre never downloads them)"}


# ------------------------------------------------------------------------------------------ command line
def _arg_type(types_):
    kinds = types_ if isinstance(types_, tuple) else (types_,)

    def parse(text: str):
        if None in kinds and text.lower() in ("none", "null"):
            return None
        if bool in kinds:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false; got {text!r}")
        for k in kinds:
            if k in (int, float):
                try:
                    return k(text)
                except ValueError:
                    continue
            elif k is str:
                return text
        raise argparse.ArgumentTypeError(f"expected {' or '.join('None' if k is None else k.__name__ for k in kinds)}; "
                                         f"got {text!r}")
    return parse


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m amdre.train", allow_abbrev=False,
        description="Train the adaptive multi-stage latent EBM (Xiao & Han 2022) at paper scale, resumably. "
                    "Also runs under torchrun --nproc_per_node=N (data-parallel).",
        epilog="Every option is a parameter of notebooks/05_paper_scale.ipynb; a YAML preset uses the same names "
               "with underscores. Options given here override the preset.")
    ap.add_argument("--config", help="preset: configs/<name>.yaml or a name (svhn, cifar10, celeba, celeba_hq, ci)")
    ap.add_argument("--no-eval", action="store_true", help="train only: no grids, no metrics.json")
    for name, (types_, default, meaning) in PARAMS.items():
        ap.add_argument("--" + name.replace("_", "-"), dest=name, type=_arg_type(types_), default=argparse.SUPPRESS,
                        metavar=name.upper(), help=f"{meaning} [default {default!r}]")
    return ap


def main(argv=None) -> int:
    """The command line (``python -m amdre.train``). Returns 0, 1 (training stopped on NaN/inf) or 2 (bad input)."""
    ap = _parser()
    args = vars(ap.parse_args(argv))
    try:
        values = load_preset(args.pop("config")) if args.get("config") else {}
        args.pop("config", None)
        no_eval = args.pop("no_eval")
        values.update(args)
        p = check_params(values)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if p["threads"]:
        torch.set_num_threads(p["threads"])
    rank, world = distributed.init(p["device"])
    try:
        code = _run(p, rank, no_eval)
    except (RunConflict, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    except FloatingPointError as err:
        print(f"training stopped: {err}", file=sys.stderr)
        code = 1
    gc.collect()                    # drop the DDP wrappers before their process group goes
    if code == 0:
        distributed.cleanup()
    elif world > 1:
        torch.distributed.destroy_process_group()
    return code


def _run(p: dict, rank: int, no_eval: bool) -> int:
    prepare_run(p)
    if rank > 0:                    # rank 0 loads first (and builds CelebA's cache once), then the others
        distributed.barrier()
    train, test = load_data(p)
    if rank == 0:
        distributed.barrier()
    trainer = train_run(p, train)
    if rank == 0:
        print(f"trained {trainer.epoch} epochs into {p['out_dir']}")
        if not no_eval:
            result = evaluate_run(p, train, test)
            mse = result["mse"]["value"] if result["mse"] else None
            fid = result["fid"] or {}
            print(f"test MSE {mse}; {fid.get('kind')} {fid.get('value')}; see {Path(p['out_dir']) / METRICS_FILE}")
    return 0
