"""Checks a user can run on any linear operator."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LinearOperator


@dataclass(frozen=True)
class AdjointReport:
    """Outcome of :func:`check_adjoint`.

    ``relative_error`` is ``max |<Ax, y> - <x, A^T y>| / (||A|| ||x|| ||y||)`` over the trials;
    ``scale`` is the least-squares factor ``c`` in ``A^T_op ≈ c A^T`` (1 for an exact adjoint);
    ``scaled_error`` is the relative error left once that factor is divided out.
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
    op: LinearOperator, n_trials: int = 3, *, dtype: torch.dtype = torch.float64, generator: torch.Generator | None = None
) -> AdjointReport:
    """Test ``<A x, y> = <x, A^T y>`` on random ``x``, ``y`` (float64 by default)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    device = next((t.device for t in op.buffers()), torch.device("cpu"))
    x = torch.randn((n_trials, *op.in_shape), generator=gen, dtype=dtype).to(device)
    y = torch.randn((n_trials, *op.out_shape), generator=gen, dtype=dtype).to(device)
    lhs = (op(x) * y).flatten(1).sum(1)
    rhs = (x * op.adjoint(y)).flatten(1).sum(1)
    denom = max(op.norm(), 1e-300) * x.flatten(1).norm(dim=1) * y.flatten(1).norm(dim=1)
    error = float(((lhs - rhs).abs() / denom).max())
    scale = float((lhs * rhs).sum() / (lhs * lhs).sum().clamp_min(1e-300))
    scaled_error = float(((lhs - rhs / scale).abs() / denom).max()) if scale != 0 else float("inf")
    return AdjointReport(relative_error=error, scale=scale, scaled_error=scaled_error)
