"""Evaluation helpers of notebooks 06-08: anomaly-score terms, repeated AUPRC, reference tables, plots."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn as nn

from amdre import metrics, viz
from amdre.prior import EBMPrior


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


class TinyGenerator(nn.Module):
    """z [B, 2] -> 1x4x4 images in [-1, 1]."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(2, 16)
        self.nz = 2

    def forward(self, z):
        return torch.tanh(self.lin(z)).reshape(-1, 1, 4, 4)


@pytest.fixture
def model():
    g = TinyGenerator()
    prior = EBMPrior(2)
    prior.add_stage()
    return g, prior


def images(n=40, seed=1):
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------ anomaly-score terms and repeats
@pytest.mark.parametrize("with_prior", [True, False])
def test_score_terms_sum_to_anomaly_scores(model, with_prior):
    g, prior = model
    prior = prior if with_prior else None
    x = images()
    rec, pri = metrics.anomaly_score_terms(g, prior, x, n_steps=5, batch_size=16, seed=3)
    full = metrics.anomaly_scores(g, prior, x, n_steps=5, batch_size=16, seed=3)
    assert rec.shape == pri.shape == (40,)
    assert torch.allclose(rec + pri, full, atol=1e-5)
    assert (rec >= 0).all()
    if not with_prior:                                  # -log N(0, I) up to a constant is ||z||^2 / 2 >= 0
        assert (pri >= 0).all()


def test_repeated_auprc_seeds_and_terms(model):
    g, prior = model
    x = images(60)
    is_anom = np.arange(60) < 20
    x[is_anom] = 1.0                                    # saturated "anomalies": large reconstruction error
    out = metrics.repeated_auprc(g, prior, x, is_anom, seeds=[0, 1], n_steps=3, terms=True)
    assert set(out) == {"auprc", "auprc_reconstruction", "auprc_prior"}
    assert all(len(v) == 2 for v in out.values())
    assert all(0.0 <= a <= 1.0 for v in out.values() for a in v)
    again = metrics.repeated_auprc(g, prior, x, is_anom, seeds=[0, 1], n_steps=3)
    assert again["auprc"] == out["auprc"]               # deterministic per seed
    with pytest.raises(ValueError, match="seeds"):
        metrics.repeated_auprc(g, prior, x, is_anom, seeds=[])


def test_mean_std_and_format():
    assert metrics.mean_std([1.0, 3.0]) == (2.0, 1.0)
    assert metrics.format_mean_std([0.5, 0.7]) == "0.600 ± 0.100"
    assert metrics.format_mean_std([0.5]) == "0.500"
    with pytest.raises(ValueError):
        metrics.mean_std([])


def test_paper_tables_match_the_paper():
    t2 = metrics.PAPER_TABLE2_AUPRC
    assert list(t2) == ["VAE", "ABP", "MEG", "BiGAN-σ", "LEBM", "Adaptive CE"]
    assert all(sorted(row) == [1, 4, 5, 7, 9] for row in t2.values())
    assert t2["Adaptive CE"][1] == (0.531, 0.02) and t2["LEBM"][9] == (0.413, 0.01)
    t3 = metrics.PAPER_TABLE3_FID
    assert t3["adaptive"][4] == 35.38 and t3["non-adaptive"][4] == 42.48
    assert t3["adaptive"][0] == t3["non-adaptive"][0] == 62.78


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
    fig = viz.plot_ablation([0, 1], res, paper=metrics.PAPER_TABLE3_FID)
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
    from amdre.train import tre_prior
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


def test_heldout_class_experiment_and_table(tmp_path):
    """The Table 2 pipeline end to end on 8x8 digits: split sizes, three models, resume, table layout."""
    from amdre.data import load
    from amdre.train import TrainConfig
    d = load("digits", split="all")
    cfg = TrainConfig(generator="digits", nz=2, ngf=4, epochs=2, n_stages=2, stage_every=1, batch_size=50,
                      ld_steps=3, prior_ld_steps=3, lr_g=1e-3, lr_ebm=1e-3, tre_steps=20)
    res = metrics.heldout_class_experiment(d, 1, cfg, tmp_path, eval_seeds=[0, 1], n_train=300)
    n_ones, n_normal = int((d.labels == 1).sum()), int((d.labels != 1).sum())
    assert res["n_train"] == 300 and res["n_anomalies"] == n_ones
    assert res["n_test"] == n_ones + round(0.2 * n_normal)
    assert res["chance"] == pytest.approx(n_ones / res["n_test"])
    assert list(res["models"]) == list(metrics.ANOMALY_MODELS)
    for m in res["models"].values():
        assert len(m["auprc"]) == 2 and all(0 <= a <= 1 for a in m["auprc"]) and m["train_mse"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heldout1-adaptive", "heldout1-gaussian"]
    again = metrics.heldout_class_experiment(d, 1, cfg, tmp_path, eval_seeds=[0, 1], n_train=300)   # loads
    assert again["models"]["multi-stage"]["auprc"] == res["models"]["multi-stage"]["auprc"]
    table = metrics.anomaly_table({1: res, 7: again}, paper=metrics.PAPER_TABLE2_AUPRC)
    assert list(table.columns) == ["1", "7", "mean"]
    assert "chance (anomaly fraction)" in table.index and "paper: LEBM" in table.index
    assert table.loc["paper: LEBM", "1"] == "0.336 ± 0.01" and table.loc["paper: LEBM", "mean"] == "0.400"
    assert "±" in table.loc["ours: multi-stage", "1"]
    with pytest.raises(ValueError, match="n_train"):
        metrics.heldout_class_experiment(d, 1, cfg, tmp_path, n_train=10 ** 6)


def test_teaching_config_matches_notebook_03():
    """Notebook 08 trains amdre.train.teaching_config into 03's run folder when 03 has not run: they must agree."""
    import ast
    from amdre.paths import ROOT
    from amdre.train import TEACHING_N_TRAIN, teaching_config
    src = (ROOT / "tools" / "notebooks" / "03_latent_ebm.py").read_text()
    cell = src.split("# parameters", 1)[1].split("# %%", 1)[0]
    params = {t.targets[0].id: ast.literal_eval(t.value) for t in ast.parse(cell).body if isinstance(t, ast.Assign)}
    cfg = teaching_config(params["dataset"], params["seed"])
    assert params["n_train"] == TEACHING_N_TRAIN
    for name in ("nz", "ngf", "epochs", "stage_every", "n_stages", "ld_steps", "ld_step_size", "sigma", "lr_g",
                 "lr_ebm", "batch_size"):
        assert getattr(cfg, name) == params[name], name
    assert cfg.generator == "mnist"                      # 03 builds TrainConfig(generator="mnist", ...)
    assert 'TrainConfig(generator="mnist"' in src
    with pytest.raises(ValueError):
        teaching_config("svhn")
