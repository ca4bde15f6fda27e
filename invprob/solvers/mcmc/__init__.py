"""MCMC posterior samplers in the prior's latent space: Langevin (ULA / MALA) and PL-MCMC.

:mod:`.chains` holds what they share (options, chain states, the run through the driver),
:mod:`.langevin` and :mod:`.pl_mcmc` the two transition kernels and their methods.

Both target the latent posterior

    log pi(z) = log p_Z(z) - ||A f(z) - y||^2 / (2 sigma^2) + const,

so that ``x = f(z)`` is distributed as ``p(x | y)`` for the prior's generator ``f`` (``sigma`` one
number or one per image). Chains run in parallel as one batch: ``n_chains`` chains per
measurement, one iteration of :func:`invprob.solvers.iterate` per transition (progress, history,
callback). After ``burn_in`` iterations every ``thin``-th state is kept until ``n_samples`` states
per chain are collected; the posterior mean and standard deviation are accumulated on the fly
(Welford, :class:`invprob.solvers.chain_stats.RunningMoments`), so ``keep_samples=False`` gives
them without storing the chains. ``history["loss"]`` is ``-log pi`` of the current states
(mean over chains and images), ``history["acceptance"]`` the fraction of accepted moves.

``Result.samples`` is ``(B, n_chains * n_samples, *shape)``, chain-major: reshape to
``(B, n_chains, n_samples, *shape)`` to get the chains back. ``extras`` holds
``acceptance_rate`` ``(B,)`` and ``acceptance_per_chain`` ``(B, n_chains)`` (post burn-in; 1 for
ULA, which accepts every move) and, when the samples are kept and ``n_samples >= 4``, the
effective sample size ``ess`` ``(B, *shape)`` of every pixel
(:func:`invprob.solvers.chain_stats.effective_sample_size`). A callback that stops the run early
leaves the states kept so far (or, during burn-in, the current states) as the samples.

References: Roberts, Tweedie 1996, "Exponential convergence of Langevin distributions and their
discrete approximations" (ULA, MALA); Cannella, Soltani, Tarokh 2020, "Projected Latent Markov
Chain Monte Carlo: Conditional Sampling of Normalizing Flows" (PL-MCMC); Whang, Lei, Dimakis 2021,
"Composing Normalizing Flows for Inverse Problems" (sec. 6, both as baselines); Kothari,
Khorashadizadeh, de Hoop, Dokmanić 2021, "Trumpets: Injective Flows for Inference and Inverse
Problems" (eq. 8, the latent posterior of an injective prior).
"""

from .chains import ChainOptions, ChainRun, ChainState, LatentMCMC
from .langevin import Langevin, LangevinKernel, LangevinOptions
from .pl_mcmc import PLKernel, PLMCMC, PLMCMCOptions

__all__ = [
    "PLMCMC",
    "ChainOptions",
    "ChainRun",
    "ChainState",
    "LatentMCMC",
    "Langevin",
    "LangevinKernel",
    "LangevinOptions",
    "PLKernel",
    "PLMCMCOptions",
]
