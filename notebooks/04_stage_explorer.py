# %% [markdown]
# # 04 · Stage explorer: every stage of adaptive multi-stage NCE, in a 2-D latent space
#
# **Teaching claim.** Each stage $k$ trains one classifier between the current prior $p_{\phi_k}$ and the aggregated
# posterior $q_k$ it induces, and multiplies the learned ratio into the prior. Stage 0 faces by far the largest gap
# (the Gaussian against a posterior the generator has shaped); after it the new prior sits close to the new aggregated
# posterior, so every later classifier faces a near-chance problem (the paper's Figure 4, Sec. 5.3). By the end the
# aggregated posterior is more likely under the learned prior than under $\mathcal N(0, I)$. With a latent of
# $d = 2$ dimensions every density can be drawn, and measured, on a grid.
#
# **The method (Xiao & Han 2022, Sec. 3.3).** The prior is a product of ratios on top of a Gaussian (Eq. 6),
#
# $$p_\phi(z) = \prod_{k=0}^{m-1} r_{\phi_k}(z)\, p_0(z), \qquad p_0 = \mathcal N(0, I),$$
#
# and during stage $k$ the model uses only the stages before it, $p_{\phi_k}(z) = \prod_{i<k} r_{\phi_i}(z)\,p_0(z)$
# (Eq. 8). Stage $k$ alternates, batch by batch,
#
# 1. posterior samples $z \sim p(z\mid x) \propto p_{\phi_k}(z)\,\mathcal N(x; g_\theta(z), \sigma^2 I)$ by
#    short-run Langevin (Eq. 3) from noise; over the data they are samples of the *aggregated posterior*
#    $q_k(z) = \mathbb E_x\,p(z \mid x)$;
# 2. a generator step on $\|x - g_\theta(z)\|^2 / 2\sigma^2$ (Eq. 2);
# 3. an NCE step (Eq. 4) for a new ratio net $r_{\phi_k}$, posterior samples against samples of $p_{\phi_k}$, so that
#    $r_{\phi_k} \to q_k / p_{\phi_k}$ and hence $p_{\phi_{k+1}} = r_{\phi_k}\,p_{\phi_k} \approx q_k$.

# %% tags=["parameters"]
# parameters
seed = 0                     # the data order, the initial weights and every Langevin chain
n_train = 1437               # training digits: the first n of the 1,437 in scikit-learn's training split
ngf = 16                     # generator width (the digits MLP: z, then 4 ngf, 4 ngf, 64 pixels)
epochs = 18
stage_every = 6              # a new stage every 6 epochs: 3 stages
n_stages = 3
batch_size = 200
ld_steps = 30                # posterior Langevin steps (App. A.3: 30)
ld_step_size = 0.01          # Eq. 3's s (drift s/2, noise sqrt s); LEBM's code calls it 0.1
sigma = 0.3                  # std of p(x|z)
lr_g = 3e-3                  # generator Adam learning rate (the paper: 1e-4, for 100 epochs)
lr_ebm = 2e-3                # ratio-net Adam learning rate (the paper: 5e-5)
prior_sampling = "langevin"  # NCE's prior samples: "langevin" (short-run prior LD) or "memory" (App. A.3's bank)
prior_ld_steps = 20          # short-run prior Langevin steps (measured against the exact density below)
prior_ld_step_size = 0.16    # Eq. 3's s (LEBM's 0.4)
extent = 4.0                 # the plots cover z_1 and z_2 in [-extent, extent]
n_threads = 1

# %%
import math
import resource
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Image, display

from amdre import data, params, viz
from amdre.experiments import run_dir
from amdre.langevin import log_likelihood, posterior_bank, sample_posterior, sample_prior, seeded
from amdre.nce import nce_loss
from amdre.train import TrainConfig, load_checkpoint, train
from amdre.tre import fit_log_ratio

params.notebook(globals())
params.ints(0, seed=seed)
params.ints(1, n_train=n_train, ngf=ngf, epochs=epochs, stage_every=stage_every, n_stages=n_stages,
            batch_size=batch_size, ld_steps=ld_steps, prior_ld_steps=prior_ld_steps, n_threads=n_threads)
