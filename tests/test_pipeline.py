"""The paper-scale run pipeline: presets, parameter checks, the CLI (train, resume, refuse, NaN), speed paths."""
import ast
import json
import math
import os
import shutil
import warnings
from pathlib import Path

import nbformat
import pytest
import torch

from amdre import distributed, paths, pipeline
from amdre.__main__ import main
from amdre.accel import Autocast, CompiledPosterior
from amdre.config import Config, load_preset
from amdre.nets import generator
from amdre.pipeline import PARAMS, check_params, config_from_params, speed_up
from amdre.samplers import sample_posterior
from amdre.train import Trainer
from conftest import tiny_model

REPO = Path(__file__).resolve().parents[1]

# 300 digits, 2 epochs, 2 stages: about a second per epoch on one thread
TINY = ["--config", "ci", "--n-train", "300", "--epochs", "2", "--stage-every", "1", "--no-eval"]


def run(tmp, *args, epochs=None):
    argv = TINY + ["--out-dir", str(tmp), *args] + (["--epochs", str(epochs)] if epochs else [])
    return main(argv)


def run_interrupted(tmp, monkeypatch, after=1):
    """The TINY run, stopped by Ctrl-C right after epoch ``after`` was checkpointed (exit 130)."""
    log = pipeline.EpochLog.__call__

    def stop(self, trainer):
        log(self, trainer)
        if trainer.epoch == after:
            raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(pipeline.EpochLog, "__call__", stop)
        return run(tmp)


# ------------------------------------------------------------------------------------------ presets
APP_A = {  # preset: (generator, nz, epochs, stage_every, ld_steps, n_train, image_size, image shape)
    "svhn": ("svhn", 100, 100, 25, 30, None, 64, (3, 32, 32)),
    "cifar10": ("cifar10", 128, 200, 50, 40, None, 64, (3, 32, 32)),
    "celeba": ("celeba", 100, 100, 25, 30, 40000, 64, (3, 64, 64)),
    "celeba_hq": ("celeba128", 100, 100, 25, 30, 40000, 128, (3, 128, 128)),
}


@pytest.mark.parametrize("name", sorted(APP_A))
def test_presets_carry_appendix_a(name):
    values = load_preset(name)
    assert set(values) == set(PARAMS), set(values) ^ set(PARAMS)          # every parameter, spelled right
    assert values["device"] == "cuda" and values["amp"] and values["compile"] and values["channels_last"]
    assert values["out_dir"] == f"runs/{name}"
    p = check_params({**values, "device": "cpu"})                           # no GPU here
    cfg = config_from_params(p)
    gen, nz, epochs, every, ld, n_train, size, shape = APP_A[name]
    assert (cfg.generator, cfg.nz, cfg.epochs, cfg.stage_every, cfg.ld_steps) == (gen, nz, epochs, every, ld)
    assert (p["n_train"], p["image_size"], p["n_test"], p["fid_samples"]) == (n_train, size, 10000, 50000)
    assert cfg.n_stages == 4 and cfg.ngf == 64 and cfg.batch_size == 100 and cfg.prior_sampling == "memory"
    assert cfg.ld_step_size == 0.01 and cfg.sigma == 0.3                   # Eq. 3's s = the paper's "0.1"
    assert cfg.lr_g == 1e-4 and cfg.lr_ebm == 5e-5 and isinstance(cfg.lr_g, float)
    # App. A.3 test time: 100 prior Langevin steps of "step size 0.1", which the presets read as Eq. 3's s = 0.1
    assert (p["sample_ld_steps"], p["sample_ld_step_size"]) == (100, 0.1)
    assert cfg.amp and cfg.compile and cfg.channels_last
    assert generator(cfg.generator, cfg.nz, cfg.ngf).out_shape == shape


def test_ci_preset_and_unknown_preset():
    p = check_params(load_preset("configs/ci.yaml"))
    assert p["device"] == "cpu" and p["generator"] == "digits" and set(load_preset("ci")) == set(PARAMS)
    with pytest.raises(FileNotFoundError, match="presets: .*celeba_hq.*svhn"):
        load_preset("imagenet")
    assert main(["--config", "imagenet"]) == 2


def _parameters_cell(source: str) -> dict:
    tree = ast.parse(source)
    return {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)}


