# %% [markdown]
# # 07 · Ablations: adaptive or not, and how to sample the prior for NCE (Table 3, Sec. 3.3, 5.5-5.6)
#
# **Teaching claim.** Any learned latent prior beats decoding $\mathcal N(0, I)$ codes by a wide margin (0 stages vs
# 4), whichever way it is trained. Stage by stage, each new ratio makes the samples better, on one condition, which
# this notebook shows at every training seed: the NCE of every stage must see real samples of its current prior
# (short-run prior Langevin, one of the two options of Sec. 3.3). The other option, the persistent memory bank of the
# paper's main runs, assumes the previous ratio was accurate; at this scale it is not (we measure by how much), and
# the bank run gets *worse* after its first stage. Table 3's headline, adaptive beats non-adaptive, does **not**
# reproduce at this notebook's budget: TRE, fitted after training with 500 steps, beats the adaptive prior, whose
# stages get 20 NCE steps each, at four of the five training seeds we ran (given only the adaptive run's 80 steps in
# all, TRE falls behind it: the comparison is one of optimisation budgets here). Finally the prior's size against the paper's
# generators (Sec. 5.6), which is not the "~1 %" the text states.
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
# training, one Gaussian-prior run serves every $m$ (and the 0-stage row); only the TRE fit depends on $m$. The
# adaptive runs share nothing: the generator co-adapts with the prior from the first stage boundary on. Everything
# is repeated for `n_seeds` training seeds (`seed`, `seed + 1`, ...): the spread between training seeds is larger than
# the sampler's, so every claim below holds at every seed or is about their mean, and every plot shows the spread.

# %% tags=["parameters"]
# parameters
seed = 0                        # the first training seed
n_seeds = 3                     # training seeds seed, seed + 1, ...: the claims hold at each or on their mean
dataset = "fashion12k"          # "fashion12k" (bundled), "mnist5k", "fashion-mnist" (full set), "celeba" (real FID)
data_root = ""                  # folder holding the dataset ('': the repo's data/)
n_train = 1000                  # first n training images (0: all; CelebA: 40,000 as in the paper)
stages = [0, 4]                 # the paper's grid is [0, 1, 2, 4, 8]; it must hold 0 and 4
generator = "mnist-mlp"         # amdre.nets generator; "celeba" (Table 5) for CelebA
nz = 8
ngf = 8
epochs = 8                      # the same for every m
batch_size = 100
ld_steps = 20                   # posterior Langevin steps (App. A.3: 30)
ld_step_size = 0.01             # Eq. 3's s (LEBM's and the paper's 0.1)
sigma = 0.3
lr_g = 3e-3                     # App. A.3: 1e-4
lr_ebm = 3e-3                   # App. A.3: 5e-5
prior_sampling = "langevin"     # prior samples for NCE: "langevin" (short-run prior LD) or "memory" (the bank, App. A.3)
compare_bank = True             # also train each seed's 4-stage adaptive model with the other prior_sampling
prior_ld_steps = 30             # training-time prior Langevin (LEBM: 60 steps of its 0.4)
prior_ld_step_size = 0.16       # Eq. 3's s (LEBM's 0.4)
tre_steps = 500                 # TRE steps of the non-adaptive priors
sample_ld_steps = 100           # test-time prior Langevin (App. A.3: 100 steps of "0.1")
sample_ld_step_size = 0.1       # Eq. 3's s, as notebooks 03 and 08 read the paper's 0.1
n_eval = 600                    # generated and real images per FD-classifier / FID
eval_seeds = [0]                # prior-Langevin seeds per model and training seed: its score is the mean over them
classifier_n = 10000            # FD-classifier training images and epochs (notebook 03's cached classifier)
classifier_epochs = 3
fid_weights = ""                # CelebA: pytorch-fid's Inception weights file ('': the usual places)
device = "cpu"
resume = True                   # load the runs' checkpoints when this configuration has run before
n_threads = 1

