"""Checks a user can run on any linear operator."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_int
from .base import LinearOperator


@dataclass(frozen=True)
class AdjointReport:
    """Outcome of :func:`check_adjoint`.

    ``relative_error`` is ``max |<Ax, y> - <x, A^T y>| / (||A|| ||x|| ||y||)`` over the trials;
    ``scale`` is the least-squares factor ``c`` in ``A^T_op ≈ c A^T`` (1 for an exact adjoint);
    ``scaled_error`` is the relative error left once that factor is divided out.

    Example:
        >>> from invprob.operators import Identity
        >>> report = check_adjoint(Identity((4,)))
        >>> report.relative_error, report.scale, report.is_scaled
        (0.0, 1.0, False)
    """

    relative_error: float
    scale: float
    scaled_error: float

    @property
    def is_scaled(self) -> bool:
        """True when the adjoint is off by a constant factor rather than wrong."""
        return self.relative_error > 1e-5 and self.scaled_error < 1e-2 * self.relative_error

    def __str__(self) -> str:
        text = f"adjoint relative error {self.relative_error:.2e}"
        if self.is_scaled:
            text += f" (the adjoint looks scaled by {self.scale:.6g}; error after rescaling {self.scaled_error:.2e})"
        return text


@torch.no_grad()
def check_adjoint(
    op: LinearOperator, n_trials: int = 3, *, dtype: torch.dtype | None = None, generator: torch.Generator | None = None
) -> AdjointReport:
    """Test ``<A x, y> = <x, A^T y>`` on ``n_trials`` random pairs ``x``, ``y``.

    The error is normalised as ``|<A x, y> - <x, A^T y>| / (||A|| ||x|| ||y||)``, so that it is
    comparable across operators (round-off is about 1e-16 in float64, 1e-7 in float32). ``dtype``
    defaults to the operator's probe dtype (:meth:`LinearOperator.probe_like`: float64 for the
    built-in operators). A non-linear operator is refused with ``TypeError``.

    References: the "dot-product test" of J. F. Claerbout (1992), "Earth Soundings Analysis:
    Processing versus Inversion".

    Example:
        >>> from invprob.operators import RandomGaussian
        >>> report = check_adjoint(RandomGaussian((1, 4, 4), 6))
        >>> report.relative_error < 1e-12, report.is_scaled
        (True, False)
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(
            f"op: expected a LinearOperator (an operator with an exact adjoint), got {type(op).__name__}; "
            "wrap a linear map with from_callable(fn, in_shape, adjoint=fn_T) or from_callable(..., linear=True)"
        )
    check_int(n_trials, "n_trials", minimum=1)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    device, probe_dtype = op.probe_like()
    dtype = probe_dtype if dtype is None else dtype
    x = torch.randn((n_trials, *op.in_shape), generator=gen, dtype=dtype).to(device)
    y = torch.randn((n_trials, *op.out_shape), generator=gen, dtype=dtype).to(device)
    lhs = (op(x) * y).flatten(1).sum(1)
    rhs = (x * op.adjoint(y)).flatten(1).sum(1)
    denom = max(op.norm(), 1e-300) * x.flatten(1).norm(dim=1) * y.flatten(1).norm(dim=1)
    error = float(((lhs - rhs).abs() / denom).max())
    scale = float((lhs * rhs).sum() / (lhs * lhs).sum().clamp_min(1e-300))
    scaled_error = float(((lhs - rhs / scale).abs() / denom).max()) if scale != 0 else float("inf")
    return AdjointReport(relative_error=error, scale=scale, scaled_error=scaled_error)
