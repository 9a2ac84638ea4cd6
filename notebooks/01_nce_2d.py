# %% [markdown]
# # 01 · Noise-contrastive estimation of a density ratio, and where it breaks
#
# **Teaching claim.** A classifier that tells samples of $p$ from samples of $q$ recovers the log-ratio
# $\log p(x)/q(x)$ when the two densities are close, and *underestimates* it badly when they are far apart: its
# estimate of $\mathrm{KL}(p\,\|\,q)$ stops growing at a dozen nats while the truth goes on to tens of nats. That failure
# (Rhodes et al. 2020 call it the *density chasm*) motivates the paper (Xiao & Han 2022, Sections 2.2 and 3.1) and
# everything that follows.
#
# **NCE (Eq. 4).** Write the ratio model on the log scale, $r_\phi(x) = \exp f_\phi(x)$, and minimise
#
# $$\mathcal L(\phi) = -\mathbb E_{p}\log\frac{r_\phi(x)}{1+r_\phi(x)} - \mathbb E_{q}\log\frac{1}{1+r_\phi(x)}
#   = \mathbb E_p\,\mathrm{softplus}(-f_\phi) + \mathbb E_q\,\mathrm{softplus}(f_\phi).$$
#
# The minimiser is $f_{\phi^*}(x) = \log p(x) - \log q(x)$: the logistic classifier's logit *is* the log-ratio.
# Averaging it over samples of $p$ gives $\mathrm{KL}(p\,\|\,q) = \mathbb E_p[\log p/q]$, which we check against a
# closed form because our toy pairs are Gaussians.
#
# **Where this fits.** This notebook and [02](02_tre_2d.ipynb) work in 2-D with $p$ the density we want and
# $q = \mathcal N(0, I)$ the one we can sample. From [03](03_latent_ebm.ipynb) on the same estimator is applied in a
# generator's latent space, where the roles get new names: the numerator is the aggregate posterior $q_k$, the
# denominator the current prior $p_{\phi_k}$ (03 opens with a notation table and the paper's Figure 1).

# %% tags=["parameters"]
# parameters
seed = 0                                   # seeds the samples and the training (seed s draws sample sets 3s..3s+2)
n_seeds = 1                                # fits per gap (seeds seed..seed+n_seeds-1), their KL estimates averaged
n_samples = 20000                          # samples of p and of q per fit
steps = 800                                # Adam steps per fit (batch 256, learning rate 1e-3)
gaps = [1.0, 2.0, 3.0, 7.0, 9.0]           # distances between the means (papermill: -y "gaps: [1.0, 7.0, 9.0]")
close_gap = 1.0                            # the close pair drawn below, and trained by hand (one of gaps)
far_gap = 7.0                              # the far pair drawn below (one of gaps)
hand_steps = 100                           # steps of the hand-written NCE loop, checked against fit_log_ratio
n_threads = 1                              # torch CPU threads

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

import amdre
from amdre import params, toys, viz
from amdre.nce import nce_loss
from amdre.nets import RatioMLP

params.notebook(globals())
params.ints(0, seed=seed)
params.ints(1, n_seeds=n_seeds, n_samples=n_samples, steps=steps, hand_steps=hand_steps, n_threads=n_threads)
params.number_list("gaps", gaps, low=0)
if close_gap not in gaps or far_gap not in gaps:
    raise ValueError(f"close_gap and far_gap must be among the swept gaps {gaps}; got {close_gap}, {far_gap}")
torch.set_num_threads(n_threads)
seeds = range(seed, seed + n_seeds)

# %% [markdown]
# **Settings.** The same for every fit in notebooks 01 and 02, so that their numbers compare:

# %%
pd.DataFrame({"value": [f"{n_samples:,} of p and of q", "Table 4: 2 -> 200 -> 200 -> 1, LeakyReLU(0.1)",
                        f"Adam, learning rate 1e-3, batch 256, {steps} steps", f"{len(gaps)} gaps: {gaps}"],
              "why": ["enough that the sample sets are not the limit (exercise 3)", "the paper's ratio network",
                      "converged for the close pairs (the loss reaches its floor)", "KL from 0.8 to 43 nats"]},
             index=["samples per fit", "ratio network", "training", "pairs"])

# %% [markdown]
# ## The toy pairs
# $q = \mathcal N(0, I)$ and $p = \mathcal N(\mu, s^2 I)$ in two dimensions, with $|\mu| = \text{gap}$ and
# $s = 1/(1+\text{gap}/2)$: as the gap grows $p$ moves away from the origin and sharpens, and $\mathrm{KL}(p\|q)$ grows
# from a fraction of a nat to tens of nats. Both densities are known exactly, so the true log-ratio is too.

# %%
for gap in gaps:
    p, q = toys.gaussian_pair(gap)
    print(f"gap {gap:3.1f}: KL(p || q) = {p.kl(q):6.2f} nats")

# %% [markdown]
# ## NCE by hand
# The ratio model is the network of Table 4 (2 → 200 → 200 → 1, LeakyReLU 0.1), whose output is $f_\phi(x) = \log r_\phi(x)$.
# One training step draws a minibatch from each sample set and takes an Adam step on Eq. 4, written here with
# `softplus` and checked against the package's `amdre.nce.nce_loss`. `amdre.fit_log_ratio(xp, xq, method="nce")`
# runs exactly this loop: seeded the same way it draws the same weights and minibatches, so its loss curve must be ours.

# %%
p, q = toys.gaussian_pair(close_gap)
xp, xq, x_test = toys.pair_samples(p, q, n_samples, seed)

torch.manual_seed(seed)                            # fit_log_ratio draws its initial weights after seeding torch ...
batches = torch.Generator().manual_seed(seed)      # ... and a generator for the minibatches the same way
f = RatioMLP(2)
opt = torch.optim.Adam(f.parameters(), lr=1e-3)
hand_losses = []
for step in range(hand_steps):
    bp = xp[torch.randint(len(xp), (256,), generator=batches)]
    bq = xq[torch.randint(len(xq), (256,), generator=batches)]
    f_p, f_q = f(bp), f(bq)
    loss = F.softplus(-f_p).mean() + F.softplus(f_q).mean()           # Eq. 4
    assert torch.allclose(loss, nce_loss(f_p, f_q))
    opt.zero_grad()
    loss.backward()
    opt.step()
    hand_losses.append(loss.item())

package = amdre.fit_log_ratio(xp, xq, method="nce", steps=hand_steps, seed=seed)
hand_vs_package = np.abs(np.array(hand_losses) - np.array(package.losses[0])).max()
true_lr = lambda x: toys.true_log_ratio(p, q, x)
bayes_loss = nce_loss(true_lr(xp), true_lr(xq)).item()  # Eq. 4 at its minimiser, the true log-ratio
print(f"largest difference between the two loss curves over {hand_steps} steps: {hand_vs_package:.1e}")
print(f"Eq. 4 at the true log-ratio: {bayes_loss:.3f};  chance (2 log 2): {viz.CHANCE_NCE:.3f}")
assert hand_vs_package < 1e-4, "the hand-written loop should reproduce fit_log_ratio's first steps"

fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
viz.plot_losses([hand_losses, package.losses[0]], ax=ax, smooth=5, labels=["by hand", "fit_log_ratio"],
                chance=True)
ax.lines[1].set_linestyle("--")
ax.axhline(bayes_loss, color="k", lw=1, label="Eq. 4 at the true log-ratio")
ax.legend(fontsize=8)
ax.set_title(f"NCE's first {hand_steps} steps on the close pair (gap {close_gap})")
plt.show()