def test_notebook_parameters_are_the_declared_ones():
    """Notebook 05's parameters cell declares exactly PARAMS, with the same defaults (and its paired text source,
    when there is one, holds the same cell)."""
    nb = nbformat.read(REPO / "notebooks/05_paper_scale.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    as_list = lambda v: list(v) if isinstance(v, tuple) else v                        # noqa: E731 - betas
    assert _parameters_cell(tagged[0].source) == {k: as_list(v[1]) for k, v in PARAMS.items()}
    text = REPO / "notebooks/05_paper_scale.py"
    if text.is_file():
        cell = next(c for c in text.read_text().split("# %%") if c.lstrip(" \n").startswith('tags=["parameters"]'))
        assert _parameters_cell(cell.split("\n", 1)[1]) == _parameters_cell(tagged[0].source)


# ------------------------------------------------------------------------------------------ parameter checks
def test_check_params_reports_every_problem_at_once():
    with pytest.raises(ValueError) as err:
        check_params({"epoch": 3, "batch_size": "100", "lr_g": "1e-4", "amp": 1, "nz": True, "n_stages": 0,
                      "prior_sampling": "pcd", "sigma": -1.0, "n_train": 2.5})
    msg = str(err.value)
    for part in ("unknown parameter 'epoch' (did you mean 'epochs'?)", "batch_size must be int", "got '100' (a string",
                 "write 1.0e-4", "amp must be bool", "nz must be int", "n_stages must be an int >= 1",
                 "prior_sampling must be one of 'memory', 'langevin'; got 'pcd'", "sigma must be a finite number > 0",
                 "n_train must be int or None"):
        assert part in msg, part


def test_check_params_dataset_generator_and_paths():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; valid names: .*svhn"):
        check_params({"dataset": "imagenet"})
    with pytest.raises(ValueError, match=r"generator 'svhn' makes images of shape \(3, 32, 32\) but mnist5k"):
        check_params({"generator": "svhn"})
    with pytest.raises(ValueError, match="image_size must be one of 64, 128; got 32"):
        check_params({"dataset": "celeba", "image_size": 32})
    p = check_params({"dataset": "CIFAR-10", "out_dir": "runs/x", "n_train": None})
    assert p["dataset"] == "cifar10" and p["generator"] == "cifar10" and p["out_dir"] == str(paths.root() / "runs/x")
    assert check_params({"dataset": "celeba", "image_size": 128})["generator"] == "celeba128"
    assert check_params(p) == p                                                # idempotent
    assert check_params({})["epochs"] == PARAMS["epochs"][1]


def test_cuda_without_gpu_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for params in ({"device": "cuda"}, {"device": "cuda:1"}):
        with pytest.raises(ValueError, match=r"torch sees none.*Set device='cpu'.*machine with a GPU"):
            check_params(params)
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
        check_params({"device": "tpu"})
    from amdre.data import load
    with pytest.raises(ValueError, match="Set device='cpu'"):
        Trainer(Config(dataset="digits", nz=4, ngf=8, device="cuda"), load("digits", n=8), tmp_path)
    assert run(tmp_path / "r", "--device", "cuda") == 2 and not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------ CLI runs
def test_cli_trains_resumes_and_equals_an_uninterrupted_run(tmp_path, capsys, monkeypatch):
    cut, full = tmp_path / "cut", tmp_path / "full"
    assert run_interrupted(cut, monkeypatch) == 130
    assert "continues from its last checkpoint" in capsys.readouterr().err
    log = (cut / "train.log").read_text()
    assert "starting of 2" in log and "epoch 1/2 stage 0" in log and "img/s" in log
    assert "STOPPED: interrupted (Ctrl-C) during epoch 2; last.pt holds epoch 1" in log
    assert run(cut) == 0                                                     # resumes at epoch 1
    log = (cut / "train.log").read_text()
    assert "resuming after epoch 1 of 2" in log and "epoch 2/2 stage 1" in log
    assert run(full) == 0
    a, b = (torch.load(d / "last.pt", weights_only=True) for d in (cut, full))
    assert a["epoch"] == b["epoch"] == 2 and a["n_stages"] == 2
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])
    assert all(torch.equal(a["prior"][k], b["prior"][k]) for k in a["prior"])
    assert a["history"]["nce_loss"] == b["history"]["nce_loss"]
    assert run(cut) == 0 and "resuming after epoch 2 of 2" in (cut / "train.log").read_text()   # done: nothing to do
    saved = json.loads((cut / "run.json").read_text())["params"]
    assert saved["sigma"] == 0.3 and saved["n_train"] == 300


