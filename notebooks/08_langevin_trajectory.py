# %% [markdown]
# # 08 · Langevin on the learned prior, frame by frame (Figure 5)
#
# **Teaching claim.** Start chains at the base distribution $p_0 = \mathcal N(0, I)$ and run Langevin dynamics on the
# learned multi-stage prior $p_\phi$: the decoded images turn from the blurry average that Gaussian codes give into
# clothing items, and the chains keep moving between items (they mix). Measured: the prior log-density of the chains
# rises, and their decoded images get closer to real ones (FD-classifier).
#
# **The sampler (Eq. 3 on the prior, Sec. 3.3 "test time sampling").** With
# $\log p_\phi(z) = \sum_{k<m} \log r_{\phi_k}(z) - \tfrac12\|z\|^2 + \text{const}$ (Eq. 6),
#
# $$z_{t+1} = z_t + \frac s2\,\nabla_z\Big(\sum_{k<m}\log r_{\phi_k}(z_t) - \tfrac12\|z_t\|^2\Big) + \sqrt s\,\omega_t,
#   \qquad \omega_t \sim \mathcal N(0, I),\quad z_0 \sim p_0 .$$
#
# The paper runs 200 steps here (Sec. 5.4), longer than its 100 test-time steps, to show where the chains go.
# `amdre.langevin.sample_prior(..., record_every=k)` returns $z_0, z_k, z_{2k}, \dots$; we decode each with $g_\theta$.
#
# **The model** is the one notebook 03 trained (Fashion-MNIST, 4 adaptive stages), loaded from its checkpoint
# `runs/03_latent_ebm-<dataset>-seed<seed>/`. If that checkpoint is missing, this notebook trains the same model
# (`amdre.train.teaching_config`, notebook 03's defaults) into the same folder, which takes a few minutes.

# %% tags=["parameters"]
# parameters
seed = 0
dataset = "fashion-mnist"       # the dataset notebook 03 trained on ("fashion-mnist" or "mnist5k")
n_steps = 200                   # Langevin steps (Sec. 5.4: 200)
step_size = 0.1                 # Eq. 3's s; notebook 03's test-time sampler uses the same
record_every = 5                # decode every this many steps: n_steps / record_every + 1 frames
n_chains = 16                   # chains shown in the animation
n_strip = 8                     # chains shown in the static strip
n_eval = 1000                   # chains (and real test images) for the FD-classifier and the log-density
classifier_n = 10000            # the FD-classifier of notebook 03 (shared cache in runs/)
classifier_epochs = 3
frame_ms = 120                  # animation: milliseconds per frame
n_threads = 1
save_figures = True
# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import HTML, display

from amdre import data, metrics, params, viz
from amdre.langevin import sample_prior
from amdre.paths import FIGURES, ROOT, RUNS
from amdre.train import TEACHING_DATASETS, TEACHING_N_TRAIN, load_checkpoint, teaching_config, train

if dataset not in TEACHING_DATASETS:
    raise ValueError(f"dataset must be one of {TEACHING_DATASETS} (the datasets notebook 03 trains on); got {dataset!r}")
params.ints(0, seed=seed)
params.ints(1, n_steps=n_steps, record_every=record_every, n_chains=n_chains, n_strip=n_strip, n_eval=n_eval,
            classifier_n=classifier_n, classifier_epochs=classifier_epochs, frame_ms=frame_ms, n_threads=n_threads)
params.positive(step_size=step_size)
if n_steps // record_every + 1 < 20:
    raise ValueError(f"n_steps / record_every + 1 = {n_steps // record_every + 1} frames; the animation needs >= 20: "
                     f"lower record_every or raise n_steps")
if n_eval < 200:
    raise ValueError(f"n_eval must be >= 200 (the FD-classifier fits 128-d Gaussians); got {n_eval}")
torch.manual_seed(seed)
torch.set_num_threads(n_threads)
t_start = time.perf_counter()

# %% [markdown]
# ## The model of notebook 03

# %%
run_dir = RUNS / f"03_latent_ebm-{dataset}-seed{seed}"
if not (run_dir / "last.pt").exists():
    print(f"no checkpoint in {run_dir.relative_to(ROOT)}: training notebook 03's model (teaching_config) now")
    train(teaching_config(dataset, seed), data.load(dataset, n=TEACHING_N_TRAIN), run_dir, progress=False)
generator, prior, cfg, history = load_checkpoint(run_dir)
print(f"loaded {run_dir.relative_to(ROOT)}: {prior.n_stages}-stage prior over z in R^{prior.nz}, "
      f"generator {cfg.generator!r}, trained {cfg.epochs} epochs")

# %% [markdown]
# ## Run the chains
# `n_chains` chains for the pictures, `n_eval` more for the numbers; the same sampler, seeded.

# %%
gen = torch.Generator().manual_seed(seed)
z0_show = torch.randn(n_chains, prior.nz, generator=gen)
z0_eval = torch.randn(n_eval, prior.nz, generator=gen)
torch.manual_seed(seed)
_, traj_show = sample_prior(prior, z0_show, n_steps, step_size, record_every=record_every)
_, traj_eval = sample_prior(prior, z0_eval, n_steps, step_size, record_every=record_every)
steps = [i * record_every for i in range(len(traj_show))]
with torch.no_grad():
    frames = torch.stack([generator(z) for z in traj_show])          # [T, n_chains, C, H, W]
