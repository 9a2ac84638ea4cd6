"""amdre: adaptive multi-stage density ratio estimation for latent-space EBMs (Xiao & Han, NeurIPS 2022).

The method in a few modules, each readable in one sitting: ``nce`` (Eq. 4), ``tre`` (Eq. 5), ``prior``
(Eq. 6/8), ``langevin`` (Eq. 3), ``density`` (the model's log-densities, Eq. 1/7), ``samplers`` (Eq. 3 on the
prior and the posterior, SIR) and ``train`` (Sec. 3.3, Fig. 1); ``nets`` holds the networks of App. A.
"""
from .nce import nce_accuracy, nce_loss
from .nets import RatioMLP, generator
from .prior import EBMPrior
from .samplers import sample_posterior, sample_prior, sample_sir
from .tre import TelescopingRatio, fit_log_ratio, make_waymarks

__version__ = "0.3.0"
__all__ = ["fit_log_ratio", "nce_loss", "nce_accuracy", "RatioMLP", "TelescopingRatio", "make_waymarks",
           "generator", "EBMPrior", "sample_posterior", "sample_prior", "sample_sir"]
