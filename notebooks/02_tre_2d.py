# %% [markdown]
# # 02 · Telescoping density-ratio estimation (TRE) fixes the far case
#
# **Teaching claim.** Where one NCE classifier saturates (notebook 01: a dozen nats whatever the truth), a *chain* of
# classifiers between intermediate "waymark" densities recovers log-ratios of tens of nats (Rhodes et al. 2020;
# Sec. 3.1 of Xiao & Han 2022).
#
# **Telescoping (Eq. 5).** Bridge $p = p_0$ and $q = p_m$ with waymarks $p_1, \dots, p_{m-1}$ and write
#
# $$\log\frac{p_0(x)}{p_m(x)} = \sum_{k=0}^{m-1} \log\frac{p_k(x)}{p_{k+1}(x)} \approx \sum_{k=0}^{m-1} \log r_{\phi_k}(x).$$
#
# Each $r_{\phi_k}$ is an NCE problem (Eq. 4) between neighbours that are *hard* to tell apart, so none of them
# saturates. Waymark samples are combinations of paired samples $x_p \sim p$, $x_q \sim q$ (Rhodes et al. 2020),
#
# $$x_k = \sqrt{1-\alpha_k^2}\,x_p + \alpha_k x_q, \qquad \alpha_k = (k/m)^{\text{power}},$$
#
# so $\alpha_0 = 0$ gives $p$ and $\alpha_m = 1$ gives $q$. All $m$ ratios are trained jointly, one NCE loss per
# neighbouring pair, summed: `amdre.fit_log_ratio(xp, xq, method="tre", n_ratios=m, power=...)`. We first write its
# pieces by hand and check them against the package.
#
# **Where this fits.** [01](01_nce_2d.ipynb) showed one NCE classifier stalling at about ten nats. Here the waymarks are
# *fixed* in advance (the paper's non-adaptive variant, Sec. 3.2 and 5.5); [03](03_latent_ebm.ipynb) builds them
# *adaptively* instead, each stage's prior being the last prior times the ratio just learned, and its notation table
# maps this notebook's $p_0 = p$, $p_m = q$ to the latent model's $q_k$ and $p_{\phi_k}$.

# %% tags=["parameters"]
# parameters
seed = 0                     # seeds the samples and the training (seed s draws sample sets 3s..3s+2)
n_seeds = 1                  # fits per pair in the comparison (seeds seed..seed+n_seeds-1), KL estimates averaged
n_samples = 20000            # samples of p and of q per pair
steps = 800                  # Adam steps per fit, NCE and TRE alike (batch 256, learning rate 1e-3)
hidden = 100                 # width of each ratio network (Table 4 uses 200; see the note below)
far_gap = 7.0                # the pair drawn in the figures, about 27 nats apart (one of table_gaps)
table_gaps = [7.0, 9.0]      # the pairs compared, all far beyond NCE's reach (27 and 43 nats)
n_ratios = 4                 # TRE's ratios m, for every pair
power = 0.4                  # waymark spacing, alpha_k is (k/m) to this power; 1.0 is linear
hand_steps = 20              # steps of the hand-written TRE loop, checked against fit_log_ratio
n_threads = 1                # torch CPU threads

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import amdre
from amdre import params, toys, viz
from amdre.nce import nce_loss
from amdre.tre import TelescopingRatio, alpha_schedule, make_waymarks, tre_loss

params.notebook(globals())
params.ints(0, seed=seed)
params.ints(1, n_seeds=n_seeds, n_samples=n_samples, steps=steps, hidden=hidden, n_ratios=n_ratios,
            hand_steps=hand_steps, n_threads=n_threads)
params.positive(power=power, far_gap=far_gap)
params.number_list("table_gaps", table_gaps, low=0)
if far_gap not in table_gaps:
    raise ValueError(f"far_gap must be one of table_gaps {table_gaps}; got {far_gap}")
torch.set_num_threads(n_threads)
seeds = range(seed, seed + n_seeds)

# %% [markdown]
# **Settings.** Notebook 01's, with one difference (explained where the long runs start):