params.positive(ld_step_size=ld_step_size, sigma=sigma, lr_g=lr_g, lr_ebm=lr_ebm,
                prior_ld_step_size=prior_ld_step_size, extent=extent)
params.one_of("prior_sampling", prior_sampling, ("langevin", "memory"))
if n_stages < 2 or epochs < n_stages * stage_every:
    raise ValueError(f"need n_stages >= 2 and epochs >= n_stages * stage_every so that every stage is trained; "
                     f"got n_stages={n_stages}, epochs={epochs}, stage_every={stage_every}")
if n_train > len(data.load("digits")):
    raise ValueError(f"n_train must be at most {len(data.load('digits'))} (the digits training split); got {n_train}")
torch.manual_seed(seed)
torch.set_num_threads(n_threads)

# %% [markdown]
# ## The data and the model
# scikit-learn's 8x8 handwritten digits (pixels scaled to $[-1, 1]$), a small MLP generator
# $g_\theta: \mathbb R^2 \to \mathbb R^{64}$ (`amdre.nets.generator("digits", nz=2)`), and a prior whose stages are
# the ratio nets of Table 4 ($2 \to 200 \to 200 \to 1$). Everything below fits in a minute of one CPU core.

# %%
train_set = data.load("digits", n=n_train)
print(train_set)
viz.show_images(train_set.images[:20], nrow=10, ax=plt.figure(figsize=(8, 1.9)).gca(),
                title="training digits (8x8 pixels)")
plt.show()


# %% [markdown]
# ## One stage, written from the primitives
# A batch of stage $k$, as `amdre.train.Trainer.train_step` runs it, from `amdre.langevin` and `amdre.nce`.
# `prior.log_prob(z, n_stages=k)` is $\log p_{\phi_k}(z)$ of Eq. 8 up to a constant: $-\|z\|^2/2$ plus the
# first $k$ log-ratios. The ratio trained in stage $k$ is the network `prior.stages[k]`, added when the stage begins
# (`prior.add_stage()`, which freezes $r_0 \dots r_{k-1}$).
#
# **Samples of the prior $p_{\phi_k}$**, the denominator side of NCE, can be drawn two ways (Sec. 3.3):
#
# * *short-run prior Langevin* (Eq. 3 on $\log p_{\phi_k}$, from $\mathcal N(0, I)$), our default;
# * the paper's *persistent memory bank* (App. A.3): one latent per training image, overwritten with that image's
#   posterior sample in the last epoch of each stage. During stage $k$ the bank therefore holds samples of $q_{k-1}$
#   and uses them **as if** they were samples of $p_{\phi_k}$. That rests on one assumption: the previous ratio is
#   accurate, $r_{k-1} \approx q_{k-1} / p_{\phi_{k-1}}$, so that
#   $p_{\phi_k} = r_{k-1}\,p_{\phi_{k-1}} \approx q_{k-1}$.
#   No prior sampling at all, but when the assumption fails nothing corrects it. In 2-D we can test it (below).

# %%
def stage_batch(generator, prior, k, x, bank_rows=None):
    """One batch of stage k (Fig. 1): the posterior and prior samples, the generator's loss and the NCE loss of r_k."""
    n = len(x)
    # 1. posterior samples under p_{phi_k}: Langevin (Eq. 3) on log p_{phi_k}(z) + log N(x; g(z), sigma^2 I), from noise
    z_post = sample_posterior(generator, prior, x, torch.randn(n, 2), ld_steps, ld_step_size, sigma, n_stages=k)
    # 2. the generator's loss, -log p(x|z) = ||x - g(z)||^2 / (2 sigma^2) (Eq. 2)
    gen_loss = -log_likelihood(generator, x, z_post, sigma).mean()
    # 3. samples of p_{phi_k}: N(0, I) in stage 0; later short-run prior Langevin from N(0, I), or the bank's q_{k-1}
    z_prior = torch.randn(n, 2)
    if k > 0:
        z_prior = bank_rows if bank_rows is not None else sample_prior(prior, z_prior, prior_ld_steps,
                                                                       prior_ld_step_size, n_stages=k)
    # 4. NCE (Eq. 4) for r_k: posterior samples on the numerator side, prior samples on the other
    r_k = prior.stages[k]
    return z_post, z_prior, gen_loss, nce_loss(r_k(z_post), r_k(z_prior))


