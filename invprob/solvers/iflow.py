"""iFlow and iFlow-L: projected gradient descent on the range of an injective prior.

Algorithm 1 of the TRUMPET paper (``../shared/papers/000_76201c0664bdbebb.txt``, sec. 3.1)::

    x[0] = A^+ y
    for i = 0 .. T-1:
        v      = P(x[i])                       # projection onto the prior's range, prior.project
        x[i+1] = GradientStep_x( L(v) )        # gradient through the projection
    x_hat = P(x[T])

with the objective of eq. (7), ``L(v) = 1/2 ||y - A v||^2 + w R(v)`` and ``R(v) = -prior.log_prob(v)``
(for TRUMPET the bound of eq. (6)). iFlow is ``w = 0`` (gradient descent with manifold
projections); iFlow-L weights the prior term by ``w = lam * sigma^2`` when the noise level
``sigma`` is given -- the paper's ``sigma^2 R`` with ``lam = 1`` is then exactly the negative log
posterior times ``sigma^2`` -- and by ``w = lam`` otherwise (the reference code's convention, where
``lam`` plays the role of ``sigma^2``; its default 1e-2 comes from there).
"""

from __future__ import annotations

import torch
from pydantic import Field

from ..operators.base import Operator
from ..priors.base import Prior
from ._common import (
    IterativeOptions,
    NoiseLevel,
    check_iterate,
    make_optimizer,
    notify,
    progress_bar,
    record,
    squared_residual,
)
from .base import Callback, Result, Solver, check_loss, register, sigma_per_sample


class IFlowOptions(IterativeOptions):
    """Options of ``"iflow"`` (defaults from the reference implementation: Adam, lr 1e-2, 1000 steps)."""

    lr: float = Field(1e-2, gt=0, allow_inf_nan=False, description="step size of the optimizer")
    final_projection: bool = Field(True, description="project the last iterate onto the range (Algorithm 1, last line)")


class IFlowLOptions(IFlowOptions):
    """Options of ``"iflow-l"``: iFlow's plus the weight of the prior term."""

    lam: float = Field(1e-2, ge=0, allow_inf_nan=False, description="weight of -log p(v); times sigma^2 when sigma is given")
    sigma: NoiseLevel = Field(None, description="noise std (one, or one per batch element); weight = lam * sigma^2")


@register
class IFlow(Solver):
    """Algorithm 1 with ``L(v) = 1/2 ||y - A v||^2``: gradient descent with projections onto the range."""

    name = "iflow"
    Options = IFlowOptions
    needs_project = True
    description = "projected gradient descent on the prior's range (Algorithm 1, no likelihood)"

    def prior_weight(self, y: torch.Tensor) -> torch.Tensor | None:
        """Per-sample weight ``w`` of ``-log p`` in the objective; None for iFlow."""
        return None

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
        weight = self.prior_weight(y)
        with torch.no_grad():
            start = op.pinv(y) if x_init is None else x_init
        x = start.detach().clone().requires_grad_(True)
        optimizer = make_optimizer(opts.optimizer, [x], opts.lr)
        history: dict[str, list[float]] = {}
        with progress_bar(opts.iterations, self.name, opts.progress) as bar:
            for it in range(opts.iterations):
                v, loss, fit = self._objective(op, prior, y, x, weight)
                check_loss(loss, it, self.name)
                (x.grad,) = torch.autograd.grad(loss.sum(), x)
                optimizer.step()
                check_iterate(x, it, self.name)
                info = record(history, loss=loss, data_fit=fit)
                bar.update()
                if notify(callback, it, v, info):
                    break
        with torch.no_grad():
            x_hat = prior.project(x) if opts.final_projection else x.detach()
        return Result(x_hat=x_hat.detach(), method=self.name, options=opts, history=history)

    def _objective(
        self, op: Operator, prior: Prior, y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``v = P(x)`` and the per-sample objective ``1/2 ||y - A v||^2 - w log p(v)`` (eq. 7) and data fit."""
        v = prior.project(x)
        fit = squared_residual(op, v, y)
        loss = 0.5 * fit
        if weight is not None:
            loss = loss - weight * prior.log_prob(v)
        return v, loss, fit


@register
class IFlowL(IFlow):
    """Algorithm 1 with the prior term: ``L(v) = 1/2 ||y - A v||^2 - w log p(v)`` (eq. 7)."""

    name = "iflow-l"
    Options = IFlowLOptions
    description = "projected gradient descent on the range with the prior's log-density (Algorithm 1, eq. 7)"

    def prior_weight(self, y: torch.Tensor) -> torch.Tensor | None:
        opts = self.options
        sigma = sigma_per_sample(opts.sigma, y)
        if sigma is None:
            return torch.full((y.shape[0],), opts.lam, dtype=y.dtype, device=y.device)
        return opts.lam * sigma.pow(2)
