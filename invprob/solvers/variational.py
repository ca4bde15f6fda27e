"""Variational posterior samplers: composed-flow SVI, amortised VI (AVI) and Ambient VI.

All three fit a flow ``q`` to the posterior by minimising, over the flow's parameters,

    L(q) = E_q[ beta * log q(z) - log p_Z(z) + ||A f(z) - y||^2 / (2 sigma^2) ],

the objective of paper 003 eq. 4 (Gaussian smoothing with ``sigma``; Algorithm 1 of its app. C.1)
with the entropy weight ``beta`` of paper 000 eq. 11 (that equation is ``sigma^2`` times this
one). With ``beta = 1``, ``L = KL(q || p(z | y)) - log p(y)``, so the minimiser is the posterior;
``beta < 1`` narrows the samples, ``beta = 0`` collapses them onto a MAP point.

- ``"svi"``: ``z = u(eps)`` with a pre-generator ``u`` on the prior's latent space and ``x = f(z)``
  (paper 003 sec. 4, Fig. 2; paper 000 sec. 3.2, eq. 9-11). Works with bijective and injective
  priors alike: only ``decode`` and ``latent_log_prob`` are used.
- ``"avi"``: a conditional pre-generator ``q(z | y)`` trained once over measurements simulated
  from the prior (or from images given by the user) by minimising ``E_y L(q(. | y))`` (paper 003
  eq. 2, sec. 6.4); then sampling for a new ``y`` is a single forward pass.
  See :func:`train_amortized` and :class:`AmortizedPosterior`.
- ``"ambient-vi"``: the flow lives directly in image space and the prior enters through
  ``prior.log_prob`` (the papers' baseline, paper 003 sec. 6).
"""

from __future__ import annotations

import math
import os
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field

from .._checks import check_batch, check_finite, to_tensor
from ..operators.base import Operator
from ..priors.base import Prior
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ._posterior import (
    LogDensity,
    data_fit,
    image_log_posterior,
    latent_log_posterior,
    require_image_density,
    require_latent_density,
    summarize,
)
from .base import (
    Callback,
    Result,
    Solver,
    SolverOptions,
    check_loss,
    parse_options,
    register,
)
from .pregenerator import PreGenerator

_FORMAT = "invprob.AmortizedPosterior"
_DIVERGED_HINT = "try a smaller lr or a larger sigma"


class FlowOptions(SolverOptions):
    """Options shared by the variational samplers (the flow, its optimiser and the objective)."""

    sigma: float = Field(
        gt=0, allow_inf_nan=False, description="noise std of the Gaussian likelihood (smoothing, paper 003 eq. 4)"
    )
    beta: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="entropy weight (paper 000 eq. 11); 1 gives the plain KL"
    )
    steps: int = Field(1000, ge=1, description="optimisation steps")
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False, description="Adam learning rate")
    batch_size: int = Field(32, ge=1, description="Monte Carlo samples of the loss per step")
    lr_schedule: Literal["cosine", "constant"] = Field("cosine", description="cosine: decay lr to lr/100 over the run")
    n_layers: int = Field(4, ge=1, description="flow steps (actnorm + LU linear + affine coupling)")
    hidden: int = Field(64, ge=1, description="hidden width of the coupling MLPs")


class VIOptions(FlowOptions):
    """Options of ``"svi"`` and ``"ambient-vi"``."""

    n_samples: int = Field(64, ge=1, description="posterior samples returned per measurement")


