"""PL-MCMC: latent Metropolis-Hastings with a perturb-or-resample proposal.

References: Cannella, Soltani, Tarokh 2020, "Projected Latent Markov Chain Monte Carlo:
Conditional Sampling of Normalizing Flows".
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from ...priors.base import Prior
from ...rng import rand, randn
from .._posterior import LogDensity
from ..base import register
from .chains import ChainOptions, ChainState, LatentMCMC, evaluate, finite_or_reject, replace_rows


class PLMCMCOptions(ChainOptions):
    """Options of ``"pl-mcmc"`` (the perturbation 0.05 of Whang et al. 2021, app. C.3)."""

    perturb_std: float = Field(0.05, gt=0, allow_inf_nan=False, description="std of the small Gaussian perturbation")
    resample_prob: float = Field(0.1, ge=0, le=1, description="probability of proposing a fresh draw from p_Z")
    log_accept_clamp: float = Field(25.0, gt=0, description="log acceptance ratios are clamped to [-c, c]")


class PLKernel:
    """One PL-MCMC Metropolis-Hastings step for ``n`` chains, with the mixture proposal

        q(z' | z) = (1 - r) N(z'; z, s^2 I) + r p_Z(z'),

    a small perturbation with probability ``1 - r`` and a fresh draw from the latent prior with
    probability ``r`` (``r = resample_prob``, ``s = perturb_std``). The acceptance ratio uses the
    mixture density both ways and its logarithm is clamped to ``[-c, c]`` as in the reference
    implementation; proposals with a non-finite log-posterior are always rejected. (The reference
    code also maps each proposal through the generator and back, ``z -> f^dagger(f(z))``; for chains
    that live in the latent space that round trip is the identity, so it is left out.)
    """

    def __init__(
        self,
        target: LogDensity,
        prior: Prior,
        opts: PLMCMCOptions,
        like: torch.Tensor,
        generator: torch.Generator | None,
    ) -> None:
        self.target, self.prior, self.opts, self.like, self.generator = target, prior, opts, like, generator
        r = opts.resample_prob
        self.log_keep = math.log1p(-r) if r < 1 else -math.inf
        self.log_fresh = math.log(r) if r > 0 else -math.inf

    def log_q(self, to: torch.Tensor, frm: torch.Tensor) -> torch.Tensor:
        """``log q(to | frm)`` of the mixture proposal."""
        var = self.opts.perturb_std**2
        walk = -(to - frm).pow(2).sum(1) / (2 * var) - 0.5 * to.shape[1] * math.log(2 * math.pi * var)
        return torch.logaddexp(self.log_keep + walk, self.log_fresh + self.prior.latent_log_prob(to))

    def __call__(self, state: ChainState, iteration: int) -> tuple[ChainState, torch.Tensor]:
        opts, n = self.opts, state.z.shape[0]
        walk = state.z + opts.perturb_std * randn(tuple(state.z.shape), like=self.like, generator=self.generator)
        fresh = self.prior.sample_latent(n, 1.0, self.generator).to(self.like)
        resample = (rand((n,), like=self.like, generator=self.generator) < opts.resample_prob).unsqueeze(1)
        chosen = torch.where(resample, fresh, walk)
        with torch.no_grad():
            proposal = evaluate(self.target, chosen, False)
            ratio = proposal.log_p - state.log_p + self.log_q(state.z, chosen) - self.log_q(chosen, state.z)
        clamp = opts.log_accept_clamp
        log_ratio = finite_or_reject(ratio.clamp(-clamp, clamp), proposal)
        accept = torch.log(rand((n,), like=self.like, generator=self.generator)) < log_ratio
        return replace_rows(accept, proposal, state), accept


@register
class PLMCMC(LatentMCMC):
    """PL-MCMC: latent Metropolis-Hastings with a perturb-or-resample proposal (Cannella et al.).

    ``x_init`` (if given) starts every chain at ``encode(x_init)``; otherwise at prior draws.

    Example:
        >>> import torch
        >>> from invprob import solve
        >>> from invprob.operators import Identity
        >>> from invprob.priors import LinearGaussianPrior
        >>> prior = LinearGaussianPrior(torch.eye(4), data_shape=(1, 2, 2))
        >>> y = torch.zeros(2, 1, 2, 2)
        >>> result = solve(Identity((1, 2, 2)), prior, y, "pl-mcmc", sigma=torch.tensor([0.5, 1.0]),
        ...                n_chains=3, n_samples=4, burn_in=20, generator=torch.Generator().manual_seed(0))
        >>> tuple(result.samples.shape), tuple(result.extras["acceptance_rate"].shape)
        ((2, 12, 1, 2, 2), (2,))
    """

    name = "pl-mcmc"
    kind = "posterior"
    Options = PLMCMCOptions
    description = "latent Metropolis-Hastings with the PL-MCMC mixture proposal"
    references = (
        'Cannella, Soltani, Tarokh 2020, "Projected Latent Markov Chain Monte Carlo: '
        'Conditional Sampling of Normalizing Flows"'
    )
    with_grad = False
    hint = "check the prior and sigma"

    def make_kernel(
        self, target: LogDensity, prior: Prior, z0: torch.Tensor, generator: torch.Generator | None
    ) -> PLKernel:
        return PLKernel(target, prior, self.options, z0, generator)
