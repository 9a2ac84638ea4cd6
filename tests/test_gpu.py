"""The CUDA paths, on a GPU: every preset at its paper shapes (random data, a few batches).

Skipped where torch sees no GPU (CI, a laptop). On a GPU machine, ``make gpu-check`` runs this file and the
benchmarks with only the GPU image's packages (torch, numpy, scipy, yaml, matplotlib, pandas, tqdm, pytest;
``PYTHONPATH=.``, no pip, no Jupyter). Each preset is trained with its own options (bf16 autocast,
``torch.compile`` with CUDA graphs, channels-last), which on a CPU are never exercised:

* an epoch of stage 0 and an epoch of stage 1 (the memory bank written, then read), everything on the GPU;
* the compiled posterior chain against the eager one, same noise, within a stated tolerance, and its result
  still valid after the sampler ran again (CUDA graphs reuse their output memory);
* a run resumed from its checkpoint against an uninterrupted one;
* ``python -m amdre`` end to end, 2 short epochs with evaluation, on data files in the dataset's own layout.

``AMDRE_TEST_PRESETS="svhn celeba"`` picks presets; ``AMDRE_TEST_DEVICE=cpu`` runs the same tests on the CPU (a dry run of the tests themselves: slow, as
torch.compile builds C++ there; ``AMDRE_TEST_SMALL=1`` shrinks the networks and batches for it).
"""
import json
import os
import pickle
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from amdre import data, pipeline
from amdre.__main__ import main
from amdre.accel import Autocast, CompiledPosterior
from amdre.config import load_preset
from amdre.data import ImageData
from amdre.nets import generator as make_generator
from amdre.prior import EBMPrior
from amdre.samplers import sample_posterior, sample_sir

DEVICE = os.environ.get("AMDRE_TEST_DEVICE", "cuda")
SMALL = os.environ.get("AMDRE_TEST_SMALL") == "1"
PRESETS = tuple(os.environ.get("AMDRE_TEST_PRESETS", "svhn cifar10 celeba celeba_hq").split())
N_TRAIN = 40 if SMALL else 250                 # 2 full batches and a ragged one (the compiled path's eager fallback)

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU (torch.cuda.is_available() is False)")]


@pytest.fixture(autouse=True)
def fresh_compiler():
    """torch.compile keeps at most 8 variants of a function per process and runs the rest eagerly, silently: every
    test starts with an empty cache, so each one really runs compiled graphs."""
    torch._dynamo.reset()
    yield


def preset(name, **changes):
    """The preset's parameters on DEVICE, with a few changes (and, for a CPU dry run, small networks)."""
    values = {**load_preset(name), "device": DEVICE, "progress": False, **changes}
    if SMALL:
        values.update(ngf=8, batch_size=16, ld_steps=5)
    return pipeline.check_params(values)


def random_images(p, n=N_TRAIN, seed=0):
    shape = data.shape(p["dataset"], p["image_size"])
    gen = torch.Generator().manual_seed(seed)
    return ImageData(torch.rand(n, *shape, generator=gen) * 2 - 1, None, f"random-{p['dataset']}")


def trainer(p, images, out, **changes):
    """A Trainer with the preset's speed options (``pipeline.speed_up``), 2 stages of one epoch each."""
    cfg = replace(pipeline.config_from_params(p), n_stages=2, stage_every=1, **{"epochs": 2, **changes})
    return pipeline.make_trainer(cfg, images, out)


def on_device(tensors):
    return {t.device.type for t in tensors} == {torch.device(DEVICE).type}


def test_zero_stage_prior_follows_the_device():
    prior = EBMPrior(8).to(DEVICE)
    prior.add_stage()
    assert on_device(prior.parameters())
    z = sample_sir(prior, 16, 256)
    assert on_device([z, prior.log_prob(z)])


@pytest.mark.parametrize("name", PRESETS)
def test_stage0_and_stage1_epochs_with_the_preset_options(name, tmp_path):
    p = preset(name)
    t = trainer(p, random_images(p), tmp_path)
    bank0 = t.bank.clone()
    t.fit()
    assert t.epoch == 2 and t.prior.n_stages == 2 and t.history["stage"][-1] == 1
    assert on_device([*t.generator.parameters(), *t.prior.parameters(), t.bank])
    assert all(np.isfinite(t.history[k]).all() for k in ("gen_loss", "nce_loss", "z_norm2"))
    assert (t.bank - bank0).abs().amax(1).min() > 0                # stage 0's last epoch wrote every row
    if p["compile"]:
        assert t.posterior.failed is None and t.posterior._compiled is not None
    assert (tmp_path / "stage0.pt").is_file() and (tmp_path / "stage1.pt").is_file()


def _noise(seed):
    gen = torch.Generator(DEVICE).manual_seed(seed)
    return lambda z: torch.randn(z.shape, generator=gen, device=z.device, dtype=z.dtype)


