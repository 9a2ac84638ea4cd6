"""amdre.experiments: Table 3's stage-ablation driver on a tiny digits fixture; the per-configuration run folders."""
from dataclasses import replace

import pytest
import torch

from amdre import experiments, metrics, paths
from amdre.experiments import run_dir, stage_ablation
from amdre.checkpoint import load_checkpoint
from amdre.config import Config
from amdre.train import Trainer

STAGES = [2, 0, 1]                       # any order: the grid is sorted


def tiny_config(**kw):
    return Config(**{**dict(dataset="digits", nz=4, ngf=8, epochs=2, n_stages=4, stage_every=1, batch_size=32,
                            ld_steps=5, prior_ld_steps=5, lr_g=3e-3, lr_ebm=1e-3, tre_steps=30, prior_sampling="memory",
                            progress=False), **kw})


class Scorer:
    """score(generator, prior) for stage_ablation: records what it was given and returns deterministic numbers."""

    def __init__(self, images):
        self.images, self.calls = images, []

    def __call__(self, g, prior):
        self.calls.append((g, prior))
        return {"stages": prior.n_stages, "prior_params": experiments.parameter_count(prior),
                "mse": metrics.reconstruction_mse(g, prior, self.images, n_steps=3, seed=0),
                "log_p": prior.log_prob(torch.ones(3, 4)).tolist()}


def same_state(a, b):
    a, b = a.state_dict(), b.state_dict()
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_stage_ablation_grid_models_and_reload(tiny_digits, tmp_path, monkeypatch):
    cfg = tiny_config()
    score = Scorer(tiny_digits.images[:32])
    res = stage_ablation(tiny_digits, STAGES, cfg, tmp_path, score)
    # the grid: both methods at every m, and the training time of each run
    assert sorted(res) == ["adaptive", "non-adaptive", "seconds"]
    assert sorted(res["adaptive"]) == sorted(res["non-adaptive"]) == [0, 1, 2]
    assert sorted(res["seconds"]) == ["adaptive-m1", "adaptive-m2", "gaussian"] and min(res["seconds"].values()) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adaptive-m1", "adaptive-m2", "gaussian"]
    # m = 0 (both rows): the Gaussian-prior generator, scored with a prior of no stage (N(0, I)), once
    g_gauss, prior_gauss, cfg_gauss, _ = load_checkpoint(tmp_path / "gaussian")
    assert not cfg_gauss.adaptive and cfg_gauss.epochs == cfg.epochs and prior_gauss.n_stages == 2   # TRE, largest m
    zero = [(g, p) for g, p in score.calls if p.n_stages == 0]
    assert len(zero) == 1 and same_state(zero[0][0], g_gauss)
    assert res["adaptive"][0] is res["non-adaptive"][0] and res["adaptive"][0]["prior_params"] == 0
    # non-adaptive m: that same generator, with an m-ratio TRE prior (the run's own for the largest m)
    for m in (1, 2):
        g, prior = next((g, p) for g, p in score.calls if p.n_stages == m and same_state(g, g_gauss))
        assert res["non-adaptive"][m]["stages"] == m
    assert res["non-adaptive"][2]["log_p"] == pytest.approx(prior_gauss.log_prob(torch.ones(3, 4)).tolist(), abs=1e-5)
    # adaptive m: a run of its own with m stages, a new one every epochs // m epochs, for the same epochs
    for m in (1, 2):
        g, prior, run_cfg, hist = load_checkpoint(tmp_path / f"adaptive-m{m}")
        assert run_cfg.adaptive and run_cfg.n_stages == prior.n_stages == m and run_cfg.stage_every == cfg.epochs // m
        assert run_cfg.epochs == cfg.epochs and sorted(set(hist["stage"])) == list(range(m))
        assert res["adaptive"][m]["stages"] == m and res["adaptive"][m]["prior_params"] == sum(
            p.numel() for p in prior.parameters())
        assert res["adaptive"][m]["log_p"] == pytest.approx(prior.log_prob(torch.ones(3, 4)).tolist(), abs=1e-5)
        assert not same_state(g, g_gauss)
    assert len(score.calls) == 5                                         # 0, non-adaptive 1 and 2, adaptive 1 and 2

    # re-running loads every run: no epoch trained, no TRE refitted for a run, no checkpoint rewritten, same numbers
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(Trainer, "train_epoch", refuse)
    monkeypatch.setattr(Trainer, "fit_tre", refuse)
    again = stage_ablation(tiny_digits, STAGES, cfg, tmp_path, Scorer(tiny_digits.images[:32]))
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} == stamps
    assert again["adaptive"] == res["adaptive"] and again["non-adaptive"] == res["non-adaptive"]


def test_stage_ablation_bad_stages(tiny_digits, tmp_path):
    cfg = tiny_config()
    for bad in ([], [-1, 1], [1.0], [True]):
        with pytest.raises(ValueError, match="stages must be non-negative ints"):
            stage_ablation(tiny_digits, bad, cfg, tmp_path, lambda g, p: {})
    with pytest.raises(ValueError, match=r"cfg.epochs = 2 < m for m in \[4\]"):
        stage_ablation(tiny_digits, [1, 4], cfg, tmp_path, lambda g, p: {})
    assert not any(tmp_path.iterdir())                                    # refused before anything was trained


def test_run_dir_tags_the_config():
    cfg = Config(dataset="digits", nz=2, ngf=8, epochs=4, n_stages=2, stage_every=2)
    d = run_dir("07_ablations-digits", cfg, n_train=100)
    assert d.parent == paths.runs() and d.name.startswith("07_ablations-digits-") and len(d.name.split("-")[-1]) == 8
    assert run_dir("07_ablations-digits", replace(cfg), n_train=100) == d          # same config, same folder
    assert run_dir("07_ablations-digits", replace(cfg, device="cuda"), n_train=100) == d   # where it runs: same
    assert run_dir("07_ablations-digits", replace(cfg, lr_ebm=1e-3), n_train=100) != d
    assert run_dir("07_ablations-digits", replace(cfg, prior_sampling="memory"), n_train=100) != d
    assert run_dir("07_ablations-digits", cfg, n_train=200) != d


def test_settings_table_says_why_only_where_a_value_differs_from_the_paper():
    cfg = Config(dataset="digits", nz=100, ngf=8, epochs=100, n_stages=4, stage_every=25, batch_size=100, lr_g=1e-4)
    table = experiments.settings_table(cfg, why={"ngf": "a tiny test model"})
    assert table.loc["nz", "why"] == "" and table.loc["epochs", "why"] == "" and table.loc["lr_g", "why"] == ""
    assert table.loc["ngf", "why"] == "a tiny test model" and table.loc["lr_ebm", "why"] != ""
    assert table.loc["prior_sampling", "the paper (App. A.3)"].startswith("memory")
