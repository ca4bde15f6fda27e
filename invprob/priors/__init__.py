"""Generative priors behind one interface (:class:`Prior`)."""

from .base import PRIOR_CLASSES, Prior
from .io import load_prior_file, save_prior

__all__ = ["PRIOR_CLASSES", "Prior", "load_prior_file", "save_prior"]

from .linear_gaussian import GaussianPosterior, LinearGaussianPrior

__all__ += ["GaussianPosterior", "LinearGaussianPrior"]

from .nif import NIF, GaussianNIFLayer
from .relaxed import RelaxedInjectiveFlow

__all__ += ["GaussianNIFLayer", "NIF", "RelaxedInjectiveFlow"]

from .logdet import logdet_jtj_exact, logdet_jtj_series
from .trumpet import TRUMPET

__all__ += ["TRUMPET", "logdet_jtj_exact", "logdet_jtj_series"]

from .realnvp import RealNVP

__all__ += ["RealNVP"]
