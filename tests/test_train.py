"""The adaptive multi-stage trainer (Sec. 3.3) on a tiny fixture: 64 real 8x8 digits, nz = 4."""
import math
import re

import pytest
import torch

from amdre.langevin import posterior_bank, sample_posterior
from amdre.nce import nce_accuracy, nce_loss
from amdre.train import Trainer, TrainConfig, load_checkpoint, train


@pytest.fixture
def tiny(tiny_digits):
    return tiny_digits


def config(**kw):
    base = dict(generator="digits", nz=4, ngf=8, epochs=2, n_stages=2, stage_every=1, batch_size=16,
                ld_steps=5, prior_ld_steps=5, lr_g=1e-3, lr_ebm=1e-3)
    return TrainConfig(**{**base, **kw})


def params(trainer):
    return [*trainer.generator.parameters(), *trainer.prior.parameters()]


def test_one_epoch_records_stage_losses(tiny, tmp_path):
    """Every recorded statistic is what its definition gives on that batch, recomputed from the batch's
    posterior and prior samples with the models as they were before the batch's update (Fig. 1, Eq. 2, Eq. 4)."""
    cfg = config(epochs=1)
    t = Trainer(cfg, tiny, tmp_path, progress=False)
    init = [p.detach().clone() for p in t.generator.parameters()]
    prior_samples, step, expected = t.prior_samples, t.step, []

    def spy_prior(idx, k, n):
        expected.append({"z_prior": prior_samples(idx, k, n)})
        return expected[-1]["z_prior"]

    def spy_step(x, idx, k, i):
        z, stats = step(x, idx, k, i)                    # the optimisers step after this returns
        e, n = expected[-1], len(x)
        with torch.no_grad():
            err = (x - t.generator(z)).pow(2)
            log_r = t.prior.stages[k](torch.cat([z, e["z_prior"]]))
        e.update(gen_loss=err.flatten(1).sum(1).mean() / (2 * cfg.sigma ** 2), mse=err.mean(),
                 z_norm2=z.pow(2).sum(1).mean(), nce_loss=nce_loss(log_r[:n], log_r[n:]),
                 nce_acc=nce_accuracy(log_r[:n], log_r[n:]))
        return z, stats

    t.prior_samples, t.step = spy_prior, spy_step
    t.fit()
    h = t.history
    assert t.epoch == 1 and t.prior.n_stages == 1
    assert len(expected) == len(h["nce_loss"]) == len(h["gen_loss"]) == len(h["stage"]) == 4   # 64 / 16 batches
    assert h["stage"] == [0] * 4 and h["epoch"] == [0] * 4 and len(h["epoch_time"]) == 1
    for key in ("gen_loss", "mse", "z_norm2", "nce_loss", "nce_acc"):
        assert h[key] == pytest.approx([e[key].item() for e in expected], rel=1e-5, abs=1e-6), key
    # stage 0 contrasts posterior samples with N(0, I) noise, and an untrained ratio is a coin: Eq. 4 ~ 2 log 2
    assert all(e["z_prior"].shape == (16, 4) for e in expected)
    assert h["nce_loss"][0] == pytest.approx(2 * math.log(2), abs=0.1)
    assert not any(torch.equal(a, b) for a, b in zip(init, t.generator.parameters()))    # the optimisers stepped
    assert (tmp_path / "last.pt").exists() and (tmp_path / "stage0.pt").exists()
    assert not list(tmp_path.glob("*.tmp*"))


