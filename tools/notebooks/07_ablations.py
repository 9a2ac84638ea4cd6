# %% [markdown]
# # 07 · Ablations: how many stages, and does adaptivity matter? (Table 3, Sec. 5.5-5.6)
#
# **Teaching claim.** Any learned latent prior beats decoding $\mathcal N(0, I)$ codes by a wide margin (0 stages vs
# 4). Whether the paper's *adaptive* schedule beats the *non-adaptive* one (TRE fitted after training a generator under
# a Gaussian prior) is the second question of Table 3; at teaching scale we measure the **opposite** for samples: the
# post-hoc TRE prior gives better FD-classifier scores than the adaptive prior trained with the memory bank, and we
# show why. Measured on Fashion-MNIST with the FD-classifier and the reconstruction error, beside the paper's CelebA
# FIDs. Finally the prior's size: its parameters against the paper's generators (Sec. 5.6), which is not the "~1 %"
# the text states.
#
# **The two training methods (Sec. 3.3, 5.5).** Both end with a prior of the form of Eq. 6,
# $p_\phi(z) = \prod_{k<m} r_{\phi_k}(z)\,\mathcal N(z; 0, I)$; they differ in what the ratios are fitted to.
#
# * **Adaptive** (the paper): stage $k$ fits $r_{\phi_k} \approx q_k / p_{\phi_k}$ by NCE (Eq. 4) *while* the generator
#   trains, where $q_k$ is the aggregate posterior under the current prior $p_{\phi_k} = \prod_{i<k} r_{\phi_i}\,p_0$
#   (Eq. 8). The generator sees the improved prior in its posterior after every stage.
# * **Non-adaptive** (TRE, Rhodes et al. 2020): the generator trains under $\mathcal N(0, I)$ throughout; afterwards TRE
#   (Eq. 5) fits $m$ ratios along linear waymarks between the final aggregate posterior $q$ and $\mathcal N(0, I)$,
#   $\log q/p_0 = \sum_k \log r_k$. The posterior target is fixed.
# * **0 stages**: the generator trained under $\mathcal N(0, I)$, sampled from $\mathcal N(0, I)$ (Table 3's first row).
#
# **Protocol.** Every run trains for the same `epochs`; with $m$ stages a new stage starts every `epochs / m` epochs
# (the paper: 100 epochs, a stage every 25 for $m = 4$). Because the non-adaptive generator never sees its prior while
# training, one Gaussian-prior run serves every $m$ (and the 0-stage row); only the TRE fit depends on $m$. The adaptive
# runs cannot share anything: the generator co-adapts with the prior from the first stage boundary on.
# All of it is `amdre.metrics.stage_ablation`.

# %%
# parameters
seeds = [0]                     # training seeds; the table shows each and their mean
dataset = "fashion-mnist"       # "fashion-mnist", "mnist5k" (FD-classifier), or "celeba" (real FID; needs the weights)
data_root = ""                  # folder holding the dataset ('': the repo's data/)
n_train = 4000                  # first n training images (0: all; CelebA: 40,000 as in the paper)
stages = [0, 1, 4]              # the paper's grid is [0, 1, 2, 4, 8]
generator = "mnist-mlp"         # amdre.nets generator; "celeba" (Table 5) for CelebA
nz = 8
ngf = 8
epochs = 16                     # the same for every m
batch_size = 100
ld_steps = 20                   # posterior Langevin steps (App. A.3: 30)
ld_step_size = 0.01             # Eq. 3's s (i.e. LEBM's and the paper's 0.1)
sigma = 0.3
lr_g = 3e-3                     # App. A.3: 1e-4
lr_ebm = 3e-3                   # App. A.3: 5e-5
prior_sampling = "memory"       # prior samples for NCE: "memory" (the persistent bank, App. A.3) or "langevin"
prior_ld_steps = 30
prior_ld_step_size = 0.16       # Eq. 3's s (i.e. LEBM's 0.4)
tre_steps = 500                 # TRE steps of the non-adaptive priors
sample_ld_steps = 100           # test-time prior Langevin (App. A.3: 100 steps of "0.1")
sample_ld_step_size = 0.1       # Eq. 3's s, as notebooks 03 and 08 read the paper's 0.1
n_eval = 2000                   # generated and real images per FD-classifier / FID
n_test_mse = 1000               # test images for the reconstruction MSE
classifier_n = 10000            # FD-classifier training images and epochs (notebook 03's cached classifier)
classifier_epochs = 3
fid_weights = ""                # CelebA: pytorch-fid's Inception weights file ('': the usual places)
device = "cpu"
resume = True
n_threads = 1
save_figures = True
# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from amdre import data, metrics, viz
from amdre.nets import generator as make_generator
from amdre.paths import DATA, ROOT, RUNS
from amdre.prior import EBMPrior
from amdre.train import TrainConfig

