"""The multi-stage latent EBM prior (Sec. 3.2, Eq. 6).

    p_phi(z) = prod_{k<m} r_{phi_k}(z) p_0(z),      p_0 = N(0, I),

stored on the log scale as a list of stage networks, each mapping z [N, nz] to log r_k(z) [N]:

    log p_phi(z) = sum_k log r_k(z) - ||z||^2 / 2 + const.

During stage k of training the prior in use is p_{phi_k}: the product over the stages *before* k
(Eq. 8); ``log_prob(z, n_stages=k)`` evaluates exactly that. A prior with no stages is the base
prior N(0, I). Its samplers, Langevin dynamics and sampling-importance-resampling (the two test-time
samplers of Sec. 3.3), are in ``amdre.samplers``.
"""
import torch
import torch.nn as nn

from .nets import RatioMLP, stacked_log_ratios


class EBMPrior(nn.Module):
    """Product-of-ratios prior of Eq. 6 over a d = ``nz`` dimensional latent space."""

    def __init__(self, nz: int):
        super().__init__()
        if not (isinstance(nz, int) and nz > 0):
            raise ValueError(f"nz must be a positive int; got {nz!r}")
        self.nz = nz
        self.stages = nn.ModuleList()
        # An empty tensor that follows .to(), .double(), .cuda(): with no stage yet, it is what tells a new
        # stage where to live (device and dtype). Not saved in the state dict.
        self.register_buffer("where", torch.empty(0), persistent=False)

    @classmethod
    def with_stages(cls, nz: int, n_stages: int, state_dict: dict = None) -> "EBMPrior":
        """A prior of ``n_stages`` Table 4 stages (only the last one trainable), loaded from ``state_dict`` if given."""
        prior = cls(nz)
        for _ in range(n_stages):
            prior.add_stage()
        if state_dict is not None:
            prior.load_state_dict(state_dict)
        return prior

    @property
    def n_stages(self) -> int:
        return len(self.stages)

    def add_stage(self, module: nn.Module = None) -> nn.Module:
        """Append stage r_m (a new Table 4 ``RatioMLP(nz)`` unless ``module`` is given) and freeze the
        earlier stages (requires_grad False), as sequential training only fits the newest one (Sec. 3.3).

        The stage is moved to the prior's device and dtype (those of ``.to()``, also with no stage yet)."""
        if module is None:
            module = RatioMLP(self.nz)
        if not isinstance(module, nn.Module):
            raise ValueError(f"a stage must be an nn.Module mapping [N, {self.nz}] -> [N]; got {type(module).__name__}")
        for stage in self.stages:
            stage.requires_grad_(False)
        self.stages.append(module.to(device=self.where.device, dtype=self.where.dtype))
        return module

    def _check(self, z: torch.Tensor, n_stages) -> int:
        if not isinstance(z, torch.Tensor):
            raise ValueError(f"z must be a torch tensor [N, {self.nz}]; got {type(z).__name__} "
                             f"(torch.as_tensor(z, dtype=torch.float32) converts a numpy array)")
        if z.ndim != 2 or z.shape[1] != self.nz:
            raise ValueError(f"z must have shape [N, {self.nz}]; got {tuple(z.shape)}")
        if z.dtype != self.where.dtype:
            raise ValueError(f"z must be {str(self.where.dtype).replace('torch.', '')}, the prior's dtype; got "
                             f"{z.dtype} (z.to({self.where.dtype}) converts it, or prior.to(z.dtype) the prior)")
        if n_stages is None:
            return self.n_stages
        if not (isinstance(n_stages, int) and 0 <= n_stages <= self.n_stages):
            raise ValueError(f"n_stages must be an int in 0..{self.n_stages} (the stages built); got {n_stages!r}")
        return n_stages

    def _batchable(self, stages) -> bool:
        """True when all stages are plain RatioMLPs of identical layer shapes (one batched pass works)."""
        if not all(type(s) is RatioMLP for s in stages):
            return False
        shapes = [tuple(p.shape for p in s.parameters()) for s in stages]
        return all(sh == shapes[0] for sh in shapes)

    def stage_log_ratios(self, z: torch.Tensor, n_stages: int = None) -> torch.Tensor:
        """[n, N]: row k is log r_k(z) for the first ``n_stages`` stages (all when None)."""
        n = self._check(z, n_stages)
        stages = self.stages[:n]
        if n == 0:
            return z.new_zeros(0, z.shape[0])
        if n > 1 and self._batchable(stages):
            return stacked_log_ratios(stages, z)
        return torch.stack([s(z).reshape(z.shape[0]) for s in stages])

    def log_prob(self, z: torch.Tensor, n_stages: int = None) -> torch.Tensor:
        """Unnormalised log p_{phi}(z) = sum_{k<n} log r_k(z) - ||z||^2/2 (Eq. 6; Eq. 8 with n = k), shape [N]."""
        return self.stage_log_ratios(z, n_stages).sum(0) - 0.5 * z.pow(2).sum(1)

    def forward(self, z: torch.Tensor, n_stages: int = None) -> torch.Tensor:
        return self.log_prob(z, n_stages)