def test_stage_boundaries_and_memory_bank(tiny, tmp_path):
    t = Trainer(config(epochs=5, n_stages=3, stage_every=2), tiny, tmp_path, progress=False)
    assert t.bank.shape == (64, 4)
    start = t.bank.clone()
    t.fit(1)                                   # epoch 0: first epoch of stage 0, bank untouched
    assert t.prior.n_stages == 1 and torch.equal(t.bank, start)
    assert all(p.requires_grad for p in t.prior.stages[0].parameters())
    t.fit(2)                                   # epoch 1: last epoch of stage 0, every row rewritten
    assert (t.bank != start).all(dim=1).all()
    written = t.bank.clone()
    reads, original = [], t.prior_samples
    t.prior_samples = lambda idx, k, n: reads.append((idx.clone(), original(idx, k, n))) or reads[-1][1]
    t.fit(3)                                   # epoch 2: stage 1 reads the bank, does not write it
    assert t.prior.n_stages == 2 and torch.equal(t.bank, written)
    assert not any(p.requires_grad for p in t.prior.stages[0].parameters())
    assert all(torch.equal(z, written[idx]) for idx, z in reads) and len(reads) == 4
    t.fit(4)                                   # epoch 3: last of stage 1: reads old rows, then writes
    assert all(torch.equal(z, written[idx]) for idx, z in reads[4:]) and len(reads) == 8
    assert (t.bank != written).all(dim=1).all()
    t.fit()                                    # epoch 4: stage 2 (= m - 1, capped)
    assert t.prior.n_stages == 3 and t.history["stage"] == [0] * 8 + [1] * 8 + [2] * 4
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["last.pt", "stage0.pt", "stage1.pt", "stage2.pt"]


@pytest.mark.parametrize("sampling,epochs,stop", [("memory", 3, 1), ("memory", 3, 2), ("langevin", 3, 1)])
def test_resume_equals_uninterrupted(tiny, tmp_path, sampling, epochs, stop):
    cfg = config(epochs=epochs, stage_every=2, prior_sampling=sampling)
    full = train(cfg, tiny, tmp_path / "full", progress=False)
    Trainer(cfg, tiny, tmp_path / "cut", progress=False).fit(stop)      # "interrupted" after `stop` epochs
    torch.manual_seed(12345)                                             # the new process has other RNG state
    resumed = Trainer(cfg, tiny, tmp_path / "cut", progress=False)
    assert resumed.epoch == stop
    resumed.fit()
    assert resumed.prior.n_stages == full.prior.n_stages == 2
    assert all(torch.equal(a, b) for a, b in zip(params(full), params(resumed)))
    assert (full.bank is None) == (sampling == "langevin")
    if full.bank is not None:
        assert torch.equal(full.bank, resumed.bank)
    assert full.history["nce_loss"] == resumed.history["nce_loss"]
    # another seed gives other parameters: the equality above is not trivially true
    other = train(config(epochs=epochs, stage_every=2, prior_sampling=sampling, seed=1), tiny, tmp_path / "o",
                  progress=False)
    assert not any(torch.equal(a, b) for a, b in zip(params(full), params(other)))


def test_nan_raises_and_keeps_last_good_checkpoint(tiny, tmp_path):
    t = Trainer(config(epochs=3), tiny, tmp_path, progress=False)
    t.fit(1)
    good = (tmp_path / "last.pt").read_bytes()
    with torch.no_grad():
        t.generator.net[1].bias.fill_(float("nan"))
    msg = re.escape(str(tmp_path / "last.pt"))
    with pytest.raises(FloatingPointError, match=rf"gen_loss=nan.*in epoch 2 of 3, batch 1, stage 1.*{msg}"):
        t.fit()
    assert (tmp_path / "last.pt").read_bytes() == good and not (tmp_path / "stage1.pt").exists()
    assert t.epoch == 1
    with pytest.raises(FloatingPointError, match=rf"non-finite.*not saved.*{msg}"):
        t.save()
    assert (tmp_path / "last.pt").read_bytes() == good
    # resuming from the kept checkpoint works
    assert Trainer(config(epochs=3), tiny, tmp_path, progress=False).fit().epoch == 3


def test_non_adaptive_fits_m_tre_stages(tiny, tmp_path):
    t = train(config(epochs=1, n_stages=3, adaptive=False, tre_steps=30), tiny, tmp_path, progress=False)
    assert t.prior.n_stages == 3 and not any(p.requires_grad for p in t.prior.parameters())
    assert set(h for h in t.history["stage"]) == {None} and all(v != v for v in t.history["nce_loss"])
    assert len(t.history["tre_loss"]) == 3 and all(len(c) == 30 for c in t.history["tre_loss"])
    g, prior, cfg, hist = load_checkpoint(tmp_path)
    assert prior.n_stages == 3 and cfg.adaptive is False and hist["tre_loss"] == t.history["tre_loss"]
    z = torch.randn(5, 4)
    assert torch.allclose(prior.log_prob(z), t.prior.log_prob(z))
    assert Trainer(config(epochs=1, n_stages=3, adaptive=False, tre_steps=30), tiny, tmp_path).prior.n_stages == 3


