"""The paper's experiments end to end, beside its numbers: Table 2's held-out-class protocol (notebook 06),
Table 3's stage ablation (notebook 07), the teaching model of notebooks 03/08, and one run folder per configuration.

The notebooks write the core loop of each experiment in their own cells from the package's primitives;
the drivers here run the same loops for papermill-sized grids and are tested against them.
"""
import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import metrics, paths
from .anomaly import chance_auprc, format_mean_std, heldout_split, repeated_auprc
from .config import FIELDS, Config
from .data import ImageData
from .prior import EBMPrior
from .samplers import aggregate_posterior
from .torchutils import module_device
from .train import train
from .tre import tre_prior

# ---------------------------------------------------------------- the paper's reference numbers
# Table 2 (MNIST, held-out digit, AUPRC; mean ± std where the paper gives one; the baselines are quoted
# by the paper from Pang et al. 2020a). Keys: method -> {digit: (mean, std or None)}.
PAPER_TABLE2_AUPRC = {
    "VAE": {1: (0.063, None), 4: (0.337, None), 5: (0.325, None), 7: (0.148, None), 9: (0.104, None)},
    "ABP": {1: (0.095, 0.03), 4: (0.138, 0.04), 5: (0.147, 0.03), 7: (0.138, 0.02), 9: (0.102, 0.03)},
    "MEG": {1: (0.281, 0.04), 4: (0.401, 0.06), 5: (0.402, 0.06), 7: (0.290, 0.04), 9: (0.342, 0.03)},
    "BiGAN-σ": {1: (0.287, 0.02), 4: (0.443, 0.03), 5: (0.514, 0.03), 7: (0.347, 0.02), 9: (0.307, 0.03)},
    "LEBM": {1: (0.336, 0.01), 4: (0.630, 0.02), 5: (0.619, 0.01), 7: (0.463, 0.01), 9: (0.413, 0.01)},
    "Adaptive CE": {1: (0.531, 0.02), 4: (0.729, 0.02), 5: (0.742, 0.01), 7: (0.620, 0.02), 9: (0.499, 0.01)},
}

# Table 3 (CelebA 64x64, FID, 4 stages in the main runs): {"adaptive" | "non-adaptive": {n_stages: FID}}.
PAPER_TABLE3_FID = {
    "adaptive": {0: 62.78, 1: 44.17, 2: 39.85, 4: 35.38, 8: 35.84},
    "non-adaptive": {0: 62.78, 1: 43.84, 2: 42.61, 4: 42.48, 8: 43.06},
}


# ---------------------------------------------------------------- the held-out-class protocol, end to end (notebook 06)
ANOMALY_MODELS = ("multi-stage", "gaussian", "non-adaptive")


