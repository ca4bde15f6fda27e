"""The machinery shared by the latent MCMC samplers: options, chain states, the run through the driver.

A sampler provides a transition kernel ``kernel(state, iteration) -> (state, accepted)`` for
``n_chains`` chains per measurement; :class:`_LatentMCMC` builds the target ``log pi(z)``, starts the
chains, runs them with :class:`ChainRun` through :func:`invprob.solvers.iterate` and summarises them.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import Field, field_validator

from ...operators.base import Operator
from ...priors.base import Prior
from .._common import NoiseLevel
from .._posterior import (
    LogDensity,
    check_run,
    latent_log_posterior,
    noise_levels,
    progress_option,
    require_latent_density,
    validate_noise_level,
)
from ..base import Callback, Result, Solver, SolverDiverged, SolverOptions
from ..chain_stats import RunningMoments, effective_sample_size
from ..driver import iterate


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
    progress: bool | None = progress_option()

    _sigma = field_validator("sigma", mode="before")(validate_noise_level)


@dataclass
class ChainState:
    """The current states ``z`` ``(N, d)``, their log-posterior and (Langevin) its gradient."""

    z: torch.Tensor
    log_p: torch.Tensor
    grad: torch.Tensor | None = None


Kernel = Callable[[ChainState, int], tuple[ChainState, torch.Tensor]]


def evaluate(target: LogDensity, z: torch.Tensor, with_grad: bool) -> ChainState:
    """Log-posterior of each row of ``z`` and, if asked, its gradient (autograd through ``f`` and ``A``)."""
    if not with_grad:
        with torch.no_grad():
            return ChainState(z, target(z)[0])
    z = z.detach().requires_grad_(True)
    log_p = target(z)[0]
    (grad,) = torch.autograd.grad(log_p.sum(), z)
    return ChainState(z.detach(), log_p.detach(), grad.detach())


def replace_rows(accept: torch.Tensor, new: ChainState, old: ChainState) -> ChainState:
    mask = accept.unsqueeze(1)
    grad = None if new.grad is None or old.grad is None else torch.where(mask, new.grad, old.grad)
    return ChainState(torch.where(mask, new.z, old.z), torch.where(accept, new.log_p, old.log_p), grad)


def finite_or_reject(log_ratio: torch.Tensor, proposal: ChainState) -> torch.Tensor:
    """A proposal whose log-posterior is NaN or Inf is rejected (log acceptance -inf)."""
    return torch.where(torch.isfinite(proposal.log_p), log_ratio, torch.full_like(log_ratio, -math.inf))


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

    def result(self) -> tuple[RunningMoments, torch.Tensor | None, torch.Tensor]:
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


class LatentMCMC(Solver):
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
            kernel, evaluate(target, z0, self.with_grad), prior, opts, batch=batch, method=self.name, hint=self.hint
        )
        total = opts.burn_in + opts.n_samples * opts.thin
        trace = iterate(
            self.name, total, chains.step, batch=batch, estimate=chains.estimate, callback=callback,
            progress=opts.progress, hint=self.hint,
        )
        result = _chain_result(self.name, opts, *chains.result())
        result.history = trace.history
        result.extras.update(self.kernel_extras(kernel, batch))
        result.extras.update({"iterations": trace.iterations, "stopped_by": trace.stopped_by})
        return result