LABELLED = ("fashion-mnist", "mnist5k", "mnist")
if dataset not in LABELLED + ("celeba",):
    raise ValueError(f"dataset must be one of {LABELLED + ('celeba',)}; got {dataset!r}")
for name, value in dict(n_train=n_train, nz=nz, ngf=ngf, epochs=epochs, batch_size=batch_size, ld_steps=ld_steps,
                        prior_ld_steps=prior_ld_steps, tre_steps=tre_steps, sample_ld_steps=sample_ld_steps,
                        n_eval=n_eval, n_test_mse=n_test_mse, classifier_n=classifier_n,
                        classifier_epochs=classifier_epochs, n_threads=n_threads).items():
    low = 0 if name == "n_train" else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"parameter {name} must be an int >= {low}; got {value!r}")
for name, value in dict(ld_step_size=ld_step_size, sigma=sigma, lr_g=lr_g, lr_ebm=lr_ebm,
                        prior_ld_step_size=prior_ld_step_size, sample_ld_step_size=sample_ld_step_size).items():
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"parameter {name} must be a positive number; got {value!r}")
if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and s >= 0 for s in seeds)):
    raise ValueError(f"seeds must be a non-empty list of non-negative ints; got {seeds!r}")
if not (isinstance(stages, list) and stages and all(isinstance(m, int) and 0 <= m <= epochs for m in stages)):
    raise ValueError(f"stages must be a list of ints in 0..epochs ({epochs}); got {stages!r}")
if not {0, 4} <= set(stages):
    raise ValueError(f"stages must include 0 and 4 (the asserted claims compare them); got {stages!r}")
if n_eval < 200:
    raise ValueError(f"n_eval must be >= 200 (the FD-classifier fits 128-d Gaussians); got {n_eval}")
if dataset == "celeba" and not metrics.fid_weights_available(fid_weights or None):
    raise FileNotFoundError(
        "CelebA has no class labels, so there is no FD-classifier for it: this notebook scores CelebA with real FID "
        f"only, and pytorch-fid's Inception weights ({metrics.FID_WEIGHTS_NAME}) are not on disk. Download "
        f"{metrics.FID_WEIGHTS_URL} and pass fid_weights=<path> (or set ${metrics.FID_WEIGHTS_ENV}, or put it in "
        "torch.hub's checkpoints folder). amdre never downloads it.")
torch.manual_seed(seeds[0])
np.random.seed(seeds[0])
torch.set_num_threads(n_threads)
root = data_root or DATA
t_start = time.perf_counter()

# %% [markdown]
# ## Data and the score
# Labelled data (Fashion-MNIST by default) is scored with the **FD-classifier**: the Fréchet distance between Gaussian
# fits of a small CNN classifier's 128-d features on `n_eval` real test images and on `n_eval` samples (lower is
# better; it ranks models on the same data, it is *not* FID). It is the classifier notebook 03 trains and caches.
# CelebA is scored with **FID** (pytorch-fid's Inception, offline weights only). Samples: `sample_ld_steps` steps of
# prior Langevin from $\mathcal N(0, I)$ (or $\mathcal N(0, I)$ draws for 0 stages). The reconstruction MSE is per pixel
# on the $[-1, 1]$ scale, posterior Langevin under each model's own prior, `n_test_mse` test images.

# %%
train_set = data.load(dataset, root, n=n_train or None)
test_set = data.load(dataset, root, split="test", n=max(n_eval, n_test_mse))
x_real, x_mse = test_set.images[:n_eval], test_set.images[:n_test_mse]
if dataset == "celeba":
    metric_name = "FID"
    def sample_score(x):
        return metrics.fid(x_real, x, weights_path=fid_weights or None, device=device)
else:
    metric_name = "FD-classifier"
    clf_set = data.load(dataset, root, n=classifier_n)
    clf_path = RUNS / f"fd_classifier-{dataset}-n{len(clf_set)}-e{classifier_epochs}.pt"
    classifier = metrics.fd_classifier(clf_set.images, clf_set.labels, cache_path=clf_path, epochs=classifier_epochs,
                                       device=device)
    def sample_score(x):
        return metrics.fd_classifier_score(classifier, x_real, x)
print(train_set, f"scored by {metric_name}", sep="\n")

def make_score(seed):
    def score(g, prior):
        x = metrics.sample_images(g, prior, n_eval, sample_ld_steps, sample_ld_step_size, seed=seed)
        return {metric_name: sample_score(x),
                "MSE": metrics.reconstruction_mse(g, prior, x_mse, n_steps=ld_steps, step_size=ld_step_size,
                                                  sigma=sigma, batch_size=500, seed=seed)}
    return score