@pytest.mark.parametrize("name", PRESETS)
def test_compiled_chain_equals_the_eager_chain(name):
    """Same start, same noise: compiled and eager chains agree to 5 % of how far apart chains with other noise end
    (fp32; bf16 autocast: 50 %, its rounding differs between fused and eager kernels)."""
    p = preset(name)
    torch.manual_seed(0)
    g = make_generator(p["generator"], p["nz"], p["ngf"]).to(DEVICE).eval().requires_grad_(False)
    if p["channels_last"]:
        g.to(memory_format=torch.channels_last)
    prior = EBMPrior(p["nz"]).to(DEVICE)
    for _ in range(3):
        prior.add_stage()
    prior.requires_grad_(False)
    x = torch.rand(p["batch_size"], *g.out_shape, device=DEVICE) * 2 - 1
    z0 = torch.randn(p["batch_size"], p["nz"], device=DEVICE)
    for amp, tolerance in ((False, 0.05), (True, 0.5)):
        gen = Autocast(g) if amp else g
        compiled = CompiledPosterior(gen, prior, p["ld_steps"], p["ld_step_size"], p["sigma"])
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)               # a failed compile is a failure here
            fast = compiled(x, z0, n_stages=3, randn=_noise(1))
            kept = fast.clone()
            other = compiled(x, z0, n_stages=3, randn=_noise(2))        # called again: the first result stays valid
        assert compiled.failed is None and torch.equal(fast, kept)
        eager = sample_posterior(gen, prior, x, z0, p["ld_steps"], p["ld_step_size"], p["sigma"], n_stages=3,
                                 randn=_noise(1))
        spread = (eager - other).abs().mean().item()
        error = (fast - eager).abs().mean().item()
        assert error < tolerance * spread, (amp, error, spread)


@pytest.mark.parametrize("name", PRESETS)
def test_resume_on_the_device(name, tmp_path):
    """1 epoch, then a resumed one, against 2 uninterrupted epochs: as close as GPU kernels' rounding allows, far
    closer than a run with another seed."""
    p = preset(name)
    images = random_images(p)
    whole = trainer(p, images, tmp_path / "whole").fit()
    trainer(p, images, tmp_path / "cut").fit(1)                      # stopped after epoch 1
    resumed = trainer(p, images, tmp_path / "cut").fit()
    other = trainer(p, images, tmp_path / "seed1", seed=1).fit()
    assert resumed.epoch == 2 and resumed.prior.n_stages == 2

    def distance(a, b):
        return max((u - v).abs().max().item() for u, v in zip(a.generator.parameters(), b.generator.parameters()))

    assert distance(whole, resumed) < 0.01 * distance(whole, other)
    assert len(resumed.history["gen_loss"]) == len(whole.history["gen_loss"])


def write_dataset(p, root, n_train=N_TRAIN, n_test=50):
    """Random images of the preset's dataset in its standard on-disk layout under ``root``."""
    rng = np.random.default_rng(0)
    if p["dataset"] == "svhn":
        from scipy.io import savemat
        (root / "svhn").mkdir(parents=True)
        for split, n in (("train", n_train), ("test", n_test)):
            savemat(root / "svhn" / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), np.uint8),
                                                          "y": rng.integers(1, 11, (n, 1), np.uint8)})
    elif p["dataset"] == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name, n in [(f"data_batch_{k}", -(-n_train // 5)) for k in range(1, 6)] + [("test_batch", n_test)]:
            batch = {"data": rng.integers(0, 256, (n, 3072), np.uint8), "labels": list(rng.integers(0, 10, n))}
            (folder / name).write_bytes(pickle.dumps(batch))
    else:                                                             # celeba, celeba_hq: JPEGs and the partition
        from PIL import Image
        (root / "celeba" / "img_align_celeba").mkdir(parents=True)
        parts = [0] * n_train + [2] * n_test
        for i, part in enumerate(parts, start=1):
            Image.fromarray(rng.integers(0, 256, (218, 178, 3), np.uint8)).save(
                root / "celeba" / "img_align_celeba" / f"{i:06d}.jpg")
        (root / "celeba" / "list_eval_partition.txt").write_text("".join(f"{i:06d}.jpg {q}\n"
                                                                         for i, q in enumerate(parts, start=1)))


@pytest.mark.parametrize("name", PRESETS)
def test_command_line_end_to_end_with_evaluation(name, tmp_path):
    p = preset(name)
    write_dataset(p, tmp_path / "data")
    argv = ["--config", name, "--device", DEVICE, "--data-root", str(tmp_path / "data"), "--n-train", str(N_TRAIN),
            "--n-test", "50", "--fid-samples", "100", "--epochs", "2", "--n-stages", "2", "--stage-every", "1",
            "--out-dir", str(tmp_path / "run"), "--progress", "false"]
    if SMALL:
        argv += ["--ngf", "8", "--batch-size", "16", "--ld-steps", "5"]
    assert main(argv) == 0
    run = tmp_path / "run"
    log = (run / "train.log").read_text()
    assert "epoch 2/2 stage 1" in log and f"device {DEVICE}" in log
    m = json.loads((run / "metrics.json").read_text())
    assert m["epochs_trained"] == 2 and m["n_stages"] == 2 and m["device"].startswith(DEVICE)
    assert 0 < m["mse"]["value"] < 4 and m["mse"]["n_images"] == 50
    score = m["sample_score"]
    if p["dataset"] in ("svhn", "cifar10"):                          # labelled: the FD-classifier (or FID)
        assert score["kind"] in ("fid", "fd_classifier") and np.isfinite(score["value"])
    assert all((run / f).stat().st_size > 0 for f in m["files"].values())