def heldout_class_experiment(data, heldout_class: int, cfg, out_dir, eval_seeds=(0, 1, 2), n_train: int = None,
                             test_fraction: float = 0.2, split_seed: int = 42, eval_ld_steps: int = None,
                             eval_batch_size: int = 500, resume: bool = True, progress: bool = False) -> dict:
    """One column of Table 2: train on the normal classes of ``data``, score held-out normals + anomalies.

    Split (``heldout_split``): the examples of every class except ``heldout_class`` are shuffled with
    ``split_seed``; ``test_fraction`` of them are test normals, the rest the training set (of which a
    seeded random ``n_train`` are kept when given); every example of ``heldout_class`` is a test anomaly.

    Two training runs on the same training set, both checkpointed under ``out_dir`` (re-running loads them):

    * ``cfg`` (an ``amdre.config.Config``, adaptive): the multi-stage prior ("multi-stage");
    * the same config with ``adaptive=False``: its generator is trained under N(0, I) for all epochs,
      scored with the N(0, I) prior ("gaussian", the 0-stage model) and with its post-hoc TRE prior of
      ``cfg.n_stages`` ratios ("non-adaptive", Sec. 5.5).

    Each model is scored by ``repeated_auprc`` over ``eval_seeds`` (posterior Langevin of ``eval_ld_steps``
    steps, default ``cfg.ld_steps``, with the model's step size and sigma), with the AUPRC of each score term.
    Returns a dict: ``chance``, ``n_train``, ``n_test``, ``n_anomalies``, ``train_seconds`` and ``models``:
    {name: {"auprc": [...], "auprc_reconstruction": [...], "auprc_prior": [...], "train_mse": float}}.
    """
    labels = getattr(data, "labels", None)
    if labels is None:
        raise ValueError("the held-out-class protocol needs a labelled dataset (amdre.data.load(...) of MNIST-like data)")
    train_idx, test_idx, is_anomaly = heldout_split(labels, heldout_class, test_fraction, split_seed)
    if n_train is not None:
        if not (isinstance(n_train, int) and 0 < n_train <= len(train_idx)):
            raise ValueError(f"n_train must be an int in 1..{len(train_idx)} (the normal training examples); got {n_train!r}")
        keep = np.random.default_rng(split_seed).permutation(len(train_idx))[:n_train]
        train_idx = np.sort(train_idx[keep])
    idx = torch.from_numpy(train_idx)
    train_set = ImageData(data.images[idx], labels[idx], f"{getattr(data, 'name', 'data')}-without-{heldout_class}")
    x_test = data.images[torch.from_numpy(test_idx)]
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    adaptive = train(replace(cfg, adaptive=True, progress=progress), train_set,
                     out_dir / f"heldout{heldout_class}-adaptive", resume=resume)
    gaussian = train(replace(cfg, adaptive=False, progress=progress), train_set,
                     out_dir / f"heldout{heldout_class}-gaussian", resume=resume)
    train_seconds = time.perf_counter() - t0
    ld = dict(n_steps=cfg.ld_steps if eval_ld_steps is None else eval_ld_steps, step_size=cfg.ld_step_size,
              sigma=cfg.sigma, batch_size=eval_batch_size)
    models = {}
    n01 = EBMPrior(cfg.nz).to(gaussian.device)                   # no stages: N(0, I)
    for name, trainer, prior in (("multi-stage", adaptive, adaptive.prior), ("gaussian", gaussian, n01),
                                 ("non-adaptive", gaussian, gaussian.prior)):
        res = repeated_auprc(trainer.generator, prior, x_test, is_anomaly, seeds=eval_seeds, terms=True, **ld)
        res["train_mse"] = float(np.mean(trainer.history["mse"][-len(trainer.batches()):]))
        models[name] = res
    return {"chance": chance_auprc(is_anomaly), "n_train": len(train_idx), "n_test": len(test_idx),
            "n_anomalies": int(is_anomaly.sum()), "train_seconds": train_seconds, "models": models}


def anomaly_table(results: dict, key: str = "auprc", paper: dict = None, class_names: dict = None):
    """A pandas DataFrame in Table 2's layout: one row per method, one column per held-out class.

    ``results`` maps a held-out class to a ``heldout_class_experiment`` result; cells are "mean ± std"
    over the repeats of ``key`` ("auprc", "auprc_reconstruction" or "auprc_prior"), with a "mean"
    column (mean over classes) and a "chance" row. ``paper`` (e.g. ``PAPER_TABLE2_AUPRC``) adds the
    paper's rows, prefixed "paper:", for the classes it reports.
    """
    if not results:
        raise ValueError("results is empty")
    classes = list(results)
    names = {c: (class_names or {}).get(c, str(c)) for c in classes}
    rows = {}
    for model in next(iter(results.values()))["models"]:
        cells = {names[c]: format_mean_std(results[c]["models"][model][key]) for c in classes}
        cells["mean"] = f"{np.mean([np.mean(results[c]['models'][model][key]) for c in classes]):.3f}"
        rows[f"ours: {model}"] = cells
    rows["chance (anomaly fraction)"] = {**{names[c]: f"{results[c]['chance']:.3f}" for c in classes},
                                         "mean": f"{np.mean([results[c]['chance'] for c in classes]):.3f}"}
    for method, row in (paper or {}).items():
        cells = {names[c]: (f"{row[c][0]:.3f}" + (f" ± {row[c][1]:.2f}" if row[c][1] is not None else ""))
                 for c in classes if c in row}
        if cells:
            if all(c in row for c in classes):
                cells["mean"] = f"{np.mean([row[c][0] for c in classes]):.3f}"
            rows[f"paper: {method}"] = cells
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=[names[c] for c in classes] + ["mean"]).fillna("")