# %% [markdown]
# The whole of training is this batch inside two loops, with an Adam step on the generator's loss ($\theta$) and one
# on the NCE loss (the newest ratio net only):
#
# ```python
# for k in range(n_stages):                      # stage k: the prior in use is p_{phi_k}
#     prior.add_stage()                          # r_k, a fresh ratio net; r_0 ... r_{k-1} are frozen
#     for epoch in range(stage_every):
#         for x in batches:
#             z_post, z_prior, gen_loss, nce = stage_batch(generator, prior, k, x)
#             adam_step(generator, gen_loss); adam_step(prior.stages[k], nce)
#     # from here on the model uses p_{phi_{k+1}} = r_k p_{phi_k}
# ```
#
# `amdre.train.train` runs exactly that loop, with checkpoints: `last.pt` after every epoch, and `stage{k}.pt` at the
# end of every stage, which we load below. The run folder is named by a hash of the configuration, so re-running
# this notebook with the same parameters loads the run instead of training again.

# %%
cfg = TrainConfig(generator="digits", nz=2, ngf=ngf, epochs=epochs, n_stages=n_stages, stage_every=stage_every,
                  batch_size=batch_size, ld_steps=ld_steps, ld_step_size=ld_step_size, sigma=sigma, lr_g=lr_g,
                  lr_ebm=lr_ebm, prior_sampling=prior_sampling, prior_ld_steps=prior_ld_steps,
                  prior_ld_step_size=prior_ld_step_size, seed=seed)
out_dir = run_dir("04_stage_explorer", cfg, n_train=len(train_set))
done_before, t0 = (out_dir / "last.pt").exists(), time.process_time()
trainer = train(cfg, train_set, out_dir, progress=False)
how = "loaded" if done_before else f"trained in {time.process_time() - t0:.0f} CPU s"
print(f"{trainer.epoch} epochs, {trainer.prior.n_stages} stages, {how}; checkpoints in runs/{out_dir.name}/")

# %% [markdown]
# **Check:** on one batch of the last stage, `stage_batch` and the package's `train_step` draw the same chains from
# the same seed and give the same samples and losses.

# %%
k, x, idx = n_stages - 1, train_set.images[:batch_size], torch.arange(batch_size)
torch.manual_seed(seed)
z_pkg, stats = trainer.train_step(x, idx, k)                  # stats: gen_loss, mean ||z||^2, nce_loss, nce_acc
torch.manual_seed(seed)
bank = None if trainer.bank is None else trainer.bank[idx]
z_ours, _, gen_ours, nce_ours = stage_batch(trainer.generator, trainer.prior, k, x, bank_rows=bank)
assert torch.allclose(z_ours, z_pkg, atol=1e-5), (z_ours - z_pkg).abs().max()
assert abs(gen_ours.item() - stats[0].item()) < 1e-3 * abs(stats[0].item()), (gen_ours, stats)
assert abs(nce_ours.item() - stats[2].item()) < 1e-4, (nce_ours, stats)
print(f"stage {k}: generator loss {gen_ours.item():.3f} (package {stats[0].item():.3f}), "
      f"NCE loss {nce_ours.item():.4f} (package {stats[2].item():.4f})")

# %% [markdown]
# ## Every stage, from its checkpoint
# For each stage $k$ we load `stage{k}.pt` (the generator and the ratios $r_0 \dots r_k$ as they were when the stage
# ended) and draw $q_k$: one posterior sample per training image under $p_{\phi_k}$
# (`posterior_bank(..., n_stages=k)`, the Langevin chain of step 1 above, seeded). The grid densities are
# `prior.log_prob` on a grid, normalised there. Eq. 8's recursion holds by construction:
# $\log p_{\phi_{k+1}} = \log r_k + \log p_{\phi_k}$.

