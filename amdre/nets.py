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
