"""Evaluation helpers of notebooks 06-08 (amdre.anomaly, amdre.experiments): score terms, repeated AUPRC, the
held-out-class experiment and its table, plots."""
import numpy as np
import pytest
import torch

from amdre import anomaly, experiments, viz
from amdre.anomaly import anomaly_score_terms, auprc, chance_auprc, heldout_split, repeated_auprc
from amdre.prior import EBMPrior
from conftest import LinearGenerator


# ------------------------------------------------------------------ anomaly-score terms and repeats
@pytest.fixture
def planted():
    """A linear generator g(z) = W z (nz 4, 1x4x4 images) and three sets of 48 images:

    * normal: g(z) with z ~ N(0, I);
    * off-range: normal + an offset of norm 2 orthogonal to g's range (reconstruction anomalies: the posterior
      of z only sees W^T x, which the offset leaves unchanged, so their prior term is that of their twins);
    * far-latent: g(z) with ||z|| = 5 (prior anomalies: reconstructed well, but improbable under N(0, I)).
    """
    g = LinearGenerator(nz=4)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(48, 4, generator=gen)
    far = torch.randn(48, 4, generator=gen)
    far = 5.0 * far / far.norm(dim=1, keepdim=True)
    off = (g.complement @ torch.randn(12, 48, generator=gen)).T.reshape(-1, 1, 4, 4)
    off = 2.0 * off / off.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    with torch.no_grad():
        normal, far_images = g(z), g(far)
    return g, normal, normal + off, far_images


LD = dict(n_steps=100, step_size=0.001, sigma=0.05, batch_size=48)
N01 = EBMPrior(4)                                       # no stages: the N(0, I) prior


def test_repeated_auprc_seeds_and_terms(planted):
    """Planted anomalies: each is caught by the term it is planted in (AUPRC 1, against a chance level of 1/2),
    the other term does not see it, the repeats are the AUPRCs of the scores of each seed, and terms add up."""
    g, normal, off_range, far = planted
    is_anom = np.arange(96) >= 48
    assert chance_auprc(is_anom) == 0.5
    seeds = [0, 5]
    out = repeated_auprc(g, N01, torch.cat([normal, off_range]), is_anom, seeds=seeds, terms=True, **LD)
    assert set(out) == {"auprc", "auprc_reconstruction", "auprc_prior"} and all(len(v) == 2 for v in out.values())
    assert out["auprc"] == out["auprc_reconstruction"] == [1.0, 1.0]          # perfectly separated: exactly 1
    # the off-range offset is invisible to the posterior: the prior terms equal those of the normal twins
    _, pri_normal = anomaly_score_terms(g, N01, normal, seed=7, **LD)
    rec_off, pri_off = anomaly_score_terms(g, N01, off_range, seed=7, **LD)
    assert torch.allclose(pri_off, pri_normal, atol=1e-3)
    assert (rec_off >= 4.0 / (2 * 0.05 ** 2) * (1 - 1e-5)).all()               # >= ||offset||^2 / (2 sigma^2)
    # far latents are reconstructed as well as the normals, and the prior term alone catches them
    far_out = repeated_auprc(g, N01, torch.cat([normal, far]), is_anom, seeds=seeds, terms=True, **LD)
    assert far_out["auprc_prior"] == [1.0, 1.0]
    assert max(far_out["auprc_reconstruction"]) < 0.8
    again = repeated_auprc(g, N01, torch.cat([normal, far]), is_anom, seeds=seeds, **LD)
    assert set(again) == {"auprc"} and again["auprc"] == far_out["auprc"]      # deterministic per seed
    with pytest.raises(ValueError, match="seeds"):
        repeated_auprc(g, N01, normal, is_anom[:48], seeds=[])


def test_auprc_orders_and_chance():
    """AUPRC = 1 for perfectly separated scores, whatever their scale, and it only depends on the ranking."""
    y = np.r_[np.zeros(30, bool), np.ones(10, bool)]
    s = np.r_[np.linspace(0, 1, 30), np.linspace(1.5, 9, 10)]
    assert auprc(s, y) == 1.0 and auprc(np.exp(s), y) == 1.0
    assert auprc(-s, y) < chance_auprc(y) == 0.25                               # reversed: below chance
    shuffled = np.random.default_rng(0).permutation(s)
    assert auprc(shuffled, y) == pytest.approx(auprc(np.argsort(np.argsort(shuffled)), y))


