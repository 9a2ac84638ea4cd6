"""The paper-scale run pipeline (Sec. 5.1, App. A): parameters, run folder, training with speed options, epoch
log and evaluation. Notebook 05 (papermill) and the command line (``python -m amdre``, ``amdre.__main__``) are
its two front ends.

One run = one folder (``out_dir``, e.g. ``runs/svhn/``) holding

* ``run.json``      the parameters that define the run (``PARAMS``: the fields of ``amdre.config.Config`` and the
  three ``INVOCATION`` options);
* ``last.pt``, ``stage{k}.pt``   the Trainer's checkpoints (every epoch; at every stage's end);
* ``train.log``     one text line per epoch (losses, time, images/s), plus start / resume / stop lines;
* ``samples.png``, ``reconstructions.png``, ``curves.png``   grids of prior samples, test reconstructions
  (originals above, reconstructions below) and the training curves;
* ``metrics.json``  test reconstruction MSE and FID or FD-classifier, saying which and how each was computed.

Running the same parameters again continues the run from ``last.pt`` (at most the unfinished epoch is
lost); different parameters on a folder that holds a run, other training data, or more training images than the
dataset has are refused before anything is written (``prepare_run``). One process at a time works in a run folder
(``run_lock``, ``amdre.files.lock_folder``: a second one is refused, naming the first). Speed and scale are
applied here, at the edge, around the Trainer's plain callables (``speed_up``: channels-last, bf16 autocast, a
compiled posterior; ``amdre.distributed`` under torchrun), as nanoGPT's train.py wraps its model.
"""
from __future__ import annotations

import contextlib
import datetime
import math
import signal
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from . import checkpoint, config, data, distributed, evaluation, files, paths
from .accel import Autocast, CompiledPosterior
from .checkpoint import read_checkpoint
from .experiments import run_dir
from .files import WriteError, read_json, write_json
from .nets import generator as make_generator
from .params import type_name, type_ok
from .torchutils import device as resolve_device
from .train import Trainer

RUN_FILE, METRICS_FILE, LOG_FILE = "run.json", "metrics.json", "train.log"

# How a run is started, beside what it is (amdre.config.Config): name -> (type, default, meaning).
INVOCATION = {
    "out_dir": (str, "", "run folder, relative to the repo root; '' = runs/05_paper_scale-<hash of the run's "
                         "parameters>"),
    "resume": (bool, True, "continue the run in out_dir if there is one (False: out_dir must hold no run)"),
    "init_from": (str, "", "a checkpoint of another run to start this new run from (same networks and stage "
                           "schedule; new learning rates and step sizes allowed); '' = start from scratch"),
}
# Every parameter of notebook 05, configs/*.yaml and the command line: name -> (types, default, meaning).
PARAMS = {**{n: (f.metadata["types"], f.default, f.metadata["meaning"]) for n, f in config.FIELDS.items()},
          **INVOCATION}