# %%
import hashlib
import time
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from amdre import data, experiments, langevin, metrics, params, tre, viz
from amdre.files import read_checkpoint
from amdre.nets import generator as make_generator
from amdre.prior import EBMPrior
from amdre.train import TrainConfig, load_checkpoint, train

params.notebook(globals())
params.ints(0, seed=seed, n_train=n_train)
params.ints(1, n_seeds=n_seeds, nz=nz, ngf=ngf, epochs=epochs, batch_size=batch_size, ld_steps=ld_steps,
            prior_ld_steps=prior_ld_steps, tre_steps=tre_steps, sample_ld_steps=sample_ld_steps, n_eval=n_eval,
            classifier_n=classifier_n, classifier_epochs=classifier_epochs, n_threads=n_threads)
params.positive(ld_step_size=ld_step_size, sigma=sigma, lr_g=lr_g, lr_ebm=lr_ebm, prior_ld_step_size=prior_ld_step_size,
                sample_ld_step_size=sample_ld_step_size)
params.bools(compare_bank=compare_bank, resume=resume)
params.int_list("eval_seeds", eval_seeds, low=0)
params.int_list("stages", stages, low=0, high=epochs)
params.one_of("prior_sampling", prior_sampling, ("langevin", "memory"))
LABELLED = ("fashion12k", "mnist5k", "fashion-mnist", "mnist")
params.one_of("dataset", dataset, LABELLED + ("celeba",))
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
torch.manual_seed(seed)
np.random.seed(seed)
torch.set_num_threads(n_threads)
root = data_root or None
seeds = list(range(seed, seed + n_seeds))
t_start = time.process_time()

# %% [markdown]
# ## Data and the score
# Labelled data (`fashion12k` by default: the first 10,000 training and 2,000 test images of Fashion-MNIST, bundled)
# is scored with the **FD-classifier**: the Fréchet distance between Gaussian fits of a small CNN classifier's 128-d
# features on `n_eval` real test images and on `n_eval` samples (lower is better; it ranks models on the same data, it
# is *not* FID). It is the classifier notebook 03 trains and caches. CelebA is scored with **FID** (pytorch-fid's
# Inception, offline weights only). Samples: `sample_ld_steps` steps of prior Langevin (Eq. 3) from
# $\mathcal N(0, I)$, decoded by the generator (no Langevin for 0 stages). We keep the latent samples too: their mean
# $\|z\|^2$ says where the prior puts its mass, which we need for the memory bank below.
#
# Scores are cached by the model's weights: a model met again (the driver reloading a run we already scored, or the
# 4-stage prior seen again stage by stage) is not sampled twice, and a cache hit *is* a check that two code paths
# built bit-identical models.

# %%
train_set = data.load(dataset, root, n=n_train or None)
test_set = data.load(dataset, root, split="test", n=n_eval)
x_real = test_set.images[:n_eval]
if dataset == "celeba":
    metric_name = "FID"
    def image_score(x):
        return metrics.fid(x_real, x, weights_path=fid_weights or None, device=device)
else:
    metric_name = "FD-classifier"
    classifier = experiments.shared_fd_classifier(data.load(dataset, root, n=classifier_n), classifier_epochs, device)
    image_score = metrics.fd_against(classifier, x_real)
real_floor = image_score(train_set.images[:n_eval])         # real images against real images: the best possible score
print(train_set, f"scored by {metric_name} against {len(x_real)} test images; real training images score "
      f"{real_floor:.1f} (the floor)", sep="\n")


def prior_samples(g, prior, k, sampler_seed):
    """n_eval codes of p_{phi_k} (Eq. 8): N(0, I) noise, then sample_ld_steps of prior Langevin (none for k = 0)."""
    dev = langevin.module_device(g, prior)
    with langevin.frozen(g, prior), langevin.seeded(sampler_seed, dev):
        z = torch.randn(n_eval, nz, device=dev)
        return z if k == 0 else langevin.sample_prior(prior, z, sample_ld_steps, sample_ld_step_size, n_stages=k)