def test_cli_refuses_another_config_and_keeps_everything(tmp_path, capsys):
    assert run(tmp_path) == 0
    before = {f: (tmp_path / f).read_bytes() for f in ("last.pt", "run.json", "train.log")}
    capsys.readouterr()
    assert run(tmp_path, "--sigma", "0.5") == 2
    err = capsys.readouterr().err
    assert "already holds a run with other parameters (sigma: 0.3 -> 0.5)" in err and "Nothing was changed" in err
    assert run(tmp_path, "--resume", "false") == 2
    assert "resume=False would start it over" in capsys.readouterr().err
    assert before == {f: (tmp_path / f).read_bytes() for f in before}
    # a Trainer folder without run.json is checked against its checkpoint
    (tmp_path / "run.json").unlink()
    assert run(tmp_path, "--nz", "4") == 2 and "configuration differs in nz: 8 -> 4" in capsys.readouterr().err


def test_cli_bad_values_exit_2(tmp_path, capsys):
    assert main(["--config", "ci", "--out-dir", str(tmp_path), "--epochs", "0"]) == 2
    assert "epochs must be an int >= 1; got 0" in capsys.readouterr().err
    for argv in (["--epochs", "ten"], ["--epoch", "3"], ["--amp", "maybe"]):     # argparse: type, name (no prefixes)
        with pytest.raises(SystemExit):
            main(argv)
    assert not any(tmp_path.iterdir())


def test_nan_stops_with_step_stage_and_good_checkpoint(tmp_path, capsys, monkeypatch):
    assert run_interrupted(tmp_path, monkeypatch) == 130
    good = (tmp_path / "last.pt").read_bytes()
    monkeypatch.setattr(Trainer, "sample_posterior", lambda self, x, z0, n_stages, randn: torch.full_like(z0, math.nan))
    assert run(tmp_path) == 1
    err = capsys.readouterr().err
    assert "training stopped: non-finite training values" in err
    assert "in epoch 2 of 2, batch 1, stage 1" in err and f"Last good checkpoint: {tmp_path / 'last.pt'}" in err
    assert (tmp_path / "last.pt").read_bytes() == good and not (tmp_path / "stage1.pt").exists()
    assert "STOPPED: non-finite" in (tmp_path / "train.log").read_text()


def test_cli_evaluation_writes_grids_and_metrics(tmp_path):
    argv = [a for a in TINY if a != "--no-eval"] + ["--out-dir", str(tmp_path), "--n-test", "40",
                                                    "--fid-samples", "60"]
    assert main(argv) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["epochs_trained"] == 2 and m["n_stages"] == 2 and m["mse"]["n_images"] == 40
    assert 0 < m["mse"]["value"] < 1 and "[-1, 1]" in m["mse"]["scale"]
    assert "fid" not in m                                  # the sample score says what it is, never posing as FID
    assert m["sample_score"]["kind"] in ("fid", "fd_classifier") and m["sample_score"]["n_generated"] == 60
    assert m["sample_score"]["library"] and m["sample_score"]["value"] > 0
    assert all((tmp_path / f).stat().st_size > 0 for f in m["files"].values())
    # metrics.json of other run parameters is never overwritten
    with pytest.raises(pipeline.RunConflict, match="metrics.json"):
        pipeline.evaluate_run({**m["params"], "lr_g": 1e-2}, None, None)


# ------------------------------------------------------------------------------------------ speed paths
def test_a_process_noise_is_its_rows_of_the_whole_batch(tiny_digits, tmp_path):
    """DataParallelTrainer.noise draws for the whole global batch and keeps this process's rows: a shard's chains are
    exactly rows lo:hi of the chains one process runs for the whole batch (with the same generator state)."""
    g, prior, x = tiny_model()
    cfg = Config(dataset="digits", nz=4, ngf=8, epochs=2, n_stages=2, stage_every=1, batch_size=24, progress=False)
    shard = distributed.DataParallelTrainer(cfg, tiny_digits, tmp_path)
    state = shard.rng.get_state()
    whole = sample_posterior(g, prior, x, n_steps=15, n_stages=2, randn=shard.noise)
    for lo, hi in ((0, 11), (11, 24)):
        shard.rng.set_state(state)
        shard.rows = (lo, hi, 24)
        part = sample_posterior(g, prior, x[lo:hi], n_steps=15, n_stages=2, randn=shard.noise)
        assert torch.allclose(part, whole[lo:hi], atol=1e-6)
    shard.rng.set_state(state)
    shard.rows = (0, 13, 13)                                      # a batch of 13: other noise for those rows
    assert not torch.allclose(sample_posterior(g, prior, x[11:], n_steps=15, n_stages=2, randn=shard.noise),
                              whole[11:], atol=1e-2)
    with pytest.raises(ValueError, match="noise for 5 rows, but this process holds rows 0:13"):
        shard.noise(torch.empty(5, 4))