# Parameters that may change between invocations on one run folder: where it runs, how long, how it is evaluated.
RESUMABLE_PARAMS = config.RESUMABLE + tuple(INVOCATION)


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
    (papermill and YAML pass strings for values they cannot parse), values out of range, a stage schedule that
    would not build every stage (``amdre.config``), a generator that does not fit the dataset, a CUDA device on
    a machine without a GPU. The result has ``generator`` filled in, ``dataset`` normalised, ``betas`` a list, and
    ``out_dir`` / ``data_root`` / ``init_from`` as absolute paths (relative ones are relative to
    ``amdre.paths.root()``).
    """
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of parameter names to values; got {type(params).__name__}")
    problems = config.unknown_names(params, PARAMS)
    inv = {name: params.get(name, default) for name, (_, default, _) in INVOCATION.items()}
    for name, (types, default, meaning) in INVOCATION.items():
        if not type_ok(inv[name], types):
            problems.append(f"{name} must be {type_name(types)} ({meaning}); got {inv[name]!r}")
            inv[name] = default
    cfg = None
    try:
        cfg = config.from_dict({k: v for k, v in params.items() if k in config.FIELDS})
    except config.ConfigError as err:
        problems += err.problems
    if cfg is not None:
        made = make_generator(cfg.generator, 1, 1).out_shape
        want = data.shape(cfg.dataset, cfg.image_size)
        if made != want:
            problems.append(f"generator {cfg.generator!r} makes images of shape {made} but {cfg.dataset} images are "
                            f"{want}: leave generator='' to use the dataset's network")
        try:
            resolve_device(cfg.device)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise config.ConfigError(problems, "bad run parameter")
    p = {**{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}, **inv}
    if not p["out_dir"].strip():                                 # one folder per run-defining configuration
        p["out_dir"] = str(run_dir("05_paper_scale", cfg))
    for name in ("out_dir", "data_root", "init_from"):
        if p[name]:
            p[name] = str((paths.root() / p[name]).resolve())
    p["data_root"] = p["data_root"] or str(paths.data())
    return p


def config_from_params(params: dict) -> config.Config:
    """The ``Config`` of a run's parameters (checked by ``check_params``)."""
    p = check_params(params)
    return config.Config(**{k: p[k] for k in config.FIELDS})


def param_diff(saved: dict, params: dict) -> list:
    """'name: saved -> now' for every run-defining parameter (not RESUMABLE_PARAMS) that differs."""
    return [f"{k}: {saved[k]!r} -> {v!r}" for k, v in params.items()
            if k not in RESUMABLE_PARAMS and k in saved and saved[k] != v]


def _conflict(out: Path, what: str) -> RunConflict:
    last = shown(out / "last.pt")
    return RunConflict(f"{out} already holds a run with other parameters ({what}). Nothing was changed there. "
                       f"Run with that folder's parameters to continue it (they are in {out / RUN_FILE}), "
                       f"or choose another out_dir, or delete {out} to start over. To continue its training with other "
                       f"learning rates or step sizes, start a new run from its checkpoint: another out_dir and "
                       f"init_from={last} (--out-dir <new folder> --init-from {last}).")


@contextlib.contextmanager
def run_lock(params: dict, command: str = None):
    """Hold the run folder's lock for the block (rank 0; ``amdre.files.lock_folder``): another process that asks for
    it meanwhile is refused (``files.FolderLocked``, naming this one), nothing changed. The command line holds it for
    the whole run; ``prepare_run`` takes it too (for notebook 05: until the kernel ends)."""
    out = Path(check_params(params)["out_dir"])
    took = _take_lock(out, command)
    try:
        yield out
    finally:
        if took:
            files.unlock_folder(out)


_LOCK_NOTES = {}                                             # out_dir -> note of a stale lock taken over, for the log


def _take_lock(out: Path, command: str = None) -> bool:
    """Take ``out``'s lock unless this process holds it or is not rank 0; whether it was taken now."""
    if distributed.world()[0] != 0 or files.holds_lock(out):
        return False
    note = files.lock_folder(out, command)
    if note:
        _LOCK_NOTES[out] = note
    return True


def prepare_run(params: dict, train_data=None) -> Path:
    """Take the run folder's lock (``run_lock``), check that ``out_dir`` may hold this run, then record it in
    ``run.json``; returns the folder.

    Refuses, writing nothing (RunConflict, ValueError, DamagedCheckpoint), when the folder holds a run (a
    checkpoint or metrics) whose run-defining parameters differ, when resume=False and the folder holds a run, when
    fewer epochs are asked for than were trained, when its checkpoint was written by a newer amdre or on other
    training data, and when n_train asks for more images than the dataset has. ``train_data`` is the run's training
    set (``load_data``); without it, it is loaded here to be checked. Only rank 0 writes; it also removes the
    temporary files of a writer that was killed mid-write (``files.remove_stale_temps``), saying so in train.log.
    """
    p = check_params(params)
    out = Path(p["out_dir"])
    took = _take_lock(out)
    try:
        _check_folder(p, out, train_data)
    except BaseException:
        if took:
            files.unlock_folder(out)
        raise
    if distributed.world()[0] == 0:
        saved = read_json(out / RUN_FILE)
        record = {"params": p, "created": (saved or {}).get("created", _now()), "updated": _now()}
        write_json(record, out / RUN_FILE)
        removed = files.remove_stale_temps(out)
        notes = [_LOCK_NOTES.pop(out, "")] + ([f"removed {len(removed)} temporary file(s) of a process killed while "
                                               f"writing: {', '.join(removed)}"] if removed else [])
        for note in filter(None, notes):
            print(f"note: {note}", file=sys.stderr)
            EpochLog(out / LOG_FILE).write(f"NOTE: {note}")
    return out


