"""The identity operator (denoising)."""

from __future__ import annotations

import torch

from .._checks import as_shape
from .base import LinearOperator


class Identity(LinearOperator):
    """``A x = x``: denoising, ``y = x + noise``. Adjoint and pseudo-inverse are the identity too.

    Example:
        >>> op = Identity((1, 2, 2))
        >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
        >>> torch.equal(op(x), x), torch.equal(op.pinv(x), x), op.norm()
        (True, True, 1.0)
    """

    def __init__(self, in_shape: tuple[int, ...]) -> None:
        in_shape = as_shape(in_shape, "in_shape")
        super().__init__(in_shape, in_shape)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    _adjoint = _forward

    def _pinv(self, y: torch.Tensor, *, tol: float, max_iter: int) -> torch.Tensor:
        return y
