"""Dense-matrix operators: a user's matrix and the random Gaussian compressed-sensing matrix."""

from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import as_shape, check_int, to_tensor
from .base import LinearOperator


class MatrixOperator(LinearOperator):
    """``A x = M vec(x)`` for a dense ``(m, n)`` matrix ``M``, ``n = prod(in_shape)``.

    The matrix is stored in float64 together with its pseudo-inverse (computed once by SVD), so
    ``pinv`` is the closed form ``M^+ y``. Inputs of another dtype are served by a cast of the
    stored matrices.
    """

    def __init__(self, matrix: torch.Tensor | np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...] | None = None) -> None:
        matrix = to_tensor(matrix, "matrix", dtype=torch.float64)
        in_shape = as_shape(in_shape, "in_shape")
        if matrix.dim() != 2 or matrix.shape[1] != math.prod(in_shape):
            raise ValueError(
                f"matrix: expected shape (m, {math.prod(in_shape)}) for in_shape {in_shape}, got {tuple(matrix.shape)}"
            )
        out_shape = (matrix.shape[0],) if out_shape is None else as_shape(out_shape, "out_shape")
        if math.prod(out_shape) != matrix.shape[0]:
            raise ValueError(f"out_shape: {out_shape} does not hold the matrix's {matrix.shape[0]} rows")
        super().__init__(in_shape, out_shape)
        self.register_buffer("matrix", matrix.contiguous())
        self.register_buffer("matrix_pinv", torch.linalg.pinv(matrix).contiguous())

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.flatten(1) @ self.matrix.to(x).T
        return out.reshape(x.shape[0], *self.out_shape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = y.flatten(1) @ self.matrix.to(y)
        return out.reshape(y.shape[0], *self.in_shape)

    def _pinv(self, y: torch.Tensor, *, tol: float, max_iter: int) -> torch.Tensor:
        out = y.flatten(1) @ self.matrix_pinv.to(y).T
        return out.reshape(y.shape[0], *self.in_shape)


def from_matrix(matrix: torch.Tensor | np.ndarray, in_shape: tuple[int, ...]) -> MatrixOperator:
    """Build a :class:`MatrixOperator` from a dense ``(m, prod(in_shape))`` matrix."""
    return MatrixOperator(matrix, in_shape)


class RandomGaussian(MatrixOperator):
    """Compressed sensing: ``m`` measurements with an i.i.d. ``N(0, 1/m)`` matrix.

    The matrix is drawn from a CPU ``torch.Generator`` seeded with ``seed``, so the same seed gives
    the same operator on every machine. The TRUMPET paper uses ``m = 250`` ("RandGauss").
    """

    def __init__(self, in_shape: tuple[int, ...], m: int, seed: int = 0) -> None:
        in_shape = as_shape(in_shape, "in_shape")
        m = check_int(m, "m", minimum=1)
        seed = check_int(seed, "seed", minimum=0)
        gen = torch.Generator().manual_seed(seed)
        matrix = torch.randn((m, math.prod(in_shape)), generator=gen, dtype=torch.float64) / math.sqrt(m)
        super().__init__(matrix, in_shape)
        self.m = m
        self.seed = seed

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, m={self.m}, seed={self.seed}"