def test_amp_keeps_reconstruction_error(tmp_path):
    """bf16 autocast of the generator (CPU autocast here) leaves the posterior's reconstruction error unchanged."""
    from amdre.data import load
    data = load("digits", n=400)
    t = Trainer(Config(dataset="digits", nz=8, ngf=32, epochs=3, n_stages=2, stage_every=2, batch_size=50,
                       ld_steps=20, lr_g=3e-3, progress=False), data, tmp_path).fit()
    x = load("digits", split="test", n=200).images
    g, prior = t.generator.eval(), t.prior
    errs = {}
    for amp in (False, True):
        torch.manual_seed(0)
        z = sample_posterior(Autocast(g) if amp else g, prior, x, n_steps=20)
        with torch.no_grad():
            errs[amp] = (x - g(z)).pow(2).mean().item()
    assert abs(errs[True] - errs[False]) < 0.03 * errs[False], errs


def test_channels_last_and_amp_train_steps_match_plain(tmp_path):
    from amdre.data import ImageData
    torch.manual_seed(0)
    data = ImageData(torch.rand(100, 1, 28, 28) * 2 - 1, None, "noise")
    base = dict(generator="mnist", nz=4, ngf=4, epochs=1, n_stages=1, batch_size=50, ld_steps=5, progress=False)
    plain = speed_up(Trainer(Config(**base), data, tmp_path / "a")).fit()
    nhwc = speed_up(Trainer(Config(**base, channels_last=True), data, tmp_path / "b"))
    assert nhwc.generator.net[4].weight.is_contiguous(memory_format=torch.channels_last)
    nhwc.fit()
    for p, q in zip(plain.generator.parameters(), nhwc.generator.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    amp = speed_up(Trainer(Config(**base, amp=True), data, tmp_path / "c")).fit()
    assert isinstance(amp.g, Autocast) and isinstance(amp.posterior.__self__, Trainer)
    assert amp.history["mse"][-1] == pytest.approx(plain.history["mse"][-1], rel=0.05)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("AMDRE_SKIP_COMPILE") == "1" or not (shutil.which("c++") or shutil.which("g++")),
                    reason="AMDRE_SKIP_COMPILE=1, or no C++ compiler for torch.compile's CPU backend")
def test_compiled_posterior_equals_eager():
    """One compiled graph per Langevin step gives the eager chains (same noise), up to rounding (~15 s to compile)."""
    g, prior, x = tiny_model()
    compiled = CompiledPosterior(g, prior, n_steps=10, step_size=0.01, sigma=0.3)
    z0 = torch.randn(24, 4, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fast = compiled(x, z0, n_stages=2)
    if compiled.failed is not None:                                   # e.g. no Python headers for inductor
        pytest.skip(f"torch.compile cannot build here: {compiled.failed}")
    assert compiled._compiled is not None                             # the compiled path ran, not the fallback
    torch.manual_seed(3)
    slow = sample_posterior(g, prior, x, z0, n_steps=10, step_size=0.01, sigma=0.3, n_stages=2)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert not torch.allclose(fast, z0, atol=1e-2)                      # the chains moved
    torch.manual_seed(3)
    again = compiled(x, z0, n_stages=2, randn=torch.zeros_like)        # the noise comes from randn, here none
    assert torch.allclose(again, sample_posterior(g, prior, x, z0, n_steps=10, step_size=0.01, sigma=0.3, n_stages=2,
                                                  randn=torch.zeros_like), atol=1e-5)
    odd = compiled(x[:5], z0[:5], n_stages=2)                         # another shape: the eager fallback
    assert odd.shape == (5, 4) and all(p.grad is None for p in g.parameters())