# %%
pd.DataFrame({"value": [f"{n_samples:,} of p and of q", f"Table 4's shape, {hidden} wide (Table 4: 200)",
                        f"Adam, learning rate 1e-3, batch 256, {steps} steps", f"m = {n_ratios}, power {power}",
                        f"gaps {table_gaps} (KL 27 and 43 nats)"],
              "why": ["as in 01", "TRE trains m networks at once: half the width halves the CPU time, same picture",
                      "as in 01, for NCE and TRE alike", "evens out the stages' difficulty (the bar chart below)",
                      "both far beyond one NCE's reach"]},
             index=["samples per fit", "each ratio network", "training", "waymarks", "pairs"])



# %% [markdown]
# ## Waymarks between a far pair, by hand
# The same Gaussian pair family as notebook 01: $q = \mathcal N(0, I)$, $p = \mathcal N(\mu, s^2 I)$ with
# $|\mu| = $ `far_gap`. The waymarks slide the cloud of $p$ (left) into the cloud of $q$ (right).

# %%
p, q = toys.gaussian_pair(far_gap)
xp, xq, x_test = toys.pair_samples(p, q, n_samples, seed)
print(f"gap {far_gap}: KL(p || q) = {p.kl(q):.1f} nats")

alphas = (torch.arange(n_ratios + 1) / n_ratios) ** power
waymarks = [torch.sqrt(1 - a ** 2) * xp[:2000] + a * xq[:2000] for a in alphas]
assert all(torch.allclose(w, v, atol=1e-5) for w, v in zip(waymarks, make_waymarks(xp[:2000], xq[:2000], n_ratios,
                                                                                      power=power)))
fig = viz.plot_waymarks(waymarks, extent=far_gap)
for ax, a in zip(fig.axes, alphas.tolist()):
    ax.set_title(f"{ax.get_title()}   α = {a:.2f}", fontsize=10)
viz.show_saved(fig, "02_waymarks.png")


# %% [markdown]
# ## Where to put the waymarks
# Because $x_p$ and $x_q$ are independent Gaussians, waymark $k$ is exactly
# $\mathcal N\big(\sqrt{1-\alpha_k^2}\,\mu,\ ((1-\alpha_k^2)s^2 + \alpha_k^2) I\big)$, so we can ask, before training
# anything, how hard each stage's classification problem is: $\mathrm{KL}(p_k\,\|\,p_{k+1})$. With linear spacing
# (power 1) the mean $\sqrt{1-\alpha^2}\,\mu$ barely moves while $\alpha$ is small and then collapses as $\alpha \to 1$,
# so the last stage is left a KL that notebook 01 showed NCE struggles with, and the first stages have almost nothing
# to tell apart. A power below 1 moves waymarks towards $q$ and evens the stages out. We use `power = 0.4`, which
# roughly balances the first and the last stage for $m = 4$: 3.4 and 5.1 nats at gap 7 (5.2 and 8.3 at gap 9), where
# linear spacing leaves the last stage 10.8 (17.8) nats. Powers 0.3-0.5 give similar splits; we measured 0.4 and 1.0
# only.

# %%
def waymark_density(alpha):
    a = math.sqrt(1 - alpha ** 2)
    return toys.Gaussian(a * p.mean, a * a * p.cov + alpha ** 2 * q.cov)


def stage_kls(pw):
    dens = [waymark_density(a) for a in alpha_schedule(n_ratios, pw).tolist()]
    return [dens[k].kl(dens[k + 1]) for k in range(n_ratios)]


spacings = {"linear (power 1)": stage_kls(1.0), f"power {power}": stage_kls(power)}
fig, ax = plt.subplots(figsize=(7, 3.4), constrained_layout=True)
width = 0.8 / len(spacings)
for i, (label, kls) in enumerate(spacings.items()):
    ax.bar(np.arange(n_ratios) + (i - 0.5 * (len(spacings) - 1)) * width, kls, width, label=label)
