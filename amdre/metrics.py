"""Image metrics of Sec. 5.1: reconstruction MSE, FD-classifier and FID.

Conventions used throughout (the numbers one reports depend on them, so they are fixed here):

* Images are float tensors ``[N, C, H, W]`` in [-1, 1], as ``amdre.data.load`` returns them.
* Posterior inference is short-run Langevin on log p(z|x) (Eq. 3: drift s/2, noise sqrt(s)),
  through ``amdre.samplers.posterior_batches``, initialised from N(0, I) noise. The defaults
  (30 steps, s = 0.01, sigma = 0.3) are LEBM's posterior sampler (Pang et al. 2020) written in
  Eq. 3's convention (LEBM's s = 0.1 in its s^2/2 convention is s = 0.01 here).
* ``prior`` is an ``amdre.prior.EBMPrior`` (``log_prob(z)`` = sum_k log r_k(z) - ||z||^2/2); one with no
  stages is the N(0, I) prior (log p(z) = -||z||^2/2 up to a constant).

**Reconstruction MSE** (Table 1) is the mean squared error *per pixel on the [-1, 1] scale*, the
scale the generator is trained on. The paper does not say which scale its MSE uses, and LEBM's
public code never computes a test MSE (its logged "mse" is a summed error per image), so the
published column cannot be matched exactly; the same error on the [0, 1] scale is 1/4 of ours.
State the scale next to every reported number.

**FD-classifier** is a Fréchet distance between Gaussian fits of the penultimate features of a
small CNN classifier trained here, offline, on the labelled dataset. It is *not* FID and is never
comparable with Table 1's FID column; it ranks models trained on the same data. **FID** proper
(``fid``) runs pytorch-fid's InceptionV3 only when its weights file is already on disk.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .files import WriteError, atomic_save
from .params import positive
from .samplers import posterior_batches
from .torchutils import frozen, module_device, seeded


FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_NAME}"
FID_WEIGHTS_ENV = "AMDRE_FID_WEIGHTS"

# ---------------------------------------------------------------- input checks and helpers
def as_images(images, name: str = "images") -> torch.Tensor:
    """Return ``images`` as a float tensor [N, C, H, W] with N >= 1, else raise ValueError."""
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images, np.float32))
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [N, C, H, W] tensor; got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be floating point in [-1, 1]; got dtype {images.dtype}")
    return images


# ---------------------------------------------------------------- reconstruction (Sec. 5.1)
def reconstruct(generator, prior, images, n_steps: int = 30, step_size: float = 0.01,
                sigma: float = 0.3, batch_size: int = 100, seed: int = 0) -> torch.Tensor:
    """Reconstructions g(z) of ``images`` with z from noise-initialised posterior Langevin.

    Returns a CPU tensor shaped like ``images`` (in [-1, 1] for a tanh generator), e.g. to show
    next to the originals in a grid. Deterministic for a given ``seed`` and ``batch_size``.
    """
    return torch.cat(posterior_batches(generator, prior, images, n_steps, step_size, sigma, batch_size, seed,
                                       lambda x, z: generator(z).float().cpu()))


def reconstruction_mse(generator, prior, images, n_steps: int = 30, step_size: float = 0.01,
                       sigma: float = 0.3, batch_size: int = 100, seed: int = 0) -> float:
    """Table 1's reconstruction error: mean over images *and pixels* of (x - g(z))^2, on the [-1, 1] scale.

    z comes from noise-initialised short-run posterior Langevin (Eq. 3 convention, see the module
    docstring); the paper uses 10k test images. Multiply by 1/4 for the [0, 1] pixel scale.
    No gradient reaches the model's parameters.
    """
    sums = posterior_batches(generator, prior, images, n_steps, step_size, sigma, batch_size, seed,
                             lambda x, z: (x - generator(z)).double().pow(2).sum().item())
    return sum(sums) / getattr(images, "images", images).numel()


# ---------------------------------------------------------------- Fréchet distance
def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean [F] and covariance [F, F] (float64, unbiased) of features [N, F], N >= 2."""
    f = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be [N, F] with N >= 2; got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _clip_round_off(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off (negative, or below max * d * machine eps) set to 0.

    Without this, sqrt() turns ~1e-16 round-off of a singular covariance into ~1e-8 per eigenvalue.
    """
    tol = max(float(w.max(initial=0.0)), 0.0) * len(w) * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def _psd_sqrt(sig: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix."""
    w, v = np.linalg.eigh(sig)
    return (v * np.sqrt(_clip_round_off(w))) @ v.T


def frechet_distance(mu1, sig1, mu2, sig2) -> float:
    """Fréchet distance between N(mu1, sig1) and N(mu2, sig2) (the formula of FID):

        ||mu1 - mu2||^2 + Tr(sig1 + sig2 - 2 (sig1 sig2)^{1/2}).

    Tr((sig1 sig2)^{1/2}) is the sum of the square roots of the eigenvalues of sig1 sig2, which
    equal those of the symmetric PSD matrix R sig2 R with R = sig1^{1/2}; two symmetric
    eigendecompositions give it exactly, also for singular covariances. This agrees with
    ``pytorch_fid.fid_score.calculate_frechet_distance`` (tested) but is several times faster
    for 2048-d Inception features, needs no eps fix-up or imaginary-part check, and avoids
    pytorch-fid 0.3.0's ``scipy.linalg.sqrtm(..., disp=False)``, deprecated in SciPy 1.17.
    Covariances are symmetrised first.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sig1, sig2 = np.atleast_2d(np.asarray(sig1, np.float64)), np.atleast_2d(np.asarray(sig2, np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must be vectors of the same length; got {mu1.shape} and {mu2.shape}")
    d = len(mu1)
    if sig1.shape != (d, d) or sig2.shape != (d, d):
        raise ValueError(f"covariances must be [{d}, {d}]; got {sig1.shape} and {sig2.shape}")
    sig1, sig2 = (sig1 + sig1.T) / 2, (sig2 + sig2.T) / 2
    root = _psd_sqrt(sig1)
    tr_covmean = np.sqrt(_clip_round_off(np.linalg.eigvalsh(root @ sig2 @ root))).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sig1) + np.trace(sig2) - 2.0 * tr_covmean)


# ---------------------------------------------------------------- FD-classifier
class FeatureClassifier(nn.Module):
    """Small CNN classifier whose penultimate layer gives the FD-classifier features.

    Three 3x3 convolutions (the last two with stride 2), adaptive average pooling to 2x2, then
    a ``feature_dim`` ReLU layer (``features(x)``) and a linear head (``forward(x)`` = logits).
    The adaptive pooling makes it work for any image size >= 8x8 (1x8x8, 1x28x28, 3x32x32, 3x64x64).
    """

    def __init__(self, in_channels: int, n_classes: int, width: int = 32, feature_dim: int = 128):
        super().__init__()
        self.config = dict(in_channels=in_channels, n_classes=n_classes, width=width, feature_dim=feature_dim)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(16 * width, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, feature_dim]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _check_labels(images: torch.Tensor, labels) -> torch.Tensor:
    if labels is None:
        raise ValueError("the FD-classifier needs class labels; for unlabelled data (CelebA) use fid() "
                         "or pass a classifier trained elsewhere to fd_classifier_score()")
    labels = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels))
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be [N] with N = {len(images)}; got shape {tuple(labels.shape)}")
    if labels.min() < 0:
        raise ValueError("labels must be non-negative class indices")
    return labels.long()


def train_feature_classifier(images, labels, epochs: int = 5, seed: int = 0, batch_size: int = 64,
                             lr: float = 1e-3, device: str = "cpu") -> FeatureClassifier:
    """Train a ``FeatureClassifier`` on labelled images (cross-entropy, Adam); returned in eval mode.

    Deterministic for a given ``seed`` on CPU. ``model.train_accuracy`` holds the accuracy of the
    last epoch, a quick check that the features mean something.
    """
    images = as_images(images)
    labels = _check_labels(images, labels)
    positive(epochs=epochs, batch_size=batch_size, lr=lr)
    device = torch.device(device)
    with seeded(seed, device):
        model = FeatureClassifier(images.shape[1], int(labels.max()) + 1).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for _ in range(epochs):
            correct = 0
            for idx in torch.randperm(len(images)).split(batch_size):
                x, y = images[idx].to(device), labels[idx].to(device)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                correct += (logits.argmax(1) == y).sum().item()
    model.train_accuracy = correct / len(images)
    return model.eval()


def save_feature_classifier(model: FeatureClassifier, path) -> None:
    """Write the classifier's config and weights to ``path`` (atomically)."""
    atomic_save({"config": model.config, "state_dict": model.state_dict()}, path)


def load_feature_classifier(path, device: str = "cpu") -> FeatureClassifier:
    """Read a classifier written by ``save_feature_classifier``; returned in eval mode."""
    blob = torch.load(path, map_location=device, weights_only=True)
    model = FeatureClassifier(**blob["config"])
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()


def fd_classifier(images, labels, cache_path=None, epochs: int = 5, seed: int = 0,
                  device: str = "cpu") -> FeatureClassifier:
    """The FD-classifier's feature network for a dataset: loaded from ``cache_path`` if that file
    exists, else trained on (``images``, ``labels``) and saved there (if a path is given).

    Requires labels: for unlabelled data (CelebA) report real FID (``fid``) instead, or pass a
    classifier trained elsewhere to ``fd_classifier_score``. The cache is keyed by its path only
    (only the channel count is checked): use one file per dataset, e.g. ``runs/fd_svhn.pt``. It is derived
    data: a cache that cannot be read is retrained and rewritten, and one that cannot be written (a read-only
    checkout, a full disk) is skipped; both with a warning naming the file.
    """
    images = as_images(images)
    if cache_path is not None and Path(cache_path).exists():
        try:
            model = load_feature_classifier(cache_path, device)
        except Exception as err:                              # noqa: BLE001 - a cache can always be rebuilt
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            warnings.warn(f"the FD-classifier cache {cache_path} is damaged ({type(err).__name__}: {reason}); "
                          f"training the classifier again and rewriting it", stacklevel=2)
        else:
            if model.config["in_channels"] != images.shape[1]:
                raise ValueError(f"cached classifier {cache_path} expects {model.config['in_channels']} channels; "
                                 f"images have {images.shape[1]}")
            return model
    model = train_feature_classifier(images, labels, epochs=epochs, seed=seed, device=device)
    if cache_path is not None:
        try:
            save_feature_classifier(model, cache_path)
        except WriteError as err:
            warnings.warn(f"could not cache the FD-classifier (scoring works without it; the next evaluation trains "
                          f"it again): {err}", stacklevel=2)
    return model


@torch.no_grad()
def classifier_features(model: FeatureClassifier, images, batch_size: int = 500) -> torch.Tensor:
    """Penultimate features [N, F] (CPU) of ``images`` in [-1, 1], in batches, in eval mode."""
    images = as_images(images)
    positive(batch_size=batch_size)
    if images.shape[1] != model.config["in_channels"]:
        raise ValueError(f"classifier expects {model.config['in_channels']} channels; images have {images.shape[1]}")
    device = module_device(model)
    with frozen(model):
        return torch.cat([model.features(b.to(device)).cpu() for b in images.split(batch_size)])


def fd_classifier_score(model: FeatureClassifier, real_images, fake_images, batch_size: int = 500) -> float:
    """FD-classifier: Fréchet distance between the classifier features of real and generated images.

    Not FID: lower is better, 0 for identical feature statistics, and only comparable between
    models scored with the same classifier and the same real set. With F = 128 features use a
    few thousand images per side; the estimate is biased upwards for small samples.
    """
    return fd_against(model, real_images, batch_size)(fake_images)


def fd_against(model: FeatureClassifier, real_images, batch_size: int = 500):
    """``score(images)`` -> the FD-classifier of ``images`` against ``real_images``, whose feature statistics
    are computed here once (for scoring many samplers against one real set)."""
    real = feature_statistics(classifier_features(model, real_images, batch_size))

    def score(images) -> float:
        return frechet_distance(*real, *feature_statistics(classifier_features(model, images, batch_size)))

    return score


# ---------------------------------------------------------------- FID (pytorch-fid, weights on disk only)
def find_fid_weights(weights_path=None) -> Path | None:
    """Path of pytorch-fid's Inception weights file if on disk, else None.

    Looks, in order, at ``weights_path`` (a file, or a folder holding the file),
    ``$AMDRE_FID_WEIGHTS`` (likewise) and ``torch.hub.get_dir()/checkpoints`` (where
    pytorch-fid's own download puts it). Never downloads.
    """
    places = [p for p in (weights_path, os.environ.get(FID_WEIGHTS_ENV)) if p]
    places.append(Path(torch.hub.get_dir()) / "checkpoints")
    for place in map(Path, places):
        candidate = place / FID_WEIGHTS_NAME if place.is_dir() else place
        if candidate.is_file():
            return candidate
    return None


def fid_weights_available(weights_path=None) -> bool:
    """True when ``fid`` can run offline (the Inception weights file is on disk)."""
    return find_fid_weights(weights_path) is not None


def _missing_fid_weights(weights_path) -> FileNotFoundError:
    hub = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_NAME
    searched = [str(weights_path)] if weights_path else []
    searched += [f"${FID_WEIGHTS_ENV} ({os.environ.get(FID_WEIGHTS_ENV) or 'unset'})", str(hub)]
    return FileNotFoundError(
        f"FID needs pytorch-fid's Inception weights {FID_WEIGHTS_NAME}, which are not on disk "
        f"(amdre never downloads them). Searched: {'; '.join(searched)}.\n"
        f"Download {FID_WEIGHTS_URL}\nand put it at {hub}, or point ${FID_WEIGHTS_ENV} or "
        f"weights_path= at it. Offline, use the FD-classifier (fd_classifier_score) instead.")


def _inception(weights: Path, device: str, dims: int = 2048) -> nn.Module:
    """pytorch-fid's InceptionV3 returning the ``dims``-d block, its weights read from ``weights``.

    pytorch-fid fetches weights through ``load_state_dict_from_url``; that name is swapped for
    a local read while the network is built, so nothing is ever downloaded.
    """
    from pytorch_fid import inception

    def local(url, *args, **kwargs):
        return torch.load(weights, map_location="cpu", weights_only=True)

    original = inception.load_state_dict_from_url
    inception.load_state_dict_from_url = local
    try:
        model = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
    finally:
        inception.load_state_dict_from_url = original
    return model.to(device).eval()


@torch.no_grad()
def _inception_features(model, images: torch.Tensor, batch_size: int, device: str) -> np.ndarray:
    """[N, dims] features; [-1, 1] images are mapped to [0, 1] and greyscale repeated to RGB.

    Blocks other than the final one are average-pooled to 1x1, as pytorch-fid's ``get_activations`` does.
    """
    feats = []
    for b in images.split(batch_size):
        b = ((b.to(device) + 1.0) / 2.0).clamp(0.0, 1.0)
        if b.shape[1] == 1:
            b = b.expand(-1, 3, -1, -1)
        out = model(b)[0]
        if out.shape[2:] != (1, 1):
            out = F.adaptive_avg_pool2d(out, (1, 1))
        feats.append(out.flatten(1).cpu().double())
    return torch.cat(feats).numpy()


def fid(real_images, fake_images, weights_path=None, device: str = "cpu", batch_size: int = 50,
        dims: int = 2048) -> float:
    """FID with pytorch-fid's InceptionV3 (the port of TF's 2015-12-05 Inception), offline only.

    Images in [-1, 1] are mapped to [0, 1] (pytorch-fid's ``normalize_input`` then maps them back
    to the [-1, 1] that Inception expects) and bilinearly resized to 299x299 by pytorch-fid's
    ``resize_input``; greyscale images are repeated to 3 channels. ``dims`` picks the Inception
    block as pytorch-fid's ``--dims`` does (64, 192, 768 or 2048; only 2048 is standard FID).
    Raises FileNotFoundError (naming the URL and where to put the file) when the weights are not
    on disk. On CPU, expect about a second per 10 images plus several seconds for the statistics.

    The paper's Table 1 uses 50k generated images against 50k real images, and LEBM's code uses the
    TensorFlow Inception against the whole training set: PyTorch and TF Inception,
    sample counts and reference sets all change the number. Report which library, reference set
    and sample count produced every figure, and compare only numbers computed the same way.
    """
    real_images, fake_images = as_images(real_images, "real_images"), as_images(fake_images, "fake_images")
    for name, imgs in (("real_images", real_images), ("fake_images", fake_images)):
        if imgs.shape[1] not in (1, 3) or len(imgs) < 2:
            raise ValueError(f"{name} must have 1 or 3 channels and N >= 2; got shape {tuple(imgs.shape)}")
    positive(batch_size=batch_size)
    if dims not in (64, 192, 768, 2048):
        raise ValueError(f"dims must be 64, 192, 768 or 2048 (pytorch-fid's blocks); got {dims!r}")
    weights = find_fid_weights(weights_path)
    if weights is None:
        raise _missing_fid_weights(weights_path)
    model = _inception(weights, device, dims)
    stats = [feature_statistics(_inception_features(model, imgs, batch_size, device))
             for imgs in (real_images, fake_images)]
    return frechet_distance(*stats[0], *stats[1])
