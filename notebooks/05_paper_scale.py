# %% [markdown]
# # 05 · The paper's scale: SVHN, CIFAR-10 and CelebA, resumably
#
# **What this notebook is.** One training run of the adaptive multi-stage latent EBM (Sec. 3.3, Fig. 1) with the
# protocol of Appendix A, for any dataset, driven entirely by the `parameters` cell below. It writes everything
# into one run folder and reports the two numbers of Table 1: reconstruction MSE on test images and FID.
# Its defaults are a tiny CPU run on 2,000 real MNIST digits (under a minute on 2 cores; CI runs it);
# the paper's values live in the presets `configs/svhn.yaml`, `configs/cifar10.yaml`, `configs/celeba.yaml`
# and `configs/celeba_hq.yaml` (128×128, the larger generator of Fig. 3).
#
# **How to run a preset** (from the repo root; the same parameter names everywhere):
#
# | what | command |
# |---|---|
# | make | `make paper DATASET=svhn` |
# | papermill | `mkdir -p runs/svhn && papermill --cwd notebooks -f configs/svhn.yaml notebooks/05_paper_scale.ipynb runs/svhn/05_paper_scale.ipynb` |
# | one parameter changed | add `-p epochs 10` (papermill) or `--epochs 10` (CLI) |
# | command line, no notebook | `python -m amdre.train --config configs/svhn.yaml` |
# | several GPUs | `torchrun --standalone --nproc_per_node=8 -m amdre.train --config configs/svhn.yaml` |
#
# **Resuming.** Run the same command again: training continues from the folder's `last.pt` (written after every
# epoch, so at most the unfinished epoch is lost), then the evaluation is redone. Raising `epochs` continues a
# finished run. Pointing *other* parameters at a folder that holds a run is refused before anything is written:
# checkpoints and `metrics.json` of another configuration are never overwritten.
#
# **The run folder** (`out_dir`, e.g. `runs/svhn/`): `run.json` (the parameters), `last.pt` and `stage{k}.pt`
# (checkpoints), `train.log` (one line per epoch: losses, seconds, images/s), `samples.png`,
# `reconstructions.png`, `curves.png`, and `metrics.json`.
#
# **Conventions.** Every Langevin step size is the $s$ of Eq. 3 (drift $s/2$, noise $\sqrt s$): the paper's
# "step size 0.1" is LEBM's 0.1 in LEBM's $s^2/2$ convention, i.e. $s = 0.01$ here. MSE is per pixel on the
# $[-1, 1]$ scale the generator is trained on. FID uses pytorch-fid's Inception when its weights file is on disk;
# without it the notebook reports the FD-classifier (a distance in the features of a small classifier trained here,
# **not** comparable with FID) and `metrics.json` says which one it is, with the sample counts.

# %% tags=["parameters"]
# parameters
dataset = "mnist5k"          # svhn, cifar10, celeba, mnist, fashion-mnist, mnist5k, digits
data_root = ""               # folder holding the datasets; '' = the repo's data/
image_size = 64              # CelebA only: 64 (Table 5) or 128 (celeba128 generator)
generator = ""               # '' = the dataset's Table 5 network
n_train = 2000               # first n training examples; None = all (CelebA: 40,000)
n_test = 1000                # test images for the reconstruction MSE (paper: 10,000)
fid_samples = 1000           # generated images for FID / FD-classifier; 0 = skip (paper: 50,000)
epochs = 6                   # App. A.3: 100 (CIFAR-10: 200)
stages = 3                   # density-ratio stages m (App. A.3: 4)
stage_every = 2              # a new stage every E epochs (App. A.3: 25; CIFAR-10: 50)
batch_size = 100             # global batch (App. A.3: 100)
nz = 16                      # latent dimension (100; CIFAR-10: 128)
ngf = 16                     # generator width (64)
ld_steps = 20                # posterior Langevin steps (30; CIFAR-10: 40)
ld_step_size = 0.01          # Eq. 3's s (= the paper's / LEBM's "0.1")
sigma = 0.3                  # std of p(x|z)
lr_g = 2e-3                  # generator learning rate (App. A.3: 1e-4)
lr_ebm = 5e-4                # ratio-net learning rate (App. A.3: 5e-5)
prior_sampling = "memory"    # "memory" (persistent bank, App. A.3) or "langevin"
prior_ld_steps = 60          # prior Langevin, only for prior_sampling="langevin"
prior_ld_step_size = 0.16
sample_ld_steps = 100        # test-time prior Langevin (App. A.3: 100 steps of "0.1" = Eq. 3's 0.01)
sample_ld_step_size = 0.01
device = "cpu"               # "cpu", "cuda" or "cuda:N"
amp = False                  # bf16 autocast of the generator (GPU)
compile = False              # torch.compile the posterior Langevin step (GPU; slow to compile on CPU)
channels_last = False        # NHWC generator (GPU)
out_dir = "runs/05_tiny"     # run folder, relative to the repo root
resume = True                # continue the run in out_dir (False: out_dir must not hold a run)
seed = 0
num_workers = 0              # DataLoader workers
threads = 1                  # CPU threads for torch (0 = torch's default)
progress = True              # progress bars