def _check_folder(p: dict, out: Path, train_data) -> None:
    """``prepare_run``'s refusals (see there), before anything is written."""
    ckpt, saved = out / "last.pt", read_json(out / RUN_FILE)
    has_run = read_json(out / METRICS_FILE) is not None or ckpt.exists()          # a damaged one: say so now
    if has_run and saved is not None:
        diff = param_diff(saved["params"], p)
        if diff:
            raise _conflict(out, "; ".join(diff))
    state = read_checkpoint(ckpt) if ckpt.exists() else None
    cfg = config_from_params(p)
    if state is not None:
        config.from_saved(state["cfg"], ckpt)                 # written by a newer amdre: say so first
        diff = config.diff(state["cfg"], cfg)
        if diff and saved is None:
            raise _conflict(out, "the checkpoint's configuration differs in " + "; ".join(diff))
        if state["epoch"] > p["epochs"]:
            raise RunConflict(f"{out} has already trained {state['epoch']} epochs, more than epochs={p['epochs']}. "
                              f"Nothing was changed. Set epochs >= {state['epoch']} to continue it (or to evaluate "
                              f"it as it is), or choose another out_dir.")
    start = read_checkpoint(p["init_from"]) if p["init_from"] and state is None else None
    if has_run and not p["resume"]:
        raise RunConflict(f"{out} already holds a run and resume=False would start it over. Nothing was changed. "
                          f"Set resume=True to continue it, or choose another out_dir, or delete {out}.")
    train = train_data if train_data is not None else _load(p, "train", p["n_train"])
    if p["n_train"] is not None and len(train) < p["n_train"]:
        raise ValueError(f"n_train={p['n_train']} but {p['dataset']} has {len(train):,} training images (read from "
                         f"{train.source or 'memory'}): set n_train to at most {len(train)} or None (all). Nothing "
                         f"was written.")
    if state is not None:
        checkpoint.check(state, cfg, train, ckpt, new_run=False)      # the same data, among others
    elif start is not None:
        checkpoint.check(start, cfg, train, p["init_from"], new_run=True)


def load_data(params: dict):
    """(train, test) ImageData of a run: the first n_train training and n_test test examples (test None if 0)."""
    p = check_params(params)
    return _load(p, "train", p["n_train"]), _load(p, "test", p["n_test"]) if p["n_test"] else None


def _load(p: dict, split: str, n):
    kw = {"image_size": p["image_size"]} if p["dataset"] == "celeba" else {}
    return data.load(p["dataset"], p["data_root"], split, n=n, **kw)


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


@contextlib.contextmanager
def stop_on_sigterm():
    """Inside the block, SIGTERM (a batch system's stop, ``kill``) stops the run as Ctrl-C does: a KeyboardInterrupt
    that leaves a STOPPED line in train.log; the checkpoint written last is intact (files are replaced atomically)."""
    def stop(signum, frame):
        raise KeyboardInterrupt("stopped by SIGTERM")
    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:                                        # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def speed_up(trainer: Trainer) -> Trainer:
    """The run's speed options around the Trainer's plain callables, as nanoGPT's train.py wraps its model:
    channels-last generator weights, the generator under bf16 autocast (the losses and the posterior run through
    ``trainer.g``), and the posterior chain compiled by torch.compile (CUDA graphs on a GPU). The Trainer itself
    never sees these options; with all of them off (the CPU default) this changes nothing."""
    cfg = trainer.cfg
    if cfg.channels_last:
        trainer.generator.to(memory_format=torch.channels_last)
    if cfg.amp:
        trainer.g = Autocast(trainer.generator)
    if cfg.compile:
        trainer.posterior = CompiledPosterior(trainer.g, trainer.prior, cfg.ld_steps, cfg.ld_step_size, cfg.sigma)
    return trainer


