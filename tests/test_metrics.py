"""amdre.metrics (MSE, Fréchet distance, FD-classifier, FID) and amdre.anomaly (AUPRC, held-out split, scores):
closed forms, tiny offline models, no downloads."""
import warnings

import numpy as np
import pytest
import torch

from amdre import metrics
from amdre.anomaly import anomaly_scores, auprc, chance_auprc, heldout_split
from amdre.metrics import classifier_features, fd_classifier, fd_classifier_score, frechet_distance
from amdre.prior import EBMPrior
from amdre.samplers import sample_images
from conftest import LinearGenerator, tilt


# ------------------------------------------------------------------ Fréchet distance
def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_rotated_closed_form_and_pytorch_fid_agreement():
    """Same eigenvectors: FD = ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2 still; and pytorch-fid agrees."""
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)

    from pytorch_fid.fid_score import calculate_frechet_distance
    m1, m2 = rng.normal(size=(2, 4, 4))
    c1, c2 = m1 @ m1.T + 0.1 * np.eye(4), m2 @ m2.T + 0.1 * np.eye(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pytorch-fid passes sqrtm's deprecated disp=
        reference = calculate_frechet_distance(mu1[:4], c1, mu2[:4], c2)
    assert frechet_distance(mu1[:4], c1, mu2[:4], c2) == pytest.approx(reference, rel=1e-7)


def test_frechet_singular_covariances():
    """Rank-deficient covariances (fewer samples than features) still follow the diagonal closed form."""
    a, b = np.array([0.0, 1.0, 4.0, 0.0]), np.array([0.0, 9.0, 1.0, 2.0])
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(np.zeros(4), np.diag(a), np.zeros(4), np.diag(b)) == pytest.approx(expected)
    feats = np.random.default_rng(2).normal(size=(5, 20))  # rank-4 covariance in 20 dimensions
    mu, sig = metrics.feature_statistics(feats)
    assert abs(frechet_distance(mu, sig, mu, sig)) < 1e-8


def test_frechet_scalar_and_bad_shapes():
    assert frechet_distance(0.0, 4.0, 1.0, 1.0) == pytest.approx(1.0 + (2.0 - 1.0) ** 2)
    with pytest.raises(ValueError, match="same length"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


# ------------------------------------------------------------------ FD-classifier
@pytest.fixture(scope="module")
def digit_classifier(digits_all, tmp_path_factory):
    path = tmp_path_factory.mktemp("fd") / "digits_classifier.pt"
    model = fd_classifier(digits_all.images, digits_all.labels, cache_path=path, epochs=3)
    return model, path


def test_classifier_learns_digits(digit_classifier):
    model, path = digit_classifier
    assert path.exists() and not model.training
    assert model.train_accuracy > 0.8


def test_fd_classifier_self_zero_and_shifted_larger(digits_all, digit_classifier):
    model, _ = digit_classifier
    x = digits_all.images
    half_a, half_b = x[::2], x[1::2]
    noised = (x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    shifted = torch.roll(x, shifts=3, dims=3)

    self_fd = fd_classifier_score(model, x, x)
    halves_fd = fd_classifier_score(model, half_a, half_b)
    noised_fd = fd_classifier_score(model, x, noised)
    shifted_fd = fd_classifier_score(model, x, shifted)
    assert abs(self_fd) < 1e-6 * noised_fd
    assert halves_fd < noised_fd / 3 and halves_fd < shifted_fd / 3
    assert noised_fd > 0 and shifted_fd > 0


def test_fd_classifier_cache_roundtrip(digits_all, digit_classifier):
    model, path = digit_classifier
    again = fd_classifier(digits_all.images, None, cache_path=path)  # cached: labels not needed
    x = digits_all.images[:50]
    assert torch.equal(classifier_features(model, x), classifier_features(again, x))
    with pytest.raises(ValueError, match="channels"):
        fd_classifier(torch.zeros(2, 3, 8, 8), None, cache_path=path)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_feature_classifier_any_size(shape):
    model = metrics.FeatureClassifier(shape[0], n_classes=10)
    feats = classifier_features(model, torch.zeros(3, *shape), batch_size=2)
    assert feats.shape == (3, 128)
    assert model(torch.zeros(3, *shape)).shape == (3, 10)


def test_fd_classifier_needs_labels():
    with pytest.raises(ValueError, match="labels"):
        fd_classifier(torch.zeros(4, 1, 8, 8), None)
    with pytest.raises(ValueError, match="labels"):
        fd_classifier(torch.zeros(4, 1, 8, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="N, C, H, W"):
        fd_classifier(torch.zeros(4, 8, 8), torch.zeros(4, dtype=torch.long))


# ------------------------------------------------------------------ FID (weights on disk only)
@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    """Point torch hub at an empty folder and unset $AMDRE_FID_WEIGHTS: the real caches are never consulted."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(metrics.FID_WEIGHTS_ENV, raising=False)
    return tmp_path


def test_fid_without_weights_raises_with_url(no_weights_anywhere):
    assert not metrics.fid_weights_available()
    x = torch.zeros(4, 3, 8, 8)
    with pytest.raises(FileNotFoundError) as err:
        metrics.fid(x, x)
    message = str(err.value)
    assert metrics.FID_WEIGHTS_URL in message
    assert str(no_weights_anywhere / "hub" / "checkpoints" / metrics.FID_WEIGHTS_NAME) in message
    assert metrics.FID_WEIGHTS_ENV in message and "FD-classifier" in message


def test_find_fid_weights_locations(no_weights_anywhere, monkeypatch):
    tmp = no_weights_anywhere
    explicit = tmp / "elsewhere" / "inception.pth"
    explicit.parent.mkdir()
    explicit.write_bytes(b"x")
    assert metrics.find_fid_weights(explicit) == explicit
    assert metrics.find_fid_weights(tmp / "missing.pth") is None

    env_dir = tmp / "env"
    env_dir.mkdir()
    (env_dir / metrics.FID_WEIGHTS_NAME).write_bytes(b"x")
    monkeypatch.setenv(metrics.FID_WEIGHTS_ENV, str(env_dir))
    assert metrics.find_fid_weights() == env_dir / metrics.FID_WEIGHTS_NAME

    monkeypatch.delenv(metrics.FID_WEIGHTS_ENV)
    hub = tmp / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / metrics.FID_WEIGHTS_NAME).write_bytes(b"x")
    assert metrics.fid_weights_available()


def random_fid_inception_weights(path):
    """pytorch-fid's FID Inception architecture with random weights (no download), saved to ``path``."""
    from pytorch_fid import inception as pi
    net = pi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = (pi.FIDInceptionA(192, 32), pi.FIDInceptionA(256, 64),
                                                pi.FIDInceptionA(288, 64))
    net.Mixed_6b, net.Mixed_6c = pi.FIDInceptionC(768, 128), pi.FIDInceptionC(768, 160)
    net.Mixed_6d, net.Mixed_6e = pi.FIDInceptionC(768, 160), pi.FIDInceptionC(768, 192)
    net.Mixed_7b, net.Mixed_7c = pi.FIDInceptionE_1(1280), pi.FIDInceptionE_2(2048)
    torch.save(net.state_dict(), path)


def test_fid_runs_offline_with_a_weights_file(no_weights_anywhere):
    """The whole FID path (file lookup, local load, [-1,1] -> [0,1], greyscale -> RGB, resize, pooling)
    on random weights; dims=64 (pytorch-fid's first block) keeps it fast, dims=2048 only picks a later block."""
    path = no_weights_anywhere / metrics.FID_WEIGHTS_NAME
    random_fid_inception_weights(path)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    y = torch.rand(4, 1, 8, 8, generator=g) * 0.5
    value = metrics.fid(x, y, weights_path=no_weights_anywhere, batch_size=6, dims=64)
    assert np.isfinite(value) and value > 0
    assert abs(metrics.fid(x, x, weights_path=path, dims=64)) < 1e-6 * value
    with pytest.raises(ValueError, match="dims"):
        metrics.fid(x, y, weights_path=path, dims=100)


# ------------------------------------------------------------------ AUPRC
def test_auprc_hand_computed():
    """sklearn's documented example: PR points (r, p) = (1, .5), (1, 2/3), (.5, .5), (.5, 1), (0, 1).

    Trapezoids over recall: 0.5 * (2/3 + 1/2) / 2 + 0.5 * 1 = 19/24.
    """
    scores, y = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert auprc(scores, y) == pytest.approx(19 / 24)
    assert chance_auprc(y) == 0.5


def test_auprc_perfect_and_random():
    y = np.zeros(20_000, bool)
    y[:2_000] = True
    assert auprc(y.astype(float), y) == pytest.approx(1.0)
    assert auprc(torch.as_tensor(y, dtype=torch.float32), torch.as_tensor(y)) == pytest.approx(1.0)
    random = np.random.default_rng(0).normal(size=len(y))
    assert auprc(random, y) == pytest.approx(chance_auprc(y), abs=0.02)
    assert chance_auprc(y) == pytest.approx(0.1)


def test_auprc_bad_input():
    with pytest.raises(ValueError, match="both"):
        auprc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="same length"):
        auprc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        auprc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        auprc([0.1, 0.2], [0, 2])


# ------------------------------------------------------------------ held-out split
def test_heldout_split_protocol():
    labels = np.random.default_rng(3).permutation(np.arange(1000) % 10)
    train, test, is_anom = heldout_split(labels, heldout_digit=3)
    assert len(train) == 720 and len(test) == 180 + 100 and is_anom.sum() == 100
    assert len(np.intersect1d(train, test)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(1000))
    assert not np.any(labels[train] == 3)
    assert np.array_equal(is_anom, labels[test] == 3)
    assert train.dtype == np.int64 and test.dtype == np.int64 and is_anom.dtype == bool

    again = heldout_split(torch.as_tensor(labels), 3)
    assert all(np.array_equal(a, b) for a, b in zip((train, test, is_anom), again))
    other = heldout_split(labels, 3, seed=0)[0]
    assert not np.array_equal(train, other)


def test_heldout_split_bad_input():
    with pytest.raises(ValueError, match="does not occur"):
        heldout_split(np.arange(10) % 5, heldout_digit=7)
    with pytest.raises(ValueError, match="test_fraction"):
        heldout_split(np.arange(10), 1, test_fraction=1.0)
    with pytest.raises(ValueError, match="no normal"):
        heldout_split(np.ones(5), 1)


# ------------------------------------------------------------------ posterior-based metrics
@pytest.fixture
def linear_setup():
    g = LinearGenerator(nz=4)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(64, 4, generator=gen)
    with torch.no_grad():
        in_range = g(z)
    off = (g.complement @ torch.randn(12, 64, generator=gen)).T.reshape(-1, 1, 4, 4)
    off = 2.0 * off / off.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)  # ||offset|| = 2: MSE += 4/16
    return g, in_range, in_range + off


def test_reconstruction_mse_in_range_small(linear_setup):
    g, in_range, off_range = linear_setup
    kw = dict(n_steps=100, step_size=0.001, sigma=0.05, batch_size=32)
    mse_in = metrics.reconstruction_mse(g, EBMPrior(4), in_range, **kw)
    mse_off = metrics.reconstruction_mse(g, EBMPrior(4), off_range, **kw)
    assert mse_in < 0.01  # ~ posterior spread sigma^2 * nz / D on the [-1, 1] scale
    assert mse_off > 0.25  # the off-range part (4/16 per pixel) can never be reconstructed
    recon = metrics.reconstruct(g, EBMPrior(4), in_range, **kw)
    assert recon.shape == in_range.shape
    assert torch.mean((recon - in_range) ** 2).item() == pytest.approx(mse_in, rel=1e-5)


def test_posterior_metrics_deterministic_and_side_effect_free(linear_setup):
    g, in_range, _ = linear_setup
    g.train()
    rng_state = torch.get_rng_state()
    a = metrics.reconstruction_mse(g, EBMPrior(4), in_range, n_steps=5, seed=3)
    b = metrics.reconstruction_mse(g, EBMPrior(4), in_range, n_steps=5, seed=3)
    c = metrics.reconstruction_mse(g, EBMPrior(4), in_range, n_steps=5, seed=4)
    assert a == b and a != c
    assert torch.equal(torch.get_rng_state(), rng_state)  # the caller's RNG stream is untouched
    assert g.training and all(p.requires_grad and p.grad is None for p in g.parameters())


def test_anomaly_scores_higher_off_range(linear_setup):
    g, in_range, off_range = linear_setup
    kw = dict(n_steps=100, step_size=0.001, sigma=0.05, batch_size=50)
    s_in = anomaly_scores(g, EBMPrior(4), in_range, **kw)
    s_off = anomaly_scores(g, EBMPrior(4), off_range, **kw)
    assert s_in.shape == (64,) and torch.isfinite(s_in).all()
    assert s_off.min() > s_in.max()
    scores = torch.cat([s_in, s_off])
    assert auprc(scores, torch.arange(128) >= 64) == pytest.approx(1.0)


def test_anomaly_scores_with_ebm_prior(linear_setup):
    """The score's prior term is -log p_phi(z): ||z||^2/2 with no stage, ||z||^2/2 - a.z with a tilt stage a
    (z from the posterior under that prior); adding the stage changes the scores."""
    from amdre.anomaly import anomaly_score_terms
    g, in_range, _ = linear_setup
    kw = dict(n_steps=20, step_size=0.001, sigma=0.05)
    a = torch.tensor([2.0, -1.0, 0.5, 0.0])
    prior = EBMPrior(4)
    base = anomaly_scores(g, prior, in_range, **kw)
    prior.add_stage(tilt(a))
    rec, pri = anomaly_score_terms(g, prior, in_range, **kw)
    z = torch.cat(metrics.posterior_batches(g, prior, in_range, **kw, batch_size=100, seed=0))
    torch.testing.assert_close(pri, 0.5 * z.pow(2).sum(1) - z @ a)
    assert not torch.allclose(rec + pri, base, atol=1e-2)


def test_posterior_metrics_bad_input():
    g = LinearGenerator()
    with pytest.raises(ValueError, match="sigma"):
        metrics.reconstruction_mse(g, EBMPrior(4), torch.zeros(2, 1, 4, 4), sigma=0.0)
    with pytest.raises(ValueError, match="N, C, H, W"):
        anomaly_scores(g, EBMPrior(4), torch.zeros(2, 16))


# ------------------------------------------------------------------ sample_images
def test_sample_images_by_stage_closed_form():
    """Two tilt stages, log r_1 = a.z and log r_2 = b.z: p_{phi_k} of Eq. 8 is N(0), N(a), N(a + b), and
    sample_images(..., n_stages=k) decodes samples of exactly that prior (identity-like generator W z)."""
    g = LinearGenerator(nz=4)
    a, b = torch.tensor([1.0, -0.5, 0.0, 0.5]), torch.tensor([0.0, 1.0, -1.0, 0.0])
    prior = EBMPrior(4)
    prior.add_stage(tilt(a))
    prior.add_stage(tilt(b))
    W = g.lin.weight.data
    for k, mean in ((0, torch.zeros(4)), (1, a), (2, a + b), (None, a + b)):
        x = sample_images(g, prior, 3000, n_steps=400, step_size=0.05, seed=3, n_stages=k)
        z = x.reshape(len(x), 16) @ W                      # W has orthonormal columns: z = W^T g(z)
        assert torch.allclose(z.mean(0), mean, atol=0.08), (k, z.mean(0))
        assert torch.allclose(z.var(0), torch.ones(4), atol=0.12), (k, z.var(0))
    same = sample_images(g, prior, 50, n_steps=10, seed=4, n_stages=1)
    assert torch.equal(same, sample_images(g, prior, 50, n_steps=10, seed=4, n_stages=1))
    for bad in (3, -1, 1.5):
        with pytest.raises(ValueError, match="n_stages must be an int in 0..2"):
            sample_images(g, prior, 10, n_stages=bad)
    with pytest.raises(ValueError, match="in 0..0"):
        sample_images(g, EBMPrior(4), 10, n_stages=1)


def test_fd_against_scores_like_fd_classifier_score():
    from amdre import metrics as m
    torch.manual_seed(0)
    images, labels = torch.rand(60, 1, 8, 8) * 2 - 1, torch.arange(60) % 3
    model = m.train_feature_classifier(images, labels, epochs=1, seed=0)
    real, fake = images[:30], images[30:].flip(-1)
    score = m.fd_against(model, real, batch_size=7)
    assert score(fake) == m.fd_classifier_score(model, real, fake, batch_size=7) and score(real) < 1e-6 < score(fake)


def test_shared_fd_classifier_is_trained_once_per_training_set(tmp_path, monkeypatch):
    from amdre import experiments, metrics as m
    from amdre.data import ImageData
    monkeypatch.setenv("AMDRE_ROOT", str(tmp_path))
    labelled = ImageData(torch.rand(40, 1, 8, 8) * 2 - 1, torch.arange(40) % 2, "toy")
    first = experiments.shared_fd_classifier(labelled, epochs=1)
    assert (tmp_path / "runs" / "fd_classifier-toy-n40-e1.pt").is_file()
    monkeypatch.setattr(m, "train_feature_classifier", lambda *a, **k: pytest.fail("trained again"))
    again = experiments.shared_fd_classifier(labelled, epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
