"""EBMPrior (Eq. 6 / Eq. 8): log-density bookkeeping, freezing, batched evaluation."""
import pytest
import torch
import torch.nn as nn

from amdre.nets import RatioMLP
from amdre.prior import EBMPrior
from amdre.samplers import sample_sir


def manual_log_prob(prior, z, n):
    out = -0.5 * (z * z).sum(1)
    for stage in list(prior.stages)[:n]:
        out = out + stage(z)
    return out


def test_empty_prior_is_standard_gaussian():
    prior = EBMPrior(5)
    z = torch.randn(7, 5)
    assert prior.n_stages == 0
    assert torch.allclose(prior.log_prob(z), -0.5 * (z ** 2).sum(1))
    assert prior.stage_log_ratios(z).shape == (0, 7)


def test_log_prob_sums_stages_and_n_stages():
    torch.manual_seed(0)
    prior = EBMPrior(6)
    for _ in range(3):
        prior.add_stage()
    z = torch.randn(11, 6)
    assert prior.n_stages == 3 and len(prior.stages) == 3
    for n in (None, 0, 1, 2, 3):
        want = manual_log_prob(prior, z, 3 if n is None else n)
        got = prior.log_prob(z, n_stages=n)
        assert got.shape == (11,)
        assert torch.allclose(got, want, atol=1e-5), n
    # the stages are distinct networks, so n_stages matters
    assert not torch.allclose(prior.log_prob(z, 1), prior.log_prob(z, 3))


def test_batched_equals_loop_with_gradients():
    torch.manual_seed(1)
    prior = EBMPrior(4)
    for _ in range(4):
        prior.add_stage()
    z = torch.randn(9, 4, requires_grad=True)
    batched = prior.stage_log_ratios(z)                         # one stacked pass (RatioMLPs)
    looped = torch.stack([s(z) for s in prior.stages])
    assert torch.allclose(batched, looped, atol=1e-5)
    g1, = torch.autograd.grad(prior.log_prob(z).sum(), z)
    g2, = torch.autograd.grad(manual_log_prob(prior, z, 4).sum(), z)
    assert torch.allclose(g1, g2, atol=1e-5)


def test_mixed_stage_types_fall_back_to_loop():
    torch.manual_seed(2)
    prior = EBMPrior(3)
    prior.add_stage()
    lin = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0))
    assert prior.add_stage(lin) is lin
    prior.add_stage(RatioMLP(3, hidden=16))                     # other width: not stackable
    z = torch.randn(5, 3)
    assert torch.allclose(prior.log_prob(z), manual_log_prob(prior, z, 3), atol=1e-6)


def test_add_stage_freezes_earlier_stages():
    prior = EBMPrior(3)
    s0 = prior.add_stage()
    assert all(p.requires_grad for p in s0.parameters())
    s1 = prior.add_stage()
    assert not any(p.requires_grad for p in s0.parameters())
    assert all(p.requires_grad for p in s1.parameters())
    prior.log_prob(torch.randn(4, 3)).sum().backward()
    assert all(p.grad is None for p in s0.parameters())
    assert all(p.grad is not None for p in s1.parameters())


def test_sir_reproducible_and_gaussian_without_stages():
    prior = EBMPrior(2)
    a = sample_sir(prior, 5, 100, generator=torch.Generator().manual_seed(3))
    b = sample_sir(prior, 5, 100, generator=torch.Generator().manual_seed(3))
    assert a.shape == (5, 2) and torch.equal(a, b)
    z = sample_sir(prior, 4000, 4000, generator=torch.Generator().manual_seed(4))
    assert z.mean(0).abs().max() < 0.1


def test_bad_input():
    prior = EBMPrior(3)
    prior.add_stage()
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        prior.log_prob(torch.randn(4, 2))
    with pytest.raises(ValueError, match="n_stages"):
        prior.log_prob(torch.randn(4, 3), n_stages=2)
    with pytest.raises(ValueError, match="nz"):
        EBMPrior(0)
    with pytest.raises(ValueError, match="positive"):
        sample_sir(prior, 0, 10)
