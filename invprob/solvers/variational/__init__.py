"""Variational posterior samplers: composed-flow SVI, Ambient VI and amortised VI (AVI).

All fit a flow ``q`` to the posterior by minimising ``E_q[beta log q - log p(. | y)]`` (up to
``log p(y)``); the per-measurement fits run through :func:`fit_variational` (the driver's loop),
the amortised model's training through the training loop of :mod:`invprob.training`:

- :mod:`.per_measurement`: ``"svi"`` (a pre-generator on the prior's latent space, one per
  measurement) and ``"ambient-vi"`` (a flow in image space with the prior's ``log_prob``);
- :mod:`.amortized`: a conditional pre-generator ``q(z | y)`` (:class:`AmortizedPosterior`),
  trained once over simulated measurements by :func:`invprob.training.train_amortized`, and the
  ``"avi"`` sampler.

References: Whang, Lei, Dimakis 2021, "Composing Normalizing Flows for Inverse Problems".
"""

from .amortized import AVI, AmortizedPosterior, AVIOptions
from .fitting import FlowOptions, PlateauRule, fit_variational
from .per_measurement import SVI, AmbientVI, FlowPosterior, VIOptions

__all__ = [
    "AVI",
    "SVI",
    "AVIOptions",
    "AmbientVI",
    "AmortizedPosterior",
    "FlowOptions",
    "FlowPosterior",
    "PlateauRule",
    "VIOptions",
    "fit_variational",
]