# %% [markdown]
# ## Check every parameter, and the run folder, before anything is read or written
# papermill only *warns* about a misspelt parameter name, and passes a string for a value it cannot parse;
# `check_params` reports every unknown name (with the nearest known one), wrong type and bad value at once,
# including `device="cuda"` on a machine without a GPU. `prepare_run` then refuses a folder that holds a run
# with other parameters (or `resume=False` on an existing run) and records these parameters in `run.json`.

# %%
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, display

from amdre import paper, viz
from amdre.train import check_params, config_from_params

params = check_params(paper.notebook_params(globals()))
if params["threads"]:
    torch.set_num_threads(params["threads"])
cfg = config_from_params(params)
run_dir = paper.prepare_run(params)
print(f"run folder: {paper.shown(run_dir)}")
print(cfg)

# %% [markdown]
# ## Data
# `amdre.data.load` reads the standard on-disk layouts and never downloads; a missing dataset stops here with a
# message saying which files to put where. Images are scaled to $[-1, 1]$.

# %%
train_data, test_data = paper.load_data(params)
print("train:", train_data, "\ntest: ", test_data)
viz.show_images(train_data.images[:32], nrow=16, title=f"{params['dataset']}: training images")
plt.show()

# %% [markdown]
# ## Training (Sec. 3.3)
# Epoch $e$ trains stage $k = \min(\lfloor e/E\rfloor, m-1)$. For every batch: posterior samples
# $z \sim p_\theta(z|x)$ by `ld_steps` steps of Eq. 3 under the current prior $p_{\phi_k}$ (Eq. 8); one Adam step of
# the generator on $\|x - g_\theta(z)\|^2/(2\sigma^2)$; one Adam step of the new ratio net $r_k$ by NCE (Eq. 4), the
# posterior samples against prior samples from the memory bank. `train.log` gets a line per epoch.
#
# If a loss or a latent turns NaN/inf, training stops with an error naming the epoch, step, stage and the last good
# checkpoint, which is never overwritten by the broken state: lower `ld_step_size` or the learning rates and run
# again into a new `out_dir` (or continue the old one with its own parameters).

# %%
trainer = paper.train_run(params, train_data)
print(Path(run_dir, paper.LOG_FILE).read_text()[-1500:])

# %%
fig = paper.plot_curves(trainer.history)
plt.show()

# %% [markdown]
# ## Evaluation (Sec. 5.1, Table 1)
# On the last checkpoint: **reconstruction MSE** of `n_test` test images (posterior Langevin from noise, as in
# training), **samples** by prior Langevin (App. A.3's test-time sampler), and **FID** of `fid_samples` samples
# against as many training images, or the FD-classifier when the Inception weights are not on disk.
# The grids and `metrics.json` go into the run folder.

# %%
result = paper.evaluate_run(params, train_data, test_data)
display(Image(filename=str(run_dir / "samples.png")))
if result["mse"] is not None:
    display(Image(filename=str(run_dir / "reconstructions.png")))
print(json.dumps({k: result[k] for k in ("epochs_trained", "n_stages", "train_time_s", "mse", "fid")}, indent=1))

# %% [markdown]
# **The claim checked here.** Posterior inference by short-run Langevin plus the learned generator reconstructs
# *unseen* test images far better than the best constant guess, the mean test image (whose MSE is the per-pixel
# variance of the test set): below half of it even for the tiny default run. Every file the run promises exists.

# %%
x_test = test_data.images[:params["n_test"]]
mean_image_mse = (x_test - x_test.mean(0)).pow(2).mean().item()
mse = result["mse"]["value"]
print(f"test MSE {mse:.4f} vs the mean image's {mean_image_mse:.4f} ([-1, 1] scale, {len(x_test)} test images)")
assert math.isfinite(mse) and mse < 0.5 * mean_image_mse, (mse, mean_image_mse)
assert all((run_dir / f).exists() for f in ("run.json", "last.pt", "train.log", "metrics.json", *result["files"].values()))