def fingerprint(*modules) -> str:
    h = hashlib.sha1()
    for module in modules:
        for t in ([] if module is None else module.state_dict().values()):
            h.update(t.detach().cpu().numpy().tobytes())
    return h.hexdigest()


cache = {}
def score(g, prior, n_stages=None, train_seed=seed):
    """{metric: mean over eval_seeds, per eval seed, mean |z|^2 of the codes} of g with p_{phi_k}, k = n_stages."""
    k = 0 if prior is None else (prior.n_stages if n_stages is None else n_stages)
    key = (fingerprint(g, prior if k else None), k, train_seed)
    if key not in cache:
        per_seed, z2 = [], []
        for e in eval_seeds:
            z = prior_samples(g, prior, k, 1000 * train_seed + e)
            with torch.no_grad():
                per_seed.append(image_score(g(z).float().cpu()))
            z2.append(float(z.pow(2).sum(1).mean()))
        cache[key] = {metric_name: float(np.mean(per_seed)), "per eval seed": per_seed, "|z|^2": float(np.mean(z2))}
    return cache[key]


def config(train_seed):
    return TrainConfig(generator=generator, nz=nz, ngf=ngf, epochs=epochs, batch_size=batch_size, ld_steps=ld_steps,
                       ld_step_size=ld_step_size, sigma=sigma, lr_g=lr_g, lr_ebm=lr_ebm, prior_sampling=prior_sampling,
                       prior_ld_steps=prior_ld_steps, prior_ld_step_size=prior_ld_step_size, tre_steps=tre_steps,
                       seed=train_seed, device=device)


folders = {s: experiments.run_dir(f"07_ablations-{dataset}", config(s), n_train=len(train_set)) for s in seeds}

# %% [markdown]
# ## The loop, written out (training seed `seed`)
# One Gaussian-prior run of `epochs` epochs; its posterior bank (every training image's code by posterior Langevin,
# `langevin.posterior_bank`), from which `tre.tre_prior` fits the non-adaptive prior for each $m$; and for each
# $m \ge 1$ an adaptive run with a new stage every `epochs // m` epochs. The Gaussian run is the package's
# `adaptive=False` run, which fits its own TRE prior for the largest $m$ the same way: the two must agree exactly.

# %%
cfg, out = config(seed), folders[seed]
m_max = max(m for m in stages if m > 0)
t0 = time.process_time()
gauss = train(replace(cfg, adaptive=False, n_stages=m_max, stage_every=epochs), train_set, out / "gaussian",
              resume=resume, progress=False)
bank = langevin.posterior_bank(gauss.generator, None, train_set, ld_steps, ld_step_size, sigma,
                               batch_size=max(batch_size, 256), seed=seed)
