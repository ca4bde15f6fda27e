"""iFlow and iFlow-L: projected gradient descent on the range of an injective prior.

Algorithm 1 of Kothari et al. (2021)::

    x[0] = start
    for i = 0 .. T-1:
        v      = P(x[i])                       # projection onto the prior's range, prior.project
        x[i+1] = GradientStep_x( L(v) )        # gradient through the projection
    x_hat = P(x[T])

with the objective (eq. 7) ``L(v) = 1/2 ||y - A v||^2 - w log p(v)``. iFlow is ``w = 0``. iFlow-L
uses the noise level: ``w = lam * sigma^2`` makes ``L`` the negative log posterior times
``sigma^2`` for ``lam = 1`` (the default), the convention of every MAP method of the toolkit. When
``sigma`` is not given it is estimated per image from the range-constrained least-squares fit
(iFlow's own iterations run first): for a ``d``-dimensional range and ``m`` measurements,
``E ||y - A v*||^2 ~ sigma^2 (m - d)``, so ``sigma_hat^2 = ||y - A v*||^2 / (m - d)``; the value
used is returned in ``Result.extras["sigma"]`` with ``extras["sigma_source"]``.

Which ``log p(v)``: by default (``density="latent"``) the log-density of ``v``'s latent coordinates
under the prior's latent model (:meth:`~invprob.priors.Prior.project_with_latent_log_prob`; for
TRUMPET ``log p_{Z'}(g^dagger(v))``, the negative log-likelihood the paper's reference code
minimises). ``density="range"`` is the density on the range of eq. 6, which adds the injective
part's volume term ``-1/2 log det(J_g^T J_g)``: it rewards images where the generator contracts
whatever the latent density says, and with trained TRUMPETs it drags under-determined
reconstructions (×4 super-resolution, large holes) away from the latent posterior's mode
(benchmarks/BENCHMARKS.md, "iFlow-L's prior term"). For a linear generator the two differ by a
constant and give the same estimate.

Both start by default (``start="latent"``) at ``f(z)`` after ``warm_steps`` L-BFGS iterations on
the latent posterior from the latent mean (:mod:`~invprob.solvers.csgm`, one image at a time),
which puts the start near the mode on the range and cuts the iterations to convergence
(benchmarks/BENCHMARKS.md, latency and method defaults); the projected-gradient iterations then
refine it off the latent parametrisation. ``start="prior-mean"`` is the point of the
measurement-consistent set closest to the prior's mean image ``m = f(E z)``:
``x[0] = m + A^+(y - A m)``; where ``A`` observes everything this is ``A^+ y``, and unobserved
pixels (a mask, a missing wedge) start at the prior's mean instead of mid-grey. ``start="pinv"`` is ``A^+ y`` (also used
for a nonlinear operator with ``"prior-mean"`` and for an untrained prior, whose mean image and
latent mean mean nothing).

Each iteration evaluates ``v`` and ``log p(v)`` together (one inverse and one forward pass of the
prior). The loop runs through :func:`iterate` with a
per-image stopping rule; with ``keep_best`` the returned image is, per image, the projected iterate
of lowest objective. An image whose projection leaves the plausible range (values beyond
``range_factor`` times the largest of 1, the start's and the prior mean image's, or a data fit
``1e4`` times the start's) is restarted once from the prior's mean image; if it leaves again,
:class:`SolverDiverged` names it. With ``clip_output`` (default) the returned image is clipped to
``start_range``, the data range: a projection onto a box, so for a truth inside the box every
pixel's error can only shrink (the range of an injective flow overshoots it at edges, e.g. in ×4
super-resolution). iFlow-L records each image's reduced chi-square ``||y - A x_hat||^2 / (m sigma^2)``
in ``Result.extras["misfit"]`` (about 1 for an estimate that fits its measurement at the noise level)
and warns (:class:`MisfitWarning`) above :data:`MISFIT_LIMIT`: such an estimate was decided by the
prior's term, not the data (e.g. a start far outside the prior's typical set, where a coupling-layer
latent density is enormous and steep, or a sigma much smaller than the noise).

References:
    Kothari, Khorashadizadeh, de Hoop, Dokmanić (2021), "Trumpets: Injective Flows for Inference
    and Inverse Problems" (Algorithm 1, eq. 7).

Example:
    >>> import torch
    >>> from invprob import solve
    >>> from invprob.operators import RandomMask
    >>> from invprob.priors import LinearGaussianPrior
    >>> prior = LinearGaussianPrior(torch.randn(16, 4, generator=torch.Generator().manual_seed(0)), data_shape=(1, 4, 4))
    >>> op = RandomMask((1, 4, 4), p=0.5, seed=1)
    >>> y = op(prior.sample(2, generator=torch.Generator().manual_seed(2)))
    >>> result = solve(op, prior, y, "iflow-l", sigma=0.01, iterations=50)
    >>> result.x_hat.shape
    torch.Size([2, 1, 4, 4])
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from pydantic import Field, field_validator

from ..operators.base import LinearOperator, Operator
from ..priors.base import Prior
from ._common import IterativeOptions, NoiseLevel, keep_inactive_rows, make_optimizer, squared_residual
from .base import Callback, MisfitWarning, Result, Solver, SolverDiverged, register, sigma_per_sample
from .driver import StoppingOptions, StoppingRule, Trace, iterate

FIT_GROWTH = 1e4
#: iFlow-L warns (:class:`MisfitWarning`) when an estimate's reduced chi-square ``||y - A x_hat||^2 / (m sigma^2)``
#: exceeds this: its residual is 10x the noise level, so the prior's term, not the data, decided the image.
MISFIT_LIMIT = 100.0


class IFlowOptions(IterativeOptions, StoppingOptions):
    """Options of ``"iflow"``."""

    lr: float = Field(1e-2, gt=0, allow_inf_nan=False, description="step size of the optimizer")
    tol: float = Field(
        1e-3, ge=0, allow_inf_nan=False,
        description="stop an image when its best objective improved by less than tol (relative) over `window` iterations "
        "(iFlow's default is coarser than the shared 1e-4: same SNR, fewer iterations); 0: never (run to the cap)",
    )
    window: int = Field(
        25, ge=1, le=1_000_000,
        description="iterations over which the relative improvement `tol` is measured (the stopping rule; "
        "iFlow's default is shorter than the shared 50)",
    )
    start: Literal["prior-mean", "pinv", "latent"] = Field(
        "latent",
        description="'latent' (default): f(z), z after `warm_steps` L-BFGS iterations on 1/2 ||y - A f(z)||^2 + w/2 ||z||^2 "
        "from the latent mean (w = sigma^2 when sigma is given, else 1), the latent posterior's mode; "
        "'prior-mean': m + A^+(y - A m), m the prior's mean image; 'pinv': A^+ y",
    )
    warm_steps: int = Field(30, ge=1, le=100_000, description="L-BFGS iterations of start='latent'")
    final_projection: bool = Field(True, description="project the last iterate onto the range (Algorithm 1, last line)")
    start_range: tuple[float, float] | None = Field(
        (-1.0, 1.0), description="clip the start to this range (the data range of invprob's datasets); None: no clipping"
    )
    clip_output: bool = Field(
        True,
        description="clip the returned estimate to start_range too (a projection onto the data range's box: it never moves "
        "an estimate away from a truth inside that range); False (or start_range=None): the estimate unclipped",
    )
    keep_best: bool = Field(
        True, description="return, per image, the projected iterate of lowest objective (False: the last one, as Algorithm 1)"
    )
    range_factor: float = Field(
        10.0, gt=1, allow_inf_nan=False,
        description="a projection with |values| above range_factor * max(1, |start|, |prior mean|) has left the plausible range: restart it once from the prior's mean, then fail",
    )

    @field_validator("start_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"start_range: expected (low, high) with low < high, got {value}")
        return value


class IFlowLOptions(IFlowOptions):
    """Options of ``"iflow-l"``: iFlow's plus the weight of the prior term."""

    window: int = Field(
        10, ge=1, le=1_000_000,
        description="iterations over which the relative improvement `tol` is measured (iFlow-L's default is shorter than "
        "iFlow's 25: the same SNR in fewer iterations, and on large holes it stays nearer the latent MAP start)",
    )
    lam: float = Field(1.0, ge=0, allow_inf_nan=False,
                       description="weight of -log p(v) relative to the posterior: w = lam * sigma^2 (1: the exact negative log posterior)")
    sigma: NoiseLevel = Field(
        None, description="noise std (one, or one per image); None: estimated per image from iFlow's residual, ||y - A v||^2 / (m - d)"
    )
    density: Literal["latent", "range"] = Field(
        "latent",
        description="the prior term's log p(v): 'latent' (default) the density of v's latent coordinates "
        "(Prior.project_with_latent_log_prob; TRUMPET: p_Z'(g^dagger(v)), the reference code's NLL); 'range': the density on "
        "the range, eq. 6 (Prior.project_with_log_prob), which adds -1/2 log det J^T J of the injective part",
    )