# %%
snapshots = []
for k in range(n_stages):
    g_k, prior_k, _, _ = load_checkpoint(out_dir / f"stage{k}.pt")
    z_k = posterior_bank(g_k, prior_k, train_set, ld_steps, ld_step_size, sigma, n_stages=k, seed=seed)
    snapshots.append(dict(generator=g_k, prior=prior_k, z_post=z_k))
    with torch.no_grad():
        assert torch.allclose(prior_k.log_prob(z_k, n_stages=k + 1),
                              prior_k.stages[k](z_k) + prior_k.log_prob(z_k, n_stages=k), atol=1e-4)

# %% [markdown]
# ## The stage losses (the paper's Figure 4), and why stage 0's loss comes back up
# Left, each stage's NCE loss against the step within the stage, as in Figure 4; middle, the same per epoch; right,
# how spread out the posterior samples are, $\mathbb E\|z\|^2$ over each epoch's batches (under $\mathcal N(0, I)$
# it is $d = 2$). A classifier at chance has loss $2\log 2 \approx 1.386$.

# %%
history = trainer.history
fig, axes = plt.subplots(1, 3, figsize=(15, 3.7), constrained_layout=True)
viz.plot_stage_losses(history, ax=axes[0], smooth=5)
viz.latent.plot_stage_epochs(history, "nce_loss", ax=axes[1], reference=viz.CHANCE_NCE,
                             reference_label="chance: 2 log 2", ylabel="NCE loss (Eq. 4), epoch mean",
                             title="NCE loss per epoch")
viz.latent.plot_stage_epochs(history, "z_norm2", ax=axes[2], reference=2.0, reference_label="N(0, I): 2",
                             ylabel="mean $\\|z\\|^2$ of posterior samples", title="how spread out $q$ is")
viz.savefig(fig, "04_stage_losses.png")
plt.show()

# %% [markdown]
# Stage 0's loss first falls, then climbs back towards chance *while the stage is still running*. Two readings:
# the classifier gets worse, or the task gets harder because $q_0$ moves. The generator trains during the stage, and
# the posterior has the prior's pull $-\|z\|^2/2$ in it, so as the generator learns, the codes of the data contract
# towards where $\mathcal N(0, I)$ has its mass (the right panel). To tell the two readings apart we train a
# **fresh** classifier (`fit_log_ratio`, 300 steps) between half of $q_0$'s samples at the stage's end and
# $\mathcal N(0, I)$, and score it and $r_0$ on the other half against new Gaussian samples. If even the fresh
# classifier cannot get back down to the loss stage 0 had at its lowest, the rebound is the gap closing, not NCE
# failing.

# %%
epoch_no, nce_epoch, stage_of = viz.latent.epoch_means(history, "nce_loss")
_, z2_epoch, _ = viz.latent.epoch_means(history, "z_norm2")
stage0 = [i for i, s in enumerate(stage_of) if s == 0]
low, end = min(stage0, key=lambda i: nce_epoch[i]), stage0[-1]
z_q0 = snapshots[0]["z_post"]
half = len(z_q0) // 2
with seeded(seed + 1, "cpu"):
    z_gauss = torch.randn(2 * half, 2)
fresh = fit_log_ratio(z_q0[:half], z_gauss[:half], steps=300, seed=seed)
with torch.no_grad():
    r0 = snapshots[0]["prior"].stages[0]
    loss_r0 = nce_loss(r0(z_q0[half:2 * half]), r0(z_gauss[half:])).item()
    loss_fresh = nce_loss(fresh(z_q0[half:2 * half]), fresh(z_gauss[half:])).item()
print(f"stage 0: epoch-mean NCE loss {nce_epoch[low]:.3f} at its lowest (epoch {epoch_no[low]}, "
      f"E||z||^2 = {z2_epoch[low]:.2f}) -> {nce_epoch[end]:.3f} at the stage's end (epoch {epoch_no[end]}, "
      f"E||z||^2 = {z2_epoch[end]:.2f}; N(0, I): 2)")
