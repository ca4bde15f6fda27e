"""Classical baselines that need no prior."""

from __future__ import annotations

import torch
from pydantic import Field

from ..operators.base import Operator
from ..priors.base import Prior
from .base import Callback, Result, Solver, SolverOptions, register


class PinvOptions(SolverOptions):
    """Options of ``"pinv"``: the stopping rule of CGLS when the operator has no closed form."""

    tol: float = Field(1e-6, gt=0, lt=1, description="relative normal-equation residual at which CGLS stops")
    max_iter: int = Field(200, ge=1, description="CGLS iteration cap")


@register
class PseudoInverse(Solver):
    """``x_hat = A^+ y``, the minimum-norm least-squares solution (no prior)."""

    name = "pinv"
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