@register
class IFlow(Solver):
    """Algorithm 1 with ``L(v) = 1/2 ||y - A v||^2``: gradient descent with projections onto the range."""

    name = "iflow"
    Options = IFlowOptions
    needs_project = True
    description = "projected gradient descent on the prior's range (Algorithm 1, no likelihood)"
    references = "Kothari et al. (2021), Trumpets: Injective Flows for Inference and Inverse Problems"

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
        state = _State(self, op, prior, y, x_init)
        trace = state.run(self.options.iterations, callback, weight=None)
        return state.result(trace.history, {"iterations": trace.iterations, "stopped_by": trace.stopped_by})


@register
class IFlowL(IFlow):
    """Algorithm 1 with the prior term: ``L(v) = 1/2 ||y - A v||^2 - lam sigma^2 log p(v)`` (eq. 7)."""

    name = "iflow-l"
    Options = IFlowLOptions
    description = "projected gradient descent on the range with the prior's log-density (Algorithm 1, eq. 7)"

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
        return _flag_misfit(self.name, op, y, self._iterate(op, prior, y, x_init, callback))

    def _iterate(self, op: Operator, prior: Prior | None, y: torch.Tensor, x_init: torch.Tensor | None,
                 callback: Callback | None) -> Result:
        opts = self.options
        state = _State(self, op, prior, y, x_init)
        sigma = sigma_per_sample(opts.sigma, y)
        history: dict[str, list[float]] = {}
        used = 0
        source = "given"
        if sigma is None:
            source = "estimated"
            trace = state.run(max(opts.iterations // 2, 1), callback, weight=None)
            history, used = trace.history, trace.iterations
            sigma = state.estimate_sigma(prior)
            if trace.stopped_by == "callback" or used >= opts.iterations:
                return state.result(history, _extras(sigma, source, used, trace.stopped_by))
            state.reset_stopping()
        trace = state.run(opts.iterations - used, callback, weight=opts.lam * sigma.pow(2), offset=used)
        for key, values in trace.history.items():
            history.setdefault(key, []).extend(values)
        return state.result(history, _extras(sigma, source, used + trace.iterations, trace.stopped_by))


def _flag_misfit(name: str, op: Operator, y: torch.Tensor, result: Result) -> Result:
    """Record each image's reduced chi-square in ``extras["misfit"]``; warn for those above :data:`MISFIT_LIMIT`."""
    with torch.no_grad():
        sigma = torch.as_tensor(result.extras["sigma"], dtype=y.dtype, device=y.device).reshape(-1)
        misfit = squared_residual(op, result.x_hat, y) / (y[0].numel() * sigma.pow(2))
    result.extras["misfit"] = misfit
    bad = torch.nonzero(misfit > MISFIT_LIMIT).flatten().tolist()
    if bad:
        warnings.warn(
            f"{name}: the estimate of image(s) {bad} does not explain its measurement: ||y - A x_hat||^2 / (m sigma^2) "
            f"= {float(misfit[bad].max()):.3g} (about 1 for a fit at the noise level; warned above {MISFIT_LIMIT:g}). "
            "The prior's term outweighed the data: start='latent' (the default) starts on the prior's typical set; "
            "otherwise check sigma, or the prior cannot represent this measurement",
            MisfitWarning, stacklevel=4,
        )
    return result


def _extras(sigma: torch.Tensor, source: str, iterations: int, stopped_by: str) -> dict[str, object]:
    return {"sigma": sigma.detach(), "sigma_source": source, "iterations": iterations, "stopped_by": stopped_by}


class _State:
    """The iterate, its optimizer, the best projected iterate and the safety checks of one run."""

    def __init__(self, solver: IFlow, op: Operator, prior: Prior, y: torch.Tensor, x_init: torch.Tensor | None) -> None:
        self.opts, self.name, self.op, self.prior, self.y = solver.options, solver.name, op, prior, y
        with torch.no_grad():
            start = _start(op, prior, y, self.opts) if x_init is None else x_init
            if self.opts.start_range is not None:
                start = start.clamp(*self.opts.start_range)
        self.x = start.detach().clone().requires_grad_(True)
        self.safe = prior.mean_image().to(start.dtype) if prior.is_initialized else start.mean(0, keepdim=True)
        scale = max(1.0, float(start.abs().max()), float(self.safe.abs().max()))
        self.max_abs = self.opts.range_factor * scale
        self.last_v = start.detach()
        self.optimizer = make_optimizer(self.opts.optimizer, [self.x], self.opts.lr)
        self.best_v = torch.empty_like(start)
        self.best_loss = torch.full((y.shape[0],), torch.inf, dtype=y.dtype, device=y.device)
        self.last_fit = torch.full_like(self.best_loss, torch.inf)
        self.start_fit: torch.Tensor | None = None
        self.restarted = torch.zeros(y.shape[0], dtype=torch.bool, device=y.device)
        self.stopping = StoppingRule.from_options(self.opts)
        self.weight: torch.Tensor | None = None

    def reset_stopping(self) -> None:
        self.stopping = StoppingRule.from_options(self.opts)
        self.best_loss.fill_(torch.inf)

    def objective(self, weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``v = P(x)``, the per-image objective ``1/2 ||y - A v||^2 - w log p(v)`` and the data fit."""
        if weight is None:
            v = self.prior.project(self.x)
            fit = squared_residual(self.op, v, self.y)
            return v, 0.5 * fit, fit
        v, log_p = project_with_density(self.prior, self.x, self.opts.density)
        fit = squared_residual(self.op, v, self.y)
        return v, 0.5 * fit - weight * log_p, fit

    def run(self, iterations: int, callback: Callback | None, weight: torch.Tensor | None, offset: int = 0) -> Trace:
        """Iterate with prior weight ``weight`` (None: iFlow) through :func:`iterate`."""
        self.weight = weight

        def step(it: int, active: torch.Tensor) -> dict[str, torch.Tensor]:
            v, loss, fit = self.objective(weight)
            self._guard(v, fit, it + offset)
            self._keep(v, loss)
            self.last_v = v.detach()
            (grad,) = torch.autograd.grad(loss.sum(), self.x)
            self.x.grad = grad * active.to(grad.device, grad.dtype).view(-1, *[1] * (grad.dim() - 1))
            before = self.x.detach().clone()
            self.optimizer.step()
            keep_inactive_rows(self.x, before, active)
            self.last_fit = fit.detach()
            return {"loss": loss.detach(), "data_fit": fit.detach()}

        return iterate(self.name, iterations, step, batch=self.y.shape[0], estimate=lambda: self.last_v,
                       callback=callback, progress=self.opts.progress, stopping=self.stopping)

    def _guard(self, v: torch.Tensor, fit: torch.Tensor, iteration: int) -> None:
        """Restart (once) or fail for images whose projection left the plausible range."""
        with torch.no_grad():
            fit = fit.detach()
            if self.start_fit is None:
                self.start_fit = fit.clone()
            peak = v.detach().flatten(1).abs().amax(1)
            bad = ~torch.isfinite(peak) | (peak > self.max_abs) | ~torch.isfinite(fit)
            bad |= fit > FIT_GROWTH * self.start_fit.clamp_min(1e-12)
            if not bool(bad.any()):
                return
            twice = bad & self.restarted
            if bool(twice.any()):
                images = torch.nonzero(twice).flatten().tolist()
                raise SolverDiverged(
                    f"{self.name}: the projection of image(s) {images} left the prior's plausible range at iteration "
                    f"{iteration} (|values| up to {float(peak[twice].max()):.3g} > {self.max_abs:.3g}, or a data fit "
                    f"{FIT_GROWTH:g}x the start's), also after a restart from the prior's mean image; the prior cannot "
                    "represent this measurement: try a smaller step size (lr), another start (x_init) or a prior trained on such images"
                )
            self.x[bad] = self.safe.expand(int(bad.sum()), *self.safe.shape[1:])
            _reset_rows(self.optimizer, self.x, bad)
            self.restarted |= bad
            self.start_fit[bad] = torch.inf

    def _keep(self, v: torch.Tensor, loss: torch.Tensor) -> None:
        with torch.no_grad():
            loss = torch.where(torch.isfinite(loss), loss.detach(), torch.inf)
            better = loss < self.best_loss
            self.best_v[better], self.best_loss[better] = v.detach()[better], loss[better]

    def estimate_sigma(self, prior: Prior) -> torch.Tensor:
        """``sigma_hat = sqrt(||y - A v||^2 / (m - d))`` per image from the current (range-constrained) fit."""
        m = self.y[0].numel()
        dof = m - prior.latent_dim if m > prior.latent_dim else m
        fit = torch.where(torch.isfinite(self.last_fit), self.last_fit, self.best_loss * 2)
        return (fit.clamp_min(1e-12) / dof).sqrt().to(self.y.dtype)

    def result(self, history: dict[str, list[float]], extras: dict[str, object]) -> Result:
        opts = self.opts
        with torch.no_grad():
            if not opts.final_projection:
                x_hat = self.x.detach()
            elif opts.keep_best:
                v, loss, _ = self.objective(self.weight)
                self._keep(v, loss)
                x_hat = self.best_v
            else:
                x_hat = self.prior.project(self.x).detach()
            if opts.clip_output and opts.start_range is not None:
                x_hat = x_hat.clamp(*opts.start_range)
        extras["restarted"] = self.restarted.clone()
        return Result(x_hat=x_hat, method=self.name, options=opts, history=history, extras=extras)


def project_with_density(prior: Prior, x: torch.Tensor, density: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``v = P(x)`` and iFlow-L's prior term ``log p(v)``: the density of ``v``'s latent coordinates
    (``density="latent"``) or the density on the range of eq. 6 (``"range"``).

    Example:
        >>> from invprob.priors import LinearGaussianPrior
        >>> prior = LinearGaussianPrior(data_shape=(1, 4, 4), latent_dim=3)
        >>> v, log_p = project_with_density(prior, torch.zeros(2, 1, 4, 4), "latent")
        >>> tuple(v.shape), tuple(log_p.shape)
        ((2, 1, 4, 4), (2,))
    """
    if density == "range":
        return prior.project_with_log_prob(x)
    return prior.project_with_latent_log_prob(x)


def _start(op: Operator, prior: Prior, y: torch.Tensor, opts: IFlowOptions) -> torch.Tensor:
    """``A^+ y``, ``m + A^+(y - A m)`` with ``m`` the prior's mean image, or the latent posterior's mode."""
    if opts.start == "latent" and prior.is_initialized:
        return _latent_start(op, prior, y, opts.warm_steps, getattr(opts, "sigma", None))
    if opts.start == "pinv" or not isinstance(op, LinearOperator) or not prior.is_initialized:
        return op.pinv(y)
    mean = prior.mean_image().to(y.dtype).expand(y.shape[0], *prior.data_shape)
    return mean + op.pinv(y - op(mean))


def _latent_start(op: Operator, prior: Prior, y: torch.Tensor, steps: int, sigma: object) -> torch.Tensor:
    """``f(z)``, ``z`` after ``steps`` L-BFGS iterations of :mod:`csgm` with ``lam = 1`` from the latent mean.

    Each image is solved on its own: L-BFGS's line search would otherwise couple a batch's images.
    """
    from .base import solve

    sigmas = sigma_per_sample(sigma, y)
    starts = []
    with torch.enable_grad():
        for b in range(y.shape[0]):
            noise = None if sigmas is None else sigmas[b : b + 1]
            result = solve(op, prior, y[b : b + 1], "csgm", lam=1.0, sigma=noise, restarts=1, start="mean",
                           optimizer="lbfgs", iterations=steps, tol=0.0, progress=False)
            starts.append(result.x_hat.detach())
    return torch.cat(starts)


def _reset_rows(optimizer: torch.optim.Optimizer, x: torch.Tensor, rows: torch.Tensor) -> None:
    """Zero the optimizer's running moments of the restarted images."""
    state = optimizer.state.get(x, {})
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.shape == x.shape:
            value[rows] = 0