print(f"at the stage's end, held-out NCE loss of q_0 against N(0, I): r_0 {loss_r0:.3f}, "
      f"a fresh classifier {loss_fresh:.3f}")

# %% [markdown]
# ## Each stage, side by side
# One row per stage $k$, from the left:
#
# * the prior $p_{\phi_k}$ the stage started from;
# * samples of the aggregated posterior $q_k$ (orange), over the contours of $p_{\phi_k}$;
# * the learned $\log r_k \approx \log q_k - \log p_{\phi_k}$: red where the posterior has more mass than the prior,
#   blue where it has less (colours clipped at the 99th percentile over the posterior samples);
# * the new prior $p_{\phi_{k+1}} = r_k\,p_{\phi_k}$ (same colour scale as the first panel), with $q_k$'s samples;
# * digits decoded from 16 samples of $p_{\phi_{k+1}}$ (sampling-importance-resampling, Sec. 3.3).

# %%
fig, axes = plt.subplots(n_stages, 5, figsize=(19, 3.6 * n_stages), constrained_layout=True)
for k, snap in enumerate(snapshots):
    viz.plot_stage(snap["prior"], k, snap["z_post"], snap["generator"], extent=extent, n=80, seed=seed, axes=axes[k])
display(Image(filename=viz.savefig(fig, "04_stages.png", close=True)))      # shows the saved PNG: one render only

# %% [markdown]
# ## The explorer
# Move the **stage** slider: the same five panels for one stage at a time (needs a live kernel; the figure above is
# the static copy). The callback draws the figure and puts its PNG into the `Output` widget with
# `append_display_data`, rather than `plt.show()` inside `with out:`: the result in JupyterLab is the same, and headless
# runs (papermill, nbclient) do not have to mirror captured output back to the kernel, which can hang them
# (jupyter/nbclient#312).

# %%
out = widgets.Output()


def show_stage(change):
    k = change["new"]
    snap = snapshots[k]
    fig = viz.plot_stage(snap["prior"], k, snap["z_post"], snap["generator"], extent=extent, n=80, seed=seed)
    plt.close(fig)
    out.outputs = ()
    out.append_display_data(fig)


slider = widgets.IntSlider(value=0, min=0, max=n_stages - 1, step=1, description="stage")
slider.observe(show_stage, names="value")
show_stage({"new": 0})
widgets.VBox([slider, out])

# %% [markdown]
# ## Why $q_0$ is a ring
# The first row shows $\log r_0$ most negative at the origin, so $p_{\phi_1} = r_0\,p_0$ is a ring: the aggregated
# posterior has almost no mass where $\mathcal N(0, I)$ has the most. The reason is what the generator does with its
# plane. Left below, $q_0$ coloured by the digit each sample came from; right, the generator's images on a lattice of
# the plane. The digit classes sit in sectors around the origin, and the origin itself decodes to a blur close to
# the *mean* digit, which explains no particular digit well. So each image's posterior $p(z \mid x)$ lies away from
# the centre, and their average, $q_0$, is a ring. We measure it three ways: the fraction of $q_0$ within radius 0.5
# (under $\mathcal N(0, I)$ in 2-D it is $1 - e^{-0.5^2/2} = 11.8\,\%$), how close $g(0)$ is to the mean digit, and
# the reconstruction error of the best point on circles of growing radius.

# %%
g0 = snapshots[0]["generator"]
x_all = train_set.images
inner, inner_gauss = (z_q0.norm(dim=1) < 0.5).float().mean().item(), 1 - math.exp(-0.5 ** 2 / 2)
with torch.no_grad():
    centre = g0(torch.zeros(1, 2))
    mean_digit = x_all.mean(0, keepdim=True)
    angles = torch.linspace(0, 2 * math.pi, 73)[:-1]
    best = {}
    for radius in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0):
        circle = g0(radius * torch.stack([angles.cos(), angles.sin()], 1))          # 72 points on the circle
        best[radius] = (x_all[:, None] - circle[None]).pow(2).flatten(2).mean(2).min(1).values.mean().item()
