"""amdre: adaptive multi-stage density ratio estimation for latent-space EBMs (Xiao & Han, 2022)."""
from .langevin import sample_posterior, sample_prior
from .nce import nce_accuracy, nce_loss
from .nets import RatioMLP, generator
from .prior import EBMPrior
from .tre import TelescopingRatio, fit_log_ratio, make_waymarks

__version__ = "0.1.0"
__all__ = ["fit_log_ratio", "nce_loss", "nce_accuracy", "RatioMLP", "TelescopingRatio", "make_waymarks",
           "generator", "EBMPrior", "sample_posterior", "sample_prior"]