# %% [markdown]
# ## The runs
# One Gaussian-prior run plus one adaptive run per $m \ge 1$, per seed, checkpointed under `runs/` (a re-run loads them).

# %%
results = {}
for seed in seeds:
    cfg = TrainConfig(generator=generator, nz=nz, ngf=ngf, epochs=epochs, batch_size=batch_size, ld_steps=ld_steps,
                      ld_step_size=ld_step_size, sigma=sigma, lr_g=lr_g, lr_ebm=lr_ebm, prior_sampling=prior_sampling,
                      prior_ld_steps=prior_ld_steps, prior_ld_step_size=prior_ld_step_size, tre_steps=tre_steps,
                      seed=seed, device=device)
    out = RUNS / f"07_ablations-{dataset}-n{len(train_set)}-e{epochs}-seed{seed}"
    results[seed] = metrics.stage_ablation(train_set, stages, cfg, out, make_score(seed), resume=resume)
    print(f"seed {seed}: training seconds " + ", ".join(f"{k} {v:.0f}" for k, v in results[seed]["seconds"].items()))

# %% [markdown]
# ## Table 3 at teaching scale, beside the paper's

# %%
table = pd.concat({metric_name: metrics.ablation_table(results, metric_name, paper=metrics.PAPER_TABLE3_FID),
                   "MSE": metrics.ablation_table(results, "MSE", digits=4)}, axis=1)
display(table)

# %%
per_seed = {meth: {m: [results[s][meth][m][metric_name] for s in seeds] for m in stages}
            for meth in ("adaptive", "non-adaptive")}
fig = viz.plot_ablation(stages, per_seed, paper=metrics.PAPER_TABLE3_FID, ylabel=f"{metric_name} ({dataset})")
if save_figures:
    viz.savefig(fig, "07_ablation.png")
plt.show()

# %% [markdown]
# The same Langevin sampler, decoded, for each model of the first seed: rows are the models of the table.

# %%
from amdre.train import load_checkpoint

s0 = seeds[0]
out0 = RUNS / f"07_ablations-{dataset}-n{len(train_set)}-e{epochs}-seed{s0}"
g0, p0, _, _ = load_checkpoint(out0 / "gaussian")                 # its own TRE prior has max(stages) ratios
rows = [("0 stages", g0, None)] + [(f"adaptive m = {m}", *load_checkpoint(out0 / f"adaptive-m{m}")[:2])
                                   for m in stages if m > 0] + [(f"non-adaptive m = {p0.n_stages}", g0, p0)]
fig, axes = plt.subplots(len(rows), 1, figsize=(8, 0.62 * len(rows) + 0.2), constrained_layout=True)
for ax, (label, g, prior) in zip(np.atleast_1d(axes), rows):
    x = metrics.sample_images(g, prior, 16, sample_ld_steps, sample_ld_step_size, seed=s0)
    viz.show_images(x, nrow=16, ax=ax)
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
if save_figures:
    viz.savefig(fig, "07_samples.png")
plt.show()

# %% [markdown]
# ## Parameter efficiency (Sec. 5.6)
# The paper: "with 4 density ratio estimators, the number of parameters in the prior EBM is only around 1 % of the
# number of parameters in the generator". Counted for the nets of Tables 4 and 5 at the paper's sizes
# (nz = 100, ngf = 64; CIFAR-10 nz = 128):

# %%
counts = []
for name, z_dim in (("svhn", 100), ("celeba", 100), ("cifar10", 128)):
    prior4 = EBMPrior(z_dim)
    for _ in range(4):
        prior4.add_stage()
    n_g, n_p = metrics.parameter_count(make_generator(name, z_dim, 64)), metrics.parameter_count(prior4)
    counts.append({"generator (Table 5)": name, "nz": z_dim, "generator params": n_g,
                   "4-stage prior params (Table 4)": n_p, "prior / generator": f"{n_p / n_g:.1%}"})
counts = pd.DataFrame(counts).set_index("generator (Table 5)")
display(counts)
ours_g = metrics.parameter_count(make_generator(generator, nz, ngf))
ours_p = EBMPrior(nz)
for _ in range(4):
    ours_p.add_stage()
print(f"our teaching model: generator {ours_g:,} params, 4-stage prior {metrics.parameter_count(ours_p):,} "
      f"({metrics.parameter_count(ours_p) / ours_g:.0%})")

