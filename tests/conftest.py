"""Shared test helpers: one torch thread, closed figures, toy generators with known answers, and digits fixtures.

The toy generators (import them: ``from conftest import LinearGenerator``) are tiny ``nn.Module``s with the
``nz`` / ``out_shape`` attributes of ``amdre.nets.Generator``:

* ``AffineGenerator(A, b)``: g(z) = A z + b as [B, 1, 1, D] images (closed-form Gaussian posteriors);
* ``LinearGenerator(nz)``: g(z) = W z as 1x4x4 images, W with orthonormal columns (``complement`` spans what
  g can never produce);
* ``TanhGenerator(nz, shape)``: tanh of one seeded linear layer (a small nonlinear generator for plots and scores);
* ``tiny_model(seed)``: the "digits" Table-5-style generator (nz 4, ngf 8), a 2-stage EBMPrior and 24 images;
* ``tilt(a)``: a prior stage with log r(z) = a^T z, so that N(0, I) tilted by it is N(a, I);
* ``prior3`` (fixture): a 2-D EBMPrior with three seeded random stages, for the grid and stage-plot tests.
"""
import sys

import matplotlib
import pytest
import torch
import torch.nn as nn

matplotlib.use("Agg")          # this process only (not $MPLBACKEND, which the notebook kernels tests start would inherit)


@pytest.fixture(autouse=True)
def one_thread():
    """The models in the tests are small: on a 2-core machine one torch thread is faster than two
    (and several times faster when anything else is running)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def close_figures():
    """Close every matplotlib figure a test opened (only when pyplot was imported at all)."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


# ------------------------------------------------------------------------------------------ toy generators
class AffineGenerator(nn.Module):
    """g(z) = A z + b, images of shape [B, 1, 1, D]."""

    def __init__(self, A, b):
        super().__init__()
        self.A, self.b = nn.Parameter(A.clone()), nn.Parameter(b.clone())
        self.nz, self.out_shape = A.shape[1], (1, 1, A.shape[0])

    def forward(self, z):
        return (z @ self.A.T + self.b).view(len(z), 1, 1, -1)


class LinearGenerator(nn.Module):
    """g(z) = W z reshaped to [1, 4, 4], W [16, nz] with orthonormal columns (the image of g is a subspace)."""

    def __init__(self, nz=4):
        super().__init__()
        self.nz, self.out_shape = nz, (1, 4, 4)
        self.lin = nn.Linear(nz, 16, bias=False)
        q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))
        self.lin.weight.data = q[:, :nz].clone()
        self.complement = q[:, nz:].clone()  # directions g can never produce

    def forward(self, z):
        return self.lin(z.reshape(len(z), self.nz)).reshape(-1, 1, 4, 4)


class TanhGenerator(nn.Module):
    """z [B, nz] -> tanh(W z + b) as images of ``shape`` in [-1, 1]; the weights are seeded by ``seed``."""

    def __init__(self, nz=2, shape=(1, 4, 4), seed=0):
        super().__init__()
        self.nz, self.out_shape = nz, tuple(shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.lin = nn.Linear(nz, int(torch.tensor(shape).prod()))

    def forward(self, z):
        return torch.tanh(self.lin(z)).reshape(-1, *self.out_shape)


def tiny_model(seed=0):
    """(generator "digits" with nz 4, ngf 8; an EBMPrior with 2 stages; 24 random 8x8 images), all seeded."""
    from amdre.nets import generator
    from amdre.prior import EBMPrior

    torch.manual_seed(seed)
    g = generator("digits", 4, 8)
    prior = EBMPrior(4)
    prior.add_stage()
    prior.add_stage()
    return g, prior, torch.rand(24, 1, 8, 8) * 2 - 1


def tilt(a):
    """A stage with log r(z) = a^T z, so that p(z) ∝ exp(a^T z) N(0, I) = N(a, I)."""
    lin = nn.Linear(len(a), 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(a, dtype=torch.float32)[None])
    return nn.Sequential(lin, nn.Flatten(0))


# ------------------------------------------------------------------------------------------ digits (offline)
@pytest.fixture(scope="session")
def digits_all():
    """All 1,797 real 8x8 digits shipped with scikit-learn, with labels."""
    from amdre.data import load
    return load("digits", split="all")


@pytest.fixture(scope="session")
def tiny_digits():
    """The first 64 training digits: 4 batches of 16 for the trainer tests."""
    from amdre.data import ImageData, load
    d = load("digits")
    return ImageData(d.images[:64].clone(), d.labels[:64].clone(), "digits")


@pytest.fixture
def prior3():
    """A 2-D EBMPrior with three random stages (seeded), gradients off: p_0 = N(0, I), p_1..p_3 tilted."""
    from amdre.prior import EBMPrior

    torch.manual_seed(0)
    prior = EBMPrior(2)
    for _ in range(3):
        prior.add_stage()
    return prior.requires_grad_(False)