# %% [markdown]
# The loss starts at chance ($2\log 2$: the untrained classifier cannot tell the samples apart) and falls towards the
# loss of the true log-ratio, the floor no classifier can beat.
#
# ## The sweep: one NCE fit per gap
# Now the package does the long runs, `steps` Adam steps per gap (and per seed when `n_seeds > 1`), and we read off
# the KL estimate on held-out samples of $p$.

# %%
results = {}
for gap in gaps:
    p, q = toys.gaussian_pair(gap)
    kls = []
    for s in seeds:
        xp, xq, x_test = toys.pair_samples(p, q, n_samples, s)
        model = amdre.fit_log_ratio(xp, xq, method="nce", steps=steps, seed=s)
        kls.append(toys.kl_estimate(model, x_test))
    results[gap] = dict(p=p, q=q, xp=xp, xq=xq, model=model, true_kl=p.kl(q), nce_kl=float(np.mean(kls)), kls=kls)
    print(f"gap {gap:3.1f}: true KL {results[gap]['true_kl']:6.2f}   NCE estimate {results[gap]['nce_kl']:6.2f}"
          + (f"   (seeds: {', '.join(f'{k:.2f}' for k in kls)})" if n_seeds > 1 else ""))


# %% [markdown]
# ## Close densities: NCE gets the log-ratio right
# Left the true $\log p/q$, right NCE's estimate, on one colour scale (black dots: samples of $p$, gold: $q$).

# %%
def show_gap(gap):
    r = results[gap]
    return viz.plot_log_ratio_heatmaps(lambda x: toys.true_log_ratio(r["p"], r["q"], x), {"NCE": r["model"]},
                                       r["xp"], r["xq"], extent=max(3.0, gap + 1), title=f"(gap {gap})")

fig = show_gap(close_gap)
viz.show_saved(fig, "01_nce_close.png")

# %% [markdown]
# ## Far densities: the classifier wins too easily
# Once the two sample clouds barely overlap, the classifier separates them perfectly long before its logit reaches the
# true log-ratio; the gradient of the softplus then vanishes ($\mathrm{softplus}(-f) \approx e^{-f}$) and training stalls.
# The colour scale is clipped to the range of the true log-ratio on $p$'s samples, where the KL is measured: on
# $q$'s side the truth plunges to hundreds of nats below zero (the sharp $p$ is that improbable there), and no
# classifier follows it, since the $q$-term $\mathrm{softplus}(f) \approx e^{f}$ is already negligible at $f = -10$.
# Around $p$ the estimate is too *flat*: it stops well short of the truth.

# %%
fig = show_gap(far_gap)
viz.show_saved(fig, "01_nce_far.png")

# %% [markdown]
# Along the line through both means the same picture reads as numbers: around $p$ (grey band) NCE's log-ratio stops
# at about half the truth.

# %%
r = results[far_gap]
true_far = lambda x: toys.true_log_ratio(r["p"], r["q"], x)
peak = true_far(r["p"].mean[None].float()).item()
u = r["p"].mean.float() / far_gap                  # unit vector from q's mean (the origin) to p's mean
fig = viz.plot_log_ratio_slice(true_far, {"NCE": r["model"]}, -2.5 * u, (far_gap + 2) * u, origin=(0.0, 0.0),
                               samples={"p": r["xp"], "q": r["xq"]}, ylim=(-2 * peak, 1.5 * peak))
fig.axes[0].set_xlabel("distance from q's mean towards p's mean")
fig.axes[0].set_title(f"log p/q along the line through both means (gap {far_gap})")
plt.show()

# %%
fig = viz.plot_kl_sweep(gaps, [results[g]["true_kl"] for g in gaps], {"NCE": [results[g]["nce_kl"] for g in gaps]},
                        truth=lambda g: toys.gaussian_pair(g)[0].kl(toys.gaussian_pair(g)[1]))
ax = fig.axes[0]
ax.set_title("NCE's KL estimate saturates as the gap grows")
ax.set_xlabel("gap |mean of p - mean of q|")
viz.show_saved(fig, "01_nce_kl_sweep.png")