class FlowPosterior:
    """A trained flow and the map to images: ``x = decode(u(eps))``, ``eps ~ N(0, I)``.

    ``decode`` is the prior's generator (``"svi"``) or a reshape (``"ambient-vi"``). Further samples
    cost one forward pass: ``sample(n, generator)`` returns ``(n, *data_shape)``.
    """

    def __init__(self, flow: PreGenerator, decode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.flow = flow
        self.decode = decode

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images ``decode(u(eps))``, ``eps ~ N(0, I)`` drawn from ``generator``."""
        return self.decode(self.flow.sample(n, generator=generator)[0])


def fit_flow(
    posterior: FlowPosterior,
    log_density: LogDensity,
    opts: FlowOptions,
    *,
    method: str,
    generator: torch.Generator | None,
    callback: Callback | None,
) -> dict[str, list[float]]:
    """Minimise ``E_q[beta log q - log p]`` (paper 003 Algorithm 1) by Adam with reparametrised samples.

    ``log_density(z)`` returns the unnormalised log-posterior and its data-fit part per row.
    Returns the per-step ``loss`` (``KL(q || posterior) - log p(y)`` when ``beta = 1``) and ``data_fit``.
    ``callback(step, x, info)`` gets the step's Monte Carlo batch of images.
    Raises :class:`SolverDiverged` when the loss becomes non-finite.
    """
    flow = posterior.flow
    optimizer, scheduler = _optimizer(flow, opts)
    history: dict[str, list[float]] = {"loss": [], "data_fit": []}
    for step in range(opts.steps):
        z, log_q = flow.sample(opts.batch_size, generator=generator)
        log_p, fit = log_density(z)
        loss = (opts.beta * log_q - log_p).mean()
        check_loss(loss, step, method, _DIVERGED_HINT)
        _adam_step(optimizer, scheduler, loss)
        history["loss"].append(float(loss.detach()))
        history["data_fit"].append(float(fit.detach().mean()))
        if callback is not None:
            with torch.no_grad():
                x = posterior.decode(z.detach())
            callback(step, x, {"loss": history["loss"][-1], "data_fit": history["data_fit"][-1]})
    flow.eval()
    return history


def _optimizer(flow: torch.nn.Module, opts: FlowOptions) -> tuple[torch.optim.Optimizer, Any]:
    optimizer = torch.optim.Adam(flow.parameters(), lr=opts.lr)
    if opts.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=opts.steps, eta_min=opts.lr / 100)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return optimizer, scheduler


def _adam_step(optimizer: torch.optim.Optimizer, scheduler: Any, loss: torch.Tensor) -> None:
    """One optimiser step on the flow only: gradients are taken with respect to the optimiser's
    parameters, so none accumulate on the (fixed) prior's parameters."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad
    optimizer.step()
    scheduler.step()


def _unflatten(shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(N, prod(shape)) -> (N, *shape)``: the "generator" of Ambient VI."""
    return lambda v: v.reshape(v.shape[0], *shape)


def _mean_history(histories: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Average per-measurement histories step by step."""
    return {k: [sum(v) / len(v) for v in zip(*(h[k] for h in histories), strict=True)] for k in histories[0]}


def _new_flow(dim: int, opts: FlowOptions, like: Prior, generator: torch.Generator | None) -> PreGenerator:
    flow = PreGenerator(dim, n_layers=opts.n_layers, hidden=opts.hidden, generator=generator)
    return flow.to(device=like.device, dtype=like.dtype)


def _vi_result(
    name: str,
    opts: VIOptions,
    posteriors: list[FlowPosterior],
    histories: list[dict[str, list[float]]],
    generator: torch.Generator | None,
) -> Result:
    samples = torch.stack([p.sample(opts.n_samples, generator) for p in posteriors])
    mean, std = summarize(samples)
    return Result(
        x_hat=mean,
        method=name,
        options=opts,
        history=_mean_history(histories),
        samples=samples,
        mean=mean,
        std=std,
        extras={"posterior": posteriors},
    )


class _PerMeasurementVI(Solver):
    """The ``run`` shared by ``"svi"`` and ``"ambient-vi"``: one flow fitted to each measurement in turn.

    Subclasses say where the flow lives (:meth:`new_posterior`), which log-posterior it targets
    (:meth:`log_posterior`) and which density the prior must provide (:meth:`require_density`).
    """

    Options = VIOptions

    @abstractmethod
    def new_posterior(self, prior: Prior, generator: torch.Generator | None) -> FlowPosterior:
        """A fresh flow (initialised from ``generator``) and its map to images."""

    @abstractmethod
    def log_posterior(self, prior: Prior, op: Operator, y: torch.Tensor, sigma: float) -> LogDensity:
        """The unnormalised log-posterior the flow is fitted to, for one measurement ``y`` ``(1, ...)``."""

    @abstractmethod
    def require_density(self, prior: Prior) -> None:
        """Raise ``TypeError`` unless the prior provides the density the target needs."""

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
        opts: VIOptions = self.options
        self.require_density(prior)
        posteriors, histories = [], []
        for i in range(y.shape[0]):
            posterior = self.new_posterior(prior, generator)
            target = self.log_posterior(prior, op, y[i : i + 1], opts.sigma)
            history = fit_flow(posterior, target, opts, method=self.name, generator=generator, callback=callback)
            histories.append(history)
            posteriors.append(posterior)
        return _vi_result(self.name, opts, posteriors, histories, generator)


@register
class SVI(_PerMeasurementVI):
    """Composed-flow stochastic VI: a pre-generator on the latent space, one per measurement.

    ``extras["posterior"]`` holds one :class:`FlowPosterior` per measurement for further samples.
    ``x_init`` is not used (the pre-generator starts as the identity, i.e. at the prior).
    """

    name = "svi"
    kind = "posterior"
    description = "composed-flow VI: pre-generator on the latent space (paper 003 eq. 4, paper 000 eq. 11)"

    def new_posterior(self, prior: Prior, generator: torch.Generator | None) -> FlowPosterior:
        return FlowPosterior(_new_flow(prior.latent_dim, self.options, prior, generator), prior.decode)

    def log_posterior(self, prior: Prior, op: Operator, y: torch.Tensor, sigma: float) -> LogDensity:
        return latent_log_posterior(prior, op, y, sigma)

    def require_density(self, prior: Prior) -> None:
        require_latent_density(prior, self.name)


@register
class AmbientVI(_PerMeasurementVI):
    """Ambient VI: the same objective with the flow in image space and ``prior.log_prob`` as the prior.

    The flow starts at ``N(0, I)`` in image space. ``x_init`` is not used.
    """

    name = "ambient-vi"
    kind = "posterior"
    description = "VI with a flow in image space and the prior's log_prob (paper 003 baseline)"

    def new_posterior(self, prior: Prior, generator: torch.Generator | None) -> FlowPosterior:
        return FlowPosterior(_new_flow(prior.data_dim, self.options, prior, generator), _unflatten(prior.data_shape))

    def log_posterior(self, prior: Prior, op: Operator, y: torch.Tensor, sigma: float) -> LogDensity:
        return image_log_posterior(prior, op, y, sigma)

    def require_density(self, prior: Prior) -> None:
        require_image_density(prior, self.name)


class AmortizedTrainingOptions(FlowOptions):
    """Options of :func:`train_amortized` (defaults suit small latent spaces)."""

    steps: int = Field(2000, ge=1, description="optimisation steps")
    batch_size: int = Field(64, ge=1, description="simulated measurements per step")
    context_dim: int = Field(32, ge=1, description="size of the measurement embedding fed to the flow")
    n_calibration: int = Field(1024, ge=2, description="simulated measurements used to standardise y")


class AmortizedPosterior(torch.nn.Module):
    """A conditional pre-generator ``q(z | y)`` for one operator shape, noise level and latent size.

    Built by :func:`train_amortized`; used by ``solve(op, prior, y, method="avi", amortized=...)``.
    The measurement is standardised entry-wise (statistics of simulated training measurements)
    before the flow's embedding network reads it. :meth:`save` / :meth:`load` use safetensors + JSON.
    """

    def __init__(
        self,
        *,
        latent_dim: int,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        sigma: float,
        beta: float,
        prior_class: str,
        n_layers: int = 4,
        hidden: int = 64,
        context_dim: int = 32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.sigma, self.beta, self.prior_class = float(sigma), float(beta), prior_class
        m = math.prod(self.out_shape)
        self.flow = PreGenerator(
            latent_dim, n_layers=n_layers, hidden=hidden, context_in=m, context_dim=context_dim, generator=generator
        )
        self.register_buffer("y_shift", torch.zeros(m))
        self.register_buffer("y_scale", torch.ones(m))
        self.history: dict[str, list[float]] = {}

    @property
    def latent_dim(self) -> int:
        return self.flow.dim

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-serialisable)."""
        flow = self.flow.config()
        return {
            "latent_dim": flow["dim"],
            "in_shape": list(self.in_shape),
            "out_shape": list(self.out_shape),
            "sigma": self.sigma,
            "beta": self.beta,
            "prior_class": self.prior_class,
            "n_layers": flow["n_layers"],
            "hidden": flow["hidden"],
            "context_dim": flow["context_dim"],
        }

    def context(self, y: torch.Tensor) -> torch.Tensor:
        """Standardised flattened measurements, shape ``(B, m)``."""
        return (y.flatten(1) - self.y_shift) / self.y_scale

    def calibrate(self, y: torch.Tensor) -> None:
        """Set the standardisation from a batch of simulated measurements ``(N, *out_shape)``."""
        flat = y.detach().flatten(1)
        self.y_shift.copy_(flat.mean(0))
        self.y_scale.copy_(flat.std(0).clamp_min(1e-6 * float(flat.std().clamp_min(1e-12))))

    def sample_latent(
        self, y: torch.Tensor, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` latents per measurement: ``z`` of shape ``(B, n, d)`` and ``log q(z | y)`` ``(B, n)``."""
        context = self.context(y).repeat_interleave(n, dim=0)
        z, log_q = self.flow.sample(context.shape[0], context, generator)
        return z.reshape(y.shape[0], n, -1), log_q.reshape(y.shape[0], n)

    def check_compatible(self, op: Operator, prior: Prior) -> None:
        """Raise ``ValueError`` if ``op`` or ``prior`` differ in shape from those used in training."""
        if tuple(op.in_shape) != self.in_shape or tuple(op.out_shape) != self.out_shape:
            raise ValueError(
                f"amortized: trained for an operator {self.in_shape} -> {self.out_shape}, "
                f"got {tuple(op.in_shape)} -> {tuple(op.out_shape)}; train a new one with train_amortized"
            )
        if prior.latent_dim != self.latent_dim:
            raise ValueError(
                f"amortized: trained for a prior with latent_dim {self.latent_dim}, got {prior.latent_dim}"
            )

    def save(self, path: str | os.PathLike) -> None:
        """Write weights (safetensors) and configuration (JSON) to the directory ``path``."""
        config = {"format": _FORMAT, "config": self.config(), "history": self.history}
        save_checkpoint(path, dict(self.state_dict()), config)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> AmortizedPosterior:
        """Read a directory written by :meth:`save`; raise :class:`CheckpointError` if it is not one."""
        tensors, record = load_checkpoint(path)
        if record.get("format") != _FORMAT:
            raise CheckpointError(f"checkpoint {path}: not an amortized posterior (format {record.get('format')!r})")
        try:
            model = cls(**record["config"])
            model.load_state_dict(tensors)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint {path}: weights do not match the configuration ({err})") from None
        model.history = record.get("history", {})
        return model.to(map_location)


def train_amortized(
    op: Operator,
    prior: Prior,
    *,
    data: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    **options: Any,
) -> AmortizedPosterior:
    """Train a conditional pre-generator ``q(z | y)`` for ``op`` (paper 003 eq. 2 with the loss of eq. 4).

    Each step draws images ``x`` (from ``prior.sample`` or, if given, rows of ``data`` of shape
    ``(N, *prior.data_shape)``), simulates ``y = A x + sigma * noise``, draws one ``z ~ q(. | y)``
    per measurement and takes an Adam step on the mean of
    ``beta * log q(z | y) - log p_Z(z) + ||A f(z) - y||^2 / (2 sigma^2)`` -- an estimate of
    ``E_y KL(q(. | y) || p(. | y))`` up to a constant when ``beta = 1``.

    ``options`` are those of :class:`AmortizedTrainingOptions` (``sigma`` is required). The returned
    model's ``history`` holds the loss per step.
    """
    opts = parse_options(AmortizedTrainingOptions, options, "train_amortized")
    if not isinstance(op, Operator) or not isinstance(prior, Prior):
        raise TypeError("train_amortized: expected an invprob Operator and an invprob Prior")
    if tuple(op.in_shape) != tuple(prior.data_shape):
        raise ValueError(f"op: in_shape {op.in_shape} does not match the prior's data_shape {prior.data_shape}")
    require_latent_density(prior, "avi")
    images = None if data is None else _check_data(data, prior)
    model = AmortizedPosterior(
        latent_dim=prior.latent_dim,
        in_shape=op.in_shape,
        out_shape=op.out_shape,
        sigma=opts.sigma,
        beta=opts.beta,
        prior_class=type(prior).__name__,
        n_layers=opts.n_layers,
        hidden=opts.hidden,
        context_dim=opts.context_dim,
        generator=generator,
    ).to(device=prior.device, dtype=prior.dtype)
    with torch.no_grad():
        model.calibrate(_simulate(op, prior, images, opts.n_calibration, opts.sigma, generator))
    model.history = _fit_amortized(model, op, prior, images, opts, generator, callback)
    model.eval()
    return model


def _check_data(data: torch.Tensor, prior: Prior) -> torch.Tensor:
    images = check_finite(check_batch(to_tensor(data, "data"), prior.data_shape, "data"), "data")
    return images.to(device=prior.device, dtype=prior.dtype)


def _simulate(
    op: Operator, prior: Prior, images: torch.Tensor | None, n: int, sigma: float, generator: torch.Generator | None
) -> torch.Tensor:
    """``y = A x + sigma * noise`` for ``n`` images from the prior or drawn (with replacement) from ``images``."""
    if images is None:
        x = prior.sample(n, generator=generator)
    else:
        x = images[torch.randint(images.shape[0], (n,), generator=generator).to(images.device)]
    y = op(x)
    return y + sigma * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)


def _fit_amortized(
    model: AmortizedPosterior,
    op: Operator,
    prior: Prior,
    images: torch.Tensor | None,
    opts: AmortizedTrainingOptions,
    generator: torch.Generator | None,
    callback: Callback | None,
) -> dict[str, list[float]]:
    optimizer, scheduler = _optimizer(model, opts)
    history: dict[str, list[float]] = {"loss": [], "data_fit": []}
    for step in range(opts.steps):
        with torch.no_grad():
            y = _simulate(op, prior, images, opts.batch_size, opts.sigma, generator)
        z, log_q = model.flow.sample(opts.batch_size, model.context(y), generator)
        x = prior.decode(z)
        fit = data_fit(op, x, y, opts.sigma)
        loss = (opts.beta * log_q - prior.latent_log_prob(z) + fit).mean()
        check_loss(loss, step, "avi", _DIVERGED_HINT)
        _adam_step(optimizer, scheduler, loss)
        history["loss"].append(float(loss.detach()))
        history["data_fit"].append(float(fit.detach().mean()))
        if callback is not None:
            callback(step, x.detach(), {"loss": history["loss"][-1], "data_fit": history["data_fit"][-1]})
    return history


class AVIOptions(SolverOptions):
    """Options of ``"avi"``: the trained model and the number of samples."""

    amortized: AmortizedPosterior = Field(description="a model from train_amortized or AmortizedPosterior.load")
    n_samples: int = Field(64, ge=1, description="posterior samples returned per measurement")


@register
class AVI(Solver):
    """Amortised VI: one forward pass of a trained conditional pre-generator per batch of samples.

    The noise level is the one the model was trained with (``amortized.sigma``). ``x_init`` is not used.
    """

    name = "avi"
    kind = "posterior"
    Options = AVIOptions
    description = "amortised composed-flow VI (paper 003 eq. 2, sec. 6.4); train with train_amortized"

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
        opts: AVIOptions = self.options
        model = opts.amortized
        model.check_compatible(op, prior)
        with torch.no_grad():
            z, _ = model.sample_latent(y, opts.n_samples, generator)
            samples = prior.decode(z.flatten(0, 1)).reshape(y.shape[0], opts.n_samples, *prior.data_shape)
        mean, std = summarize(samples)
        return Result(
            x_hat=mean, method=self.name, options=opts, samples=samples, mean=mean, std=std, extras={"amortized": model}
        )