print(f"fraction of q_0 within radius 0.5: {inner:.1%} (N(0, I): {inner_gauss:.1%})")
print(f"per-pixel squared distance of g(0) to the mean digit {(centre - mean_digit).pow(2).mean().item():.3f}; "
      f"of a digit to the mean digit {(x_all - mean_digit).pow(2).mean().item():.3f}")
print(pd.Series(best, name="per-pixel MSE of the best point on the circle").rename_axis("radius").round(3).to_string())
fig = viz.latent.plot_latent_map(g0, z_q0, train_set.labels, extent=3.0, n=7,
                                 title="$q_0$ (end of stage 0), coloured by digit")
viz.savefig(fig, "04_latent_map.png")
plt.show()

# %% [markdown]
# ## How far apart are prior and posterior at each stage?
# Three measurements per stage $k$:
#
# * **NCE loss and accuracy** of $r_k$ in the stage's last epoch (training batches; chance: $2\log 2$ and 0.5);
# * **NCE's KL estimate** $\widehat{\mathrm{KL}}(q_k\,\|\,p_{\phi_k}) = \mathbb E_{q_k}[\log r_k(z)]$ over the
#   posterior samples above (the mean log-ratio on the numerator's samples, as in notebook 01);
# * the mean **log-density of the final aggregated posterior** $q_{m-1}$ under each prior $p_{\phi_j}$,
#   $j = 0 \dots m$, normalised on the grid (`amdre.viz.grid_log_density`): does the prior move towards the posterior?

# %%
hist = pd.DataFrame({key: history[key] for key in ("epoch", "stage", "nce_loss", "nce_acc")})
last_epoch = hist[hist.epoch == hist.groupby("stage").epoch.transform("max")].groupby("stage")
with torch.no_grad():
    kl_est = [snap["prior"].stages[k](snap["z_post"]).mean().item() for k, snap in enumerate(snapshots)]
table = pd.DataFrame({"NCE loss (last epoch)": last_epoch.nce_loss.mean(),
                      "NCE accuracy (last epoch)": last_epoch.nce_acc.mean(),
                      "KL estimate E_q[log r_k]": kl_est})
table.index.name = "stage k"
table.round(3)

# %%
final_prior, z_final = snapshots[-1]["prior"], snapshots[-1]["z_post"]
loglik = pd.Series({f"p_{j}": viz.grid_log_density(final_prior, z_final, j, extent, n=120).mean().item()
                    for j in range(n_stages + 1)}, name=f"mean log p_j(z), z ~ q_{n_stages - 1}")
fig, ax = plt.subplots(figsize=(5.5, 3.4), constrained_layout=True)
ax.plot(range(n_stages + 1), loglik.values, marker="o", label="learned priors $p_j$")
ax.axhline(loglik.iloc[0], color="gray", ls=":", label="$p_0 = N(0, I)$")
ax.set(xticks=range(n_stages + 1), xticklabels=loglik.index, xlabel="prior",
       ylabel="mean log-density [nats per sample]",
       title=f"final aggregated posterior $q_{n_stages - 1}$ under each prior")
ax.legend(fontsize=8)
plt.show()
loglik.round(3)

# %% [markdown]
# ## Samples of the prior: short-run Langevin or the memory bank?
# In 2-D we can score any set of samples against the exact density: `grid_tv` bins the plane into 16 x 16 squares
# and returns the total-variation distance between the samples' histogram and $p_{\phi_k}$'s mass in each square
# (0: identical, 1: disjoint), with the value that exact samples of the same size get (the *floor*, from sampling
# noise alone). For each later stage $k$, with 1,437 samples each: the noise $\mathcal N(0, I)$ that Langevin starts
# from, short-run prior Langevin with `prior_ld_steps` steps and the same chains continued to 60 steps (the repo's
# default elsewhere), and what the
# memory bank would hold, $q_{k-1}$ (the bank's assumption is $q_{k-1} \approx p_{\phi_k}$).

