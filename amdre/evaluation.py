"""The evaluation of a finished paper-scale run (Sec. 5.1, Table 1), for ``amdre.pipeline.evaluate_run``: grids of
samples and reconstructions, the training curves, the test reconstruction MSE beside the mean test image's, and a
sample score (FID with pytorch-fid's Inception when its weights are on disk, else the FD-classifier).
"""
from __future__ import annotations

import datetime
from pathlib import Path

import torch

from . import metrics, viz
from .checkpoint import load_checkpoint
from .experiments import shared_fd_classifier
from .samplers import sample_images

MSE_SCALE = "mean over test images and pixels of (x - g(z))^2 on the [-1, 1] pixel scale (x 1/4 for [0, 1])"


def evaluate(p: dict, out: Path, train_data, test_data, device) -> dict:
    """The content of a run's ``metrics.json`` (run parameters ``p``, checked), writing its grids into ``out``.

    * MSE (Table 1): ``amdre.metrics.reconstruction_mse`` on the n_test test images, z from posterior
      Langevin from noise under the learned prior (ld_steps, ld_step_size, sigma of the run), beside the MSE of the
      mean test image (the best constant guess): "mse_vs_mean_image" is their ratio, and a run at or above 1 gets a
      line in "warnings";
    * FID (Table 1) with pytorch-fid's Inception when its weights are on disk, else the FD-classifier (a
      labelled dataset's own small CNN: not comparable with FID), between ``fid_samples`` prior samples and
      as many training images. ``metrics.json`` names which one under "sample_score" (never under "fid"); the
      FD-classifier is cached beside the run folder (``experiments.shared_fd_classifier``), shared by the runs
      there.
    """
    g, prior, cfg, history = load_checkpoint(out, device=device)
    post = dict(n_steps=cfg.ld_steps, step_size=cfg.ld_step_size, sigma=cfg.sigma, batch_size=cfg.batch_size,
                seed=p["seed"])
    files = {"samples": "samples.png", "reconstructions": "reconstructions.png", "curves": "curves.png"}
    result = {"params": p, "epochs_trained": len(history["epoch_time"]), "n_stages": prior.n_stages,
              "train_images": len(train_data), "device": str(device), "torch": torch.__version__,
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "train_time_s": round(sum(history["epoch_time"]), 1), "files": files}
    sampler = f"prior Langevin from N(0, I): {p['sample_ld_steps']} steps of Eq. 3 with s={p['sample_ld_step_size']}"
    grid = sample_images(g, prior, 64, p["sample_ld_steps"], p["sample_ld_step_size"], seed=p["seed"])
    viz.save_grid(grid, out / files["samples"], nrow=8, title=f"{p['dataset']}: samples, {sampler}")
    viz.savefig(viz.plot_curves(history), files["curves"], folder=out, close=True)
    result["mse"] = result["mse_vs_mean_image"] = None
    if test_data is not None:
        x = test_data.images[:p["n_test"]]
        xr = metrics.reconstruct(g, prior, x[:32], **post)
        viz.save_grid(torch.cat([x[:32], xr]), out / files["reconstructions"], nrow=16,
                      title=f"{p['dataset']}: test images (top two rows) and their reconstructions (bottom two)")
        mse, mean_image = metrics.reconstruction_mse(g, prior, x, **post), (x - x.mean(0)).pow(2).mean().item()
        result["mse"] = {"value": mse, "n_images": len(x), "split": "test", "scale": MSE_SCALE,
                         "mean_image_mse": mean_image,
                         "posterior": f"{cfg.ld_steps} steps of Eq. 3 with s={cfg.ld_step_size}, sigma={cfg.sigma}, "
                                      f"from N(0, I), under the learned prior ({prior.n_stages} stages)"}
        result["mse_vs_mean_image"] = mse / mean_image if mean_image > 0 else None
        if not mse < mean_image:
            result["warnings"] = [
                f"the test reconstruction MSE {mse:.4g} is no better than the mean test image's {mean_image:.4g} "
                f"(mse_vs_mean_image {mse / mean_image if mean_image > 0 else float('nan'):.2f}): this run learned "
                f"less than a constant image. See curves.png and train.log in {out}; train again into a new "
                f"out_dir with smaller learning rates (lr_g={p['lr_g']:g}, lr_ebm={p['lr_ebm']:g}) or "
                f"ld_step_size={p['ld_step_size']:g}."]
    else:
        files.pop("reconstructions")
    result["sample_score"] = _sample_score(p, g, prior, train_data, out, device, sampler) if p["fid_samples"] else None
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
    model = shared_fd_classifier(train_data, epochs=5, device=str(device), folder=out.parent)  # beside the run
    return {"kind": "fd_classifier", "value": metrics.fd_classifier_score(model, real, fake), **common,
            "library": "amdre.metrics FeatureClassifier (small CNN trained 5 epochs on this run's training set, "
                       "128-d features): NOT FID, comparable only between runs scored with the same classifier",
            "why": "pytorch-fid's Inception weights are not on disk (amdre never downloads them)"}
