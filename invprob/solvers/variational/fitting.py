"""The variational fitting loop shared by every composed-flow sampler, and its stopping rule.

A flow ``q`` is fitted to a posterior by minimising, over the flow's parameters,

    L(q) = E_q[ beta * log q(z) - log p_Z(z) + ||A f(z) - y||^2 / (2 sigma^2) ],

estimated with ``batch_size`` reparametrised samples per step and minimised by Adam (with an
optional cosine decay of the learning rate). With ``beta = 1``, ``L = KL(q || p(z | y)) - log p(y)``,
so the minimiser is the posterior; ``beta < 1`` narrows the samples, ``beta = 0`` collapses them
onto a MAP point. :func:`fit_variational` runs the steps through :func:`invprob.solvers.iterate`
(progress, history, divergence, callback, per-image stopping); the per-measurement samplers call
it. (:func:`invprob.training.train_amortized` subclasses :class:`FlowOptions` and trains the
amortised model with the prior trainers' loop, which adds checkpoints and data parallelism.)

References: Whang, Lei, Dimakis 2021, "Composing Normalizing Flows for Inverse Problems" (eq. 4,
Algorithm 1); Kothari, Khorashadizadeh, de Hoop, Dokmanić 2021, "Trumpets: Injective Flows for
Inference and Inverse Problems" (sec. 3.2, the entropy weight ``beta``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from .._common import NoiseLevel
from .._posterior import progress_option, validate_noise_level
from ..base import Callback, SolverOptions
from ..driver import StoppingRule, Trace, iterate
from ..pregenerator import PreGenerator

DIVERGED_HINT = "try a smaller lr or a larger sigma"

Objective = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""``objective(active) -> (loss to differentiate, per-image values)``: the values are ``(B,)``
tensors with at least ``"loss"``; ``active`` is the ``(B,)`` mask of the images still fitted."""


class FlowOptions(SolverOptions):
    """Options shared by the variational samplers (the flow, its optimiser and the objective)."""

    sigma: NoiseLevel = Field(
        description="noise std of the Gaussian likelihood: a number or one per image (e.g. add_noise's sigma)"
    )
    beta: float = Field(1.0, ge=0, allow_inf_nan=False, description="entropy weight; 1 gives the plain KL")
    steps: int = Field(1000, ge=1, le=10_000_000, description="optimisation steps (the cap)")
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False, description="Adam learning rate")
    batch_size: int = Field(32, ge=1, description="Monte Carlo samples of the loss per step")
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="cosine: decay lr to lr/100 over the steps"
    )
    n_layers: int = Field(4, ge=1, description="flow steps (actnorm + LU linear + affine coupling)")
    hidden: int = Field(64, ge=1, description="hidden width of the coupling MLPs")
    progress: bool | None = progress_option()

    _sigma = field_validator("sigma", mode="before")(validate_noise_level)


class PlateauRule(StoppingRule):
    """Per-image stopping on the smoothed loss of a stochastic objective.

    The loss is averaged over consecutive, non-overlapping windows of ``window`` steps; with
    ``m_k`` the mean over the ``k``-th window, an image has converged at the end of window ``k >= 2``
    when

        m_{k-1} - m_k <= tol,

    i.e. the last ``window`` steps lowered the mean loss by at most ``tol`` nats. The threshold is
    absolute: the variational loss is ``KL(q || p(. | y))`` plus a constant ``-log p(y)`` that sets
    no scale, and the Monte Carlo noise of a window mean is ``std(L) / sqrt(window)``. ``tol = 0``
    never stops. Once converged an image stays converged.

    Example:
        >>> import torch
        >>> rule = PlateauRule(tol=0.1, window=2)
        >>> [bool(rule.update(torch.tensor([v]))[0]) for v in (5.0, 4.0, 2.0, 2.0, 2.0, 2.0)]
        [False, False, False, False, False, True]
    """

    def __init__(self, tol: float, window: int) -> None:
        super().__init__(tol, window)
        self._sum: torch.Tensor | None = None
        self._count = 0
        self._previous: torch.Tensor | None = None

    def update(self, loss: torch.Tensor) -> torch.Tensor:
        loss = loss.detach().to(torch.float64).cpu()
        if self.converged is None:
            self.converged = torch.zeros_like(loss, dtype=torch.bool)
        self._sum = loss.clone() if self._sum is None else self._sum + loss
        self._count += 1
        if self._count == self.window:
            mean = self._sum / self.window
            if self.tol > 0 and self._previous is not None:
                self.converged |= self._previous - mean <= self.tol
            self._previous, self._sum, self._count = mean, None, 0
        return self.converged


def fit_variational(
    parameters: Iterable[torch.Tensor],
    objective: Objective,
    opts: FlowOptions,
    *,
    method: str,
    batch: int,
    estimate: Callable[[], torch.Tensor],
    callback: Callback | None,
    stopping: StoppingRule | None = None,
) -> Trace:
    """Minimise ``objective`` by Adam on ``parameters`` for at most ``opts.steps`` steps.

    Each step calls ``objective(active)``, takes the gradient of its first output with respect to
    ``parameters`` only (nothing accumulates on a fixed prior) and an optimiser step, then the
    learning-rate schedule's step. The loop is :func:`invprob.solvers.iterate`: history of the
    batch means, ``SolverDiverged`` on a non-finite loss, ``callback(step, estimate(), info)``
    (returning True stops), and ``stopping`` per image.
    """
    params = list(parameters)
    optimizer = torch.optim.Adam(params, lr=opts.lr)
    if opts.lr_schedule == "cosine":
        scheduler: Any = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=opts.steps, eta_min=opts.lr / 100)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    def step(it: int, active: torch.Tensor) -> dict[str, torch.Tensor]:
        loss, values = objective(active)
        if bool(torch.isfinite(values["loss"]).all()):
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
            optimizer.step()
            scheduler.step()
        return values

    return iterate(
        method, opts.steps, step, batch=batch, estimate=estimate, callback=callback,
        progress=opts.progress, stopping=stopping, hint=DIVERGED_HINT,
    )


def new_flow(dim: int, opts: FlowOptions, like: Any, generator: torch.Generator | None, **kwargs: Any) -> PreGenerator:
    """A fresh pre-generator on ``dim`` coordinates, on ``like``'s device and dtype."""
    flow = PreGenerator(dim, n_layers=opts.n_layers, hidden=opts.hidden, generator=generator, **kwargs)
    return flow.to(device=like.device, dtype=like.dtype)