ax.set_xticks(range(n_ratios), [f"stage {k}\n$p_{k}$ vs $p_{k + 1}$" for k in range(n_ratios)])
ax.set_ylabel("KL($p_k$ || $p_{k+1}$)  [nats]")
ax.set_title(f"How hard each stage is (m = {n_ratios}, gap {far_gap}, closed form)")
ax.legend()
plt.show()
print({label: [round(k, 1) for k in kls] for label, kls in spacings.items()})

# %% [markdown]
# ## TRE by hand
# `TelescopingRatio` holds $m$ ratio networks (Table 4's, `hidden` wide) and returns their sum (Eq. 5). A training step draws
# paired minibatches, builds fresh waymarks from them and sums the $m$ NCE losses (Eq. 4) of neighbouring waymarks;
# `amdre.tre.tre_loss` computes the same losses in one batched pass. Seeded alike, our loop must reproduce the first
# steps of `fit_log_ratio(method="tre")`.

# %%
torch.manual_seed(seed)                            # fit_log_ratio draws its initial weights after seeding torch ...
batches = torch.Generator().manual_seed(seed)      # ... and a generator for the minibatches the same way
model = TelescopingRatio(2, n_ratios, hidden)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
hand_losses = []
for step in range(hand_steps):
    bp = xp[torch.randint(len(xp), (256,), generator=batches)]
    bq = xq[torch.randint(len(xq), (256,), generator=batches)]
    w = make_waymarks(bp, bq, n_ratios, power=power)
    stage_losses = torch.stack([nce_loss(model.ratios[k](w[k]), model.ratios[k](w[k + 1])) for k in range(n_ratios)])
    assert torch.allclose(stage_losses, tre_loss(model, w)[1], atol=1e-5)
    opt.zero_grad()
    stage_losses.sum().backward()
    opt.step()
    hand_losses.append(stage_losses.detach())

with torch.no_grad():                              # Eq. 5: the model's output is the sum of its stage log-ratios
    assert torch.allclose(model(x_test[:100]), sum(r(x_test[:100]) for r in model.ratios), atol=1e-4)
package = amdre.fit_log_ratio(xp, xq, method="tre", n_ratios=n_ratios, power=power, steps=hand_steps, seed=seed,
                              hidden=hidden)
hand_vs_package = (torch.stack(hand_losses) - torch.tensor(package.losses).T).abs().max().item()
print(f"largest difference between our stage losses and fit_log_ratio's over {hand_steps} steps: {hand_vs_package:.1e}")
assert hand_vs_package < 1e-4, "the hand-written loop should reproduce fit_log_ratio's first steps"


# %% [markdown]
# ## The long runs: TRE and NCE on the far pair
# Now the package trains both for `steps` steps, with the same network for every ratio. Its width is `hidden = 100`,
# half of Table 4's 200: TRE trains $m$ networks at once, and the narrower one halves the CPU time. At width 200 we
# measured the same picture (seeds 0-2 at gap 7: NCE 11.5-12.3 nats after 1000 steps, TRE 27.0-30.2 of 26.6).
#
# NCE's one classifier separates $p$ from $q$ almost perfectly: its loss falls to ~0, and with it the gradient
# ($\mathrm{softplus}(-f) \approx e^{-f}$). TRE's stage losses stay between chance ($2\log 2$, dotted) and zero: each
# neighbouring pair of waymarks overlaps, so each classifier keeps learning. (With linear spacing the last stage would
# be driven to ~0.02 as well, and the first would sit near chance: exercise 2.)

# %%
def fit_pair(xp, xq, s):
    """TRE and NCE on one pair, same samples, steps and seed."""
    tre = amdre.fit_log_ratio(xp, xq, method="tre", n_ratios=n_ratios, power=power, steps=steps, seed=s, hidden=hidden)
    nce = amdre.fit_log_ratio(xp, xq, method="nce", steps=steps, seed=s, hidden=hidden)
    return tre, nce