# ---------------------------------------------------------------- the stage ablation, end to end (notebook 07, Table 3)
def parameter_count(module) -> int:
    """Number of parameters of a module (0 for None)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def stage_ablation(data, stages, cfg, out_dir, score, resume: bool = True, progress: bool = False) -> dict:
    """Table 3's grid: number of stages m x adaptive / non-adaptive training, each model scored by ``score``.

    * **adaptive, m >= 1**: one run of ``cfg`` with ``n_stages = m`` and ``stage_every = cfg.epochs // m``,
      so that every m trains for the same ``cfg.epochs`` (the paper: 100 epochs, a stage every 25 for m = 4;
      when m does not divide the epochs the last stage also gets the remainder, e.g. 12 + 16 epochs for m = 8).
    * **non-adaptive**: the generator is trained under N(0, I) for all ``cfg.epochs``, whatever m is
      (``adaptive=False``), so one run serves every m; its prior for m stages is TRE (Eq. 5) with m ratios
      on one posterior bank of the training data (``amdre.tre.tre_prior``; the run's own TRE for the largest m).
    * **m = 0** (both rows): that Gaussian-prior generator with the N(0, I) prior.

    Runs are checkpointed under ``out_dir`` (``adaptive-m{m}``, ``gaussian``) and loaded when re-run.
    ``score(generator, prior)`` returns a dict of numbers (for m = 0 the prior has no stages: N(0, I)). Returns
    {"adaptive": {m: score}, "non-adaptive": {m: score}, "seconds": {run: training seconds}}.
    """
    stages = sorted(set(stages))
    if not stages or any(not isinstance(m, int) or isinstance(m, bool) or m < 0 for m in stages):
        raise ValueError(f"stages must be non-negative ints; got {stages!r}")
    bad = [m for m in stages if m > cfg.epochs]
    if bad:
        raise ValueError(f"every m needs at least one epoch per stage: cfg.epochs = {cfg.epochs} < m for m in {bad}")
    out_dir = Path(out_dir)
    positive = [m for m in stages if m > 0]
    seconds = {}
    t0 = time.perf_counter()
    gauss = train(replace(cfg, adaptive=False, n_stages=max(positive, default=1), stage_every=cfg.epochs,
                          progress=progress), data, out_dir / "gaussian", resume=resume)
    seconds["gaussian"] = time.perf_counter() - t0
    results = {"adaptive": {}, "non-adaptive": {}, "seconds": seconds}
    if 0 in stages:
        s0 = score(gauss.generator, EBMPrior(cfg.nz).to(module_device(gauss.generator)))
        results["adaptive"][0] = results["non-adaptive"][0] = s0
    bank = None
    for m in positive:
        if m == gauss.prior.n_stages:
            prior = gauss.prior
        else:
            if bank is None:                                     # one aggregate-posterior sample serves every m
                bank = aggregate_posterior(gauss.generator, EBMPrior(cfg.nz).to(gauss.device), data, cfg.ld_steps,
                                           cfg.ld_step_size, cfg.sigma, batch_size=max(cfg.batch_size, 256),
                                           seed=cfg.seed).cpu()
            prior = tre_prior(bank, m, steps=cfg.tre_steps, lr=cfg.tre_lr, seed=cfg.seed)
        results["non-adaptive"][m] = score(gauss.generator, prior)
    for m in positive:
        t0 = time.perf_counter()
        run = train(replace(cfg, adaptive=True, n_stages=m, stage_every=cfg.epochs // m, progress=progress), data,
                    out_dir / f"adaptive-m{m}", resume=resume)
        seconds[f"adaptive-m{m}"] = time.perf_counter() - t0
        run.generator.requires_grad_(False)
        run.prior.requires_grad_(False)
        results["adaptive"][m] = score(run.generator, run.prior)
    return results


def ablation_table(results: dict, key: str, paper: dict = None, digits: int = 2):
    """A pandas DataFrame in Table 3's layout: rows (method, m), a column per seed's ``key`` and, for several seeds,
    their mean and standard deviation (ddof 1), from ``{seed: stage_ablation(...)}``; ``paper`` (e.g.
    ``PAPER_TABLE3_FID``) adds a "paper FID (CelebA)" column."""
    if not results:
        raise ValueError("results is empty")
    seeds = list(results)
    rows = []
    for method in ("adaptive", "non-adaptive"):
        for m in sorted(results[seeds[0]][method]):
            vals = [results[s][method][m][key] for s in seeds]
            row = {"method": method, "stages": m, **{f"{key} (seed {s})": round(v, digits) for s, v in zip(seeds, vals)}}
            if len(seeds) > 1:
                row[f"{key} (mean)"] = round(float(np.mean(vals)), digits)
                row[f"{key} (std)"] = round(float(np.std(vals, ddof=1)), digits)
            if paper is not None:
                row["paper FID (CelebA)"] = paper.get(method, {}).get(m, float("nan"))
            rows.append(row)
    return pd.DataFrame(rows).set_index(["method", "stages"])


# ---------------------------------------------------------------- run folders and the teaching model
def run_dir(prefix: str, cfg, **extra) -> Path:
    """``runs/{prefix}-{tag}``: a run folder of its own for each configuration (``amdre.paths.runs()``).

    ``tag`` is 8 hex digits of a hash of ``cfg`` (an ``amdre.config.Config``: its run-defining fields and
    ``epochs``, not where it runs or how it is evaluated) and of ``extra`` (what else decides the run, e.g. the
    training set's size). A notebook re-run with the same parameters finds its checkpoints; one with other
    parameters trains into a new folder instead of refusing to resume or mixing two runs.
    """
    fields = {k: v for k, v in asdict(cfg).items() if FIELDS[k].metadata["role"] in ("run", "length")}
    what = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    what.update({f"extra:{k}": v for k, v in extra.items()})
    tag = hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return paths.runs() / f"{prefix}-{tag}"


def shared_fd_classifier(labelled: ImageData, epochs: int = 3, device: str = "cpu", folder=None):
    """The FD-classifier's feature network trained on ``labelled`` (seed 0), cached in
    ``{folder}/fd_classifier-{name}-n{N}-e{epochs}.pt``: every run scored on the same training set uses one and the
    same network (notebooks 03, 07, 08 and the paper-scale evaluation), so their scores compare.

    ``folder`` defaults to ``runs/`` (``amdre.paths.runs()``, the notebooks' runs); the paper-scale evaluation
    passes its run folder's parent, so the cache lies beside the run folders it serves (``runs/`` for the
    default out_dir) and never in the working directory's ``runs/`` for a run kept elsewhere. The cache is derived
    data: a damaged one is retrained and rewritten, one that cannot be written is skipped (both with a warning;
    ``metrics.fd_classifier``).
    """
    cache = Path(folder or paths.runs()) / f"fd_classifier-{labelled.name}-n{len(labelled)}-e{epochs}.pt"
    return metrics.fd_classifier(labelled.images, labelled.labels, cache_path=cache, epochs=epochs, seed=0,
                                 device=device)


# The paper's settings (App. A.3, SVHN and CelebA) in this repository's conventions, beside which every notebook
# shows its own (``settings_table``).
PAPER_SETTINGS = {
    "dataset": "SVHN / CelebA (40k) / CIFAR-10", "n_train": "all (CelebA: 40,000)", "generator": "Table 5 (convolutional)",
    "nz": "100 (CIFAR-10: 128)", "ngf": "not stated (LEBM: 64)", "epochs": "100 (CIFAR-10: 200)", "n_stages": "4",
    "stage_every": "25 (CIFAR-10: 50)", "batch_size": "100", "ld_steps": "30 (CIFAR-10: 40)",
    "ld_step_size": "0.01 (its '0.1', LEBM's convention)", "sigma": "0.3 (LEBM's)", "lr_g": "1e-4", "lr_ebm": "5e-5",
    "betas": "(0.5, 0.999) (LEBM's)", "prior_sampling": "memory (persistent bank)",
    "prior_ld_steps": "- (LEBM: 60)", "prior_ld_step_size": "- (LEBM: 0.16, its 0.4)",
}
# Why a CPU-sized run differs from the paper, for the settings that usually do (a notebook may give its own reason).
WHY = {
    "dataset": "loads on a fresh machine (no download)", "n_train": "a few CPU minutes",
    "generator": "28x28 grey images: a small MLP (Table 5 is for 32x32 colour images)",
    "nz": "a small model", "ngf": "a small model", "epochs": "minutes of CPU, not GPU-days",
    "stage_every": "epochs / n_stages, as the paper's 100 / 4", "lr_g": "short runs take larger steps",
    "lr_ebm": "short stages take larger steps",
    "prior_sampling": "prior Langevin samples the current prior; the bank assumes the last ratio exact (03, 07)",
    "prior_ld_steps": "30 scored as well as LEBM's 60 at half the cost (03)",
}


def _same(ours, theirs: str) -> bool:
    try:
        return float(ours) == float(theirs)
    except (TypeError, ValueError):
        return str(ours).replace(" ", "") == theirs.replace(" ", "") or (isinstance(ours, tuple) and str(
            ours).startswith(theirs.rstrip(",")))


def settings_table(cfg, names=None, why=None):
    """This run's settings beside the paper's (``PAPER_SETTINGS``) and why they differ (``WHY``, updated by
    ``why``), as a pandas DataFrame with one row per name of ``names`` (default: those the paper sets)."""
    values = asdict(cfg) if not isinstance(cfg, dict) else cfg
    reasons = {**WHY, **(why or {})}
    rows = {}
    for name in names or PAPER_SETTINGS:
        ours, theirs = values.get(name, "-"), PAPER_SETTINGS.get(name, "-")
        same = _same(ours, theirs.split(" ")[0])
        rows[name] = {"this notebook": ours, "the paper (App. A.3)": theirs, "why": "" if same else reasons.get(name, "")}
    return pd.DataFrame.from_dict(rows, orient="index")


TEACHING_DATASETS = ("fashion12k", "mnist5k")   # 28x28 grey sets that load on a fresh machine (amdre.data)
TEACHING_N_TRAIN = 1500                     # the model of notebook 03 trains on the first 1,500 training images


def teaching_config(seed: int = 0, **changes) -> Config:
    """The latent-EBM model of notebook 03, which notebook 08 loads: its one definition.

    The "mnist-mlp" generator (nz = 16, hidden layers of 16 ngf = 256 units), 16 epochs on the first
    ``TEACHING_N_TRAIN`` training images with a new stage every 4 (4 stages), 30 posterior Langevin steps of Eq. 3's
    s = 0.01, learning rates 1e-3 (the paper's 1e-4 and 5e-5 are for 100 epochs), and prior samples for NCE by
    short-run prior Langevin: 30 steps of s = 0.16 (LEBM's prior sampler takes 60 of its 0.4; 30 scored at least as
    well in our runs, seeds 0-2, at half the cost). ``changes`` override any ``Config`` field, e.g.
    ``teaching_config(0, prior_sampling="memory")`` for the paper's memory bank.
    """
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise ValueError(f"teaching_config: no Config field named {', '.join(map(repr, unknown))}; "
                         f"the fields: {', '.join(FIELDS)}")
    base = dict(dataset="fashion12k", n_train=TEACHING_N_TRAIN, generator="mnist-mlp", nz=16, ngf=16, epochs=16,
                n_stages=4, stage_every=4, batch_size=100, ld_steps=30, ld_step_size=0.01, sigma=0.3, lr_g=1e-3,
                lr_ebm=1e-3, prior_sampling="langevin", prior_ld_steps=30, prior_ld_step_size=0.16, seed=seed,
                progress=False)
    return Config(**{**base, **changes})


def parse_changes(text: str) -> dict:
    """Keyword arguments written as text, as a notebook parameter carries them: "prior_sampling='memory', epochs=20"
    -> {"prior_sampling": "memory", "epochs": 20}; "" -> {}. Values must be Python literals."""
    import ast

    if not isinstance(text, str):
        raise ValueError(f"changes must be a string of keyword arguments like \"epochs=20\"; got {text!r}")
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        if call.args:
            raise ValueError("positional values")
        if any(kw.arg is None for kw in call.keywords):
            raise ValueError("**-unpacking")
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError, TypeError) as err:
        if isinstance(err, ValueError) and "malformed" in str(err):
            err = "values must be literals: quote strings"
        raise ValueError(f"changes must be keyword arguments with literal values, like \"prior_sampling='memory', "
                         f"epochs=20\"; got {text!r} ({err})") from None
