"""Classical baselines that need no prior: the pseudo-inverse and total-variation regularisation."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from ..operators.base import LinearOperator, Operator
from ..priors.base import Prior
from ._common import LoopOptions, squared_residual
from .base import Callback, Result, Solver, SolverOptions, register
from .driver import StoppingOptions, StoppingRule, iterate


class PinvOptions(SolverOptions):
    """Options of ``"pinv"``: the stopping rule of CGLS when the operator has no closed form."""

    tol: float = Field(1e-6, gt=0, lt=1, description="relative normal-equation residual at which CGLS stops")
    max_iter: int = Field(200, ge=1, description="CGLS iteration cap")


@register
class PseudoInverse(Solver):
    """``x_hat = A^+ y``, the minimum-norm least-squares solution (no prior)."""

    name = "pinv"
    kind = "baseline"
    iterative = False
    Options = PinvOptions
    needs_prior = False
    description = "pseudo-inverse A^+ y (minimum-norm least squares)"

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
        with torch.no_grad():
            x = op.pinv(y, tol=opts.tol, max_iter=opts.max_iter)
        return Result(x_hat=x, method=self.name, options=opts)


class TVOptions(LoopOptions, StoppingOptions):
    """Options of ``"tv"``."""

    lam: float = Field(1e-2, ge=0, allow_inf_nan=False, description="weight of the total variation")
    iterations: int = Field(200, ge=1, le=1_000_000, description="FISTA iteration cap")
    tol: float = Field(1e-5, ge=0, allow_inf_nan=False,
                       description="stop an image when its objective improved by less than tol (relative) over `window` iterations; 0: never")
    window: int = Field(20, ge=1, le=1_000_000, description="iterations over which the improvement is measured")
    inner_iterations: int = Field(20, ge=1, le=10_000, description="Chambolle dual iterations per proximal step")
    step: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="gradient step; None: 1/||A||^2 (power iteration), linear operators only"
    )


@register
class TotalVariation(Solver):
    """Total-variation regularised least squares by FISTA (Beck and Teboulle, 2009).

    Minimises ``F(x) = 1/2 ||A x - y||^2 + lam TV(x)`` with the isotropic total variation
    ``TV(x) = sum_pixels sqrt((D_h x)^2 + (D_w x)^2)`` over the last two axes (forward differences,
    Neumann boundary; each channel separately; a 1-D signal is treated as one row). Each iteration
    takes a gradient step of size ``s = 1/||A||^2`` on the data term at the extrapolated point and
    applies the proximal map of ``s lam TV`` by :func:`tv_prox` (Chambolle's dual projection,
    warm-started across iterations); the extrapolation follows FISTA's ``t_k`` sequence. Starts at
    ``x_init`` or ``A^+ y``. The data-term gradient is ``A^T (A x - y)`` for a linear operator and
    comes from autograd otherwise (then give ``step``).
    """

    name = "tv"
    kind = "baseline"
    Options = TVOptions
    needs_prior = False
    description = "total-variation regularised least squares by FISTA with a Chambolle TV prox"

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
        step_size = self._step(op)
        with torch.no_grad():
            x = (op.pinv(y) if x_init is None else x_init).detach().clone()
        state = {"x": x, "point": x.clone(), "momentum": 1.0, "dual": None}

        def step(it: int, active: torch.Tensor) -> dict[str, torch.Tensor]:
            x, point, momentum = state["x"], state["point"], state["momentum"]
            gradient_point = point - step_size * _data_gradient(op, point, y)
            new_x, state["dual"] = tv_prox(gradient_point, step_size * opts.lam, opts.inner_iterations, state["dual"])
            next_momentum = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
            state["point"] = new_x + ((momentum - 1) / next_momentum) * (new_x - x)
            state["x"], state["momentum"] = new_x, next_momentum
            with torch.no_grad():
                fit = squared_residual(op, new_x, y)
            return {"loss": 0.5 * fit + opts.lam * total_variation(new_x), "data_fit": fit}

        trace = iterate(self.name, opts.iterations, step, batch=y.shape[0], estimate=lambda: state["x"], callback=callback,
                        progress=opts.progress, stopping=StoppingRule.from_options(opts), hint="try a smaller step")
        return Result(x_hat=state["x"], method=self.name, options=opts, history=trace.history,
                      extras={"iterations": trace.iterations, "stopped_by": trace.stopped_by})

    def _step(self, op: Operator) -> float:
        if self.options.step is not None:
            return self.options.step
        if not isinstance(op, LinearOperator):
            raise ValueError("tv: give step= (no spectral norm is available for a nonlinear operator)")
        norm = op.norm()
        if norm == 0:
            raise ValueError("tv: the operator is zero; nothing can be reconstructed")
        return 1.0 / norm**2


def _data_gradient(op: Operator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``A^T (A x - y)``, the gradient of ``1/2 ||A x - y||^2`` (by autograd for a nonlinear operator)."""
    if isinstance(op, LinearOperator):
        with torch.no_grad():
            return op.adjoint(op(x) - y)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = 0.5 * (op(x) - y).pow(2).sum()
        return torch.autograd.grad(loss, x)[0]