# %% [markdown]
# With Table 4's ratio net (100 → 200 → 200 → 1: 60,601 parameters each) the 4-stage prior has 242,404 parameters,
# **about 7 %** of the SVHN and CelebA generators (3.4-3.6 M) and 4 % of CIFAR-10's: small, but not the "around 1 %"
# the text states (that figure would fit a prior of one ratio net against a generator of ~6 M parameters, or narrower
# ratio nets). At teaching scale the ratio nets are as large as our tiny generator.

# %% [markdown]
# ## Why the adaptive prior loses here
# With the memory bank, stage $k \ge 1$ contrasts the current posterior samples with *last stage's* posterior samples,
# standing in for samples of $p_{\phi_k}$. They are that only if $r_{\phi_{k-1}}$ was accurate. Stage 0 is the hard
# case of notebook 01: $\mathcal N(0, I)$ against an aggregate posterior several nats away (its classifier reaches
# ~90 % accuracy), trained for a few hundred steps while the generator moves. Its error is never seen again: later
# stages only compare posterior samples with each other, so wherever $r_{\phi_0}$ put mass that no posterior sample
# visits, it stays, and test-time Langevin finds it. TRE fits all its ratios at once to the final, fixed posterior with
# waymarks in between, a problem it solves well in 8 dimensions. The paper's runs have ~100x more NCE steps per stage.
# Showing each stage real samples of its prior (`prior_sampling="langevin"`, Sec. 3.3's other option, twice the cost)
# helped in some of our runs (FD-classifier 15-19 vs TRE's 22-24 at 5,000 images) and not in others (38-53 vs 25-27):
# not robust enough to assert at this budget.
#
# ## The claims, asserted
# 1. Four stages beat none: averaged over seeds, the 4-stage prior's score is below 0.5 x the 0-stage score, for both
#    training methods.
# 2. The Sec. 5.6 count: the 4-stage prior is 5-10 % of the SVHN and CelebA generators (not ~1 %).
#
# Printed, not asserted: adaptive vs non-adaptive at 4 stages, on both scores. Table 3's adaptive advantage does not
# reproduce at this scale (above); the MSE differences between the two are a few tenths of a percent.

# %%
def mean_score(meth, m, key=metric_name):
    return float(np.mean([results[s][meth][m][key] for s in seeds]))

for meth in ("adaptive", "non-adaptive"):
    assert mean_score(meth, 4) < 0.5 * mean_score(meth, 0), (meth, mean_score(meth, 4), mean_score(meth, 0))
share = counts["4-stage prior params (Table 4)"] / counts["generator params"]
assert 0.05 < share["svhn"] < 0.10 and 0.05 < share["celeba"] < 0.10, share
print(f"claim 1 holds ({len(seeds)} seed(s)): {metric_name} 0 stages {mean_score('adaptive', 0):.1f} vs 4 stages "
      f"adaptive {mean_score('adaptive', 4):.1f}, non-adaptive {mean_score('non-adaptive', 4):.1f}")
print(f"claim 2 holds: 4-stage prior / generator = {share['svhn']:.1%} (SVHN), {share['celeba']:.1%} (CelebA)")
print(f"not a claim: MSE at 4 stages, adaptive {mean_score('adaptive', 4, 'MSE'):.4f} vs non-adaptive "
      f"{mean_score('non-adaptive', 4, 'MSE'):.4f}")
print(f"notebook time: {time.perf_counter() - t_start:.0f} s")

# %% [markdown]
# ## Choices, and how to reach the paper's scale
# * **Grid and budget.** The default grid is $m \in \{0, 1, 4\}$ on 4,000 images for 16 epochs (a stage every 16, 4
#   epochs), one seed: three training runs (one Gaussian-prior run serving every non-adaptive $m$ and $m = 0$, two
#   adaptive) in about a minute and a half on two CPU cores. `stages=[0, 1, 2, 4, 8]` gives the paper's grid and
#   `seeds=[0, 1]` the spread over training seeds. With `seeds=[0, 1]` and `stages=[0, 1, 2, 4]` we measured
#   FD-classifier 108 (0 stages); adaptive 40 / 47 / 44 and non-adaptive 33 / 20 / 19 for m = 1 / 2 / 4 (means of
#   the two seeds; single runs vary by up to 60, e.g. adaptive m = 2: 16 and 78).
# * **Paper scale (GPU):** `dataset="celeba", data_root=..., n_train=0, generator="celeba", nz=100, ngf=64,
#   epochs=100, stages=[0, 1, 2, 4, 8], ld_steps=30, lr_g=1e-4, lr_ebm=5e-5, prior_sampling="memory",
#   tre_steps=1500, n_eval=50000, device="cuda", fid_weights=...`: 100 epochs with a stage every 25 for m = 4
#   (every 12, and 16 for the last, for m = 8), scored by real FID against the first `n_eval` test faces.