tre, nce = fit_pair(xp, xq, seed)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True, constrained_layout=True)
viz.plot_losses(tre.losses, ax=axes[0], labels=[f"stage {k}" for k in range(n_ratios)], chance=True)
axes[0].set_title(f"TRE: {n_ratios} stage losses (power {power})")
viz.plot_losses(nce.losses, ax=axes[1], labels=["NCE"], chance=True)
axes[1].set_title("NCE: one loss, driven to ~0")
viz.show_saved(fig, "02_losses.png")
tre_final = [float(np.mean(c[-100:])) for c in tre.losses]
nce_final = float(np.mean(nce.losses[0][-100:]))
print("mean loss over the last 100 steps: TRE stages", [round(v, 3) for v in tre_final], f"  NCE {nce_final:.4f}")

# %% [markdown]
# ## Each stage, and the telescoped sum
# Top row: the two waymarks each stage separates; bottom row: the log-ratio it learned. Each column is zoomed to where
# its two waymarks lie and coloured on the range of its log-ratio there (where its classifier was trained): stage 0's
# waymarks are a tight cloud far from the origin, the last stage's a wide one around it. In JupyterLab the slider below
# steps through the stages one at a time, on the whole square.

# %%
fig = viz.plot_tre_stages(tre, waymarks)
viz.show_saved(fig, "02_tre_stages.png")

# %%
viz.figure_slider(lambda k: viz.plot_tre_stage(tre, waymarks, k, extent=far_gap), range(n_ratios),
                  description="stage")

# %% [markdown]
# Summed, the stages give TRE's $\log p/q$. The colour scale is clipped to the range of the true log-ratio on $p$'s
# samples, where $\mathrm{KL}(p\,\|\,q) = \mathbb E_p[\log p/q]$ is measured: there TRE follows the truth where NCE stops
# at half of it. On $q$'s side the truth plunges to *hundreds* of nats below zero (the sharp $p$ is that improbable at
# the origin), and neither estimate follows it: every NCE loss sees $\log r$ there only through
# $\mathrm{softplus}(\log r) \approx r$, already negligible at $\log r = -10$, so nothing trains it further. That
# region does not enter $\mathrm{KL}(p\,\|\,q)$; an estimate of $\mathrm{KL}(q\,\|\,p)$ would need it.

# %%
true_fn = lambda x: toys.true_log_ratio(p, q, x)
fig = viz.plot_log_ratio_heatmaps(true_fn, {"NCE": nce, f"TRE (m={n_ratios})": tre}, xp, xq, extent=far_gap + 1,
                                  title=f"(gap {far_gap})")
viz.show_saved(fig, "02_tre_far.png")

peak = true_fn(p.mean[None].float()).item()
u = p.mean.float() / far_gap                       # unit vector from q's mean (the origin) to p's mean
fig = viz.plot_log_ratio_slice(true_fn, {"NCE": nce, f"TRE (m={n_ratios})": tre}, -2.5 * u, (far_gap + 2) * u,
                               origin=(0.0, 0.0), samples={"p": xp, "q": xq}, ylim=(-2 * peak, 1.5 * peak))
fig.axes[0].set_xlabel("distance from q's mean towards p's mean")
fig.axes[0].set_title(f"log p/q along the line through both means (gap {far_gap})")
viz.show_saved(fig, "02_tre_slice.png")

# %% [markdown]
# ## NCE vs TRE vs truth on pairs tens of nats apart
# The same comparison for every pair in `table_gaps`, each TRE with `n_ratios` ratios (the far pair's seed-`seed` fits
# are reused), averaged over `n_seeds` seeds.

# %%
rows = []
for gap in table_gaps:
    pg, qg = toys.gaussian_pair(gap)
    est = {"NCE": [], "TRE": []}
    for s in seeds:
        xpg, xqg, xtg = toys.pair_samples(pg, qg, n_samples, s)
        tre_g, nce_g = (tre, nce) if (gap, s) == (far_gap, seed) else fit_pair(xpg, xqg, s)
        est["TRE"].append(toys.kl_estimate(tre_g, xtg))
        est["NCE"].append(toys.kl_estimate(nce_g, xtg))
    rows.append(dict(gap=gap, true_KL=pg.kl(qg), NCE=np.mean(est["NCE"]), TRE=np.mean(est["TRE"])))
