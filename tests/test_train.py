"""The adaptive multi-stage trainer (Sec. 3.3) on a tiny fixture: 64 real 8x8 digits, nz = 4."""
import math
import re

import pytest
import torch

from amdre.checkpoint import load_checkpoint
from amdre.config import Config
from amdre.prior import EBMPrior
from amdre.samplers import aggregate_posterior, sample_posterior
from amdre.train import STATS, Trainer, train


@pytest.fixture
def tiny(tiny_digits):
    return tiny_digits


def config(**kw):
    base = dict(dataset="digits", nz=4, ngf=8, epochs=2, n_stages=2, stage_every=1, batch_size=16,
                ld_steps=5, prior_ld_steps=5, lr_g=1e-3, lr_ebm=1e-3, prior_sampling="memory", progress=False)
    return Config(**{**base, **kw})


def params(trainer):
    return [*trainer.generator.parameters(), *trainer.prior.parameters()]


def test_train_step_is_the_whole_step(tiny, tmp_path):
    """One call of train_step takes both Adam steps: Adam's first step moves every trainable weight by lr_g (the
    generator) or lr_ebm (the stage's ratio net) against its gradient's sign; the returned statistics are named,
    and an untrained ratio is a coin (Eq. 4 at 2 log 2)."""
    t = Trainer(config(epochs=1, n_stages=1, lr_g=1e-3, lr_ebm=2e-3), tiny, tmp_path)
    t.new_stage()
    before = {id(p): p.detach().clone() for p in params(t)}
    x, _, idx = next(iter(t.batches()))
    stats = t.train_step(x, idx, 0)
    assert list(stats) == list(STATS) and all(isinstance(v, float) for v in stats.values())
    assert stats["nce_loss"] == pytest.approx(2 * math.log(2), abs=0.1)
    for module, lr in ((t.generator, 1e-3), (t.ratio, 2e-3)):
        for p in module.parameters():
            moved = (p.detach() - before[id(p)]).abs()
            moved = moved[p.grad.abs() > 1e-6]                  # Adam's first step: lr * g / (|g| + eps)
            assert moved.numel() > 0 and torch.allclose(moved, torch.full_like(moved, lr), rtol=0.02)


def test_a_non_finite_step_changes_no_weight(tiny, tmp_path):
    t = Trainer(config(epochs=1, n_stages=1), tiny, tmp_path)
    t.new_stage()
    before = [p.detach().clone() for p in params(t)]
    t.posterior = lambda x, z0, n_stages, randn: torch.full_like(z0, math.nan)
    x, _, idx = next(iter(t.batches()))
    with pytest.raises(FloatingPointError, match=r"non-finite training values \(gen_loss=nan, z_norm2=nan"):
        t.train_step(x, idx, 0)
    assert all(torch.equal(a, b) for a, b in zip(before, params(t)))


def test_training_leaves_the_global_random_state_alone(tiny, tmp_path):
    state = torch.get_rng_state()
    train(config(), tiny, tmp_path / "a")
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)                                        # the caller's random state does not matter
    b = train(config(), tiny, tmp_path / "b")
    a = Trainer(config(), tiny, tmp_path / "a")
    assert all(torch.equal(p, q) for p, q in zip(params(a), params(b)))


def test_stage_boundaries_and_memory_bank(tiny, tmp_path):
    t = Trainer(config(epochs=5, n_stages=3, stage_every=2), tiny, tmp_path)
    assert t.bank.shape == (64, 4)
    start = t.bank.clone()
    t.fit(1)                                   # epoch 0: first epoch of stage 0, bank untouched
    assert t.prior.n_stages == 1 and torch.equal(t.bank, start)
    assert all(p.requires_grad for p in t.prior.stages[0].parameters())
    t.fit(2)                                   # epoch 1: last epoch of stage 0, every row rewritten
    assert (t.bank != start).all(dim=1).all()
    written = t.bank.clone()
    reads, original = [], t.prior_sampler
    t.prior_sampler = lambda idx, k: reads.append((idx.clone(), original(idx, k))) or reads[-1][1]
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
    full = train(cfg, tiny, tmp_path / "full")
    Trainer(cfg, tiny, tmp_path / "cut").fit(stop)      # "interrupted" after `stop` epochs
    torch.manual_seed(12345)                                             # the new process has other RNG state
    resumed = Trainer(cfg, tiny, tmp_path / "cut")
    assert resumed.epoch == stop
    resumed.fit()
    assert resumed.prior.n_stages == full.prior.n_stages == 2
    assert all(torch.equal(a, b) for a, b in zip(params(full), params(resumed)))
    assert (full.bank is None) == (sampling == "langevin")
    if full.bank is not None:
        assert torch.equal(full.bank, resumed.bank)
    assert full.history["nce_loss"] == resumed.history["nce_loss"]
    # another seed gives other parameters: the equality above is not trivially true
    other = train(config(epochs=epochs, stage_every=2, prior_sampling=sampling, seed=1), tiny, tmp_path / "o")
    assert not any(torch.equal(a, b) for a, b in zip(params(full), params(other)))


def test_nan_raises_and_keeps_last_good_checkpoint(tiny, tmp_path):
    t = Trainer(config(epochs=3), tiny, tmp_path)
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
    assert Trainer(config(epochs=3), tiny, tmp_path).fit().epoch == 3