def make_trainer(cfg, train_data, out, resume: bool = True, init_from=None) -> Trainer:
    """The Trainer of a run, data-parallel under torchrun (``amdre.distributed``), with its speed options."""
    kind = distributed.DataParallelTrainer if distributed.world()[1] > 1 else Trainer
    return speed_up(kind(cfg, train_data, out, resume=resume, init_from=init_from))


def train_run(params: dict, train_data) -> Trainer:
    """Train (or continue) the run of ``params`` in its out_dir, logging every epoch to ``train.log``.

    Call ``prepare_run`` first. A non-finite loss stops the run with a FloatingPointError that names the
    epoch, batch, stage and last good checkpoint (the broken state is never saved); a file that cannot be
    written (disk full, read-only folder) stops it with a WriteError. Both go to the log as a STOPPED line.
    """
    p = check_params(params)
    out, cfg = Path(p["out_dir"]), config_from_params(p)
    log = EpochLog(out / LOG_FILE)
    trainer = make_trainer(cfg, train_data, out, resume=p["resume"],
                           init_from=None if (out / "last.pt").exists() else (p["init_from"] or None))
    world = distributed.world()[1]
    where = (f"resuming after epoch {trainer.epoch}" if trainer.last_checkpoint else
             f"starting from {p['init_from']}, after epoch {trainer.epoch}" if trainer.init_from else "starting")
    log.write(f"{where} of {cfg.epochs}: {p['dataset']} ({len(train_data)} images), generator {cfg.generator}, "
              f"{cfg.schedule()}, batch {cfg.batch_size} over {world} process(es), device {trainer.device}, "
              f"amp {cfg.amp}, compile {cfg.compile}")
    try:
        trainer.fit(callback=log)
    except (FloatingPointError, WriteError, KeyboardInterrupt) as err:
        what = str(err) if not isinstance(err, KeyboardInterrupt) else (
            f"{str(err) or 'interrupted (Ctrl-C)'} during epoch {trainer.epoch + 1}; last.pt holds epoch "
            f"{trainer.saved_epoch}, and the same command continues from there")
        try:
            log.write(f"STOPPED: {what}")
        except WriteError:
            pass                                              # the disk is full: the error itself says so
        raise
    log.write(f"done: {trainer.epoch} epochs, {trainer.prior.n_stages} stages")
    return trainer


def evaluate_run(params: dict, train_data, test_data, device: str = None) -> dict:
    """Grids and ``metrics.json`` of the run's last checkpoint (rank 0's job): ``amdre.evaluation.evaluate``, the
    test reconstruction MSE beside the mean test image's and a sample score (FID or the FD-classifier).

    Refuses to overwrite a metrics.json written for other run parameters. A run whose test MSE is no better than the
    mean test image's (its training went wrong) gets a WARNING line in train.log and on stderr, and its metrics.json
    says so ("warnings", "mse_vs_mean_image"); it is still a finished run (the command line exits 0).
    """
    p = check_params(params)
    out = Path(p["out_dir"])
    old = read_json(out / METRICS_FILE)
    if old is not None and param_diff(old.get("params", {}), p):
        raise _conflict(out, "metrics.json: " + "; ".join(param_diff(old["params"], p)))
    result = evaluation.evaluate(p, out, train_data, test_data, device or p["device"])
    for warning in result.get("warnings", []):
        print(f"WARNING: {warning}", file=sys.stderr)
        EpochLog(out / LOG_FILE).write(f"WARNING: {warning}")
    write_json(result, out / METRICS_FILE)
    return result