table = pd.DataFrame(rows).set_index("gap").sort_index()
table["NCE error"] = (table.NCE - table.true_KL).abs()
table["TRE error"] = (table.TRE - table.true_KL).abs()
table.round(2)

# %%
fig = viz.plot_kl_sweep(table.index, table.true_KL, {"NCE": table.NCE, f"TRE (m={n_ratios})": table.TRE},
                        truth=lambda g: toys.gaussian_pair(g)[0].kl(toys.gaussian_pair(g)[1]))
ax = fig.axes[0]
ax.set_title("TRE recovers the KL at both far gaps; NCE stays near 10 nats")
ax.set_xlabel("gap |mean of p - mean of q|")
viz.show_saved(fig, "02_nce_vs_tre.png")

# %% [markdown]
# ## The claims, asserted
# The bounds come from what we measured before writing them: 24 runs (seeds 0-2, gaps 7 and 9, widths 100 and 200,
# 750 and 1000 steps). TRE's error ranged from -4 % to +21 % (median +7 %), mostly *over*: every stage after the first
# is evaluated on $p$'s samples, away from the two waymarks it was trained on, and extrapolates. NCE recovered 23-46 %
# of the KL, and from gap 7 to gap 9 TRE's estimate grew by 84-132 % of the truth's 16.4 nats, NCE's by at most 1 nat.
#
# 1. **TRE tracks the truth**: on every pair TRE's KL estimate is within 25 % of the closed form.
# 2. **NCE does not**: on every pair NCE recovers under 60 % of the KL, and its error is more than twice TRE's.
# 3. **Tracking, not luck**: from one gap to the next (where the truth grows by over 10 nats) TRE's estimate grows by
#    50-150 % of the true growth, NCE's by under 3 nats.
# 4. **No TRE stage wins too easily** (the far pair, seed `seed`): over the last 100 steps every stage's loss stays
#    above 0.1 (we measured 0.24 and more at seeds 0-2), while NCE's falls below 0.01 (0.0004 and less).

# %%
for g, r in table.iterrows():
    print(f"gap {g}: true {r.true_KL:.1f}, TRE {r.TRE:.1f} ({(r.TRE - r.true_KL) / r.true_KL:+.1%}), "
          f"NCE {r.NCE:.1f} ({(r.NCE - r.true_KL) / r.true_KL:+.1%})")
assert (table["TRE error"] < 0.25 * table.true_KL).all(), table
assert (table.NCE < 0.6 * table.true_KL).all() and (table["NCE error"] > 2 * table["TRE error"]).all(), table
growth = table.diff().dropna()
for g, d in growth.iterrows():
    print(f"up to gap {g}: the truth grows by {d.true_KL:.1f} nats, TRE by {d.TRE:.1f}, NCE by {d.NCE:.1f}")
    if d.true_KL > 10:                       # only steps large enough to tell tracking from noise
        assert 0.5 * d.true_KL < d.TRE < 1.5 * d.true_KL and abs(d.NCE) < 3, growth
assert min(tre_final) > 0.1 and nce_final < 0.01, (tre_final, nce_final)