def test_non_adaptive_fits_m_tre_stages(tiny, tmp_path):
    t = train(config(epochs=1, n_stages=3, adaptive=False, tre_steps=30), tiny, tmp_path)
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
    t = train(cfg, tiny, tmp_path)
    g, prior, _, _ = load_checkpoint(tmp_path)
    bank = aggregate_posterior(g, EBMPrior(4), tiny.images, cfg.ld_steps, cfg.ld_step_size, cfg.sigma,
                               batch_size=max(cfg.batch_size, 256), seed=cfg.seed)
    rebuilt = tre_prior(bank, cfg.n_stages, cfg.tre_steps, cfg.tre_lr, cfg.seed)
    z = torch.randn(50, 4, generator=torch.Generator().manual_seed(0)) * 1.5
    assert torch.allclose(prior.log_prob(z), rebuilt.log_prob(z), atol=1e-5)
    assert torch.allclose(t.prior.log_prob(z), rebuilt.log_prob(z), atol=1e-5)
    assert t.history["tre_loss"] == rebuilt.history["tre_loss"]
    assert not torch.allclose(prior.log_prob(z), -0.5 * z.pow(2).sum(1), atol=1e-2)        # the stages do something
    # another bank (another seed of the posterior noise) gives another prior: the equality above is not vacuous
    other = tre_prior(aggregate_posterior(g, EBMPrior(4), tiny.images, cfg.ld_steps, cfg.ld_step_size, cfg.sigma,
                                          seed=4),
                      cfg.n_stages, cfg.tre_steps, cfg.tre_lr, cfg.seed)
    assert not torch.allclose(other.log_prob(z), rebuilt.log_prob(z), atol=1e-3)


def test_load_checkpoint_and_the_aggregate_posterior(tiny, tmp_path):
    """load_checkpoint rebuilds the trainer's models exactly (frozen, eval mode); aggregate_posterior is
    sample_posterior from noise batch by batch under its seed, and leaves the global RNG as it was."""
    t = train(config(epochs=3, n_stages=2, stage_every=2), tiny, tmp_path)
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
    bank = aggregate_posterior(g, prior, tiny, n_steps=3, batch_size=20, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(5)
    by_batch = torch.cat([sample_posterior(g, prior, x, n_steps=3) for x in tiny.images.split(20)])
    assert bank.shape == (64, 4) and torch.equal(bank, by_batch)
    torch.manual_seed(5)
    assert torch.equal(aggregate_posterior(g, prior, tiny, n_steps=3, batch_size=20), bank)   # seed None: global RNG
    assert not torch.equal(aggregate_posterior(g, prior, tiny, n_steps=3, batch_size=20, seed=6), bank)
    # n_stages=k samples under p_{phi_k} (Eq. 8): 0 stages is the Gaussian prior, a prior with no stage
    gauss = aggregate_posterior(g, EBMPrior(4), tiny.images[:10], n_steps=3, batch_size=4, seed=7)
    assert torch.equal(aggregate_posterior(g, prior, tiny.images[:10], n_steps=3, batch_size=4, n_stages=0, seed=7),
                       gauss)
    assert not torch.allclose(aggregate_posterior(g, prior, tiny.images[:10], n_steps=3, batch_size=4, seed=7),
                              gauss, atol=1e-4)
    assert all(p.grad is None for p in [*g.parameters(), *prior.parameters()])


def test_resume_false_and_init_from(tiny, tmp_path):
    """resume=False never mixes a new run into a folder holding one; init_from starts a new run from another
    run's checkpoint (its state, this config's learning rates) and refuses other networks."""
    first = Trainer(config(epochs=2), tiny, tmp_path / "a").fit(1)
    before = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    with pytest.raises(FileExistsError, match=r"already holds a run \(last.pt, stage0.pt\).*resume=False"):
        Trainer(config(epochs=2), tiny, tmp_path / "a", resume=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()} == before
    slower = config(epochs=2, lr_g=1e-4, lr_ebm=2e-4, ld_step_size=0.005)
    t = Trainer(slower, tiny, tmp_path / "b", init_from=tmp_path / "a" / "last.pt")
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
    train(config(), tiny, tmp_path)
    with pytest.raises(ValueError, match="differs in sigma"):
        Trainer(config(sigma=0.5), tiny, tmp_path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_nce_direction_posterior_over_prior(tiny, tmp_path):
    """r_k estimates q_k / p_{phi_k}: with posterior samples N(a, I) and prior N(0, I), log r(z) -> a^T z - |a|^2/2."""
    a = torch.full((4,), 1.5)
    t = Trainer(config(epochs=25, n_stages=1, stage_every=100, lr_ebm=1e-2), tiny, tmp_path)
    t.posterior = lambda x, z0, n_stages=None, randn=torch.randn_like: randn(z0) + a     # the sampler is a callable
    t.fit()
    with torch.no_grad():
        log_r = t.prior.stages[0](torch.stack([torch.zeros(4), a]))
    half = (a @ a).item() / 2                                    # 4.5
    assert log_r[0] < -half / 3 and log_r[1] > half / 3, log_r
    assert sum(t.history["nce_acc"][-8:]) / 8 > 0.8
