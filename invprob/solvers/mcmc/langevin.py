"""Langevin Monte Carlo in the prior's latent space: MALA with its step adapted during burn-in (the default), or ULA with ``adjusted=False``.

References: Roberts, Tweedie 1996, "Exponential convergence of Langevin distributions and their
discrete approximations".
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator

from ...priors.base import Prior
from ...rng import rand, randn
from .._posterior import LogDensity
from ..base import register
from .chains import ChainOptions, ChainState, LatentMCMC, evaluate, finite_or_reject, replace_rows


class LangevinOptions(ChainOptions):
    """Options of ``"langevin"``."""

    step_size: float = Field(1e-4, gt=0, allow_inf_nan=False, description="Langevin step eta (MALA: the start of its adaptation)")
    adjusted: bool = Field(True, description="Metropolis-adjusted (MALA); False: unadjusted (ULA)")
    target_acceptance: float | None = Field(
        0.57, gt=0, lt=1,
        description="MALA only: adapt each chain's step during burn-in towards this rate; None: keep step_size (ignored by ULA unless set)",
    )

    @model_validator(mode="after")
    def _adaptation_needs_mala(self) -> LangevinOptions:
        if not self.adjusted and self.target_acceptance is not None and "target_acceptance" in self.model_fields_set:
            raise ValueError("target_acceptance needs adjusted=True (ULA has no acceptance step)")
        return self


class LangevinKernel:
    """One Langevin step ``z' = z + eta grad log pi(z) + sqrt(2 eta) xi``, ``xi ~ N(0, I)``, for ``n`` chains.

    ULA accepts ``z'``; it is biased by ``O(eta)`` (for a Gaussian target with precision ``P`` the
    stationary covariance is ``(P (I - eta P / 2))^{-1}`` instead of ``P^{-1}``). MALA accepts with
    probability ``min(1, pi(z') q(z | z') / (pi(z) q(z' | z)))``, ``q(a | b) = N(a; b + eta grad log pi(b), 2 eta I)``,
    which removes the bias. With ``target_acceptance`` each chain's ``eta`` is multiplied by
    ``exp(0.2 (alpha - target))`` after every burn-in step (``alpha`` its acceptance probability);
    ``log_step`` ``(n, 1)`` holds the current step sizes.
    """

    def __init__(
        self, target: LogDensity, opts: LangevinOptions, like: torch.Tensor, generator: torch.Generator | None
    ) -> None:
        self.target, self.opts, self.like, self.generator = target, opts, like, generator
        self.log_step = torch.full((like.shape[0], 1), math.log(opts.step_size), dtype=like.dtype, device=like.device)

    def __call__(self, state: ChainState, iteration: int) -> tuple[ChainState, torch.Tensor]:
        opts, n = self.opts, state.z.shape[0]
        eta = self.log_step.exp()
        drift = state.z + eta * state.grad
        noise = randn(tuple(state.z.shape), like=self.like, generator=self.generator)
        proposal = evaluate(self.target, drift + (2 * eta).sqrt() * noise, True)
        if not opts.adjusted:
            return proposal, torch.ones(n, dtype=torch.bool, device=state.z.device)
        back = proposal.z + eta * proposal.grad
        log_q_forward = -(proposal.z - drift).pow(2).sum(1) / (4 * eta[:, 0])
        log_q_backward = -(state.z - back).pow(2).sum(1) / (4 * eta[:, 0])
        log_ratio = finite_or_reject(proposal.log_p - state.log_p + log_q_backward - log_q_forward, proposal)
        accept = torch.log(rand((n,), like=self.like, generator=self.generator)) < log_ratio
        if opts.target_acceptance is not None and iteration < opts.burn_in:
            alpha = log_ratio.clamp(max=0).exp()
            self.log_step.add_(0.2 * (alpha - opts.target_acceptance).unsqueeze(1))
        return replace_rows(accept, proposal, state), accept


@register
class Langevin(LatentMCMC):
    """Langevin Monte Carlo in the latent space: ULA, or MALA with ``adjusted=True``.

    ``x_init`` (if given) starts every chain at ``encode(x_init)``; otherwise chains start at
    independent prior draws. ``extras["step_size"]`` ``(B, n_chains)`` holds the final step sizes.

    Example:
        >>> import torch
        >>> from invprob import solve
        >>> from invprob.operators import Identity
        >>> from invprob.priors import LinearGaussianPrior
        >>> prior = LinearGaussianPrior(torch.eye(4), data_shape=(1, 2, 2))
        >>> result = solve(Identity((1, 2, 2)), prior, torch.zeros(1, 2, 2), "langevin", sigma=0.5,
        ...                adjusted=True, step_size=0.05, n_chains=2, n_samples=5, burn_in=10,
        ...                generator=torch.Generator().manual_seed(0))
        >>> tuple(result.samples.shape), len(result.history["loss"]), sorted(result.history)
        ((10, 1, 2, 2), 15, ['acceptance', 'loss'])
    """

    name = "langevin"
    kind = "posterior"
    Options = LangevinOptions
    description = "latent Langevin Monte Carlo (ULA or MALA), parallel chains"
    references = (
        'Roberts, Tweedie 1996, "Exponential convergence of Langevin distributions and their discrete approximations"'
    )
    with_grad = True
    hint = "lower step_size (it must stay below about 2 / the largest curvature of -log p(z | y))"

    def make_kernel(
        self, target: LogDensity, prior: Prior, z0: torch.Tensor, generator: torch.Generator | None
    ) -> LangevinKernel:
        return LangevinKernel(target, self.options, z0, generator)

    def kernel_extras(self, kernel: LangevinKernel, batch: int) -> dict[str, torch.Tensor]:
        return {"step_size": kernel.log_step.exp().reshape(batch, self.options.n_chains)}