# %% [markdown]
# ## What we saw
# | | Rhodes et al. (2020); Xiao & Han (2022), Sec. 2.2 / 3.1 | this notebook (defaults, seeds 0 / 1 / 2) |
# |---|---|---|
# | one classifier (NCE) | fails "whenever the KL divergence between p and q exceeds tens of nats" | 26.6 nats estimated as 10.3 / 9.8 / 10.1, 42.9 as 10.7 / 10.3 / 10.5 |
# | telescoping (TRE) | estimates ratios between highly dissimilar densities (their mutual-information test: ~35 nats) | m = 4: 28.8 / 29.2 / 27.1 and 47.4 / 47.3 / 42.3 (-2 % to +10 %) |
# | TRE stages | each sub-problem is a harder classification | stage losses 0.24-0.87 against NCE's 0.0003-0.0004 |
#
# The claim reproduces on this toy: TRE follows the KL to 43 nats where NCE stays at about 10. Xiao & Han (Sec. 3)
# add that on a generator's latent space TRE's gain over a single NCE was small; notebook 07 compares the two there.
#
# Two caveats the figures show. TRE is accurate where the waymarks were, and in particular on $p$'s samples, which is all
# $\mathrm{KL}(p\,\|\,q)$ needs; on $q$'s side it is off by hundreds of nats, like NCE, because no loss looks there.
# And the waymarks matter: their spacing decides which stage does the work, and with it which classifier saturates.
# TRE with fixed waymarks is the *non-adaptive* method of the paper's Sec. 5.5; [notebook 03](03_latent_ebm.ipynb)
# learns the stages adaptively instead.
#
# ## Questions
# 1. **What does each stage estimate, and why does the sum work?** Show that if every $r_{\phi_k}$ reaches its NCE
#    optimum, $\sum_k \log r_{\phi_k}(x) = \log p(x)/q(x)$ for every $x$ where all waymarks have mass. Where does
#    the argument fail for our trained models?
#
# <details><summary>Answer</summary>
#
# NCE between $p_k$ and $p_{k+1}$ has its optimum at $\log r_k = \log p_k - \log p_{k+1}$ (01, question 1), only
# where $p_k + p_{k+1} > 0$. Summing, the intermediate densities cancel: $\sum_k (\log p_k - \log p_{k+1}) = \log p_0
# - \log p_m = \log p/q$. It fails where some stage's two waymarks have (numerically) no samples: that stage's
# classifier is unconstrained there and extrapolates. That is why TRE is accurate on $p$'s samples and wrong by
# hundreds of nats on $q$'s side.
# </details>
#
# 2. **Why does linear spacing overload the last stage?** Waymark $k$ has mean $\sqrt{1-\alpha_k^2}\,\mu$. How far does
#    the mean move in the last step, from $\alpha = 3/4$ to $1$, compared with the first, from $0$ to $1/4$
#    ($m = 4$)?
#
# <details><summary>Answer</summary>
#
# $\sqrt{1 - \alpha^2}$ goes from 1 to 0.968 in the first step (3 % of $|\mu|$) and from 0.661 to 0 in the last
# (66 %). KL between neighbouring Gaussians grows with the squared distance of their means over the variance, so
# the last stage gets most of the KL and saturates like NCE, while the first has almost nothing to tell apart. A power
# below 1 puts the $\alpha$s closer to 1, moving the early waymarks further and evening the stages out.
# </details>
#
# 3. **Fixed waymarks on a latent space.** The paper reports that TRE on a generator's latent space improved little over
#    one NCE. Using 01's finding, what must be true of the distance between the aggregate posterior and
#    $\mathcal N(0, I)$ for *one* NCE to be enough, and how could you check it? (Notebook 03 measures it.)
#
# <details><summary>Answer</summary>
#
# One NCE is enough when $\mathrm{KL}(q\,\|\,\mathcal N(0, I))$ is within its reach, a few nats (01: 0.8 and 2.6
# nats recovered, 27 not). Estimate that KL from posterior samples with TRE, as here, and compare with NCE's estimate:
# if they agree and are small, there is no chasm to cross, and several stages cannot be expected to help much.
# </details>
#
# ## Exercises
# 1. Run with `-p n_ratios 1`: TRE becomes NCE (one ratio between $p$ and $q$). What happens to the far pair's KL
#    estimate, and why? Which claims fail?
# 2. Run with `-p power 1.0` (linear spacing). Which stage's loss now falls to ~0, which one sits near chance, and how
#    does that match the bar chart of stage KLs? Does the KL estimate itself suffer?
# 3. Run with `-y "{table_gaps: [7.0, 11.0], far_gap: 11.0}"` (gap 11: about 63 nats). Is `n_ratios=4` still enough?
#    Which stage's KL in the bar chart has grown most, and does `-p n_ratios 6` bring TRE back within 25 %?