# %% [markdown]
# ## Explore: a slider over the gap
# In JupyterLab, drag the slider to see the true and estimated log-ratio for every gap (the two static figures above
# are this view at the close and the far gap).

# %%
viz.figure_slider(lambda k: show_gap(gaps[k]), gaps, value=gaps.index(far_gap), description="gap")

# %% [markdown]
# ## The claims, asserted
# The bounds come from the noise we measured before writing them (seeds 0-2, estimates after 500, 1000 and 1500
# steps). Training ends at a constant learning rate, so the estimate still jitters from step to step: the close pairs'
# errors reached 0.07, 0.12 and 0.24 nat at gaps 0.5, 1 and 2, about 0.05 nat + 7 % of the KL. We allow 0.15 nat +
# 10 %, some 1.7 times the largest error seen; far pairs miss by more than ten nats, so the bound still tells them
# apart.
#
# 1. **Close pairs are recovered**: on every pair with a true KL under 3 nats, NCE is within 0.15 nat + 10 % of it.
# 2. **Far pairs are not**: on every pair with a true KL over 20 nats, NCE recovers less than 60 % of it
#    (we measured 42-50 % at gap 7 and 26-31 % at gap 9, after 800-1500 steps).
# 3. **The estimate saturates**: across those far pairs, NCE's estimates differ by less than 3 nats while the truth
#    differs by more than 10 (when two or more far gaps are swept; we measured 0.1-0.5 nat against 16).
#
# In between (3-15 nats) NCE errs in either direction from one seed to the next; we draw it but claim nothing.

# %%
close = [g for g in gaps if results[g]["true_kl"] < 3]
far = [g for g in gaps if results[g]["true_kl"] > 20]
assert close and far, f"the sweep needs a pair under 3 nats and one over 20 nats; gaps {gaps}"
for g in close:
    r = results[g]
    err, bound = abs(r["nce_kl"] - r["true_kl"]), 0.15 + 0.10 * r["true_kl"]
    print(f"close gap {g}: |NCE - true| = {err:.3f} nats (bound {bound:.3f})")
    assert err < bound, f"NCE should recover the close pair at gap {g}: {r['nce_kl']:.2f} vs {r['true_kl']:.2f}"
for g in far:
    r = results[g]
    print(f"far gap {g}: NCE recovers {r['nce_kl'] / r['true_kl']:.0%} of {r['true_kl']:.1f} nats; "
          f"its loss over the last 100 steps: {np.mean(r['model'].losses[0][-100:]):.4f}")
    assert r["nce_kl"] < 0.6 * r["true_kl"], f"NCE unexpectedly accurate at gap {g}: {r['nce_kl']:.1f}"
nce_far = [results[g]["nce_kl"] for g in far]
true_far_kls = [results[g]["true_kl"] for g in far]
print(f"far pairs: NCE spans {max(nce_far) - min(nce_far):.2f} nats, "
      f"the truth {max(true_far_kls) - min(true_far_kls):.1f}")
if max(true_far_kls) - min(true_far_kls) > 10:
    assert max(nce_far) - min(nce_far) < 3, f"NCE should saturate on the far pairs: {nce_far}"