# %%
rows = {}
for k in range(1, n_stages):
    prior_k, n = snapshots[k]["prior"], len(train_set)
    with seeded(seed + k, "cpu"):
        z_start = torch.randn(n, 2)
        z_ld = sample_prior(prior_k, z_start, prior_ld_steps, prior_ld_step_size, n_stages=k)
        z_ld60 = sample_prior(prior_k, z_ld, max(60 - prior_ld_steps, 0), prior_ld_step_size, n_stages=k)
    tv = {name: viz.latent.grid_tv(prior_k, z, k, extent, seed=seed) for name, z in
          (("N(0, I) start", z_start), (f"Langevin, {prior_ld_steps} steps", z_ld), ("Langevin, 60 steps", z_ld60),
           ("memory bank: q_(k-1)", snapshots[k - 1]["z_post"]))}
    rows[k] = {**{name: v[0] for name, v in tv.items()}, "floor (exact samples)": tv["N(0, I) start"][1]}
tv_table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("stage k")
tv_table.round(3)

# %% [markdown]
# ## The claims, asserted
# 1. Stage 0 has by far the largest prior-posterior gap: its KL estimate is more than twice that of every later
#    stage, and its classifier is the most accurate.
# 2. The learned prior $p_{\phi_m}$ explains the final aggregated posterior better than the Gaussian it started from,
#    by more than 0.25 nats per sample, and every stage adds to it ($p_{\phi_{j+1}}$ above $p_{\phi_j}$ for every $j$).
# 3. The ring: $q_0$ puts less than a third of $\mathcal N(0, I)$'s mass within radius 0.5, and the centre
#    reconstructs worse than radius 1.5 does.
# 4. The rebound is the gap closing: $q_0$ contracts during stage 0 (E‖z‖² lower at the stage's end than where the
#    loss was lowest), and a fresh classifier on the final $q_0$ stays above stage 0's lowest loss.
# 5. Short-run prior Langevin with `prior_ld_steps` steps samples every later $p_{\phi_k}$ within 0.04 (total
#    variation) of what exact samples get, so more steps cannot help much; the memory bank's stand-in $q_{k-1}$ is at
#    least 0.08 further off.

# %%
kl = table["KL estimate E_q[log r_k]"]
acc = table["NCE accuracy (last epoch)"]
gain = loglik.iloc[-1] - loglik.iloc[0]
ld, ld60, bank_tv, floor = (tv_table[c] for c in (f"Langevin, {prior_ld_steps} steps", "Langevin, 60 steps",
                                                  "memory bank: q_(k-1)", "floor (exact samples)"))
assert (kl.iloc[0] > 2 * kl.iloc[1:]).all(), table
assert (acc.iloc[0] > acc.iloc[1:]).all(), table
assert gain > 0.25 and (loglik.diff().iloc[1:] > 0).all(), loglik
assert inner < inner_gauss / 3 and best[0.0] > best[1.5], (inner, best)
assert z2_epoch[end] < z2_epoch[low] and loss_fresh > nce_epoch[low], (z2_epoch, nce_epoch, loss_r0, loss_fresh)
assert (ld - floor < 0.04).all() and (bank_tv - floor > 0.08).all(), tv_table
print(f"claims hold: KL estimate stage 0 {kl.iloc[0]:.3f} vs later max {kl.iloc[1:].max():.3f}; "
      f"accuracy stage 0 {acc.iloc[0]:.3f} vs later max {acc.iloc[1:].max():.3f}; "
      f"log-density of q_{n_stages - 1} under p_{n_stages} minus under p_0: {gain:.3f} nats "
      f"(smallest step {loglik.diff().iloc[1:].min():.3f}); q_0 within radius 0.5: {inner:.1%}; "
      f"E||z||^2 {z2_epoch[low]:.2f} -> {z2_epoch[end]:.2f}, loss lowest {nce_epoch[low]:.3f}, fresh {loss_fresh:.3f}; "
      f"TV above the floor: Langevin at most {(ld - floor).max():.3f} (60 steps {(ld60 - floor).max():.3f}), "
      f"bank at least {(bank_tv - floor).min():.3f}")
