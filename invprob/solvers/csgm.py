"""CSGM: compressed sensing with a generative model, with random restarts.

``x_hat = f(z_hat)`` with

    z_hat = argmin_z 1/2 ||y - A f(z)||_2^2 + w/2 ||z||_2^2,

minimised by gradient steps from ``restarts`` random starts drawn from the prior's latent
distribution; for each measurement the restart with the smallest data fit ``||y - A f(z)||^2``
wins (Kothari et al. 2021 report the best of 10 restarts, the ``table3`` bench preset; the default of 5
gives the same SNR on MNIST at about 0.65x the time, benchmarks/BENCHMARKS.md "CSGM restarts").
Restarts are screened: after ``screen`` iterations only each image's restart of smallest data fit
goes on to the cap, with its optimizer state: with Adam (or plain gradient steps) it follows the
path it would have followed with all restarts running, with L-BFGS (whose curvature pairs mix the
restarts) it goes on from a fresh optimizer; the others are dropped (``screen=0``: none are). This
is successive halving down to one candidate at one fixed point; the cost falls from ``R``
latents per image for every iteration to ``R`` for the first ``screen`` only
(benchmarks/BENCHMARKS.md "CSGM restart screening and iFlow's stopping tolerance"). ``w = lam sigma^2`` when the noise level
is given (``lam = 1``: the negative log posterior of a standard normal latent times ``sigma^2``,
the toolkit's MAP convention), ``w = lam`` otherwise; the default ``lam = 0`` is the original
CSGM. With ``lam = 1``, the noise level given, one restart from the latent mean (``start="mean"``)
and ``optimizer="lbfgs"``, this is a fast estimate of the mode of the latent posterior
``p(z | y)`` (iFlow-L's ``start="latent"``). The loop runs through :func:`iterate` with a per-image
stopping rule on the winning restart's objective, one rule across both stages. A winner whose
image leaves the plausible range (``range_factor`` times the largest of 1 and the prior mean
image's values) raises :class:`SolverDiverged` naming it.

References:
    Bora, Jalal, Price, Dimakis (2017), "Compressed Sensing using Generative Models";
    Jamieson, Talwalkar (2016), "Non-stochastic Best Arm Identification and Hyperparameter
    Optimization" (successive halving).

Example:
    >>> import torch
    >>> from invprob import solve
    >>> from invprob.operators import RandomGaussian
    >>> from invprob.priors import LinearGaussianPrior
    >>> prior = LinearGaussianPrior(torch.randn(16, 2, generator=torch.Generator().manual_seed(0)) / 4, data_shape=(1, 4, 4))
    >>> op = RandomGaussian((1, 4, 4), m=8)
    >>> y = op(prior.sample(1, generator=torch.Generator().manual_seed(1)))
    >>> solve(op, prior, y, "csgm", restarts=2, iterations=20).x_hat.shape
    torch.Size([1, 1, 4, 4])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from ..operators.base import Operator
from ..priors.base import Prior
from ._common import IterativeOptions, NoiseLevel, keep_inactive_rows, make_optimizer, squared_residual
from .base import Callback, Result, Solver, SolverDiverged, register, sigma_per_sample
from .driver import StoppingOptions, StoppingRule, Trace, iterate


class CSGMOptions(IterativeOptions, StoppingOptions):
    """Options of ``"csgm"``."""

    iterations: int = Field(200, ge=1, le=1_000_000, description="iteration cap")
    lr: float = Field(0.2, gt=0, allow_inf_nan=False, description="step size of the optimizer on z")
    optimizer: Literal["adam", "gd", "lbfgs"] = Field(
        "adam", description="'adam', 'gd' (plain gradient steps) or 'lbfgs' (L-BFGS, strong-Wolfe line search; lr unused; couples a batch's images)"
    )
    restarts: int = Field(5, ge=1, le=1000, description="random starts; the best data fit wins (Table 3 of Kothari et al. 2021: 10)")
    start: Literal["random", "mean"] = Field(
        "random", description="'random': every restart from a prior draw; 'mean': the first restart from the latent mean, the others from draws"
    )
    lam: float = Field(0.0, ge=0, allow_inf_nan=False, description="weight of ||z||^2/2: w = lam sigma^2 (lam without sigma); 0: original CSGM")
    sigma: NoiseLevel = Field(None, description="noise std (one, or one per image), scales the latent penalty")
    screen: int = Field(
        50, ge=0, le=1_000_000,
        description="after this many iterations only each image's best restart (smallest data fit) goes on, with its Adam state "
        "(L-BFGS: a fresh optimizer); 0 (or >= iterations): every restart runs to the cap",
    )
    tol: float = Field(1e-3, ge=0, allow_inf_nan=False,
                       description="stop an image when its best objective improved by less than tol (relative) over `window` iterations; 0: never")
    range_factor: float = Field(10.0, gt=1, allow_inf_nan=False,
                                description="a result with |values| above range_factor * max(1, |prior mean|) is reported as diverged")


@register
class CSGM(Solver):
    """Latent-space least squares from several random starts; keeps the best data fit per measurement.

    All restarts of all batch elements are optimised together as one ``(B * R, d)`` latent batch;
    every batch element starts from the same ``R`` latents (drawn with ``generator``; the first at
    the latent mean with ``start="mean"``), so with Adam or gradient steps a batch gives the same
    answer as its elements solved one by one with the same seed. With ``x_init`` the first restart
    starts at ``prior.encode(x_init)`` instead. ``extras``: ``latent`` (the
    winning ``z``, ``(B, d)``), ``restart_data_fit`` (``(B, R)``: each restart's data fit at its last
    iteration, the screening for a dropped one), ``best_restart`` (``(B,)``). With screening the winner
    is chosen at ``screen``, so its final fit may exceed a dropped restart's fit at the screening
    (``best_restart`` need not be ``restart_data_fit.argmin(1)``)."""

    name = "csgm"
    Options = CSGMOptions
    description = "latent least squares ||y - A f(z)||^2 + lam ||z||^2 with random restarts (Bora et al.)"
    references = "Bora, Jalal, Price, Dimakis (2017), Compressed Sensing using Generative Models"

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
        opts = self.options
        batch, restarts = y.shape[0], opts.restarts
        sigma = sigma_per_sample(opts.sigma, y)
        weight = opts.lam * (sigma.pow(2) if sigma is not None else torch.ones(batch, dtype=y.dtype, device=y.device))
        z = self._starts(prior, batch, x_init, generator).requires_grad_(True)
        optimizer = make_optimizer(opts.optimizer, [z], opts.lr)
        stopping = StoppingRule.from_options(opts)
        screened = 0 < opts.screen < opts.iterations and restarts > 1
        descent = _Descent(self.name, op, prior, y, weight, callback, opts.progress, stopping)
        trace = descent.run(z, optimizer, restarts, opts.screen if screened else opts.iterations)
        with torch.no_grad():
            x, fit, _ = _objective(op, prior, y.repeat_interleave(restarts, dim=0), z, weight.repeat_interleave(restarts))
        restart_fit = fit.view(batch, restarts)
        best = restart_fit.argmin(1)
        latent = _pick(z.detach(), best, restarts)
        if screened and trace.stopped_by == "cap":
            z = latent.clone().requires_grad_(True)
            optimizer = _narrowed(optimizer, opts.optimizer, opts.lr, z, best, restarts)
            rest = descent.run(z, optimizer, 1, opts.iterations - opts.screen, offset=opts.screen)
            trace = _joined(trace, rest)
            with torch.no_grad():
                x, fit, _ = _objective(op, prior, y, z, weight)
            restart_fit[torch.arange(batch), best] = fit
            latent, restarts = z.detach(), 1
            best_x = x
        else:
            best_x = _pick(x, best, restarts)
        self._check_range(prior, best_x)
        extras = {"latent": latent, "restart_data_fit": restart_fit, "best_restart": best,
                  "iterations": trace.iterations, "stopped_by": trace.stopped_by}
        return Result(x_hat=best_x, method=self.name, options=opts, history=trace.history, extras=extras)

    def _starts(
        self, prior: Prior, batch: int, x_init: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``(B * R, d)`` starting latents: the same ``R`` prior draws for every batch element."""
        restarts = self.options.restarts
        draws = prior.sample_latent(restarts, 1.0, generator)
        if self.options.start == "mean":
            draws[0] = prior.sample_latent(1, 0.0)[0]
        starts = draws.unsqueeze(0).repeat(batch, 1, 1)
        if x_init is not None:
            with torch.no_grad():
                starts[:, 0] = prior.encode(x_init)
        return starts.reshape(batch * restarts, prior.latent_dim).detach()

    def _check_range(self, prior: Prior, x_hat: torch.Tensor) -> None:
        with torch.no_grad():
            mean = prior.decode(prior.sample_latent(1, 0.0, torch.Generator()))
        bound = self.options.range_factor * max(1.0, float(mean.abs().max()))
        peak = x_hat.flatten(1).abs().amax(1)
        bad = ~torch.isfinite(peak) | (peak > bound)
        if bool(bad.any()):
            images = torch.nonzero(bad).flatten().tolist()
            raise SolverDiverged(
                f"csgm: the reconstruction of image(s) {images} left the prior's plausible range (|values| up to "
                f"{float(peak[bad].max()):.3g} > {bound:.3g}); try a smaller step size (lr)"
            )