# %% [markdown]
# ## What we saw
# | | Rhodes et al. (2020); Xiao & Han (2022), Sec. 2.2 / 3.1 | this notebook (defaults, seeds 0 / 1 / 2) |
# |---|---|---|
# | close pairs | NCE's minimiser is the log-ratio (Eq. 4) | 0.76 nats: off by 0.04 / 0.03 / 0.00; 2.64 nats: off by 0.20 / 0.11 / 0.24 |
# | far pairs | fails "whenever the KL divergence between p and q exceeds tens of nats" (Rhodes et al.); "often severely inaccurate when the gap between p and q is large" (Xiao & Han, Sec. 2.2) | 26.6 nats estimated as 11.2 / 11.1 / 11.1; 42.9 nats as 11.5 / 11.6 / 11.3 |
#
# Both claims reproduce. The same network recovers the close pairs; on the far pairs NCE's loss is already at its floor
# (~0: the samples are perfectly separable), so the loss no longer asks for the missing half of the log-ratio.
# [Notebook 02](02_tre_2d.ipynb) breaks the far problem into close ones.
#
# ## Questions
# 1. **Why is the logit the log-ratio?** Minimise Eq. 4 pointwise: for a fixed $x$, which $f$ minimises
#    $p(x)\,\mathrm{softplus}(-f) + q(x)\,\mathrm{softplus}(f)$?
#
# <details><summary>Answer</summary>
#
# The derivative in $f$ is $-p(x)\,\sigma(-f) + q(x)\,\sigma(f)$, with $\sigma$ the logistic function. It vanishes
# where $\sigma(f)/\sigma(-f) = e^{f} = p(x)/q(x)$, so $f^* = \log p(x) - \log q(x)$; the second derivative
# $(p + q)\,\sigma(f)\sigma(-f)$ is positive, so this is the minimum. Only points where $p + q > 0$ matter: the
# loss says nothing about $f$ where neither density puts samples.
# </details>
#
# 2. **Why does the far estimate stop near ten nats?** On the far pair the classifier already separates the samples.
#    Write the gradient of $\mathrm{softplus}(-f)$ with respect to $f$ at a sample of $p$ where $f = 10$, and estimate
#    how many Adam steps of size $10^{-3}$ it takes to raise $f$ by one more nat.
#
# <details><summary>Answer</summary>
#
# $\frac{d}{df}\mathrm{softplus}(-f) = -\sigma(-f) \approx -e^{-f}$: at $f = 10$ about $4.5\cdot10^{-5}$, and at
# $f = 11$ three times smaller. Adam normalises the gradient, but the normalisation is over a minibatch whose $q$-side
# terms ($\approx e^{f}$ at $q$'s samples, where $f$ is very negative) are as tiny, so the step stays near the
# learning rate times the *direction*, which noise now dominates: the samples give no reason to push further. The
# estimate grows roughly like the logarithm of the number of steps (exercise 1 measures it), never reaching the 27
# nats of the truth in a feasible budget.
# </details>
#
# 3. **Which samples does KL(p || q) need?** Our KL estimate averages $f$ over samples of $p$. Explain why NCE's error
#    of hundreds of nats on $q$'s side (the far heat maps) does not enter it, and what would change for
#    $\mathrm{KL}(q\,\|\,p)$.
#
# <details><summary>Answer</summary>
#
# $\mathrm{KL}(p\,\|\,q) = \mathbb E_p[\log p/q]$ only evaluates the log-ratio where $p$ has mass. There the
# estimate is too flat (about half the truth), which is the error we measure. $\mathrm{KL}(q\,\|\,p) =
# -\mathbb E_q[\log p/q]$ evaluates it on $q$'s samples, where the truth is hundreds of nats below zero and NCE stops
# near $-10$: its error would be far larger still.
# </details>
#
# ## Exercises
# 1. Run with `-p steps 4000` (about 4x the time). Does NCE's estimate at gap 7 approach the true 27 nats? How fast does
#    it grow compared with the first 800 steps, and what does that say about the vanishing gradient?
# 2. Run with `-p n_seeds 3` (3x the time). How much do single seeds disagree at gap 3 (5.5 nats), and in which
#    direction does NCE err there? Hint: how many samples of $q$ land where $p$ lives?
# 3. Run with `-p n_samples 200000` (ten times the samples, the same compute per step). Does the far estimate improve?
#    Estimate how many of $q$'s samples you would expect inside $p$'s cloud at gap 7 ($q$'s density there is about
#    $e^{-24.5}/2\pi$), and explain why more data cannot cross this "density chasm".