def test_non_adaptive_prior_is_tre_on_the_posterior_bank(tiny, tmp_path):
    """adaptive=False trains under N(0, I), then its prior is exactly ``tre_prior`` on the aggregate posterior of
    the trained generator (Sec. 5.5): rebuilt here from the saved generator, it gives the same log-density."""
    from amdre.tre import tre_prior
    cfg = config(epochs=2, n_stages=3, adaptive=False, tre_steps=40, seed=3)
    t = train(cfg, tiny, tmp_path, progress=False)
    g, prior, _, _ = load_checkpoint(tmp_path)
    bank = posterior_bank(g, None, tiny.images, cfg.ld_steps, cfg.ld_step_size, cfg.sigma,
                          batch_size=max(cfg.batch_size, 256), seed=cfg.seed)
    rebuilt = tre_prior(bank, cfg.n_stages, cfg.tre_steps, cfg.tre_lr, cfg.seed)
    z = torch.randn(50, 4, generator=torch.Generator().manual_seed(0)) * 1.5
    assert torch.allclose(prior.log_prob(z), rebuilt.log_prob(z), atol=1e-5)
    assert torch.allclose(t.prior.log_prob(z), rebuilt.log_prob(z), atol=1e-5)
    assert t.history["tre_loss"] == rebuilt.history["tre_loss"]
    assert not torch.allclose(prior.log_prob(z), -0.5 * z.pow(2).sum(1), atol=1e-2)        # the stages do something
    # another bank (another seed of the posterior noise) gives another prior: the equality above is not vacuous
    other = tre_prior(posterior_bank(g, None, tiny.images, cfg.ld_steps, cfg.ld_step_size, cfg.sigma, seed=4),
                      cfg.n_stages, cfg.tre_steps, cfg.tre_lr, cfg.seed)
    assert not torch.allclose(other.log_prob(z), rebuilt.log_prob(z), atol=1e-3)