print(f"{len(steps)} recorded steps (0, {record_every}, ..., {steps[-1]}), frames {tuple(frames.shape)}")

# %% [markdown]
# ## The strip (static Figure 5)
# Rows are chains, columns are steps. Step 0 decodes Gaussian codes: the generator was trained on posterior codes that
# sit far from $\mathcal N(0, I)$ (notebook 03), so these are blurry averages. Within a few dozen steps the chains reach
# the region the learned prior puts its mass on, and they do not freeze there: items change along a chain.

# %%
fig = viz.plot_trajectory_strip(frames, steps, n_chains=n_strip, n_cols=11)
if save_figures:
    viz.savefig(fig, "08_trajectory_strip.png")
plt.show()

# %% [markdown]
# ## The animation
# Every recorded step of `n_chains` chains, written to `figures/langevin_trajectory.gif` with matplotlib's Pillow
# writer (no ffmpeg) and embedded below as JavaScript frames. The strip above is its static stand-in.

# %%
anim = viz.trajectory_animation(frames, steps, nrow=8, interval=frame_ms,
                                title="prior Langevin, step {step}")
gif = FIGURES / "langevin_trajectory.gif"
if save_figures:
    FIGURES.mkdir(parents=True, exist_ok=True)
    tmp = gif.with_name(f"{gif.stem}.tmp.gif")
    anim.save(tmp, writer="pillow")
    tmp.replace(gif)
    print(f"wrote {gif.relative_to(ROOT)} ({len(steps)} frames)")
html = anim.to_jshtml()
plt.close(anim._fig)
HTML(html)

# %% [markdown]
# ## Measured along the chains
# * the mean unnormalised log-density $\log p_\phi(z_t)$ of the `n_eval` chains (the constant is the same at every
#   step, so differences are meaningful);
# * the FD-classifier (notebook 03's offline stand-in for FID; lower is better, not comparable with FID) between
#   `n_eval` real test images and the decoded chains at each step, with the same cached classifier as notebook 03.

# %%
clf_set = data.load(dataset, n=classifier_n)
clf_path = RUNS / f"fd_classifier-{dataset}-n{len(clf_set)}-e{classifier_epochs}.pt"
classifier = metrics.fd_classifier(clf_set.images, clf_set.labels, cache_path=clf_path, epochs=classifier_epochs)
x_real = data.load(dataset, split="test", n=n_eval).images
log_p = [prior.log_prob(z).mean().item() for z in traj_eval]
fd_steps = sorted({0, 10, 25, 50, 100, n_steps} & set(steps))
with torch.no_grad():
    fd = {t: metrics.fd_classifier_score(classifier, x_real, generator(traj_eval[steps.index(t)])) for t in fd_steps}

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
axes[0].plot(steps, log_p, "o-", ms=3)
axes[0].set_xlabel("Langevin step")
axes[0].set_ylabel(r"mean $\log p_\phi(z_t)$ + const")
axes[1].plot(fd_steps, [fd[t] for t in fd_steps], "s-", color="C1")
axes[1].set_xlabel("Langevin step")
axes[1].set_ylabel("FD-classifier (lower is better)")
fig.suptitle(f"{n_eval} chains on the learned prior, s = {step_size}")
if save_figures:
    viz.savefig(fig, "08_along_the_chain.png")
plt.show()
pd.DataFrame({"mean log p_phi(z)": {t: round(log_p[steps.index(t)], 2) for t in fd_steps},
              "FD-classifier": {t: round(fd[t], 1) for t in fd_steps}}).rename_axis("step")

# %% [markdown]
# ## The claims, asserted
# 1. The chains climb the learned prior: the mean $\log p_\phi(z)$ at the last step exceeds that at step 0 by more
#    than 1 nat.
# 2. The decoded images improve: the FD-classifier at the last step is below 0.7 x its value at step 0.

# %%
gain = log_p[-1] - log_p[0]
assert gain > 1.0, f"mean log p_phi rose by only {gain:.2f} nats"
assert fd[n_steps] < 0.7 * fd[0], f"FD-classifier {fd[0]:.1f} at step 0 vs {fd[n_steps]:.1f} at step {n_steps}"
print(f"claims hold: mean log p_phi(z) {log_p[0]:.2f} -> {log_p[-1]:.2f} (+{gain:.2f} nats); "
      f"FD-classifier {fd[0]:.1f} -> {fd[n_steps]:.1f}")
print(f"notebook time: {time.perf_counter() - t_start:.0f} s")

# %% [markdown]
# **Step sizes.** Eq. 3's convention throughout: `step_size = 0.1` is drift $s/2 = 0.05$ and noise $\sqrt{0.1}$. With
# LEBM's convention's reading of the paper's "0.1" ($s = 0.01$) the chains move $\sqrt{10}$ times less per step and
# take several hundred steps to get as far: try `step_size=0.01` with papermill.