mine = {"adaptive": {}, "non-adaptive": {}}
for m in sorted(stages):
    if m == 0:                                                       # Table 3's first row, for both methods
        mine["adaptive"][0] = mine["non-adaptive"][0] = score(gauss.generator, None)
        continue
    non_adaptive = tre.tre_prior(bank, m, steps=tre_steps, lr=cfg.tre_lr, seed=seed)
    adaptive = train(replace(cfg, n_stages=m, stage_every=epochs // m), train_set, out / f"adaptive-m{m}",
                     resume=resume, progress=False)
    mine["non-adaptive"][m] = score(gauss.generator, non_adaptive)
    mine["adaptive"][m] = score(adaptive.generator, adaptive.prior)
    print(f"m = {m}: {metric_name} adaptive {mine['adaptive'][m][metric_name]:.1f}, "
          f"non-adaptive {mine['non-adaptive'][m][metric_name]:.1f}")
assert fingerprint(non_adaptive) == fingerprint(gauss.prior), "tre_prior on the posterior bank != the run's own TRE"
print(f"the Gaussian run's own {m_max}-ratio prior is exactly tre_prior(posterior_bank(...)); "
      f"{time.process_time() - t0:.0f} CPU s")

# %% [markdown]
# ## Every training seed: the driver
# `amdre.experiments.stage_ablation` runs the same grid for one training seed. For `seed` it finds the runs above and
# loads them; every model it hands to `score` must be one we already scored (a cache hit), so its numbers equal ours.

# %%
results = {}
for s in seeds:
    t0, n_cached = time.process_time(), len(cache)
    results[s] = experiments.stage_ablation(train_set, stages, config(s), folders[s],
                                            lambda g, prior, s=s: score(g, prior, train_seed=s), resume=resume)
    print(f"training seed {s}: {time.process_time() - t0:.0f} CPU s, {len(cache) - n_cached} new models scored; "
          f"{metric_name} at 4 stages: adaptive {results[s]['adaptive'][4][metric_name]:.1f}, "
          f"non-adaptive {results[s]['non-adaptive'][4][metric_name]:.1f}")
assert {meth: results[seed][meth] for meth in mine} == mine, "the driver's models differ from the written-out loop's"

# %% [markdown]
# ## Table 3 at teaching scale, beside the paper's
# One column per training seed, their mean and standard deviation (ddof 1); the paper's CelebA FIDs (one run each)
# for the shape only: our numbers are FD-classifier on another dataset.

# %%
table = experiments.ablation_table(results, metric_name, paper=experiments.PAPER_TABLE3_FID)
display(table)
per_seed = {meth: {m: [results[s][meth][m][metric_name] for s in seeds] for m in stages}
            for meth in ("adaptive", "non-adaptive")}
fig = viz.plot_ablation(stages, per_seed, paper=experiments.PAPER_TABLE3_FID, ylabel=f"{metric_name} ({dataset})",
                        title=f"ours: {dataset}, {len(train_set)} images, {epochs} epochs",
                        reference={"real training images (floor)": [real_floor]})
viz.savefig(fig, "07_ablation.png")
plt.show()

# %% [markdown]
# ## Stage by stage, and the persistent memory bank
# A 4-stage prior can be sampled with only its first $k$ ratios, $p_{\phi_k} = \prod_{i<k} r_{\phi_i}\,\mathcal N(0, I)$
# (Eq. 8; earlier stages are frozen when a new one starts, so these are exactly the priors the run used during
# stage $k$). Two adaptive 4-stage runs per training seed that differ only in where the NCE of stage $k \ge 1$ gets
# its samples of $p_{\phi_k}$ (Sec. 3.3, Fig. 1):
#
# * **short-run prior Langevin** (`prior_sampling="langevin"`, our default): `prior_ld_steps` steps of Eq. 3 on
#   $p_{\phi_k}$ from noise, so $r_{\phi_k}$ learns $q_k / p_{\phi_k}$, *including* whatever the earlier ratios got
#   wrong;
# * **the persistent memory bank** (`"memory"`, the paper's main runs, App. A.3). The paper's assumption (Sec. 3.3):
#   "when introducing the $(k+1)$-th stage ... we assume that the current estimator $r_{\phi_k}$ performs well in
#   modeling the ratio between the current aggregated posterior $q_k$ and current prior $p_{\phi_k}$. Therefore, we
#   simply use samples from $q_k$ to approximately serve as samples from the new prior $p_{\phi_{k+1}}$". The bank
#   stores one posterior code per training image, written during the last epoch of each stage; stage $k+1$ reads it
#   as its prior samples. If $r_{\phi_k}$ is accurate, $r_{\phi_k} p_{\phi_k} = q_k$ and the bank holds samples of
#   $p_{\phi_{k+1}}$. If not, stage $k+1$ fits $q_{k+1}/q_k$, the small change of the posterior between stages,
#   instead of $q_{k+1}/p_{\phi_{k+1}}$, and what $r_{\phi_k}$ got wrong is never seen again.

# %%
other = "memory" if prior_sampling == "langevin" else "langevin"
name_of = {"langevin": "adaptive, short-run prior LD", "memory": "adaptive, memory bank"}
runs4 = {}                                                            # (seed, how) -> (generator, prior, history)
for s in seeds:
    g, prior, _, history = load_checkpoint(folders[s] / "adaptive-m4")
    runs4[s, prior_sampling] = (g, prior, history)
    if compare_bank:
        run = train(replace(config(s), prior_sampling=other, n_stages=4, stage_every=epochs // 4), train_set,
                    folders[s] / f"adaptive-m4-{other}", resume=resume, progress=False)
        runs4[s, other] = (run.generator, run.prior, run.history)
hows = [prior_sampling] + ([other] if compare_bank else [])
by_stage = {name_of[how]: {k: [score(*runs4[s, how][:2], n_stages=k, train_seed=s)[metric_name] for s in seeds]
                           for k in range(5)} for how in hows}
z2 = {name_of[how]: {k: [score(*runs4[s, how][:2], n_stages=k, train_seed=s)["|z|^2"] for s in seeds]
                     for k in range(5)} for how in hows}
non_adaptive4 = per_seed["non-adaptive"][4]
rows = {(name, f"seed {s}"): {f"after {k}": f"{v[k][i]:.1f}" for k in v} for name, v in by_stage.items()
        for i, s in enumerate(seeds)}
rows.update({(name, "mean ± std"): {f"after {k}": f"{np.mean(v[k]):.1f} ± {np.std(v[k], ddof=1):.1f}" for k in v}
             for name, v in by_stage.items()})
display(pd.DataFrame(rows).T.rename_axis(["run", metric_name]))
fig = viz.plot_ablation(list(range(5)), by_stage, ylabel=f"{metric_name} ({dataset})",
                        xlabel="stages of the 4-stage prior used for sampling (Eq. 8)",
                        title=f"one 4-stage run per training seed, {len(seeds)} seeds",
                        reference={"non-adaptive, 4 stages": non_adaptive4, "real training images (floor)": [real_floor]})
viz.savefig(fig, "07_by_stage.png")
plt.show()

# %% [markdown]
# ### Where the bank's assumption fails
# Test the assumption directly, in latent space. During stage $k \ge 1$ of the bank run, the NCE's prior samples are
# the bank written at the end of stage $k-1$ (`stage{k-1}.pt`); the assumption says they are distributed as
# $p_{\phi_k}$. Compare the mean $\|z\|^2$ of the bank with that of real samples of $p_{\phi_k}$ (prior Langevin, as
# above); $\mathcal N(0, I)$ has $\|z\|^2 \approx$ `nz`.

# %%
if compare_bank:
    bank_run = "memory"
    rows = {}
    for s in seeds:
        for k in range(1, 4):
            stored = read_checkpoint(folders[s] / f"adaptive-m4-{bank_run}" / f"stage{k - 1}.pt")["bank"]
            rows[f"seed {s}", k] = {
                "bank: mean |z|^2 (the NCE's 'prior' samples)": float(stored.pow(2).sum(1).mean()),
                "p_phi_k samples, bank run": z2[name_of[bank_run]][k][seeds.index(s)],
                "p_phi_k samples, short-run-LD run": z2[name_of["langevin"]][k][seeds.index(s)],
                f"{metric_name} after k stages, bank run": by_stage[name_of[bank_run]][k][seeds.index(s)]}
    assumption = pd.DataFrame(rows).T.rename_axis(["training seed", "stage k"])
    display(assumption.round(1))
    gap = assumption.iloc[:, 0] - assumption.iloc[:, 1]
    print(f"bank minus p_phi_k, mean |z|^2: {gap.min():.1f} to {gap.max():.1f} over seeds and stages (0 if the "
          f"assumption held); N(0, I): {nz}")

# %% [markdown]
# The same runs' samples, decoded, for training seed `seed` (rows: the models of the table and the bank run).

# %%
s0 = seeds[0]
g0, p0 = gauss.generator, gauss.prior
rows_img = [("0 stages", g0, None), (f"non-adaptive m = {p0.n_stages}", g0, p0)] + \
           [(name_of[how] + ", m = 4", *runs4[s0, how][:2]) for how in hows]
fig, axes = plt.subplots(len(rows_img), 1, figsize=(8, 0.62 * len(rows_img) + 0.3), constrained_layout=True)
for ax, (label, g, prior) in zip(np.atleast_1d(axes), rows_img):
    x = langevin.sample_images(g, prior, 16, sample_ld_steps, sample_ld_step_size, seed=s0)
    viz.show_images(x, nrow=16, ax=ax)
    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
fig.suptitle(f"prior Langevin samples, training seed {s0}", fontsize=9)
viz.savefig(fig, "07_samples.png")
plt.show()


# %% [markdown]
# ## Parameter efficiency (Sec. 5.6)
# The paper: "with 4 density ratio estimators, the number of parameters in the prior EBM is only around 1 % of the
# number of parameters in the generator". Counted for the nets of Tables 4 and 5 at the paper's sizes
# (nz = 100, ngf = 64; CIFAR-10 nz = 128):

# %%
def four_stage_prior(z_dim):
    prior4 = EBMPrior(z_dim)
    for _ in range(4):
        prior4.add_stage()
    return prior4

counts = []
for name, z_dim in (("svhn", 100), ("celeba", 100), ("cifar10", 128)):
    n_g = experiments.parameter_count(make_generator(name, z_dim, 64))
    n_p = experiments.parameter_count(four_stage_prior(z_dim))
    counts.append({"generator (Table 5)": name, "nz": z_dim, "generator params": n_g,
                   "4-stage prior params (Table 4)": n_p, "prior / generator": f"{n_p / n_g:.1%}"})
counts = pd.DataFrame(counts).set_index("generator (Table 5)")
display(counts)
ours_g = experiments.parameter_count(make_generator(generator, nz, ngf))
ours_p = experiments.parameter_count(four_stage_prior(nz))
print(f"our teaching model: generator {ours_g:,} params, 4-stage prior {ours_p:,} ({ours_p / ours_g:.0%})")


# %% [markdown]
# With Table 4's ratio net (100 → 200 → 200 → 1: 60,601 parameters each) the 4-stage prior has 242,404 parameters,
# **about 7 %** of the SVHN and CelebA generators (3.4-3.6 M) and 4 % of CIFAR-10's: small, but not the "around 1 %"
# the text states (that figure would fit a prior of one ratio net against a generator of ~6 M parameters, or narrower
# ratio nets). At teaching scale the ratio nets are larger than our tiny generator.

# %% [markdown]
# ## The claims, asserted
# 1. Four stages beat none: at every training seed, the 4-stage prior's score is below half the 0-stage score, for
#    both training methods.
# 2. With short-run prior Langevin every stage helps: the mean over seeds falls at every stage after the first, and at
#    every seed the score after 4 stages is below 0.8 x the score after 1.
# 3. The memory bank's assumption fails, and the bank run pays for it: at stage 1, at every seed, the bank's codes
#    have more than 1.5x the mean $\|z\|^2$ of the prior they stand in for; averaged over seeds the bank run is no
#    better after 4 stages than after 1, while short-run LD more than halves its score, and short-run LD ends ahead of
#    the bank at every seed.
# 4. The Sec. 5.6 count: the 4-stage prior is 5-10 % of the SVHN and CelebA generators (not ~1 %).
#
# Printed, not asserted, because it does not reproduce at this scale: Table 3's adaptive-beats-non-adaptive.

# %%
def mean_std(values):
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

zero = per_seed["adaptive"][0]
for meth in ("adaptive", "non-adaptive"):
    for s, z0, v in zip(seeds, zero, per_seed[meth][4]):
        assert v < 0.5 * z0, f"claim 1, {meth}, training seed {s}: 4 stages {v:.1f} not below half of 0 stages {z0:.1f}"
ld, bk = name_of["langevin"], name_of["memory"]
if ld in by_stage:
    curve = [np.mean(by_stage[ld][k]) for k in range(5)]
    assert all(b < a for a, b in zip(curve[1:], curve[2:])), f"claim 2: mean short-run-LD curve {np.round(curve, 1)}"
    for i, s in enumerate(seeds):
        after1, after4 = by_stage[ld][1][i], by_stage[ld][4][i]
        assert after4 < 0.8 * after1, f"claim 2, training seed {s}: after 4 stages {after4:.1f} vs after 1 {after1:.1f}"
if compare_bank:
    stage1 = assumption.xs(1, level="stage k")
    ratio = stage1.iloc[:, 0] / stage1.iloc[:, 1]
    assert (ratio > 1.5).all(), f"claim 3: bank / p_phi_1 mean |z|^2 at stage 1: {ratio.round(2).tolist()}"
    bank_curve = [np.mean(by_stage[bk][k]) for k in range(5)]
    assert bank_curve[4] >= bank_curve[1] and curve[4] < 0.5 * curve[1], (bank_curve, curve)
    for i, s in enumerate(seeds):
        assert by_stage[ld][4][i] < by_stage[bk][4][i], f"claim 3, training seed {s}: short-run LD not ahead of the bank"
share = counts["4-stage prior params (Table 4)"] / counts["generator params"]
assert 0.05 < share["svhn"] < 0.10 and 0.05 < share["celeba"] < 0.10, share

ad4, na4, z0 = mean_std(per_seed["adaptive"][4]), mean_std(per_seed["non-adaptive"][4]), mean_std(zero)
print(f"claim 1 holds at every training seed: {metric_name} 0 stages {z0[0]:.1f} ± {z0[1]:.1f}; 4 stages adaptive "
      f"{ad4[0]:.1f} ± {ad4[1]:.1f}, non-adaptive {na4[0]:.1f} ± {na4[1]:.1f} (mean ± std over {len(seeds)} seeds)")
if ld in by_stage:
    print(f"claim 2 holds: short-run prior LD, mean over seeds after 0..4 stages "
          + " / ".join(f"{np.mean(by_stage[ld][k]):.1f} ± {np.std(by_stage[ld][k], ddof=1):.1f}" for k in range(5))
          + "; after 4 / after 1 per seed " + ", ".join(f"{a / b:.2f}" for a, b in zip(by_stage[ld][4], by_stage[ld][1])))
if compare_bank:
    print(f"claim 3 holds: at stage 1 the bank's mean |z|^2 is {ratio.min():.1f}-{ratio.max():.1f}x that of p_phi_1; "
          f"memory bank after 0..4 stages " + " / ".join(f"{np.mean(by_stage[bk][k]):.1f} ± "
                                                        f"{np.std(by_stage[bk][k], ddof=1):.1f}" for k in range(5)))
print(f"claim 4 holds: 4-stage prior / generator = {share['svhn']:.1%} (SVHN), {share['celeba']:.1%} (CelebA)")
diff = np.subtract(per_seed["non-adaptive"][4], per_seed["adaptive"][4])
print("not a claim (Table 3's adaptive vs non-adaptive does not reproduce here): at 4 stages, per training seed, "
      + ", ".join(f"adaptive {a:.1f} vs non-adaptive {b:.1f}" for a, b in zip(per_seed["adaptive"][4],
                                                                         per_seed["non-adaptive"][4]))
      + f"; non-adaptive minus adaptive {diff.mean():+.1f} ± {diff.std(ddof=1):.1f}")
print(f"notebook CPU time: {time.process_time() - t_start:.0f} s")

# %% [markdown]
# ## What we saw
# At the defaults (`fashion12k`, 1,000 images, 8 epochs, a stage every 2, training seeds 0 / 1 / 2; 164 CPU seconds),
# FD-classifier against 600 test images (one prior-Langevin run of 600 chains per model; real training images score
# 2.9), beside the paper's Table 3 (FID on CelebA, other units: compare shapes, not values):
#
# | model | ours, seeds 0 / 1 / 2 | ours, mean ± std | paper (CelebA FID) |
# |---|---|---|---|
# | 0 stages, $\mathcal N(0, I)$ | 224.9 / 242.7 / 216.0 | 227.9 ± 13.6 | 62.78 |
# | adaptive, 4 stages (short-run prior LD) | 48.1 / 79.7 / 76.9 | 68.2 ± 17.5 | 35.38 |
# | non-adaptive (TRE, 500 steps), 4 stages | 38.3 / 28.8 / 55.2 | 40.8 ± 13.3 | 42.48 |
# | non-adaptive (TRE, 80 steps: the adaptive run's total), 4 stages | 60.3 / 84.6 / 78.5 | 74.5 ± 12.6 | |
# | adaptive, 4 stages, memory bank | 165.6 / 183.6 / 244.4 | 197.8 ± 41.3 | (the bank is the paper's main setting) |
#
# (The 80-step row is not computed by the notebook at its defaults: `-p tre_steps 80` gives it, exercise 2.) Every claim below
# also holds with `-p seed 1` (training seeds 1-3) and `-p seed 2` (2-4): 4 stages against 0 at every seed; prior
# Langevin after 4 stages at 0.43-0.56 of its score after 1; the bank's codes at 3.9-4.1x the prior's $\|z\|^2$, and
# the bank run worse after 4 stages than after 1 (188.1 vs 148.6, 180.8 vs 134.6).
#
# * **What reproduces.** A learned prior of 4 stages cuts the score by 2.8x-8.4x against $\mathcal N(0, I)$, for both
#   methods and every seed. With short-run prior LD every stage helps: after 0 / 1 / 2 / 3 / 4 stages 275.6 / 148.5 /
#   92.3 / 80.1 / 68.2 (mean over seeds; the 0-stage score of the adaptive run's own generator is worse than the
#   Gaussian run's 227.9, because that generator learned to decode the learned prior's codes). The Sec. 5.6 count:
#   7.0 % (SVHN) and 6.8 % (CelebA), not "around 1 %".
# * **What does not: adaptive vs non-adaptive.** At the defaults TRE is ahead at every seed, by 9.8, 50.9 and 21.7
#   (training seeds 3 and 4, from `-p seed 1` and `-p seed 2`: adaptive 73.2 vs 76.0, and 79.0 vs 46.2).
#   Each adaptive stage gets 2 epochs, 20 NCE steps of 100 codes, against TRE's 500 steps of 256 codes for all its
#   ratios (the paper's stages get about 10,000 steps each). Given the same number of steps as the adaptive run in all
#   (80), TRE is behind at every seed (by 12.2, 4.9 and 1.6), and with 20 it scores 146-174: the comparison measures
#   the optimisation budget more than the method. Earlier runs of this notebook at 4,000 images and 16 epochs (160 NCE
#   steps per stage, `lr_ebm=1e-3`, 2,000 samples x 4 Langevin seeds per model) had adaptive ahead of 1,500-step TRE
#   at all three seeds: 15.8 vs 18.2, 9.2 vs 19.4, 19.6 vs 23.5, for about 4x this notebook's compute.
# * **The memory bank.** Its assumption fails at every seed: the bank read at stage 1 holds codes with mean
#   $\|z\|^2$ of 38-41, while $p_{\phi_1}$, which they stand in for, has 9-11 ($\mathcal N(0, I)$: 8). The first
#   ratio moved the prior only a small part of the way to the posterior: notebook 01's lesson, NCE underestimates a
#   large log-ratio. Later stages then fit $q_{k+1}/q_k$ and the samples get worse: 155.3 after one stage, 197.8
#   after four (mean over seeds), against 68.2 with short-run prior LD.
#
# ## Exercises
# 1. `papermill -p prior_ld_steps 60`: LEBM's prior sampler in training. Does the adaptive run at seed 2 catch up
#    with TRE, and do the three seeds move closer together?
# 2. `-p tre_steps 80` (and `1000`): how much of the non-adaptive result is TRE's optimisation budget? Which budget
#    would be a fair match for 4 adaptive stages of 20 NCE steps each?
# 3. `-p n_train 4000 -p epochs 16 -p lr_ebm 1e-3` (about 4x the compute; try `-p n_seeds 1` first): does adaptive
#    pull ahead of non-adaptive at every seed, as in the earlier runs quoted above, and does the memory bank still
#    stall?