def test_mean_std_and_format():
    assert anomaly.mean_std([1.0, 3.0]) == (2.0, 1.0)
    assert anomaly.format_mean_std([0.5, 0.7]) == "0.600 ± 0.100"
    assert anomaly.format_mean_std([0.5]) == "0.500"
    with pytest.raises(ValueError):
        anomaly.mean_std([])


# ------------------------------------------------------------------ plots
def test_plot_auprc_table():
    ours = {"adaptive": {1: [0.4, 0.5], 4: [0.6, 0.7]}, "gaussian": {1: [0.3], 4: [0.5]}}
    fig = viz.plot_auprc_table(ours, {1: 0.36, 4: 0.36}, paper={"LEBM": {1: (0.336, 0.01), 4: (0.63, None)}})
    ax = fig.axes[0]
    assert len(ax.patches) == 6                         # 3 series x 2 classes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4"]
    with pytest.raises(ValueError):
        viz.plot_auprc_table({}, {1: 0.3})


def test_plot_ablation_with_and_without_paper():
    res = {"adaptive": {0: [50.0, 52.0], 1: [30.0, 31.0]}, "non-adaptive": {0: [50.0, 52.0], 1: [33.0, 35.0]}}
    fig = viz.plot_ablation([0, 1], res, paper=experiments.PAPER_TABLE3_FID)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
    fig = viz.plot_ablation([0, 1], res)
    assert len(fig.axes) == 1


def test_trajectory_strip_and_animation(tmp_path):
    frames = torch.rand(6, 5, 1, 8, 8) * 2 - 1          # 6 recorded steps of 5 chains
    steps = [0, 40, 80, 120, 160, 200]
    fig = viz.plot_trajectory_strip(frames, steps, n_chains=3, n_cols=4)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[0] == "0" and labels[-1] == "200" and len(labels) == 4
    anim = viz.trajectory_animation(frames, steps, nrow=5)
    path = tmp_path / "a.gif"
    anim.save(path, writer="pillow")
    from PIL import Image
    with Image.open(path) as im:
        assert im.n_frames == 6
    html = anim.to_jshtml()
    assert "<script" in html
    with pytest.raises(ValueError, match="steps"):
        viz.plot_trajectory_strip(frames, steps[:-1])
    with pytest.raises(ValueError, match="frames"):
        viz.trajectory_animation(torch.rand(6, 1, 8, 8), steps)


# ------------------------------------------------------------------ package additions used by 06-08
def test_tre_prior_fits_a_shifted_gaussian():
    """Aggregate posterior N(mu, I), base N(0, I): log q/p0 = mu.z - |mu|^2/2; the TRE prior recovers it."""
    from amdre.tre import tre_prior
    torch.manual_seed(0)
    mu = torch.tensor([1.5, -1.0])
    z = torch.randn(4000, 2) + mu
    prior = tre_prior(z, 2, steps=400, lr=3e-3, seed=0)
    assert prior.n_stages == 2 and not any(p.requires_grad for p in prior.parameters())
    assert len(prior.history["tre_loss"]) == 2
    test = torch.randn(500, 2) * 0.7 + mu
    est = prior.stage_log_ratios(test).sum(0)
    true = test @ mu - 0.5 * mu.pow(2).sum()
    assert torch.corrcoef(torch.stack([est, true]))[0, 1] > 0.95
    assert tre_prior(z, 2, steps=20, seed=3).log_prob(test).equal(tre_prior(z, 2, steps=20, seed=3).log_prob(test))
    with pytest.raises(ValueError, match="z_posterior"):
        tre_prior(torch.randn(5), 1)


def test_mnist_mlp_generator():
    from amdre.nets import generator
    g = generator("mnist-mlp", nz=8, ngf=8)
    x = g(torch.randn(3, 8))
    assert x.shape == (3, 1, 28, 28) and x.abs().max() <= 1
    assert sum(p.numel() for p in g.parameters()) == 8 * 128 + 128 + 128 * 128 + 128 + 128 * 784 + 784


