"""MCMC posterior samplers in the prior's latent space: Langevin (ULA / MALA) and PL-MCMC.

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

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import Field, field_validator, model_validator

from ..operators.base import Operator
from ..priors.base import Prior
from ..rng import rand, randn
from ._common import NoiseLevel
from ._posterior import (
    LogDensity,
    check_run,
    latent_log_posterior,
    noise_levels,
    require_latent_density,
    validate_noise_level,
)
from .base import Callback, Result, Solver, SolverDiverged, SolverOptions, register
from .chain_stats import RunningMoments, effective_sample_size
from .driver import iterate


class ChainOptions(SolverOptions):
    """Options shared by the latent MCMC samplers."""

    sigma: NoiseLevel = Field(
        description="noise std of the Gaussian likelihood: a number or one per image (e.g. add_noise's sigma)"
    )
    n_samples: int = Field(100, ge=1, description="states kept per chain (after burn-in and thinning)")
    burn_in: int = Field(500, ge=0, description="iterations discarded at the start of every chain")
    thin: int = Field(1, ge=1, description="keep every thin-th state")
    n_chains: int = Field(4, ge=1, description="parallel chains per measurement")
    keep_samples: bool = Field(True, description="return the kept states (False: only mean and std)")
    progress: bool | None = Field(
        None, description="progress: True always (a bar on a terminal, timed lines in logs), False/None never"
    )

    _sigma = field_validator("sigma", mode="before")(validate_noise_level)


@dataclass
class ChainState:
    """The current states ``z`` ``(N, d)``, their log-posterior and (Langevin) its gradient."""

    z: torch.Tensor
    log_p: torch.Tensor
    grad: torch.Tensor | None = None


Kernel = Callable[[ChainState, int], tuple[ChainState, torch.Tensor]]


def _evaluate(target: LogDensity, z: torch.Tensor, with_grad: bool) -> ChainState:
    """Log-posterior of each row of ``z`` and, if asked, its gradient (autograd through ``f`` and ``A``)."""
    if not with_grad:
        with torch.no_grad():
            return ChainState(z, target(z)[0])
    z = z.detach().requires_grad_(True)
    log_p = target(z)[0]
    (grad,) = torch.autograd.grad(log_p.sum(), z)
    return ChainState(z.detach(), log_p.detach(), grad.detach())


def _replace_rows(accept: torch.Tensor, new: ChainState, old: ChainState) -> ChainState:
    mask = accept.unsqueeze(1)
    grad = None if new.grad is None or old.grad is None else torch.where(mask, new.grad, old.grad)
    return ChainState(torch.where(mask, new.z, old.z), torch.where(accept, new.log_p, old.log_p), grad)


def _finite_or_reject(log_ratio: torch.Tensor, proposal: ChainState) -> torch.Tensor:
    """A proposal whose log-posterior is NaN or Inf is rejected (log acceptance -inf)."""
    return torch.where(torch.isfinite(proposal.log_p), log_ratio, torch.full_like(log_ratio, -math.inf))


class LangevinOptions(ChainOptions):
    """Options of ``"langevin"``."""

    step_size: float = Field(1e-3, gt=0, allow_inf_nan=False, description="Langevin step eta")
    adjusted: bool = Field(False, description="Metropolis-adjusted (MALA); False: unadjusted (ULA)")
    target_acceptance: float | None = Field(
        None, gt=0, lt=1, description="MALA only: adapt each chain's step during burn-in towards this rate (e.g. 0.57)"
    )

    @model_validator(mode="after")
    def _adaptation_needs_mala(self) -> LangevinOptions:
        if self.target_acceptance is not None and not self.adjusted:
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
        proposal = _evaluate(self.target, drift + (2 * eta).sqrt() * noise, True)
        if not opts.adjusted:
            return proposal, torch.ones(n, dtype=torch.bool, device=state.z.device)
        back = proposal.z + eta * proposal.grad
        log_q_forward = -(proposal.z - drift).pow(2).sum(1) / (4 * eta[:, 0])
        log_q_backward = -(state.z - back).pow(2).sum(1) / (4 * eta[:, 0])
        log_ratio = _finite_or_reject(proposal.log_p - state.log_p + log_q_backward - log_q_forward, proposal)
        accept = torch.log(rand((n,), like=self.like, generator=self.generator)) < log_ratio
        if opts.target_acceptance is not None and iteration < opts.burn_in:
            alpha = log_ratio.clamp(max=0).exp()
            self.log_step.add_(0.2 * (alpha - opts.target_acceptance).unsqueeze(1))
        return _replace_rows(accept, proposal, state), accept


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
            proposal = _evaluate(self.target, chosen, False)
            ratio = proposal.log_p - state.log_p + self.log_q(state.z, chosen) - self.log_q(chosen, state.z)
        clamp = opts.log_accept_clamp
        log_ratio = _finite_or_reject(ratio.clamp(-clamp, clamp), proposal)
        accept = torch.log(rand((n,), like=self.like, generator=self.generator)) < log_ratio
        return _replace_rows(accept, proposal, state), accept


def _initial_latents(
    prior: Prior, n_chains: int, y: torch.Tensor, x_init: torch.Tensor | None, generator: torch.Generator | None
) -> torch.Tensor:
    """``n_chains`` starts per measurement: ``encode(x_init)`` for all, or independent draws from ``p_Z``."""
    if x_init is not None:
        if x_init.shape[0] != y.shape[0]:
            raise ValueError(f"x_init: expected {y.shape[0]} start image(s), one per measurement, got {x_init.shape[0]}")
        with torch.no_grad():
            return prior.encode(x_init).repeat_interleave(n_chains, dim=0)
    return prior.sample_latent(y.shape[0] * n_chains, 1.0, generator)


class ChainRun:
    """The state of ``n_chains`` chains per measurement while :func:`invprob.solvers.iterate` runs them.

    :meth:`step` makes one transition of every chain, checks the states are finite and, after
    ``burn_in``, counts acceptances and keeps every ``thin``-th state (decoded to images).
    """

    def __init__(
        self, kernel: Kernel, state: ChainState, prior: Prior, opts: ChainOptions, *, batch: int, method: str, hint: str
    ) -> None:
        self.kernel, self.state, self.prior, self.opts = kernel, state, prior, opts
        self.batch, self.method, self.hint = batch, method, hint
        self.moments, self.kept = RunningMoments(), []
        self.accepted = torch.zeros(state.z.shape[0], dtype=state.z.dtype, device=state.z.device)
        self.counted = 0

    def decode(self) -> torch.Tensor:
        """The current states as images ``(B, n_chains, *data_shape)``."""
        with torch.no_grad():
            x = self.prior.decode(self.state.z)
        return x.reshape(self.batch, self.opts.n_chains, *self.prior.data_shape)

    def step(self, t: int, active: torch.Tensor) -> dict[str, torch.Tensor]:
        opts = self.opts
        self.state, accept = self.kernel(self.state, t)
        finite = torch.isfinite(self.state.z).all(1).view(self.batch, -1).all(1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten().tolist()
            raise SolverDiverged(
                f"{self.method}: a chain diverged (non-finite state) at iteration {t} for image(s) {bad}; {self.hint}"
            )
        if t >= opts.burn_in:
            self.accepted += accept.to(self.accepted.dtype)
            self.counted += 1
            if (t - opts.burn_in) % opts.thin == opts.thin - 1:
                x = self.decode()
                self.moments.update(x, dim=1)
                if opts.keep_samples:
                    self.kept.append(x)
        per_image = (self.batch, opts.n_chains)
        return {
            "loss": -self.state.log_p.view(per_image).mean(1),
            "acceptance": accept.to(self.state.z.dtype).view(per_image).mean(1),
        }

    def estimate(self) -> torch.Tensor:
        """The running posterior mean of the kept states (during burn-in: the mean of the current states)."""
        return self.moments.mean if self.moments.count else self.decode().mean(1)

    def result(self, name: str) -> tuple[RunningMoments, torch.Tensor | None, torch.Tensor]:
        """Moments, kept samples ``(B, n_chains, S, ...)`` and acceptance rates ``(B, n_chains)``.

        When the run stopped before any state was kept, the current states are the samples.
        """
        if not self.moments.count:
            x = self.decode()
            self.moments.update(x, dim=1)
            if self.opts.keep_samples:
                self.kept.append(x)
        samples = torch.stack(self.kept, dim=2) if self.kept else None
        rate = self.accepted / max(self.counted, 1)
        return self.moments, samples, rate.reshape(self.batch, self.opts.n_chains)


def _chain_result(
    name: str,
    opts: ChainOptions,
    moments: RunningMoments,
    chains: torch.Tensor | None,
    acceptance: torch.Tensor,
) -> Result:
    extras: dict[str, torch.Tensor] = {"acceptance_rate": acceptance.mean(1), "acceptance_per_chain": acceptance}
    samples = None
    if chains is not None:
        samples = chains.flatten(1, 2)
        if chains.shape[2] >= 4:
            extras["ess"] = torch.stack([effective_sample_size(c) for c in chains])
    mean, std = moments.mean, moments.std
    return Result(x_hat=mean, method=name, options=opts, samples=samples, mean=mean, std=std, extras=extras)


class _LatentMCMC(Solver):
    """The ``run`` shared by the latent samplers: ``n_chains`` chains per measurement run by :class:`ChainRun`.

    Subclasses build their transition kernel (:meth:`make_kernel`), say whether a state carries the
    gradient of the log-posterior (``with_grad``) and what to try when a chain diverges (``hint``).
    """

    kind = "posterior"
    with_grad: ClassVar[bool]
    hint: ClassVar[str]

    @abstractmethod
    def make_kernel(
        self, target: LogDensity, prior: Prior, z0: torch.Tensor, generator: torch.Generator | None
    ) -> Kernel:
        """The transition kernel for chains started at ``z0`` ``(B * n_chains, d)``."""

    def kernel_extras(self, kernel: Kernel, batch: int) -> dict[str, torch.Tensor]:
        """Method-specific ``Result.extras`` read from the kernel after the run."""
        return {}

    def run(
        self,
        op: Operator,
        prior: Prior | None,
        y: torch.Tensor,
        *,
        x_init: torch.Tensor | None,
        callback: Callback | None,
        generator: torch.Generator | None,
    ) -> Result:
        opts: ChainOptions = self.options
        batch = check_run(y, generator, callback)
        sigma = noise_levels(opts.sigma, y).repeat_interleave(opts.n_chains)
        require_latent_density(prior, self.name)
        target = latent_log_posterior(prior, op, y.repeat_interleave(opts.n_chains, dim=0), sigma)
        z0 = _initial_latents(prior, opts.n_chains, y, x_init, generator)
        kernel = self.make_kernel(target, prior, z0, generator)
        chains = ChainRun(
            kernel, _evaluate(target, z0, self.with_grad), prior, opts, batch=batch, method=self.name, hint=self.hint
        )
        total = opts.burn_in + opts.n_samples * opts.thin
        trace = iterate(
            self.name, total, chains.step, batch=batch, estimate=chains.estimate, callback=callback,
            progress=opts.progress, hint=self.hint,
        )
        result = _chain_result(self.name, opts, *chains.result(self.name))
        result.history = trace.history
        result.extras.update(self.kernel_extras(kernel, batch))
        result.extras.update({"iterations": trace.iterations, "stopped_by": trace.stopped_by})
        return result


@register
class Langevin(_LatentMCMC):
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


@register
class PLMCMC(_LatentMCMC):
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
