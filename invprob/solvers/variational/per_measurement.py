"""Per-measurement variational inference: ``"svi"`` (composed flow) and ``"ambient-vi"``.

For each measurement ``y_b`` a flow ``q_b`` is fitted by minimising (see
:mod:`invprob.solvers.variational.fitting`)

    L(q_b) = E_{q_b}[ beta * log q_b(v) - log p(v) + ||A x(v) - y_b||^2 / (2 sigma_b^2) ],

- ``"svi"``: ``v = z = u_b(eps)``, a pre-generator ``u_b`` on the prior's latent space, and
  ``x = f(z)`` with the prior's generator ``f``; ``log p = log p_Z``. Works with bijective and
  injective priors alike: only ``decode`` and ``latent_log_prob`` are used.
- ``"ambient-vi"``: the flow lives in image space, ``x = v``, and the prior enters through
  ``prior.log_prob`` (the baseline the composed flow is compared with).

The flows of a batch are fitted together, one Adam step for all of them per iteration and one
prior pass over all their Monte Carlo samples; each flow only sees its own measurement's loss, so
each is fitted as if alone.

Stopping rule (``tol > 0``, off by default; :class:`~invprob.solvers.variational.PlateauRule`):
an image whose loss, averaged over windows of ``window`` steps, fell by at most ``tol`` nats over
the last window is frozen and costs no more work; ``steps`` stays the cap. The loss is a Monte
Carlo estimate, so a plateau is declared once the improvement per window is below the noise of
the window means as well. Measured on a 4-dimensional linear-Gaussian posterior (lr 1e-2, 600
steps, the test suite's problem): ``tol=0.01, window=100`` stopped after 300 steps and moved the
posterior mean by less than 5 % of its RMS size and the covariance by less than 15 % (the
tolerance the tests check); the learning rate of the cosine schedule is then not yet decayed, so
the default runs every step.

References: Whang, Lei, Dimakis 2021, "Composing Normalizing Flows for Inverse Problems"
(sec. 4, Fig. 2; Ambient VI: sec. 6); Kothari, Khorashadizadeh, de Hoop, Dokmanić 2021,
"Trumpets: Injective Flows for Inference and Inverse Problems" (sec. 3.2, eq. 9-11).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from ...operators.base import Operator
from ...priors.base import Prior
from .._posterior import (
    check_run,
    image_log_joint,
    latent_log_joint,
    noise_levels,
    require_image_density,
    require_latent_density,
    summarize,
)
from ..base import Callback, Result, Solver, register
from ..pregenerator import PreGenerator
from .fitting import FlowOptions, PlateauRule, fit_variational, new_flow

LogJoint = Callable[
    [Prior, Operator, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
]


class VIOptions(FlowOptions):
    """Options of ``"svi"`` and ``"ambient-vi"``."""

    n_samples: int = Field(64, ge=1, description="posterior samples returned per measurement")
    tol: float = Field(
        0.0, ge=0, allow_inf_nan=False,
        description="stopping rule: freeze an image when its loss, averaged over `window` steps, fell by at most "
        "tol nats over the last window (e.g. 0.01; 0: run all `steps`, the cap either way)",
    )
    window: int = Field(100, ge=1, le=1_000_000, description="steps per loss average of the stopping rule")
    start: Literal["prior", "x_init"] = Field(
        "prior", description="'prior': the flow starts as N(0, s^2 I) on its coordinates; 'x_init': as N(c, s^2 I), c "
        "the coordinates of x_init (svi: the prior's encoding of it, e.g. a MAP estimate; ambient-vi: its pixels)",
    )
    start_scale: float = Field(
        1.0, gt=0, allow_inf_nan=False,
        description="s, the flow's initial standard deviation per coordinate (the first layer's scale); below 1 with "
        "start='x_init', the fit begins concentrated at the start instead of spread over the prior",
    )


class FlowPosterior:
    """A fitted flow and the map to images: ``x = decode(c + u(eps))``, ``eps ~ N(0, I)``.

    ``decode`` is the prior's generator (``"svi"``) or a reshape (``"ambient-vi"``); ``centre`` ``c``
    is a fixed shift of the flow's output (zero by default; the warm start ``start="x_init"``). A
    shift has unit Jacobian, so ``log q`` of ``c + u(eps)`` is the flow's ``log q`` of ``u(eps)``.
    Further samples cost one forward pass: ``sample(n, generator)`` returns ``(n, *data_shape)``.

    Example:
        >>> import torch
        >>> from invprob.solvers.pregenerator import PreGenerator
        >>> posterior = FlowPosterior(PreGenerator(4), lambda z: z.reshape(-1, 1, 2, 2))
        >>> tuple(posterior.sample(3, torch.Generator().manual_seed(0)).shape)
        (3, 1, 2, 2)
    """

    def __init__(self, flow: PreGenerator, decode: Callable[[torch.Tensor], torch.Tensor],
                 centre: torch.Tensor | None = None) -> None:
        self.flow = flow
        self.decode = decode
        self.centre = centre

    def draw(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c + u(eps), log q)`` of ``n`` draws ``eps ~ N(0, I)`` (differentiable in the flow's parameters)."""
        z, log_q = self.flow.sample(n, generator=generator)
        return (z if self.centre is None else z + self.centre), log_q

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images ``decode(c + u(eps))``, ``eps ~ N(0, I)`` drawn from ``generator``."""
        return self.decode(self.draw(n, generator)[0])


def _unflatten(shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(N, prod(shape)) -> (N, *shape)``: the "generator" of Ambient VI."""
    return lambda v: v.reshape(v.shape[0], *shape)