def test_heldout_class_experiment_and_table(digits_all, tmp_path):
    """The Table 2 pipeline end to end on 8x8 digits with a planted anomaly class (uniform-noise images, class 10):
    split sizes; each of the three models is the one its name says (its AUPRCs are recomputed from the saved
    checkpoints); all three find the planted anomalies far above chance; re-running loads; the table's layout."""
    from amdre.data import ImageData
    from amdre.checkpoint import load_checkpoint
    from amdre.config import Config
    noise = torch.rand(100, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    d = ImageData(torch.cat([digits_all.images, noise]), torch.cat([digits_all.labels, torch.full((100,), 10)]),
                  "digits+noise")
    cfg = Config(dataset="digits", nz=2, ngf=4, epochs=2, n_stages=2, stage_every=1, batch_size=50,
                 ld_steps=3, prior_ld_steps=3, lr_g=3e-2, lr_ebm=1e-3, tre_steps=20, prior_sampling="memory")
    res = experiments.heldout_class_experiment(d, 10, cfg, tmp_path, eval_seeds=[0, 1], n_train=300)
    n_normal = len(digits_all)
    assert res["n_train"] == 300 and res["n_anomalies"] == 100
    assert res["n_test"] == 100 + round(0.2 * n_normal)
    assert res["chance"] == pytest.approx(100 / res["n_test"])
    assert list(res["models"]) == list(experiments.ANOMALY_MODELS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heldout10-adaptive", "heldout10-gaussian"]
    _, test_idx, is_anom = heldout_split(d.labels, 10)
    x_test = d.images[torch.from_numpy(test_idx)]
    g_a, prior_a, cfg_a, hist_a = load_checkpoint(tmp_path / "heldout10-adaptive")
    g_n, prior_n, cfg_n, hist_n = load_checkpoint(tmp_path / "heldout10-gaussian")
    assert cfg_a.adaptive and not cfg_n.adaptive and prior_a.n_stages == prior_n.n_stages == 2
    for name, g, prior, hist in (("multi-stage", g_a, prior_a, hist_a), ("gaussian", g_n, EBMPrior(2), hist_n),
                                 ("non-adaptive", g_n, prior_n, hist_n)):
        m = res["models"][name]
        again = repeated_auprc(g, prior, x_test, is_anom, seeds=[0, 1], n_steps=3, batch_size=500, terms=True)
        assert {k: m[k] for k in again} == again, name
        assert min(m["auprc"]) > 0.9 > res["chance"] + 0.5, (name, m["auprc"])
        assert m["train_mse"] == pytest.approx(np.mean(hist["mse"][-6:]))        # the last epoch's 6 batches
    assert res["models"]["gaussian"]["auprc_prior"] != res["models"]["non-adaptive"]["auprc_prior"]  # other priors
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}
    again = experiments.heldout_class_experiment(d, 10, cfg, tmp_path, eval_seeds=[0, 1], n_train=300)   # loads
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} == stamps                  # nothing retrained
    assert again["models"] == res["models"]
    table = experiments.anomaly_table({1: res, 7: again}, paper=experiments.PAPER_TABLE2_AUPRC)
    assert list(table.columns) == ["1", "7", "mean"]
    assert "chance (anomaly fraction)" in table.index and "paper: LEBM" in table.index
    assert table.loc["paper: LEBM", "1"] == "0.336 ± 0.01" and table.loc["paper: LEBM", "mean"] == "0.400"
    mine = res["models"]["multi-stage"]["auprc"]
    cell = table.loc["ours: multi-stage", "1"]
    assert cell == anomaly.format_mean_std(mine) and "±" in cell
    assert table.loc["ours: multi-stage", "mean"] == f"{np.mean(mine):.3f}"
    assert table.loc["chance (anomaly fraction)", "7"] == f"{res['chance']:.3f}"
    with pytest.raises(ValueError, match="n_train"):
        experiments.heldout_class_experiment(d, 10, cfg, tmp_path, n_train=10 ** 6)