def test_load_checkpoint_and_posterior_bank(tiny, tmp_path):
    """load_checkpoint rebuilds the trainer's models exactly (frozen, eval mode); posterior_bank is
    sample_posterior from noise batch by batch under its seed, and leaves the global RNG as it was."""
    t = train(config(epochs=3, n_stages=2, stage_every=2), tiny, tmp_path, progress=False)
    g, prior, cfg, hist = load_checkpoint(tmp_path / "last.pt")
    assert cfg == t.cfg and hist == t.history and prior.n_stages == t.prior.n_stages == 2
    for mine, theirs in ((g, t.generator), (prior, t.prior)):
        a, b = mine.state_dict(), theirs.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
        assert not mine.training and not any(p.requires_grad for p in mine.parameters())
    g2, prior2, _, _ = load_checkpoint(tmp_path)                                 # a run folder means its last.pt
    assert all(torch.equal(p, q) for p, q in zip([*g2.parameters(), *prior2.parameters()], params(t)))
    g0, prior0, _, _ = load_checkpoint(tmp_path / "stage0.pt")                    # the end of stage 0
    assert prior0.n_stages == 1 and not torch.equal(g0.net[1].weight, g.net[1].weight)

    state = torch.get_rng_state()
    bank = posterior_bank(g, prior, tiny, n_steps=3, batch_size=20, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(5)
    by_batch = torch.cat([sample_posterior(g, prior, x, n_steps=3) for x in tiny.images.split(20)])
    assert bank.shape == (64, 4) and torch.equal(bank, by_batch)
    assert torch.equal(posterior_bank(g, prior, tiny.images, n_steps=3, batch_size=20, seed=5), bank)   # a tensor
    torch.manual_seed(5)
    assert torch.equal(posterior_bank(g, prior, tiny, n_steps=3, batch_size=20), bank)      # seed None: global RNG
    assert not torch.equal(posterior_bank(g, prior, tiny, n_steps=3, batch_size=20, seed=6), bank)
    # n_stages=k samples under p_{phi_k} (Eq. 8): 0 stages is the Gaussian prior
    torch.manual_seed(7)
    gauss = torch.cat([sample_posterior(g, None, x, n_steps=3) for x in tiny.images[:10].split(4)])
    assert torch.allclose(posterior_bank(g, prior, tiny.images[:10], n_steps=3, batch_size=4, n_stages=0, seed=7),
                          gauss, atol=1e-6)
    assert torch.allclose(posterior_bank(g, None, tiny.images[:10], n_steps=3, batch_size=4, seed=7), gauss,
                          atol=1e-6)
    assert all(p.grad is None for p in [*g.parameters(), *prior.parameters()])


def test_resume_false_and_init_from(tiny, tmp_path):
    """resume=False never mixes a new run into a folder holding one; init_from starts a new run from another
    run's checkpoint (its state, this config's learning rates) and refuses other networks."""
    first = train(config(epochs=1), tiny, tmp_path / "a", progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    with pytest.raises(FileExistsError, match=r"already holds a run \(last.pt, stage0.pt\).*resume=False"):
        Trainer(config(epochs=2), tiny, tmp_path / "a", resume=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before
    slower = config(epochs=2, lr_g=1e-4, lr_ebm=2e-4, ld_step_size=0.005)
    t = Trainer(slower, tiny, tmp_path / "b", init_from=tmp_path / "a" / "last.pt", progress=False)
    assert t.epoch == 1 and t.init_from == str(tmp_path / "a" / "last.pt") and t.last_checkpoint is None
    assert all(torch.equal(p, q) for p, q in zip(params(t), params(first)))
    assert [g["lr"] for g in t.opt_g.param_groups] == [1e-4] and [g["lr"] for g in t.opt_ebm.param_groups] == [2e-4]
    t.fit()
    assert t.epoch == 2 and t.prior.n_stages == 2 and torch.load(tmp_path / "b" / "last.pt")["init_from"] == \
        str(tmp_path / "a" / "last.pt")
    with pytest.raises(ValueError, match="differs in nz"):
        Trainer(config(epochs=2, nz=3), tiny, tmp_path / "c", init_from=tmp_path / "a" / "last.pt")
    with pytest.raises(FileExistsError, match="init_from would start a new run"):
        Trainer(slower, tiny, tmp_path / "b", resume=False, init_from=tmp_path / "a" / "last.pt")
    again = Trainer(slower, tiny, tmp_path / "b", init_from=tmp_path / "a" / "last.pt")      # resume: continues b
    assert again.epoch == 2 and again.init_from == str(tmp_path / "a" / "last.pt")
    assert all(torch.equal(p, q) for p, q in zip(params(again), params(t)))


def test_bad_input(tiny, tmp_path):
    with pytest.raises(ValueError, match="shape"):
        Trainer(config(generator="mnist"), tiny, tmp_path)
    with pytest.raises(ValueError, match="prior_sampling"):
        config(prior_sampling="pcd")
    with pytest.raises(ValueError, match="generator must be one of 'svhn'.*got 'resnet'"):
        config(generator="resnet")
    with pytest.raises(ValueError, match="stage_every"):
        config(stage_every=0)
    train(config(epochs=1), tiny, tmp_path, progress=False)
    with pytest.raises(ValueError, match="differs in sigma"):
        Trainer(config(sigma=0.5), tiny, tmp_path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_nce_direction_posterior_over_prior(tiny, tmp_path):
    """r_k estimates q_k / p_{phi_k}: with posterior samples N(a, I) and prior N(0, I), log r(z) -> a^T z - |a|^2/2."""
    a = torch.full((4,), 1.5)
    t = Trainer(config(epochs=25, n_stages=1, stage_every=100, lr_ebm=1e-2), tiny, tmp_path, progress=False)
    t.posterior = lambda x, z0, n_stages=None, randn=torch.randn_like: randn(z0) + a     # the sampler is a callable
    t.fit()
    with torch.no_grad():
        log_r = t.prior.stages[0](torch.stack([torch.zeros(4), a]))
    half = (a @ a).item() / 2                                    # 4.5
    assert log_r[0] < -half / 3 and log_r[1] > half / 3, log_r
    assert sum(t.history["nce_acc"][-8:]) / 8 > 0.8
