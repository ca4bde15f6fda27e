"""The identity operator (denoising)."""

from __future__ import annotations

import torch

from .._checks import as_shape
from .base import LinearOperator


class Identity(LinearOperator):
    """``A x = x``: denoising. Adjoint and pseudo-inverse are the identity too."""

    def __init__(self, in_shape: tuple[int, ...]) -> None:
        in_shape = as_shape(in_shape, "in_shape")
        super().__init__(in_shape, in_shape)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    _adjoint = _forward

    def _pinv(self, y: torch.Tensor, *, tol: float, max_iter: int) -> torch.Tensor:
        return y
