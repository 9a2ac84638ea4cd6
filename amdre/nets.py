"""Networks of Appendix A: the ratio estimator (Table 4) and the generators (Table 5)."""
import torch
import torch.nn as nn


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
