"""Anomaly detection (Sec. 5.2, Table 2): the score, AUPRC, and the held-out-class split.

score(x) = ||x - g(z)||^2 / (2 sigma^2) - log p_phi(z), the negative log joint density up to constants,
with z from posterior Langevin (``amdre.samplers.posterior_batches``); *higher = more anomalous*. AUPRC is
the trapezoidal area under scikit-learn's ``precision_recall_curve``, with the anomalies as the positive
class (as a public re-implementation of the MNIST protocol of Zenati et al. 2018 does).
"""
from __future__ import annotations

import numpy as np
import torch

from .density import log_likelihood
from .samplers import posterior_batches


def anomaly_score_terms(generator, prior, images, n_steps: int = 30, step_size: float = 0.01,
                        sigma: float = 0.3, batch_size: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of the anomaly score, each [N] (CPU): (reconstruction, prior).

        reconstruction = ||x - g(z)||^2 / (2 sigma^2) = -log p_theta(x|z) + const    (``log_likelihood``)
        prior          = -log p_phi(z)               (``-prior.log_prob(z)``; ||z||^2/2 for a prior with no stages)

    with z from noise-initialised posterior Langevin on x (seeded), so one can see which term separates
    the anomalies.
    """
    def terms(x, z):
        return torch.stack([-log_likelihood(generator, x, z, sigma), -prior.log_prob(z)]).cpu()

    both = torch.cat(posterior_batches(generator, prior, images, n_steps, step_size, sigma, batch_size, seed, terms), 1)
    return both[0], both[1]


def anomaly_scores(generator, prior, images, n_steps: int = 30, step_size: float = 0.01,
                   sigma: float = 0.3, batch_size: int = 100, seed: int = 0) -> torch.Tensor:
    """Per-image anomaly score [N] (CPU): **higher = more anomalous**.

        score(x) = ||x - g(z)||^2 / (2 sigma^2) - log p_phi(z)  =  -log p(x, z) + const,

    the sum of ``anomaly_score_terms``. The paper calls a higher log joint density "more normal"; this is
    its negative, so the anomalies are the positive class for ``auprc``. z comes from the same noisy
    short-run sampler as in training, so the score depends on the seed: report mean +/- std over seeds.
    """
    rec, pri = anomaly_score_terms(generator, prior, images, n_steps, step_size, sigma, batch_size, seed)
    return rec + pri


def _binary_inputs(scores, is_anomaly) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, np.float64)
    y = np.asarray(is_anomaly.detach().cpu() if isinstance(is_anomaly, torch.Tensor) else is_anomaly)
    if s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"scores and is_anomaly must be 1-D of the same length; got {s.shape} and {y.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("is_anomaly must hold 0/1 or booleans")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("is_anomaly must contain both anomalies and normal examples")
    return s, y


def auprc(scores, is_anomaly) -> float:
    """Area under the precision-recall curve, anomalies = positive class, higher score = more anomalous.

    Computed as ``sklearn.metrics.auc(recall, precision)`` over ``precision_recall_curve`` (the
    trapezoidal rule), as the public re-implementation of the MNIST protocol does. This is slightly
    above ``average_precision_score`` (the step-wise sum): the two differ, so say which one a
    number uses. Random scores give about ``chance_auprc(is_anomaly)``.
    """
    from sklearn.metrics import auc, precision_recall_curve

    s, y = _binary_inputs(scores, is_anomaly)
    precision, recall, _ = precision_recall_curve(y, s)
    return float(auc(recall, precision))


def chance_auprc(is_anomaly) -> float:
    """AUPRC of an uninformative score: the fraction of anomalies."""
    y = np.asarray(is_anomaly.cpu() if isinstance(is_anomaly, torch.Tensor) else is_anomaly)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError("is_anomaly must be a non-empty 1-D array")
    return float(y.astype(bool).mean())


def heldout_split(labels, heldout_digit: int, test_fraction: float = 0.2, seed: int = 42):
    """Train/test split of the MNIST anomaly protocol (Sec. 5.2; Zenati et al. 2018).

    The examples of every class other than ``heldout_digit`` ("normal") are shuffled with
    ``np.random.default_rng(seed).permutation``; the first ``round(test_fraction * n_normal)``
    of them go to the test set, the rest to the training set. Every example of ``heldout_digit``
    goes to the test set, as an anomaly. Pass the labels of the pool the protocol splits (e.g.
    the MNIST training split).

    Returns ``(train_idx, test_idx, test_is_anomaly)``: sorted int64 index arrays into
    ``labels`` and a bool array aligned with ``test_idx``.
    """
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError("labels must be a non-empty 1-D array")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    anomalous = y == heldout_digit
    if not anomalous.any():
        raise ValueError(f"heldout_digit {heldout_digit!r} does not occur in labels")
    if anomalous.all():
        raise ValueError("labels hold only the held-out class: no normal examples")
    normal = np.flatnonzero(~anomalous)
    normal = normal[np.random.default_rng(seed).permutation(len(normal))]
    n_test = int(round(test_fraction * len(normal)))
    train_idx = np.sort(normal[n_test:]).astype(np.int64)
    test_idx = np.sort(np.concatenate([normal[:n_test], np.flatnonzero(anomalous)])).astype(np.int64)
    return train_idx, test_idx, anomalous[test_idx]


def repeated_auprc(generator, prior, images, is_anomaly, seeds=(0, 1, 2), n_steps: int = 30,
                   step_size: float = 0.01, sigma: float = 0.3, batch_size: int = 100,
                   terms: bool = False) -> dict:
    """AUPRC of ``anomaly_scores`` repeated over posterior-Langevin ``seeds``: {"auprc": [one per seed]}.

    The trained model is fixed; only the noise of the short-run posterior sampler changes between
    repeats (the paper averages "over the last 10 trials"). With ``terms=True`` the dict also holds
    "auprc_reconstruction" and "auprc_prior": the AUPRC of each term of the score on its own.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    out = {"auprc": []}
    if terms:
        out.update(auprc_reconstruction=[], auprc_prior=[])
    for s in seeds:
        rec, pri = anomaly_score_terms(generator, prior, images, n_steps, step_size, sigma, batch_size, int(s))
        out["auprc"].append(auprc(rec + pri, is_anomaly))
        if terms:
            out["auprc_reconstruction"].append(auprc(rec, is_anomaly))
            out["auprc_prior"].append(auprc(pri, is_anomaly))
    return out


def mean_std(values) -> tuple[float, float]:
    """(mean, population std) of a non-empty sequence of numbers, as plain floats."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_std needs at least one value")
    return float(v.mean()), float(v.std())


def format_mean_std(values, digits: int = 3) -> str:
    """'0.531 ± 0.020' for a list of repeats (just the value for a single one), as Table 2 prints them."""
    m, s = mean_std(values)
    return f"{m:.{digits}f}" if np.size(values) == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"