def _as_planes(x: torch.Tensor) -> torch.Tensor:
    """View a batch as ``(B, K, H, W)`` planes: the last two axes (a 1-D signal becomes one row)."""
    if x.dim() == 2:
        return x.unsqueeze(1).unsqueeze(1)
    return x.reshape(x.shape[0], -1, *x.shape[-2:])


def image_gradient(u: torch.Tensor) -> torch.Tensor:
    """Forward differences along the last two axes, zero at the far edge: shape ``(2, *u.shape)``."""
    dh = torch.zeros_like(u)
    dw = torch.zeros_like(u)
    dh[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    dw[..., :, :-1] = u[..., :, 1:] - u[..., :, :-1]
    return torch.stack([dh, dw])


def divergence(p: torch.Tensor) -> torch.Tensor:
    """Minus the adjoint of :func:`image_gradient`: ``<grad u, p> = -<u, div p>``."""
    ph, pw = p[0], p[1]
    out = torch.zeros_like(ph)
    out[..., :-1, :] += ph[..., :-1, :]
    out[..., 1:, :] -= ph[..., :-1, :]
    out[..., :, :-1] += pw[..., :, :-1]
    out[..., :, 1:] -= pw[..., :, :-1]
    return out


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Isotropic total variation of each batch element (see :class:`TotalVariation`), shape ``(B,)``."""
    g = image_gradient(_as_planes(x))
    return g.pow(2).sum(0).sqrt().flatten(1).sum(1)


def tv_prox(
    f: torch.Tensor, weight: float, iterations: int, dual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Proximal map ``argmin_u 1/2 ||u - f||^2 + weight TV(u)`` by Chambolle's projection algorithm.

    Chambolle (2004): the solution is ``u = f - weight div p`` where the dual field ``p`` (one
    2-vector per pixel, ``|p| <= 1``) is the fixed point of

        p <- (p + tau grad(div p - f / weight)) / (1 + tau |grad(div p - f / weight)|),  tau = 1/4,

    run for ``iterations`` steps from ``dual`` (or zero); ``tau = 1/4`` is the step scikit-image's
    ``denoise_tv_chambolle`` uses too (Chambolle's convergence proof asks for ``tau <= 1/8``). Batched over every leading axis. Returns
    ``u`` (shape of ``f``) and the final dual field, to warm-start the next call.
    """
    planes = _as_planes(f)
    if weight == 0:
        return f.clone(), torch.zeros((2, *planes.shape), dtype=f.dtype, device=f.device)
    p = torch.zeros((2, *planes.shape), dtype=f.dtype, device=f.device) if dual is None else dual
    tau = 0.25
    for _ in range(iterations):
        g = image_gradient(divergence(p) - planes / weight)
        p = (p + tau * g) / (1 + tau * g.pow(2).sum(0, keepdim=True).sqrt())
    u = planes - weight * divergence(p)
    return u.reshape(f.shape), p