usage = resource.getrusage(resource.RUSAGE_SELF)
print(f"CPU time of this kernel so far (start-up included): {usage.ru_utime + usage.ru_stime:.0f} s")

# %% [markdown]
# ## What we saw
# At seeds 0, 1 and 2 (defaults: 1,437 digits, 18 epochs, 3 stages; about a minute of one CPU core each), beside
# the paper (Sec. 5.3 and Figure 4: 4 stages on image datasets, no numbers given for the losses):
#
# | | paper | seed 0 | seed 1 | seed 2 |
# |---|---|---|---|---|
# | NCE loss, last epoch of stage 0 / 1 / 2 | stage 0 "significantly lower than later stages" | 1.09 / 1.31 / 1.31 | 1.21 / 1.35 / 1.35 | 0.94 / 1.32 / 1.38 |
# | KL estimate $\mathbb E_{q_k}[\log r_k]$, stage 0 / later max | – | 0.49 / 0.07 | 0.33 / 0.08 | 1.13 / 0.26 |
# | mean log-density of $q_2$ under $p_0, p_1, p_2, p_3$ (nats) | – | −3.71, −3.53, −3.34, −3.23 | −3.63, −3.55, −3.41, −3.31 | −3.61, −3.49, −3.24, −3.19 |
# | $q_0$ within radius 0.5 ($\mathcal N(0, I)$: 11.8 %) | – | 0.1 % | 0.1 % | 0.0 % |
# | stage 0 loss: lowest → end; fresh classifier at the end | – | 0.96 → 1.09; 1.07 | 0.98 → 1.21; 1.16 | 0.73 → 0.94; 0.99 |
# | $\mathbb E\|z\|^2$ at those epochs ($\mathcal N(0, I)$: 2) | – | 5.95 → 4.07 | 5.84 → 3.53 | 5.59 → 3.61 |
# | TV to $p_{\phi_1}$, $p_{\phi_2}$: Langevin 20 steps / bank / floor | – | 0.14 / 0.30 / 0.15; 0.15 / 0.24 / 0.13 | 0.15 / 0.30 / 0.14; 0.15 / 0.26 / 0.13 | 0.15 / 0.36 / 0.12; 0.12 / 0.27 / 0.12 |
#
# What reproduces: Figure 4's shape (stage 0 is the easy, large-gap problem and later stages hover near chance), and
# the premise of the method: the learned prior explains the aggregated posterior better than $\mathcal N(0, I)$, and
# each stage adds to it. What we add: in 2-D the ring and the rebound have plain causes (the generator puts the blurry
# mean digit at the origin; the posterior contracts towards the prior while stage 0 runs). What does not hold here:
# the paper's memory bank, at this scale. With `prior_sampling="memory"` (same seeds, otherwise the defaults) the
# bank's samples sit 0.15-0.28 above the floor in total variation; the prior grows tails where no bank sample goes
# (the final prior puts 31 %, 12 % and 15 % of its mass beyond radius 3, where $q_2$ has 5-6 %; with Langevin 5-7 %),
# and it explains $q_2$ by only −0.03, 0.11 and 0.12 nats more than $\mathcal N(0, I)$, so claim 2 fails at every
# seed. The bank's assumption needs an accurate ratio, and a near-chance NCE classifier is not one. So this notebook,
# like the others, samples the prior by short-run Langevin during training.
#
# ## Exercises
# 1. `papermill ... -p prior_sampling memory`: the paper's persistent bank. Compare the total-variation table and the
#    rows of the stage figure with the Langevin run: where does the bank's assumption $q_{k-1} \approx p_{\phi_k}$
#    fail, and what does the learned prior do far from the origin, where no bank sample ever goes?
# 2. `-p epochs 36 -p stage_every 12`: twice as long per stage. How far does stage 0's loss climb back, and how close
#    does $\mathbb E\|z\|^2$ get to 2? Which claims still hold?
# 3. `-p prior_ld_steps 5`: when does short-run prior Langevin become too short to stand in for $p_{\phi_k}$, and
#    how does the table of stage gaps change when the NCE classifier is fed poor prior samples?
