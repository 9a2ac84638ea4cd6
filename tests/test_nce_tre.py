"""Eq. 4 and Eq. 5 against closed forms."""
import math

import pytest
import torch

import amdre
from amdre import toys
from amdre.nce import nce_accuracy, nce_loss
from amdre.nets import RatioMLP, stacked_log_ratios
from amdre.tre import TelescopingRatio, alpha_schedule, make_waymarks


def test_nce_loss_is_the_softplus_form_of_eq4():
    lp, lq = torch.randn(50), torch.randn(70)
    r_p, r_q = lp.exp(), lq.exp()
    direct = -(r_p / (1 + r_p)).log().mean() - (1 / (1 + r_q)).log().mean()
    assert torch.allclose(nce_loss(lp, lq), direct, atol=1e-6)
    # stable where the direct form overflows
    assert torch.isfinite(nce_loss(torch.tensor([200.0, -200.0]), torch.tensor([300.0])))


def test_eq4_minimiser_is_the_true_log_ratio_1d_gaussians():
    # p = N(1, 1), q = N(0, 1): log p/q = x - 1/2. Minimise Eq. 4 over log r = a x + b.
    g = torch.Generator().manual_seed(0)
    xp, xq = torch.randn(200_000, generator=g) + 1, torch.randn(200_000, generator=g)
    ab = torch.zeros(2, requires_grad=True)
    opt = torch.optim.LBFGS([ab], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nce_loss(ab[0] * xp + ab[1], ab[0] * xq + ab[1])
        loss.backward()
        return loss

    opt.step(closure)
    assert ab[0].item() == pytest.approx(1.0, abs=0.02)
    assert ab[1].item() == pytest.approx(-0.5, abs=0.02)


def test_fit_log_ratio_nce_recovers_a_1d_log_ratio():
    p, q = toys.Gaussian([1.0], 1.0), toys.Gaussian([0.0], 1.0)
    model = amdre.fit_log_ratio(p.sample(20000, 0), q.sample(20000, 1), method="nce", steps=800)
    x = torch.linspace(-1.0, 2.5, 50)[:, None]
    err = (model(x) - toys.true_log_ratio(p, q, x)).abs().max().item()
    assert err < 0.2, err
    assert len(model.losses) == 1 and len(model.losses[0]) == 800


def test_accuracy_is_balanced():
    assert nce_accuracy(torch.tensor([1.0, -1.0]), torch.tensor([-1.0, -1.0, -1.0, 1.0])).item() == pytest.approx(0.5 * (0.5 + 0.75))


@pytest.mark.parametrize("kind", ["linear", "dimwise"])
def test_waymark_endpoints_are_xp_and_xq(kind):
    xp, xq = torch.randn(64, 6), torch.randn(64, 6) + 3
    w = make_waymarks(xp, xq, 4, kind)
    assert len(w) == 5
    assert torch.equal(w[0], xp) and torch.equal(w[-1], xq)


def test_linear_waymarks_have_the_variance_of_the_mixture():
    # x_k = sqrt(1 - a^2) x_p + a x_q with x_p ~ N(0, s^2), x_q ~ N(0, 1): Var = (1 - a^2) s^2 + a^2
    s, n = 0.2, 200_000
    g = torch.Generator().manual_seed(1)
    w = make_waymarks(s * torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g), 4)
    for a, wk in zip(alpha_schedule(4).tolist(), w):
        assert wk.var().item() == pytest.approx((1 - a * a) * s * s + a * a, rel=0.02)


def test_telescoped_sum_and_batched_stages():
    torch.manual_seed(0)
    model = TelescopingRatio(3, n_ratios=4)
    x = torch.randn(10, 3)
    loop = torch.stack([r(x) for r in model.ratios], 1)
    assert torch.allclose(model.stage_log_ratios(x), loop, atol=1e-5)
    assert torch.allclose(model(x), loop.sum(1), atol=1e-5)
    # per-stage inputs, and gradients reach every stage's own parameters
    xs = torch.randn(4, 10, 3)
    stacked_log_ratios(model.ratios, xs).sum().backward()
    assert all(r.net[0].weight.grad is not None for r in model.ratios)
    assert torch.allclose(stacked_log_ratios(model.ratios, xs)[2], model.ratios[2](xs[2]), atol=1e-5)


def test_ratio_mlp_matches_table4():
    net = RatioMLP(100)
    shapes = [tuple(m.weight.shape) for m in net.net if isinstance(m, torch.nn.Linear)]
    assert shapes == [(200, 100), (200, 200), (1, 200)]
    assert net.net[1].negative_slope == 0.1
    assert net(torch.randn(7, 100)).shape == (7,)


@pytest.mark.slow
def test_tre_beats_nce_on_a_far_gaussian_pair():
    p, q = toys.gaussian_pair(7.0)
    xp, xq, xt = p.sample(20000, 0), q.sample(20000, 1), p.sample(4000, 2)
    true = p.kl(q)
    nce = toys.kl_estimate(amdre.fit_log_ratio(xp, xq, "nce", steps=1000), xt)
    tre = toys.kl_estimate(amdre.fit_log_ratio(xp, xq, "tre", n_ratios=6, steps=1000), xt)
    assert abs(tre - true) < abs(nce - true)
    assert abs(tre - true) < 0.1 * true, (tre, true)


@pytest.mark.parametrize("xp, xq, method, match", [
    (torch.randn(10, 2), torch.randn(10, 3), "nce", "same dimension"),
    (torch.randn(0, 2), torch.randn(10, 2), "nce", "empty"),
    (torch.tensor([[0.0, math.nan]]), torch.randn(10, 2), "nce", "NaN or inf"),
    (torch.randn(10, 2), torch.tensor([[math.inf, 0.0]]), "tre", "NaN or inf"),
    (torch.randn(10), torch.randn(10, 1), "nce", "shape"),
    (torch.randn(10, 2), torch.randn(10, 2), "gan", "unknown method"),
])
def test_bad_input_is_a_clear_value_error(xp, xq, method, match):
    with pytest.raises(ValueError, match=match):
        amdre.fit_log_ratio(xp, xq, method=method, steps=1)


def test_nce_with_several_ratios_is_refused():
    with pytest.raises(ValueError, match="method='tre'"):
        amdre.fit_log_ratio(torch.randn(10, 2), torch.randn(10, 2), "nce", n_ratios=3, steps=1)