class _PerMeasurementVI(Solver):
    """The ``run`` shared by ``"svi"`` and ``"ambient-vi"``: one flow per measurement, fitted together.

    Subclasses say where the flow lives (:meth:`new_posterior`), which log-posterior it targets
    (``log_joint``) and which density the prior must provide (:meth:`require_density`).
    """

    Options = VIOptions
    kind = "posterior"
    log_joint: LogJoint

    @abstractmethod
    def new_posterior(self, prior: Prior, generator: torch.Generator | None,
                      centre: torch.Tensor | None = None) -> FlowPosterior:
        """A fresh flow (initialised from ``generator``) shifted by ``centre``, and its map to images."""

    @abstractmethod
    def coordinates(self, prior: Prior, x: torch.Tensor) -> torch.Tensor:
        """The flow's coordinates ``(B, dim)`` of images ``x`` ``(B, *data_shape)`` (the warm start's centres)."""

    @abstractmethod
    def require_density(self, prior: Prior) -> None:
        """Raise ``TypeError`` unless the prior provides the density the target needs."""

    def _centres(self, prior: Prior, x_init: torch.Tensor | None, batch: int) -> list[torch.Tensor | None]:
        """One centre per measurement: None for ``start="prior"``, else the coordinates of ``x_init``."""
        if self.options.start == "prior":
            return [None] * batch
        expected = (batch, *prior.data_shape)
        if x_init is None or tuple(x_init.shape) != expected:
            got = None if x_init is None else tuple(x_init.shape)
            raise ValueError(f"x_init: start='x_init' needs one image per measurement, shape {expected}, got {got}")
        with torch.no_grad():
            centres = self.coordinates(prior, x_init.detach().to(device=prior.device, dtype=prior.dtype))
        bad = [b for b in range(batch) if not bool(torch.isfinite(centres[b]).all())]
        if bad:
            raise ValueError(f"x_init: the coordinates of image(s) {bad} are not finite (the prior cannot encode "
                             "them); give a start inside the data range, or start='prior'")
        return list(centres)

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
        batch = check_run(y, generator, callback)
        sigma = noise_levels(opts.sigma, y)
        self.require_density(prior)
        y = y.detach()
        centres = self._centres(prior, x_init, batch)
        posteriors = [self.new_posterior(prior, generator, centre) for centre in centres]
        for posterior in posteriors:
            posterior.flow.scale_start(opts.start_scale)
        n, log_joint = opts.batch_size, type(self).log_joint
        state = {
            "loss": torch.zeros(batch, dtype=torch.float64),
            "data_fit": torch.zeros(batch, dtype=torch.float64),
            "x": torch.zeros(batch, *prior.data_shape, dtype=prior.dtype, device=prior.device),
            "steps": torch.zeros(batch, dtype=torch.long),
        }

        def objective(active: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            idx = torch.nonzero(active).flatten()
            draws = [posteriors[i].draw(n, generator=generator) for i in idx.tolist()]
            z = torch.cat([d[0] for d in draws])
            log_q = torch.cat([d[1] for d in draws])
            rows = idx.to(y.device).repeat_interleave(n)
            x, log_p, fit = log_joint(prior, op, z, y[rows], sigma[rows])
            per_image = (opts.beta * log_q - log_p).view(len(idx), n).mean(1)
            state["loss"][idx] = per_image.detach().double().cpu()
            state["data_fit"][idx] = fit.detach().view(len(idx), n).mean(1).double().cpu()
            state["x"][idx.to(y.device)] = x.detach().view(len(idx), n, *prior.data_shape).mean(1)
            state["steps"][idx] += 1
            return per_image.sum(), {"loss": state["loss"].clone(), "data_fit": state["data_fit"].clone()}

        rule = PlateauRule(opts.tol, opts.window) if opts.tol > 0 else None
        trace = fit_variational(
            [p for posterior in posteriors for p in posterior.flow.parameters()], objective, opts,
            method=self.name, batch=batch, estimate=lambda: state["x"], callback=callback, stopping=rule,
        )
        for posterior in posteriors:
            posterior.flow.eval()
        samples = torch.stack([p.sample(opts.n_samples, generator) for p in posteriors])
        mean, std = summarize(samples)
        extras = {
            "posterior": posteriors,
            "steps": state["steps"],
            "converged": trace.converged,
            "stopped_by": trace.stopped_by,
        }
        return Result(
            x_hat=mean, method=self.name, options=opts, history=trace.history,
            samples=samples, mean=mean, std=std, extras=extras,
        )


@register
class SVI(_PerMeasurementVI):
    """Composed-flow stochastic VI: a pre-generator on the latent space, one per measurement.

    ``extras["posterior"]`` holds one :class:`FlowPosterior` per measurement for further samples;
    ``extras["steps"]`` the steps each image was fitted for, ``extras["converged"]`` which images
    met the stopping rule. The pre-generator starts as the identity times ``s = start_scale``
    (default 1), i.e. at ``N(0, s^2 I)`` on the latent space; with ``start="x_init"`` at ``N(f^dagger(x_init), s^2 I)``, centred on the prior's
    encoding of ``x_init`` (e.g. a MAP estimate), so the fit begins near the
    posterior's mode instead of travelling there from the prior. The callback's ``x`` is the mean of each image's Monte Carlo batch.

    Example:
        >>> import torch
        >>> from invprob import solve
        >>> from invprob.operators import Identity
        >>> from invprob.priors import LinearGaussianPrior
        >>> prior = LinearGaussianPrior(torch.eye(4), data_shape=(1, 2, 2))
        >>> y = torch.zeros(2, 1, 2, 2)
        >>> result = solve(Identity((1, 2, 2)), prior, y, "svi", sigma=torch.tensor([0.5, 1.0]),
        ...                steps=5, n_samples=3, n_layers=1, hidden=8, generator=torch.Generator().manual_seed(0))
        >>> tuple(result.samples.shape), len(result.history["loss"])
        ((2, 3, 1, 2, 2), 5)
    """

    name = "svi"
    description = "composed-flow VI: a pre-generator on the prior's latent space, one per measurement"
    references = 'Whang, Lei, Dimakis 2021, "Composing Normalizing Flows for Inverse Problems"'
    log_joint = staticmethod(latent_log_joint)

    def new_posterior(self, prior: Prior, generator: torch.Generator | None,
                      centre: torch.Tensor | None = None) -> FlowPosterior:
        return FlowPosterior(new_flow(prior.latent_dim, self.options, prior, generator), prior.decode, centre)

    def coordinates(self, prior: Prior, x: torch.Tensor) -> torch.Tensor:
        return prior.encode(x).reshape(x.shape[0], prior.latent_dim)

    def require_density(self, prior: Prior) -> None:
        require_latent_density(prior, self.name)


@register
class AmbientVI(_PerMeasurementVI):
    """Ambient VI: the same objective with the flow in image space and ``prior.log_prob`` as the prior.

    The flow starts at ``N(0, s^2 I)`` in image space (with ``start="x_init"``, at ``N(x_init, s^2 I)``;
    ``s = start_scale``, default 1). Needs a prior with a
    density in image space (an injective prior's density is not useful off its manifold).
    """

    name = "ambient-vi"
    description = "VI with a flow in image space and the prior's log_prob (the composed flow's baseline)"
    references = 'Whang, Lei, Dimakis 2021, "Composing Normalizing Flows for Inverse Problems" (sec. 6)'
    log_joint = staticmethod(image_log_joint)

    def new_posterior(self, prior: Prior, generator: torch.Generator | None,
                      centre: torch.Tensor | None = None) -> FlowPosterior:
        return FlowPosterior(new_flow(prior.data_dim, self.options, prior, generator), _unflatten(prior.data_shape),
                             centre)

    def coordinates(self, prior: Prior, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], prior.data_dim)

    def require_density(self, prior: Prior) -> None:
        require_image_density(prior, self.name)