def _objective(
    op: Operator, prior: Prior, targets: torch.Tensor, z: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``f(z)``, ``||y - A f(z)||^2`` and ``1/2 ||y - A f(z)||^2 + w/2 ||z||^2`` per latent."""
    x = prior.decode(z)
    fit = squared_residual(op, x, targets)
    return x, fit, 0.5 * fit + 0.5 * weights * z.pow(2).sum(1)


class _Descent:
    """Optimizer steps on a ``(B * R, d)`` latent batch through :func:`iterate`; per image, the restart
    with the smallest data fit is the estimate and its objective feeds the (shared) stopping rule."""

    def __init__(self, name: str, op: Operator, prior: Prior, y: torch.Tensor, weight: torch.Tensor,
                 callback: Callback | None, progress: bool | None, stopping: StoppingRule | None) -> None:
        self.name, self.op, self.prior, self.y, self.weight = name, op, prior, y, weight
        self.callback, self.progress, self.stopping = callback, progress, stopping

    def run(self, z: torch.Tensor, optimizer: torch.optim.Optimizer, restarts: int, iterations: int,
            offset: int = 0) -> Trace:
        batch = self.y.shape[0]
        targets = self.y.repeat_interleave(restarts, dim=0)
        weights = self.weight.repeat_interleave(restarts)
        current: dict[str, torch.Tensor] = {}

        def step(it: int, active: torch.Tensor) -> dict[str, torch.Tensor]:
            if self.stopping is not None and self.stopping.converged is not None:
                active = active & ~self.stopping.converged  # converged in an earlier run of the same rule
            rows = active.repeat_interleave(restarts)
            mask = rows.to(z).unsqueeze(1)
            at_start: dict[str, torch.Tensor] = {}

            def closure() -> torch.Tensor:
                x, fit, loss = _objective(self.op, self.prior, targets, z, weights)
                (grad,) = torch.autograd.grad(loss.sum(), z)
                z.grad = grad * mask
                if not at_start:  # the values at the iterate the step starts from (a line search evaluates more)
                    at_start.update(x=x.detach(), fit=fit.detach(), loss=loss.detach())
                return loss.sum().detach()

            before = z.detach().clone()
            if isinstance(optimizer, torch.optim.LBFGS):
                _lbfgs_step(optimizer, z, closure)
            else:
                closure()
                optimizer.step()
            keep_inactive_rows(z, before, rows)
            best = at_start["fit"].view(batch, restarts).argmin(1)
            current["x"] = _pick(at_start["x"], best, restarts)
            return {"loss": _pick(at_start["loss"], best, restarts), "data_fit": _pick(at_start["fit"], best, restarts)}

        return iterate(self.name, iterations, step, batch=batch, estimate=lambda: current["x"], callback=self.callback,
                       progress=self.progress, stopping=self.stopping, offset=offset)


def _narrowed(optimizer: torch.optim.Optimizer, kind: str, lr: float, z: torch.Tensor, best: torch.Tensor,
              restarts: int) -> torch.optim.Optimizer:
    """An optimizer on the winners' latents ``z`` (``(B, d)``) that carries on each winner's state
    (Adam's moment estimates and step count); L-BFGS starts afresh (its curvature pairs mix the restarts)."""
    narrowed = make_optimizer(kind, [z], lr)
    if isinstance(optimizer, torch.optim.LBFGS):
        return narrowed
    (old,) = optimizer.param_groups[0]["params"]
    for key, value in optimizer.state.get(old, {}).items():
        if torch.is_tensor(value):
            value = _pick(value, best, restarts) if value.dim() and value.shape[0] == old.shape[0] else value
            value = value.clone()
        narrowed.state[z][key] = value
    return narrowed


def _joined(first: Trace, second: Trace) -> Trace:
    """One trace of two consecutive runs."""
    history = {key: first.history.get(key, []) + second.history.get(key, []) for key in dict.fromkeys([*first.history, *second.history])}
    return Trace(history=history, iterations=first.iterations + second.iterations, converged=second.converged,
                 stopped_by=second.stopped_by)


_LBFGS_FAILED = ("csgm: the L-BFGS line search proposed a non-finite latent (the objective or its gradient overflows "
                 "there, as for an untrained prior); use optimizer='adam'")


def _lbfgs_step(optimizer: torch.optim.LBFGS, z: torch.Tensor, closure: Callable[[], torch.Tensor]) -> None:
    """One L-BFGS iteration; :class:`SolverDiverged` if its line search made a latent non-finite."""
    try:
        optimizer.step(closure)
    except ValueError as error:  # the prior refused a non-finite latent proposed by the line search
        if bool(torch.isfinite(z).all()):
            raise
        raise SolverDiverged(_LBFGS_FAILED) from error
    if not bool(torch.isfinite(z).all()):
        raise SolverDiverged(_LBFGS_FAILED)


def _pick(values: torch.Tensor, best: torch.Tensor, restarts: int) -> torch.Tensor:
    """Row ``best[b]`` of each group of ``restarts`` consecutive rows of ``values``."""
    grouped = values.detach().reshape(best.shape[0], restarts, *values.shape[1:])
    return grouped[torch.arange(best.shape[0], device=best.device), best]
