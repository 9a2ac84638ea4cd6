"""Networks of Appendix A: the ratio estimator (Table 4) and the generators (Table 5)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def xavier_init(module: nn.Module) -> nn.Module:
    """Xavier (Glorot) initialisation of every linear / (transposed) conv weight, zero biases (App. A.3)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class RatioMLP(nn.Module):
    """Density-ratio estimator of Table 4: in -> 200 -> 200 -> 1, LeakyReLU(0.1), Xavier init.

    ``forward(x)`` maps x of shape [N, in_dim] to log r(x) of shape [N].
    """

    def __init__(self, in_dim: int, hidden: int = 200):
        super().__init__()
        self.in_dim = in_dim
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.LeakyReLU(0.1),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.1),
            nn.Linear(hidden, 1),
        )
        xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def stacked_log_ratios(ratios, x: torch.Tensor) -> torch.Tensor:
    """Evaluate m ``RatioMLP``s in one batched pass (three batched matmuls instead of 3m small ones).

    ``x`` is [m, N, d] (net k sees x[k]) or [N, d] (every net sees the same rows); returns [m, N].
    Gradients reach each module's own parameters through the stacking.
    """
    ratios = list(ratios)
    if x.ndim == 2:
        x = x.expand(len(ratios), *x.shape)
    h = x
    layers = [i for i, m in enumerate(ratios[0].net) if isinstance(m, nn.Linear)]
    for j, i in enumerate(layers):
        w = torch.stack([r.net[i].weight for r in ratios])          # [m, out, in]
        b = torch.stack([r.net[i].bias for r in ratios])            # [m, out]
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if j < len(layers) - 1:
            h = F.leaky_relu(h, ratios[0].net[i + 1].negative_slope)
    return h.squeeze(-1)


# --------------------------------------------------------------------------- generators (Table 5)
def _convt(c_in: int, c_out: int, k: int, s: int, p: int, last: bool = False) -> list:
    """One row of Table 5: k x k transposed conv, then LeakyReLU(0.2) (or Tanh on the output layer)."""
    return [nn.ConvTranspose2d(c_in, c_out, k, s, p), nn.Tanh() if last else nn.LeakyReLU(0.2)]


def _dcgan(nz: int, widths: list, c_out: int = 3) -> list:
    """nz x 1 x 1 -> 4x4 (4x4 kernel, stride 1), then one 4x4 stride-2 upsampling per further channel count."""
    chans = widths + [c_out]
    layers = _convt(nz, chans[0], 4, 1, 0)
    for i in range(1, len(chans)):
        layers += _convt(chans[i - 1], chans[i], 4, 2, 1, last=i == len(chans) - 1)
    return layers


def _svhn(nz, ngf):        # Table 5 top: 1 -> 4 -> 8 -> 16 -> 32, 3 channels
    return _dcgan(nz, [ngf * 8, ngf * 4, ngf * 2]), (3, 32, 32)


def _celeba(nz, ngf):      # Table 5 middle: 1 -> 4 -> 8 -> 16 -> 32 -> 64
    return _dcgan(nz, [ngf * 8, ngf * 4, ngf * 2, ngf]), (3, 64, 64)


def _celeba128(nz, ngf):   # our choice for the CelebA-HQ preset (Fig. 3): one more stride-2 layer
    return _dcgan(nz, [ngf * 8, ngf * 8, ngf * 4, ngf * 2, ngf]), (3, 128, 128)


def _cifar10(nz, ngf):     # Table 5 bottom: 1 -> 8 (8x8 kernel) -> 16 -> 32, then a 3x3 stride-1 output layer
    layers = (_convt(nz, ngf * 8, 8, 1, 0) + _convt(ngf * 8, ngf * 4, 4, 2, 1)
              + _convt(ngf * 4, ngf * 2, 4, 2, 1) + _convt(ngf * 2, 3, 3, 1, 1, last=True))
    return layers, (3, 32, 32)


def _mnist(nz, ngf):       # small CPU model for 28x28 grey images: Linear to 7x7, two 4x4 stride-2 convT
    layers = [nn.Flatten(1), nn.Linear(nz, ngf * 2 * 7 * 7), nn.LeakyReLU(0.2), nn.Unflatten(1, (ngf * 2, 7, 7))]
    return layers + _convt(ngf * 2, ngf, 4, 2, 1) + _convt(ngf, 1, 4, 2, 1, last=True), (1, 28, 28)


def _digits(nz, ngf):      # MLP for scikit-learn's 8x8 digits: nz -> 4 ngf -> 4 ngf -> 64
    layers = [nn.Flatten(1), nn.Linear(nz, ngf * 4), nn.LeakyReLU(0.2), nn.Linear(ngf * 4, ngf * 4),
              nn.LeakyReLU(0.2), nn.Linear(ngf * 4, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8))]
    return layers, (1, 8, 8)


def _mnist_mlp(nz, ngf):   # fast CPU MLP for 28x28 grey images: nz -> 16 ngf -> 16 ngf -> 784 (notebooks 06, 07)
    h = ngf * 16
    layers = [nn.Flatten(1), nn.Linear(nz, h), nn.LeakyReLU(0.2), nn.Linear(h, h), nn.LeakyReLU(0.2),
              nn.Linear(h, 28 * 28), nn.Unflatten(1, (1, 28, 28)), nn.Tanh()]
    return layers, (1, 28, 28)


GENERATORS = {"svhn": _svhn, "cifar10": _cifar10, "celeba": _celeba, "celeba128": _celeba128,
              "mnist": _mnist, "digits": _digits, "mnistmlp": _mnist_mlp}


def generator_key(name) -> str:
    """The ``GENERATORS`` key of a generator name: "mnist-mlp", "MNIST_MLP" -> "mnistmlp"."""
    return str(name).lower().replace("-", "").replace("_", "")


class Generator(nn.Module):
    """g_theta of Sec. 2.1: ``forward(z)`` maps z [B, nz] to images [B, C, H, W] in [-1, 1] (tanh output).

    ``out_shape`` is (C, H, W); ``name`` the Table 5 entry it was built from.
    """

    def __init__(self, name: str, layers: list, nz: int, out_shape: tuple):
        super().__init__()
        self.name, self.nz, self.out_shape = name, nz, tuple(out_shape)
        self.net = nn.Sequential(*layers)
        xavier_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.nz:
            raise ValueError(f"generator expects z of shape [B, {self.nz}]; got {tuple(z.shape)}")
        return self.net(z.reshape(z.shape[0], self.nz, 1, 1))


def generator(name: str, nz: int = 100, ngf: int = 64) -> Generator:
    """Generator network of Table 5 (App. A.2) by dataset name, Xavier-initialised (App. A.3).

    "svhn", "cifar10", "celeba" follow Table 5 (the paper uses nz=128 for "cifar10");
    "celeba128" adds one upsampling layer (128x128, for the CelebA-HQ preset); "mnist" (28x28x1) and
    "digits" (8x8x1) are small CPU-sized models of our own, as is "mnist-mlp" (28x28x1, two hidden layers of
    16 ngf units: several times faster than "mnist" on a CPU). ``ngf`` scales every width.
    """
    key = generator_key(name)
    if key not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; valid names: {', '.join(GENERATORS)}")
    if not (isinstance(nz, int) and nz > 0 and isinstance(ngf, int) and ngf > 0):
        raise ValueError(f"nz and ngf must be positive ints; got nz={nz!r}, ngf={ngf!r}")
    layers, shape = GENERATORS[key](nz, ngf)
    return Generator(key, layers, nz, shape)
