"""Generators of Table 5 (and the small CPU ones): shapes, output range, Xavier init, names."""
import pytest
import torch
import torch.nn as nn

from amdre.nets import GENERATORS, generator

SHAPES = {"svhn": (3, 32, 32), "cifar10": (3, 32, 32), "celeba": (3, 64, 64), "celeba128": (3, 128, 128),
          "mnist": (1, 28, 28), "digits": (1, 8, 8), "mnistmlp": (1, 28, 28)}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shapes_and_range(name):
    torch.manual_seed(0)
    g = generator(name, nz=16, ngf=8)
    x = g(torch.randn(3, 16) * 3)
    assert x.shape == (3, *SHAPES[name]) and g.out_shape == SHAPES[name]
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0
    assert isinstance(g.net[-1] if name != "digits" else g.net[-2], nn.Tanh)


def test_every_name_is_tested():
    assert set(GENERATORS) == set(SHAPES)


def test_table5_layers():
    g = generator("svhn")                   # nz 100, ngf 64
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 3]
    assert [c.stride[0] for c in convs] == [1, 2, 2, 2] and all(c.kernel_size == (4, 4) for c in convs)
    assert all(m.negative_slope == 0.2 for m in g.modules() if isinstance(m, nn.LeakyReLU))
    g = generator("cifar10", nz=128, ngf=8)
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [c.kernel_size[0] for c in convs] == [8, 4, 4, 3] and [c.stride[0] for c in convs] == [1, 2, 2, 1]
    assert [c.out_channels for c in generator("celeba", ngf=8).modules() if isinstance(c, nn.ConvTranspose2d)] \
        == [64, 32, 16, 8, 3]


def test_xavier_init():
    torch.manual_seed(0)
    g = generator("svhn", nz=100, ngf=16)
    for m in g.modules():
        if isinstance(m, nn.ConvTranspose2d):
            assert torch.all(m.bias == 0)
            # xavier_normal_ std = sqrt(2 / (fan_in + fan_out)), torch's fans for a [in, out, k, k] weight
            fan_in, fan_out = m.weight.shape[1] * 16, m.weight.shape[0] * 16
            std = (2.0 / (fan_in + fan_out)) ** 0.5
            assert abs(m.weight.std().item() / std - 1) < 0.1


def test_bad_names_and_inputs():
    with pytest.raises(ValueError, match="svhn, cifar10"):
        generator("imagenet")
    with pytest.raises(ValueError, match="nz"):
        generator("mnist", nz=0)
    with pytest.raises(ValueError, match=r"\[B, 16\]"):
        generator("mnist", nz=16, ngf=4)(torch.randn(2, 15))
    assert generator("CIFAR-10", nz=4, ngf=2).name == "cifar10"
